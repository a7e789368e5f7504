/*
 * main.c: the command line. Global options, then one of: the REPL, a
 * script from stdin (-), a chunk (-e), a file (run), or a workflow found
 * on the script search path. Everything runs inside one protected call.
 */
#include "runtime.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define MAX_SCRIPT_DIRS 32

static const char usage_text[] =
    "usage: pgvault [options] [COMMAND [ARGS...]]\n"
    "\n"
    "Backups of PostgreSQL databases: dump, verify, encrypt, upload, restore.\n"
    "\n"
    "Commands:\n"
    "  (none)               start the interactive Lua shell (on a terminal)\n"
    "  WORKFLOW [ARGS...]   run a workflow script (backup, restore, verify, list ...)\n"
    "  scripts              list workflows; 'scripts --copy NAME [DEST]' writes one out to edit\n"
    "  run FILE [ARGS...]   run a Lua file (arguments in 'arg')\n"
    "  -e CODE              run a Lua chunk and print what it returns\n"
    "  -                    run a Lua script from standard input\n"
    "\n"
    "Options (before the command):\n"
    "  --scripts DIR        look for workflows and lib/ modules in DIR first (repeatable)\n"
    "  -v, --verbose        debug logging and tracebacks on errors\n"
    "  -q, --quiet          only warnings and errors\n"
    "  -h, --help           this help; 'pgvault WORKFLOW --help' for a workflow's own\n"
    "  -V, --version        versions of pgvault and the libraries it uses\n"
    "\n"
    "Environment: PGVAULT_PATH (colon-separated script directories, searched after --scripts).\n"
    "Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.\n";

static void print_version(void)
{
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    int pq = PQlibVersion();
    printf("pgvault %s\n", PGVAULT_VERSION);
    printf("  %s\n", LUA_RELEASE);
    printf("  libpq %d.%d\n", pq / 10000, pq % 10000);
    printf("  libcurl %s (%s)\n", cv->version, cv->ssl_version ? cv->ssl_version : "no TLS");
    printf("  libsodium %s\n", sodium_version_string());
    printf("  %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("  zstd %s\n", ZSTD_versionString());
}

typedef struct cli {
    int argc;
    char **argv;
    int cmd; /* index of the command word in argv, argc if none */
    const char *dirs[MAX_SCRIPT_DIRS];
    int ndirs;
    char *path_copy; /* PGVAULT_PATH, split in place */
} cli;

/* Pushes the arg table (arg[0] = script, arg[1..] = args) and the args. */
static int push_args(lua_State *L, char **argv, int first, int argc, const char *script)
{
    lua_createtable(L, argc - first, 1);
    lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    for (int i = first; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - first + 1);
    }
    lua_setglobal(L, "arg");
    luaL_checkstack(L, argc - first + 5, "too many arguments");
    for (int i = first; i < argc; i++)
        lua_pushstring(L, argv[i]);
    return argc - first;
}

static void print_results(lua_State *L, int base)
{
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    lua_call(L, n, 0);
}

/* The whole program, in protected mode. Upvalue: the cli struct. */
static int pmain(lua_State *L)
{
    cli *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    const char *cmd = c->cmd < c->argc ? c->argv[c->cmd] : NULL;
    int rest = c->cmd + 1;

    if (!cmd) {
        if (isatty(STDIN_FILENO)) {
            lua_pushinteger(L, pv_repl(L));
            return 1;
        }
        cmd = "-";
    }
    if (strcmp(cmd, "-e") == 0) {
        if (rest >= c->argc) return pv_raise(L, "usage", "-e needs a chunk of Lua code");
        const char *code = c->argv[rest];
        if (luaL_loadbuffer(L, code, strlen(code), "=(command line)") != LUA_OK) {
            return pv_raise(L, "usage", "%s", lua_tostring(L, -1));
        }
        int nargs = push_args(L, c->argv, rest + 1, c->argc, "-e");
        lua_call(L, nargs, LUA_MULTRET);
        print_results(L, 0);
        return 0;
    }
    if (strcmp(cmd, "-") == 0 || strcmp(cmd, "run") == 0) {
        const char *file = NULL;
        int first = rest;
        if (strcmp(cmd, "run") == 0) {
            if (rest >= c->argc) return pv_raise(L, "usage", "run needs a FILE (or - for stdin)");
            file = c->argv[rest];
            first = rest + 1;
            if (strcmp(file, "-") == 0) file = NULL;
        }
        if (luaL_loadfilex(L, file, "bt") != LUA_OK)
            return pv_raise(L, "io", "%s", lua_tostring(L, -1));
        int nargs = push_args(L, c->argv, first, c->argc, file ? file : "-");
        lua_call(L, nargs, 0);
        return 0;
    }
    if (!pv_runtime_load_workflow(L, cmd)) {
        const char *msg = lua_tostring(L, -1);
        return pv_raise(L, "usage", "%s", msg ? msg : "cannot load workflow");
    }
    int nargs = push_args(L, c->argv, rest, c->argc, cmd);
    lua_call(L, nargs, 0);
    return 0;
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "pgvault: %s%s\nTry 'pgvault --help'.\n", msg, arg ? arg : "");
    return 2;
}

int main(int argc, char **argv)
{
    cli c = {.argc = argc, .argv = argv, .cmd = argc};
    int level = PV_LOG_INFO;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            pv_verbose = true;
            level = PV_LOG_DEBUG;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            level = PV_LOG_WARN;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            print_version();
            return 0;
        } else if (strcmp(a, "--scripts") == 0 || strncmp(a, "--scripts=", 10) == 0) {
            const char *dir = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
            if (!dir || !*dir) return usage_error("--scripts needs a directory", NULL);
            if (c.ndirs >= MAX_SCRIPT_DIRS) return usage_error("too many --scripts", NULL);
            c.dirs[c.ndirs++] = dir;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] == '-') {
            return usage_error("unknown option ", a);
        } else if (a[0] == '-' && a[1] != '\0' && strcmp(a, "-e") != 0) {
            return usage_error("unknown option ", a);
        } else {
            break;
        }
    }
    c.cmd = i;
    const char *env_path = getenv("PGVAULT_PATH");
    if (env_path && *env_path) {
        c.path_copy = strdup(env_path);
        char *save = NULL;
        for (char *d = c.path_copy ? strtok_r(c.path_copy, ":", &save) : NULL; d;
             d = strtok_r(NULL, ":", &save))
            if (c.ndirs < MAX_SCRIPT_DIRS) c.dirs[c.ndirs++] = d;
    }
    pv_log_set_level(level);

    if (sodium_init() < 0) {
        fprintf(stderr, "pgvault: cannot initialise libsodium\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);

    pv_runtime_opts opts = {.script_dirs = c.dirs, .nscript_dirs = c.ndirs};
    lua_State *L = pv_runtime_new(&opts);
    if (!L) {
        fprintf(stderr, "pgvault: cannot create the Lua state: out of memory\n");
        return 1;
    }
    pv_signals_install(L);

    const char *context = c.cmd < argc ? argv[c.cmd] : "repl";
    if (strcmp(context, "run") == 0 && c.cmd + 1 < argc) context = argv[c.cmd + 1];

    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &c);
    int status = pv_runtime_pcall(L, 1, 1);
    int code = 0;
    if (status != LUA_OK) {
        code = pv_runtime_exit_code(L);
        pv_runtime_report(L, context);
    } else if (lua_isinteger(L, -1)) {
        code = (int)lua_tointeger(L, -1);
    }
    if (code == 0 && pv_interrupted()) code = 130;
    pv_runtime_close(L);
    curl_global_cleanup();
    free(c.path_copy);
    return code;
}
