/*
 * runtime.c: the Lua state pgvault runs in: the standard libraries, every
 * binding preloaded, the `pgvault` base module (assembled from error.c,
 * signals.c, scripts.c and log.c), the `log` global, strict globals, and
 * protected calls with a traceback handler.
 */
#include "runtime.h"

#include <string.h>

#include <lualib.h>

int luaopen_cjson(lua_State *L);

bool pv_verbose = false;

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
    lua_newtable(L);
    pv_error_funcs(L);
    pv_signals_funcs(L);
    pv_scripts_funcs(L);
    pv_log_funcs(L);
    pv_secrets_funcs(L);
    pv_set_str(L, "version", PGVAULT_VERSION);
    pv_set_bool(L, "verbose", pv_verbose);
    pv_log_push_table(L);
    lua_setfield(L, -2, "log");
    return 1;
}

static void preload(lua_State *L)
{
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
}

lua_State *pv_runtime_new(const pv_runtime_opts *opts)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    pv_error_open(L);
    pv_scripts_install(L, opts);
    preload(L);
    pv_log_push_table(L);
    lua_setglobal(L, "log");
    make_strict(L);
    return L;
}

void pv_runtime_close(lua_State *L)
{
    pv_signals_forget(L);
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

/* Compiles `chunk`, first as an expression ("return <chunk>;"), as lua.c's
 * REPL does. Returns a status; the function or the message is on top. */
int pv_runtime_compile(lua_State *L, const char *chunk, const char *name)
{
    const char *ret = lua_pushfstring(L, "return %s;", chunk);
    int status = luaL_loadbuffer(L, ret, strlen(ret), name);
    lua_remove(L, -2);
    if (status == LUA_OK) return status;
    lua_pop(L, 1);
    return luaL_loadbuffer(L, chunk, strlen(chunk), name);
}

/* Replaces the value at idx by its printed form: strings, numbers,
 * booleans and nil as print shows them (as lua.c's REPL does), anything
 * else through lib.pretty's format (a table readably, nested), falling
 * back to tostring when there is no such function (a user's lib/pretty). */
static void printed_form(lua_State *L, int idx, int format)
{
    bool own_tostring = luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL;
    if (own_tostring) lua_pop(L, 1); /* an error object prints its message */
    if (lua_type(L, idx) == LUA_TTABLE && format && !own_tostring) {
        lua_pushvalue(L, format);
        lua_pushvalue(L, idx);
        if (pv_runtime_pcall(L, 1, 1) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
            lua_replace(L, idx);
            return;
        }
        lua_pop(L, 1);
    }
    luaL_tolstring(L, idx, NULL);
    lua_replace(L, idx);
}

/* Prints the values above `base` as the REPL does and pops them. */
void pv_runtime_print(lua_State *L, int base)
{
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lib.pretty");
    int format = 0;
    if (pv_runtime_pcall(L, 1, 1) == LUA_OK && lua_istable(L, -1) &&
        lua_getfield(L, -1, "format") == LUA_TFUNCTION) {
        format = lua_gettop(L);
    }
    for (int i = base + 1; i <= base + n; i++)
        printed_form(L, i, format);
    lua_settop(L, base + n);
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    if (pv_runtime_pcall(L, n, 0) != LUA_OK) pv_runtime_report(L, "print");
    lua_settop(L, base);
}

/* The global `pgvault` (the base module with every binding as a field:
 * pgvault.stream ...) and each binding under its short name (stream, pg
 * ...) unless that would hide a global. */
void pv_runtime_globals(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pgvault");
    lua_call(L, 1, 1);
    for (const pv_module *m = pv_modules; m->name; m++) {
        const char *shortname = strrchr(m->name, '.') + 1;
        lua_getglobal(L, "require");
        lua_pushstring(L, m->name);
        if (pv_runtime_pcall(L, 1, 1) != LUA_OK) {
            pv_runtime_report(L, m->name);
            continue;
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, shortname);
        lua_pushglobaltable(L);
        lua_pushstring(L, shortname);
        if (lua_rawget(L, -2) == LUA_TNIL) {
            lua_pushstring(L, shortname);
            lua_pushvalue(L, -4);
            lua_rawset(L, -4);
        }
        lua_pop(L, 3);
    }
    lua_setglobal(L, "pgvault");
}
