/*
 * manifest_fuzz.c: libFuzzer target for the manifest decoder
 * (scripts/lib/manifest.lua, manifest.decode), which reads manifests from
 * an untrusted bucket or directory. Whatever the text, decode returns a
 * manifest or raises an error of kind "verify": never another kind, never
 * a bare Lua error, never a crash. What it accepts must be usable by its
 * readers: manifest.row_counts does not raise, and manifest.encode writes
 * it again (a bucket restore keeps the manifest beside its local copy) as
 * text that decode accepts in turn.
 *
 * The decoder is Lua, which libFuzzer's instrumentation does not see (the
 * system's liblua and lua-cjson are not instrumented): a line hook counts
 * the Lua lines each input runs into libFuzzer's extra counters, so that
 * an input reaching a new line of lib/manifest.lua or lib/json.lua is kept.
 */
#include "runtime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_lines[1 << 14];

/* A counter per line of Lua run: the chunk (its source string, one per
 * file) and the line. */
static void count_line(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar)) return;
    size_t h = ((size_t)(uintptr_t)ar->source * 31u) ^ ((size_t)ar->currentline * 2654435761u);
    lua_lines[h % sizeof lua_lines]++;
}

/* The checks, in Lua: returns "ok", "refused", or raises what went wrong. */
static const char CHECK[] =
    "local manifest = require 'lib.manifest'\n"
    "return function(text)\n"
    "  local ok, m = pcall(manifest.decode, text, 'fuzz.manifest.json')\n"
    "  if not ok then\n"
    "    if type(m) ~= 'table' or m.kind ~= 'verify' then\n"
    "      error('decode raised something else: ' .. tostring(m), 0)\n"
    "    end\n"
    "    return 'refused'\n"
    "  end\n"
    "  if type(m) ~= 'table' then error('decode returned a ' .. type(m), 0) end\n"
    "  manifest.row_counts(m)\n"
    "  local again = manifest.encode(m)\n"
    "  local ok2, why = pcall(manifest.decode, again, 'again')\n"
    "  if not ok2 then error('encode wrote what decode refuses: ' .. tostring(why), 0) end\n"
    "  return 'ok'\n"
    "end\n";

static lua_State *state(void)
{
    static lua_State *L;
    if (L) return L;
    L = pv_runtime_new(NULL);
    if (!L) abort();
    pv_log_set_level(PV_LOG_OFF);
    if (luaL_loadbuffer(L, CHECK, sizeof CHECK - 1, "=manifest_fuzz") != LUA_OK) abort();
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) abort();
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.manifest_check");
    lua_sethook(L, count_line, LUA_MASKLINE, 0);
    return L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = state();
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.manifest_check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "manifest_fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
