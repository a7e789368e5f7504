/*
 * unzstd_fuzz.c: libFuzzer target for the parallel zstd decoder
 * (bindings/stream/unzstd_mt.c), whose walk over frame and block headers
 * reads untrusted bytes (a backup from the bucket). Differential: each
 * input goes through stream.unzstd on one thread and on three, fed in
 * pieces whose sizes come from the input itself; both must succeed with
 * the same output or both fail with kind "io".
 */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    pv_stage base;
    uint64_t hash;
} sink_stage;

static int sink_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    (void)err;
    sink_stage *k = (sink_stage *)s;
    for (size_t i = 0; i < n; i++)
        k->hash = (k->hash ^ d[i]) * 1099511628211ULL;
    return 0;
}

static const pv_stage_ops sink_ops = {.name = "sink", .write = sink_write};

static lua_State *state(void)
{
    static lua_State *L;
    if (L) return L;
    L = pv_runtime_new(NULL);
    if (!L) abort();
    pv_log_set_level(PV_LOG_OFF);
    if (luaL_dostring(L, "local stream = require 'pgvault.stream'\n"
                         "return function(threads) return stream.unzstd { threads = threads } end"))
        abort();
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.unzstd");
    return L;
}

typedef struct {
    bool ok;
    uint64_t hash, bytes;
    char kind[24];
} outcome;

/* Runs one decoder over the input as the engine would: start, writes in
 * pieces, finish (or abort), release. */
static outcome run(lua_State *L, int threads, const uint8_t *data, size_t size)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.unzstd");
    lua_pushinteger(L, threads);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) abort();
    pv_stage *st = pv_stage_check(L, -1);
    sink_stage sink;
    memset(&sink, 0, sizeof sink);
    sink.base.ops = &sink_ops;
    sink.hash = 14695981039346656037ULL;
    st->next = &sink.base;
    pv_err err;
    pv_err_clear(&err);
    st->state = PV_STAGE_STARTED;
    int rc = st->ops->start(st, &err);
    unsigned seed = size ? data[0] : 0;
    for (size_t at = 0; rc == 0 && at < size;) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 300;
        if ((seed >> 8) % 4 == 0) n = size; /* sometimes all of it */
        if (n > size - at) n = size - at;
        st->bytes_in += n;
        rc = st->ops->write(st, data + at, n, &err);
        at += n;
    }
    if (rc == 0) rc = st->ops->finish(st, &err);
    if (rc != 0 && st->ops->abort) st->ops->abort(st);
    st->state = PV_STAGE_USED;
    pv_stage_release(st);
    lua_pop(L, 1);
    outcome o = {rc == 0, sink.hash, sink.base.bytes_in, ""};
    if (rc != 0) snprintf(o.kind, sizeof o.kind, "%s", err.kind);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = state();
    outcome one = run(L, 1, data, size), three = run(L, 3, data, size);
    if (one.ok != three.ok) abort();
    if (one.ok && (one.hash != three.hash || one.bytes != three.bytes)) abort();
    if (!one.ok && (strcmp(one.kind, "io") != 0 || strcmp(three.kind, "io") != 0)) abort();
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
