/*
 * config_fuzz.c: libFuzzer target for the configuration loader
 * (scripts/lib/config.lua, config.load_text), which runs a user's
 * pgvault.conf.lua in a sandbox. Whatever the text, the loader returns
 * a configuration or raises an error of kind "config": never another
 * kind, never a Lua error from the loader's own code, never a crash. A
 * configuration that loads must have at least one environment.
 */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *state(void)
{
    static lua_State *L;
    if (L) return L;
    L = pv_runtime_new(NULL);
    if (!L) abort();
    pv_log_set_level(PV_LOG_OFF);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lib.config");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) abort();
    lua_getfield(L, -1, "load_text");
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.load_text");
    lua_pop(L, 1);
    return L;
}

static int count_environments(lua_State *L, int idx)
{
    lua_getfield(L, idx, "order");
    int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : -1;
    lua_pop(L, 1);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = state();
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.load_text");
    lua_pushlstring(L, (const char *)data, size);
    lua_pushliteral(L, "fuzz.conf.lua");
    if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
        if (!lua_istable(L, -1) || count_environments(L, lua_gettop(L)) < 1) abort();
    } else {
        if (!lua_istable(L, -1)) abort(); /* a bare Lua error escaped the loader */
        lua_getfield(L, -1, "kind");
        const char *kind = lua_tostring(L, -1);
        if (!kind || strcmp(kind, "config") != 0) abort();
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
