/*
 * age_fuzz.c: libFuzzer target for the age decryptor (ASCII armor, header
 * parser, stanza unwrapping for X25519, ML-KEM-768 hybrid and scrypt
 * identities, header MAC, STREAM), driven through pgvault.crypto exactly as
 * a pipeline runs it. Any outcome but success or a "crypto" error aborts.
 * The seed corpus (tests/fuzz/age_corpus) holds small C2SP CCTV vectors,
 * whose identities and passphrase are the ones below, so mutations reach
 * the payload too.
 */
#include "pgvault.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
    "local crypto = require 'pgvault.crypto'\n"
    "local stream = require 'pgvault.stream'\n"
    "local ids = { crypto.identity("
    "'AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0'),\n"
    "  crypto.identity("
    "'AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG') }\n"
    "return function(data)\n"
    "  local ok, err = pcall(stream.run, { stream.string(data),\n"
    "    crypto.decryptor { identities = ids, passphrase = 'password', max_work_factor = 10 },\n"
    "    stream.discard() })\n"
    "  if not ok and (type(err) ~= 'table' or err.kind ~= 'crypto') then\n"
    "    error(tostring(err), 0)\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (!L) {
        L = pv_runtime_new(NULL);
        if (!L || luaL_loadstring(L, DRIVER) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) abort();
        lua_setfield(L, LUA_REGISTRYINDEX, "age_fuzz_driver");
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "age_fuzz_driver");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "age_fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
