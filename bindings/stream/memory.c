/*
 * memory.c: stream.string (a source over a Lua string), stream.buffer (a
 * sink that collects the bytes, up to a limit) and stream.discard.
 */
#include "stages.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    pv_stage base;
    const char *data;
    size_t len;
} string_source;

static int string_run(pv_stage *s, pv_err *err)
{
    string_source *ss = (string_source *)s;
    for (size_t off = 0; off < ss->len; off += PV_STREAM_CHUNK) {
        size_t n = ss->len - off < PV_STREAM_CHUNK ? ss->len - off : PV_STREAM_CHUNK;
        if (pv_emit(s, (const uint8_t *)ss->data + off, n, err) < 0) return -1;
    }
    return 0;
}

static const pv_stage_ops string_ops = {.name = "string", .run = string_run};

int pv_stream_string(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    string_source *ss = pv_stage_new(L, &string_ops, sizeof *ss, 2);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keeps the string alive */
    ss->data = data;
    ss->len = len;
    return 1;
}

typedef struct {
    pv_stage base;
    char *data;
    size_t len, cap, max;
} buffer_sink;

static int buffer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    buffer_sink *b = (buffer_sink *)s;
    if (b->len + n > b->max) {
        pv_err_set(err, "io", "buffer limit of %zu bytes exceeded", b->max);
        return -1;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            pv_err_set(err, "io", "out of memory buffering %zu bytes", b->len + n);
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    return 0;
}

static int buffer_report(pv_stage *s, lua_State *L)
{
    buffer_sink *b = (buffer_sink *)s;
    lua_createtable(L, 0, 2);
    pv_set_lstr(L, "data", b->data ? b->data : "", b->len);
    pv_set_int(L, "bytes", (lua_Integer)b->len);
    return 1;
}

static void buffer_release(pv_stage *s)
{
    buffer_sink *b = (buffer_sink *)s;
    free(b->data);
    b->data = NULL;
}

static const pv_stage_ops buffer_ops = {
    .name = "buffer", .write = buffer_write, .report = buffer_report, .release = buffer_release};

int pv_stream_buffer(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    static const char *const known[] = {"max", "label", NULL};
    pv_opt_only(L, opts, known);
    lua_Integer max = pv_opt_int(L, opts, "max", 256 * 1024 * 1024);
    buffer_sink *b = pv_stage_new(L, &buffer_ops, sizeof *b, opts);
    b->max = (size_t)max;
    return 1;
}

static int discard_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    (void)s, (void)d, (void)n, (void)err;
    return 0;
}

static const pv_stage_ops discard_ops = {.name = "discard", .write = discard_write};

int pv_stream_discard(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    pv_stage_new(L, &discard_ops, sizeof(pv_stage), opts);
    return 1;
}
