/*
 * options.c: reading options tables passed to bindings (pv_opt_*), with
 * argument errors that name the function, the argument and the field, and
 * building report tables (pv_set_*).
 */
#include "pgvault.h"

#include <string.h>

/* Pushes field `key` of the options table at idx; false (nothing pushed)
 * when there is no table. */
static bool opt_field(lua_State *L, int idx, const char *key)
{
    if (idx == 0) return false;
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL) return false;
    if (t != LUA_TTABLE) luaL_typeerror(L, idx, "table of options");
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return false;
    }
    return true;
}

static int opt_error(lua_State *L, int idx, const char *key, const char *expected)
{
    const char *msg =
        lua_pushfstring(L, "field '%s': %s expected, got %s", key, expected, luaL_typename(L, -1));
    return luaL_argerror(L, idx, msg);
}

lua_Integer pv_opt_int(lua_State *L, int idx, const char *key, lua_Integer dflt)
{
    if (!opt_field(L, idx, key)) return dflt;
    int isnum = 0;
    lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isnum) : 0;
    if (!isnum) {
        if (lua_type(L, -1) == LUA_TNUMBER) {
            const char *msg =
                lua_pushfstring(L, "field '%s': number has no integer representation", key);
            luaL_argerror(L, idx, msg);
        }
        opt_error(L, idx, key, "integer");
    }
    lua_pop(L, 1);
    return v;
}

lua_Number pv_opt_num(lua_State *L, int idx, const char *key, lua_Number dflt)
{
    if (!opt_field(L, idx, key)) return dflt;
    if (lua_type(L, -1) != LUA_TNUMBER) opt_error(L, idx, key, "number");
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

const char *pv_opt_str(lua_State *L, int idx, const char *key, const char *dflt)
{
    if (!opt_field(L, idx, key)) return dflt;
    /* Only real strings: a number converted by lua_tostring would live on
     * the stack alone and die with the pop below. */
    if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, idx, key, "string");
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1); /* the options table still references the string */
    return v;
}

bool pv_opt_bool(lua_State *L, int idx, const char *key, bool dflt)
{
    if (!opt_field(L, idx, key)) return dflt;
    if (lua_type(L, -1) != LUA_TBOOLEAN) opt_error(L, idx, key, "boolean");
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

void pv_opt_only(lua_State *L, int idx, const char *const *known)
{
    if (idx == 0) return;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; known[i] && !ok; i++)
                ok = strcmp(known[i], k) == 0;
        } else {
            ok = lua_isinteger(L, -1); /* an array part: argv, stages */
        }
        if (ok) continue;
        const char *name = luaL_tolstring(L, -1, NULL);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, "unknown option '");
        luaL_addstring(&b, name);
        luaL_addstring(&b, "' (known:");
        for (int i = 0; known[i]; i++) {
            luaL_addstring(&b, i ? ", " : " ");
            luaL_addstring(&b, known[i]);
        }
        luaL_addstring(&b, ")");
        luaL_pushresult(&b);
        luaL_argerror(L, idx, lua_tostring(L, -1));
    }
}

void pv_set_int(lua_State *L, const char *key, lua_Integer value)
{
    lua_pushinteger(L, value);
    lua_setfield(L, -2, key);
}

void pv_set_num(lua_State *L, const char *key, lua_Number value)
{
    lua_pushnumber(L, value);
    lua_setfield(L, -2, key);
}

void pv_set_str(lua_State *L, const char *key, const char *value)
{
    if (!value) return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void pv_set_lstr(lua_State *L, const char *key, const char *value, size_t len)
{
    lua_pushlstring(L, value, len);
    lua_setfield(L, -2, key);
}

void pv_set_bool(lua_State *L, const char *key, bool value)
{
    lua_pushboolean(L, value);
    lua_setfield(L, -2, key);
}
