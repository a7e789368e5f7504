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
#include <sys/stat.h>
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
    char **argv; /* our copies: the process's own argv is scrubbed */
    int cmd;     /* index of the command word in argv, argc if none */
    const char *dirs[MAX_SCRIPT_DIRS];
    int ndirs;
    char *path_copy; /* PGVAULT_PATH, split in place */
    int level;
} cli;

/* Sets the global arg (arg[0] = script, arg[1..] = args) and pushes the
 * args; returns how many. */
static int push_args(lua_State *L, const cli *c, int first, const char *script)
{
    int n = first < c->argc ? c->argc - first : 0;
    lua_createtable(L, n, 1);
    lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, c->argv[first + i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    luaL_checkstack(L, n + 5, "too many arguments");
    for (int i = 0; i < n; i++)
        lua_pushstring(L, c->argv[first + i]);
    return n;
}

/* -e CODE [ARGS]: compiled as the REPL compiles a line (an expression
 * first), run, and what it returns printed as the REPL prints it. */
static int run_chunk(lua_State *L, const cli *c, int rest)
{
    if (rest >= c->argc) return pv_raise(L, "usage", "-e needs a chunk of Lua code");
    const char *code = c->argv[rest];
    if (pv_runtime_compile(L, code, "=(command line)") != LUA_OK)
        return pv_raise(L, "usage", "%s", lua_tostring(L, -1));
    int base = lua_gettop(L) - 1;
    int nargs = push_args(L, c, rest + 1, "-e");
    lua_call(L, nargs, LUA_MULTRET);
    pv_runtime_print(L, base);
    return 0;
}

/* run FILE [ARGS], run - [ARGS], - [ARGS]: a script, as lua runs one. */
static int run_file(lua_State *L, const cli *c, const char *cmd, int rest)
{
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
    int nargs = push_args(L, c, first, file ? file : "-");
    lua_call(L, nargs, 0);
    return 0;
}

/* The whole program, in protected mode. Argument: the cli struct. */
static int pmain(lua_State *L)
{
    cli *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    pv_runtime_globals(L); /* the same globals in every way of running Lua */
    const char *cmd = c->cmd < c->argc ? c->argv[c->cmd] : NULL;
    int rest = c->cmd + 1;
    if (!cmd) {
        if (isatty(STDIN_FILENO)) {
            push_args(L, c, c->argc, c->argv[0]);
            lua_pushinteger(L, pv_repl(L));
            return 1;
        }
        cmd = "-";
    }
    if (strcmp(cmd, "-e") == 0) return run_chunk(L, c, rest);
    if (strcmp(cmd, "-") == 0 || strcmp(cmd, "run") == 0) return run_file(L, c, cmd, rest);
    if (!pv_runtime_load_workflow(L, cmd)) {
        const char *msg = lua_tostring(L, -1);
        return pv_raise(L, "usage", "%s", msg ? msg : "cannot load workflow");
    }
    int nargs = push_args(L, c, rest, cmd);
    lua_call(L, nargs, 0);
    return 0;
}

static int usage_error(const char *msg, const char *arg)
{
    char clean[512];
    pv_redact(arg ? arg : "", clean, sizeof clean);
    fprintf(stderr, "pgvault: %s%s\nTry 'pgvault --help'.\n", msg, clean);
    return 2;
}

/* --scripts DIR: a directory that exists, or a usage error. */
static int add_scripts_dir(cli *c, const char *dir)
{
    if (!dir || !*dir) return usage_error("--scripts needs a directory", NULL);
    if (c->ndirs >= MAX_SCRIPT_DIRS) return usage_error("too many --scripts", NULL);
    struct stat sb;
    if (stat(dir, &sb) < 0) return usage_error("--scripts: no such directory: ", dir);
    if (!S_ISDIR(sb.st_mode)) return usage_error("--scripts: not a directory: ", dir);
    c->dirs[c->ndirs++] = dir;
    return -1;
}

/* The global options before the command. Returns -1 to go on, or the
 * exit code (--help, --version, a usage error). */
static int parse_options(cli *c)
{
    int i = 1;
    for (; i < c->argc; i++) {
        const char *a = c->argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            pv_verbose = true;
            c->level = PV_LOG_DEBUG;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            c->level = PV_LOG_WARN;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            print_version();
            return 0;
        } else if (strcmp(a, "--scripts") == 0 || strncmp(a, "--scripts=", 10) == 0) {
            const char *dir = a[9] == '=' ? a + 10 : (i + 1 < c->argc ? c->argv[++i] : NULL);
            int rc = add_scripts_dir(c, dir);
            if (rc >= 0) return rc;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0' && strcmp(a, "-e") != 0) {
            return usage_error("unknown option ", a);
        } else {
            break;
        }
    }
    c->cmd = i;
    return -1;
}

/* PGVAULT_PATH's directories, searched after --scripts. */
static void add_path_dirs(cli *c)
{
    const char *env_path = getenv("PGVAULT_PATH");
    if (!env_path || !*env_path) return;
    c->path_copy = strdup(env_path);
    char *save = NULL;
    for (char *d = c->path_copy ? strtok_r(c->path_copy, ":", &save) : NULL; d;
         d = strtok_r(NULL, ":", &save))
        if (c->ndirs < MAX_SCRIPT_DIRS) c->dirs[c->ndirs++] = d;
}

/* Creates the Lua state and runs pmain in it; returns the exit code. */
static int run(cli *c)
{
    pv_runtime_opts opts = {.script_dirs = c->dirs, .nscript_dirs = c->ndirs};
    lua_State *L = pv_runtime_new(&opts);
    if (!L) {
        fprintf(stderr, "pgvault: cannot create the Lua state: out of memory\n");
        return 1;
    }
    pv_signals_install(L);
    const char *context = c->cmd < c->argc ? c->argv[c->cmd] : "repl";
    if (strcmp(context, "run") == 0 && c->cmd + 1 < c->argc) context = c->argv[c->cmd + 1];
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, c);
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
    return code;
}

int main(int argc, char **argv)
{
    pv_secrets_harden();
    cli c = {.argc = argc, .argv = pv_argv_capture(argc, argv), .cmd = argc, .level = PV_LOG_INFO};
    if (!c.argv) {
        fprintf(stderr, "pgvault: out of memory\n");
        return 1;
    }
    pv_argv_scrub(); /* from here on only our copies hold the arguments */
    int code = parse_options(&c);
    if (code < 0) {
        add_path_dirs(&c);
        pv_log_set_level(c.level);
        if (sodium_init() < 0) {
            fprintf(stderr, "pgvault: cannot initialise libsodium\n");
            code = 1;
        } else {
            curl_global_init(CURL_GLOBAL_DEFAULT);
            code = run(&c);
            curl_global_cleanup();
        }
    }
    free(c.path_copy);
    pv_argv_release();
    return code;
}
