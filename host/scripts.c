/*
 * scripts.c: the script search path. Workflows and lib/ modules are
 * looked up in the user's directories (--scripts, PGVAULT_PATH) first,
 * then among the built-in scripts compiled into the binary.
 */
#include "runtime.h"

#include <ctype.h>
#include <string.h>
#include <unistd.h>

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

void pv_scripts_install(lua_State *L, const pv_runtime_opts *opts)
{
    lua_createtable(L, opts ? opts->nscript_dirs : 0, 0);
    for (int i = 0; opts && i < opts->nscript_dirs; i++) {
        lua_pushstring(L, opts->script_dirs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, SCRIPT_DIRS_KEY);

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
}

void pv_scripts_funcs(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"embedded", base_embedded},
                                     {"embedded_list", base_embedded_list},
                                     {"script_dirs", base_script_dirs},
                                     {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
