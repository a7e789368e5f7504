/*
 * runtime.c: the Lua state pgvault runs in: built-in modules and scripts,
 * the script search path (user directories before the built-ins), strict
 * globals, the error object, the `log` global, the `pgvault` base module,
 * and the signal handling that stops Lua code at a safe point.
 */
#include "runtime.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

int luaopen_cjson(lua_State *L);

bool pv_verbose = false;

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t interrupt_flag;
static volatile sig_atomic_t interrupt_sig;
static volatile sig_atomic_t interrupt_count;
static volatile sig_atomic_t critical_depth; /* inside pgvault.critical */
static lua_State *signal_L;

bool pv_interrupted(void)
{
    return interrupt_flag != 0 && critical_depth == 0;
}

int pv_interrupt_signal(void)
{
    return interrupt_sig;
}

void pv_interrupt_clear(void)
{
    interrupt_flag = 0;
    interrupt_sig = 0;
    interrupt_count = 0;
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (!interrupt_flag) return; /* cleared meanwhile (the REPL) */
    pv_raise(L, "interrupted", "interrupted");
}

void pv_interrupt_delivered(void)
{
    if (signal_L && lua_gethook(signal_L) == stop_hook) lua_sethook(signal_L, NULL, 0, 0);
}

static void on_signal(int sig)
{
    interrupt_flag = 1;
    interrupt_sig = sig;
    /* A third signal means the user really wants out, now. */
    if (++interrupt_count >= 3) _exit(130);
    /* lua_sethook is the one Lua call that is safe here (see lua.c). A
     * critical section arms it when it ends. */
    if (signal_L && !critical_depth)
        lua_sethook(signal_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void pv_signals_set_state(lua_State *L)
{
    signal_L = L;
}

void pv_signals_install(lua_State *L)
{
    signal_L = L;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking reads return EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ------------------------------------------------------------------ */
/* Error objects                                                       */
/* ------------------------------------------------------------------ */

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "kind");
        lua_pushfstring(L, "%s error", lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown");
    }
    return 1;
}

/* pgvault.error(kind, message [, fields]) -> error object */
static int base_error(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    if (!pv_error_kind_known(kind))
        return luaL_argerror(
            L, 1, lua_pushfstring(L, "unknown error kind '%s' (see pgvault.error_kinds)", kind));
    lua_createtable(L, 0, 4);
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, -4);
        }
    }
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    char clean[2048];
    pv_redact(message, clean, sizeof clean);
    lua_pushstring(L, clean);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, PV_ERROR_MT);
    return 1;
}

static int base_raise(lua_State *L)
{
    base_error(L);
    return lua_error(L);
}

static int base_is_error(lua_State *L)
{
    bool is = false;
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, PV_ERROR_MT);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, is);
    return 1;
}

static int base_interrupted(lua_State *L)
{
    lua_pushboolean(L, pv_interrupted());
    return 1;
}

/* pgvault.uninterrupted(fn, ...): runs fn(...) for clean-up after an
 * interruption (dropping a half-restored database, say). The signal that
 * stopped the work does not cancel its clean-up; a new one does. The
 * interruption stays recorded afterwards, so the run still exits 130.
 * Returns what fn returns, or raises its error. */
static int base_uninterrupted(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sig_atomic_t was = interrupt_flag, sig = interrupt_sig;
    interrupt_flag = 0;
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (was) {
        interrupt_flag = 1;
        if (!interrupt_sig) interrupt_sig = sig;
    }
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* pgvault.critical(fn, ...): runs fn(...) to its end whatever signal
 * arrives meanwhile (renaming databases, say, where stopping half-way
 * would leave things worse than either end); the signal then stops the
 * run at the next instruction. A third signal still exits at once.
 * Returns what fn returns, or raises its error. */
static int base_critical(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    critical_depth++;
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    critical_depth--;
    if (!critical_depth && interrupt_flag && signal_L && rc == LUA_OK)
        lua_sethook(signal_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* pgvault.signalled(): whether a signal arrived, even inside a critical
 * section (where pgvault.interrupted() says false until it ends). */
static int base_signalled(lua_State *L)
{
    lua_pushboolean(L, interrupt_flag != 0);
    return 1;
}

static int base_redact(lua_State *L)
{
    const char *in = luaL_checkstring(L, 1);
    size_t n = strlen(in) + 256;
    char *out = malloc(n);
    if (!out) return luaL_error(L, "out of memory");
    pv_redact(in, out, n);
    lua_pushstring(L, out);
    free(out);
    return 1;
}

/* ------------------------------------------------------------------ */
/* log                                                                 */
/* ------------------------------------------------------------------ */

static int log_at(lua_State *L, int level)
{
    if (level < pv_log_level()) return 0;
    int n = lua_gettop(L);
    if (n == 0) return 0;
    if (n > 1) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_insert(L, 1);
        lua_pop(L, 1);
        lua_call(L, n, 1);
    } else {
        luaL_tolstring(L, 1, NULL);
    }
    pv_log(level, "%s", lua_tostring(L, -1));
    return 0;
}

static int log_debug(lua_State *L)
{
    return log_at(L, PV_LOG_DEBUG);
}
static int log_info(lua_State *L)
{
    return log_at(L, PV_LOG_INFO);
}
static int log_warn(lua_State *L)
{
    return log_at(L, PV_LOG_WARN);
}
static int log_error(lua_State *L)
{
    return log_at(L, PV_LOG_ERROR);
}

static int log_secret(lua_State *L)
{
    if (lua_isstring(L, 1)) pv_log_add_secret(lua_tostring(L, 1));
    return 0;
}

static int log_level(lua_State *L)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off", NULL};
    lua_pushstring(L, names[pv_log_level()]);
    if (!lua_isnoneornil(L, 1)) pv_log_set_level(luaL_checkoption(L, 1, NULL, names));
    return 1;
}

static void push_log_table(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"debug", log_debug},   {"info", log_info},   {"warn", log_warn}, {"error", log_error},
        {"secret", log_secret}, {"level", log_level}, {NULL, NULL}};
    luaL_newlib(L, funcs);
}

/* ------------------------------------------------------------------ */
/* Script search path                                                  */
/* ------------------------------------------------------------------ */

#define SCRIPT_DIRS_KEY "pgvault.script_dirs"

const pv_embedded *pv_embedded_find(const char *path)
{
    for (const pv_embedded *e = pv_embedded_scripts; e->path; e++)
        if (strcmp(e->path, path) == 0) return e;
    return NULL;
}

/* Loads scripts/<rel> from the first user directory that has it, else the
 * built-in copy. Pushes the chunk or an error message. */
static int load_script(lua_State *L, const char *rel)
{
    lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_DIRS_KEY);
    int ndirs = (int)luaL_len(L, -1);
    for (int i = 1; i <= ndirs; i++) {
        lua_geti(L, -1, i);
        lua_pushfstring(L, "%s/%s", lua_tostring(L, -1), rel);
        const char *file = lua_tostring(L, -1);
        if (access(file, R_OK) == 0) {
            int rc = luaL_loadfilex(L, file, "t");
            lua_replace(L, -4);
            lua_pop(L, 2);
            return rc;
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    const pv_embedded *e = pv_embedded_find(rel);
    if (!e) {
        lua_pushfstring(L, "no script %s", rel);
        return LUA_ERRFILE;
    }
    lua_pushfstring(L, "@scripts/%s", rel);
    int rc = luaL_loadbufferx(L, (const char *)e->data, e->len, lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    return rc;
}

/* package.searchers entry: "lib.cli" -> scripts/lib/cli.lua */
static int script_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *p = name; *p; p++)
        luaL_addchar(&b, *p == '.' ? '/' : *p);
    luaL_addstring(&b, ".lua");
    luaL_pushresult(&b);
    const char *rel = lua_tostring(L, -1);
    int rc = load_script(L, rel);
    if (rc == LUA_ERRFILE) {
        lua_pushfstring(L, "no pgvault script '%s'", rel);
        return 1;
    }
    if (rc != LUA_OK) return lua_error(L);
    lua_pushstring(L, rel);
    return 2;
}

bool pv_runtime_load_workflow(lua_State *L, const char *name)
{
    char rel[256];
    size_t n = strlen(name);
    if (n == 0 || n > 100) {
        lua_pushfstring(L, "'%s' is not a workflow name", name);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_')) {
            lua_pushfstring(L, "'%s' is not a workflow name", name);
            return false;
        }
        rel[i] = c == '-' ? '_' : c;
    }
    memcpy(rel + n, ".lua", 5);
    int rc = load_script(L, rel);
    if (rc == LUA_ERRFILE) {
        lua_pop(L, 1);
        lua_pushfstring(L, "unknown command or workflow '%s' (run 'pgvault scripts' to list them)",
                        name);
        return false;
    }
    return rc == LUA_OK;
}

/* pgvault.embedded(path) -> source of a built-in script, or nil */
static int base_embedded(lua_State *L)
{
    const pv_embedded *e = pv_embedded_find(luaL_checkstring(L, 1));
    if (!e) return 0;
    lua_pushlstring(L, (const char *)e->data, e->len);
    return 1;
}

static int base_embedded_list(lua_State *L)
{
    lua_newtable(L);
    int i = 0;
    for (const pv_embedded *e = pv_embedded_scripts; e->path; e++) {
        lua_pushstring(L, e->path);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static int base_script_dirs(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_DIRS_KEY);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Strict globals                                                      */
/* ------------------------------------------------------------------ */

#define DECLARED_KEY "pgvault.declared"

static bool caller_is_main_or_c(lua_State *L)
{
    lua_Debug ar;
    if (!lua_getstack(L, 1, &ar)) return true;
    lua_getinfo(L, "S", &ar);
    return strcmp(ar.what, "main") == 0 || strcmp(ar.what, "C") == 0;
}

static int strict_newindex(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DECLARED_KEY);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    bool declared = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!declared) {
        if (!caller_is_main_or_c(L))
            return luaL_error(L, "assignment to undeclared global '%s'",
                              luaL_tolstring(L, 2, NULL));
        lua_pushvalue(L, 2);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    lua_rawset(L, 1);
    return 0;
}

/* Reading a global nobody assigned is an error (use rawget to probe). */
static int strict_index(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DECLARED_KEY);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_toboolean(L, -1))
        return luaL_error(L, "variable '%s' is not declared", luaL_tolstring(L, 2, NULL));
    return 0;
}

static void make_strict(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, DECLARED_KEY);
    lua_pushglobaltable(L);
    lua_newtable(L);
    lua_pushcfunction(L, strict_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
}

/* ------------------------------------------------------------------ */
/* The state                                                           */
/* ------------------------------------------------------------------ */

static int open_base(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"error", base_error},
                                     {"raise", base_raise},
                                     {"is_error", base_is_error},
                                     {"interrupted", base_interrupted},
                                     {"uninterrupted", base_uninterrupted},
                                     {"critical", base_critical},
                                     {"signalled", base_signalled},
                                     {"redact", base_redact},
                                     {"embedded", base_embedded},
                                     {"embedded_list", base_embedded_list},
                                     {"script_dirs", base_script_dirs},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_pushliteral(L, PGVAULT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushboolean(L, pv_verbose);
    lua_setfield(L, -2, "verbose");
    static const char *const kinds[] = {PV_ERROR_KINDS};
    lua_createtable(L, (int)(sizeof kinds / sizeof *kinds), 0);
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        lua_pushstring(L, kinds[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "error_kinds");
    push_log_table(L);
    lua_setfield(L, -2, "log");
    return 1;
}

lua_State *pv_runtime_new(const pv_runtime_opts *opts)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);

    luaL_newmetatable(L, PV_ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_createtable(L, opts ? opts->nscript_dirs : 0, 0);
    for (int i = 0; opts && i < opts->nscript_dirs; i++) {
        lua_pushstring(L, opts->script_dirs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, SCRIPT_DIRS_KEY);

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const pv_module *m = pv_modules; m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, open_base);
    lua_setfield(L, -2, "pgvault");
    lua_pop(L, 1);

    /* Our searcher goes right after the preload one. */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    int n = (int)luaL_len(L, -1);
    for (int i = n; i >= 2; i--) {
        lua_geti(L, -1, i);
        lua_seti(L, -2, i + 1);
    }
    lua_pushcfunction(L, script_searcher);
    lua_seti(L, -2, 2);
    lua_pop(L, 2);

    push_log_table(L);
    lua_setglobal(L, "log");
    make_strict(L);
    return L;
}

void pv_runtime_close(lua_State *L)
{
    if (signal_L == L) signal_L = NULL;
    lua_close(L);
}

static int msghandler(lua_State *L)
{
    if (lua_istable(L, 1)) {
        if (pv_verbose) {
            luaL_traceback(L, L, NULL, 1);
            lua_setfield(L, 1, "traceback");
        }
        lua_settop(L, 1);
        return 1;
    }
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    if (pv_verbose) {
        luaL_traceback(L, L, msg, 1);
    } else {
        lua_pushstring(L, msg);
    }
    return 1;
}

int pv_runtime_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

static const char *error_kind(lua_State *L, int idx)
{
    if (!lua_istable(L, idx)) return NULL;
    lua_getfield(L, idx, "kind");
    const char *kind = lua_tostring(L, -1);
    lua_pop(L, 1); /* the table still holds the string */
    return kind;
}

int pv_runtime_exit_code(lua_State *L)
{
    const char *kind = error_kind(L, -1);
    if (pv_interrupted() || (kind && strcmp(kind, "interrupted") == 0)) return 130;
    if (kind && strcmp(kind, "usage") == 0) return 2;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "exit_code");
        int isnum;
        lua_Integer code = lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (isnum && code > 0 && code < 256) return (int)code;
    }
    return 1;
}

void pv_runtime_report(lua_State *L, const char *context)
{
    const char *kind = error_kind(L, -1);
    const char *msg;
    const char *trace = NULL;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "traceback");
        trace = lua_tostring(L, -1);
        lua_pop(L, 1);
        msg = luaL_tolstring(L, -1, NULL);
    } else {
        msg = luaL_tolstring(L, -1, NULL);
    }
    char clean[4096];
    pv_redact(msg ? msg : "unknown error", clean, sizeof clean);
    if (kind && strcmp(kind, "interrupted") == 0)
        fprintf(stderr, "pgvault: %s: interrupted\n", context);
    else
        fprintf(stderr, "pgvault: %s: %s\n", context, clean);
    if (trace && pv_verbose) {
        size_t tn = strlen(trace) + 256;
        char *t = malloc(tn);
        if (t) {
            pv_redact(trace, t, tn);
            fprintf(stderr, "%s\n", t);
            free(t);
        }
    }
    fflush(stderr);
    lua_pop(L, 1);
}
