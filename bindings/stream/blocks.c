/*
 * blocks.c: the SHA-256 of each block of a stream, so that a reader can
 * authenticate a stored object block by block before any of its bytes are
 * used (a signed manifest lists the digests).
 *   stream.block_digests{block_size=}  tap; reports {block_size=, blocks={hex...}, bytes=}
 *   stream.verify_blocks{block_size=, blocks={hex...}, what=, kind=}
 *       filter: holds each block until its SHA-256 matches the next listed
 *       digest, then releases it; a block that differs, data beyond the last
 *       block and an end before it fail with none of that block released.
 * A stream is cut into block_size slices; the last one may be shorter but
 * is never empty, so an empty stream has no blocks. Memory: one block.
 */
#include "stages.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST 32
/* A block is held in memory whole: more than this is a mistake. */
#define MAX_BLOCK ((lua_Integer)1 << 30)

static lua_Integer check_block_size(lua_State *L, int opts)
{
    lua_Integer size = pv_opt_int(L, opts, "block_size", 0);
    if (size < 1 || size > MAX_BLOCK) luaL_argerror(L, opts, "block_size must be 1 byte to 1 GiB");
    return size;
}

static int digest(EVP_MD_CTX *ctx, const uint8_t *data, size_t len, uint8_t out[DIGEST])
{
    unsigned int n = 0;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != DIGEST)
        return -1;
    return 0;
}

/* ---- the tap -------------------------------------------------------- */

typedef struct {
    pv_stage base;
    size_t block_size;
    EVP_MD_CTX *ctx;
    size_t fill; /* bytes of the current block hashed so far */
    uint8_t (*digests)[DIGEST];
    size_t n, cap;
} digests_tap;

static int tap_start(pv_stage *s, pv_err *err)
{
    digests_tap *t = (digests_tap *)s;
    t->ctx = EVP_MD_CTX_new();
    if (!t->ctx || EVP_DigestInit_ex(t->ctx, EVP_sha256(), NULL) != 1) {
        pv_err_set(err, "internal", "cannot initialise SHA-256");
        return -1;
    }
    return 0;
}

static int tap_close_block(digests_tap *t, pv_err *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        void *p = realloc(t->digests, cap * DIGEST);
        if (!p) {
            pv_err_set(err, "internal", "out of memory");
            return -1;
        }
        t->digests = p;
        t->cap = cap;
    }
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(t->ctx, t->digests[t->n], &len) != 1 || len != DIGEST ||
        EVP_DigestInit_ex(t->ctx, EVP_sha256(), NULL) != 1) {
        pv_err_set(err, "internal", "cannot compute SHA-256");
        return -1;
    }
    t->n++;
    t->fill = 0;
    return 0;
}

static int tap_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    digests_tap *t = (digests_tap *)s;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        size_t take = t->block_size - t->fill < left ? t->block_size - t->fill : left;
        EVP_DigestUpdate(t->ctx, p, take);
        t->fill += take;
        p += take;
        left -= take;
        if (t->fill == t->block_size && tap_close_block(t, err) < 0) return -1;
    }
    return pv_emit(s, data, len, err);
}

static int tap_finish(pv_stage *s, pv_err *err)
{
    digests_tap *t = (digests_tap *)s;
    return t->fill > 0 ? tap_close_block(t, err) : 0;
}

static int tap_report(pv_stage *s, lua_State *L)
{
    digests_tap *t = (digests_tap *)s;
    lua_createtable(L, 0, 3);
    pv_set_int(L, "block_size", (lua_Integer)t->block_size);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    lua_createtable(L, (int)t->n, 0);
    for (size_t i = 0; i < t->n; i++) {
        char hex[2 * DIGEST + 1];
        pv_hex(t->digests[i], DIGEST, hex);
        lua_pushstring(L, hex);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "blocks");
    return 1;
}

static void tap_release(pv_stage *s)
{
    digests_tap *t = (digests_tap *)s;
    EVP_MD_CTX_free(t->ctx);
    free(t->digests);
    t->ctx = NULL;
    t->digests = NULL;
}

static const pv_stage_ops tap_ops = {.name = "blocks",
                                     .start = tap_start,
                                     .write = tap_write,
                                     .finish = tap_finish,
                                     .report = tap_report,
                                     .release = tap_release};

int pv_stream_block_digests(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer size = check_block_size(L, 1);
    digests_tap *t = pv_stage_new(L, &tap_ops, sizeof *t, 1);
    t->block_size = (size_t)size;
    return 1;
}

/* ---- the filter ----------------------------------------------------- */

typedef struct {
    pv_stage base;
    size_t block_size;
    uint8_t (*expected)[DIGEST];
    size_t nblocks;
    size_t next; /* index of the block being filled */
    uint8_t *buf;
    size_t fill;
    EVP_MD_CTX *ctx;
    char what[256];
    char kind[24];
} blocks_filter;

static int filter_fail(blocks_filter *f, pv_err *err, const char *fmt, ...) PV_PRINTF(3, 4);

static int filter_fail(blocks_filter *f, pv_err *err, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    pv_err_set(err, f->kind, "%s %s; none of it was used", f->what, why);
    pv_err_int(err, "block", (long long)f->next);
    return -1;
}

/* Checks block f->next (len bytes at data) and releases it. */
static int filter_block(blocks_filter *f, const uint8_t *data, size_t len, pv_err *err)
{
    uint8_t md[DIGEST];
    if (digest(f->ctx, data, len, md) < 0) {
        pv_err_set(err, "internal", "cannot compute SHA-256");
        return -1;
    }
    if (memcmp(md, f->expected[f->next], DIGEST) != 0) {
        unsigned long long from = (unsigned long long)f->next * f->block_size;
        return filter_fail(f, err,
                           "does not match what was recorded: block %zu (bytes %llu to %llu) "
                           "differs, so the object was replaced or damaged",
                           f->next, from, from + len - 1);
    }
    f->next++;
    return pv_emit(&f->base, data, len, err);
}

static int filter_beyond(blocks_filter *f, pv_err *err)
{
    return filter_fail(f, err,
                       "is longer than what was recorded (%zu blocks of %zu bytes): data was "
                       "appended to it",
                       f->nblocks, f->block_size);
}

static int filter_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    blocks_filter *f = (blocks_filter *)s;
    while (len > 0) {
        if (f->next >= f->nblocks) return filter_beyond(f, err);
        if (f->fill == 0 && len >= f->block_size) {
            /* a whole block in the input: checked in place */
            if (filter_block(f, data, f->block_size, err) < 0) return -1;
            data += f->block_size;
            len -= f->block_size;
            continue;
        }
        if (!f->buf && !(f->buf = malloc(f->block_size))) {
            pv_err_set(err, "internal", "out of memory for a block of %zu bytes", f->block_size);
            return -1;
        }
        size_t take = f->block_size - f->fill < len ? f->block_size - f->fill : len;
        memcpy(f->buf + f->fill, data, take);
        f->fill += take;
        data += take;
        len -= take;
        if (f->fill == f->block_size) {
            f->fill = 0;
            if (filter_block(f, f->buf, f->block_size, err) < 0) return -1;
        }
    }
    return 0;
}

static int filter_finish(pv_stage *s, pv_err *err)
{
    blocks_filter *f = (blocks_filter *)s;
    if (f->fill > 0 && f->next + 1 == f->nblocks) {
        size_t n = f->fill;
        f->fill = 0;
        if (filter_block(f, f->buf, n, err) < 0) return -1;
    }
    if (f->next < f->nblocks || f->fill > 0)
        return filter_fail(f, err,
                           "ends early: it has %llu bytes, but %zu blocks of %zu bytes were "
                           "recorded, so it is truncated",
                           (unsigned long long)s->bytes_in, f->nblocks, f->block_size);
    return 0;
}

static int filter_start(pv_stage *s, pv_err *err)
{
    blocks_filter *f = (blocks_filter *)s;
    f->ctx = EVP_MD_CTX_new();
    if (!f->ctx) {
        pv_err_set(err, "internal", "cannot initialise SHA-256");
        return -1;
    }
    return 0;
}

static int filter_report(pv_stage *s, lua_State *L)
{
    blocks_filter *f = (blocks_filter *)s;
    lua_createtable(L, 0, 3);
    pv_set_int(L, "checked", (lua_Integer)f->next);
    pv_set_int(L, "blocks", (lua_Integer)f->nblocks);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_out);
    return 1;
}

static void filter_release(pv_stage *s)
{
    blocks_filter *f = (blocks_filter *)s;
    EVP_MD_CTX_free(f->ctx);
    free(f->buf);
    free(f->expected);
    f->ctx = NULL;
    f->buf = NULL;
    f->expected = NULL;
}

static const pv_stage_ops filter_ops = {.name = "verify_blocks",
                                        .start = filter_start,
                                        .write = filter_write,
                                        .finish = filter_finish,
                                        .report = filter_report,
                                        .release = filter_release};

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The list of hex digests at the top of the stack into f->expected. */
static void parse_digests(lua_State *L, int opts, blocks_filter *f)
{
    if (!lua_istable(L, -1)) luaL_argerror(L, opts, "blocks must be a list of SHA-256 hex digests");
    f->nblocks = (size_t)luaL_len(L, -1);
    f->expected = calloc(f->nblocks + 1, DIGEST);
    if (!f->expected) luaL_error(L, "out of memory");
    for (size_t i = 0; i < f->nblocks; i++) {
        lua_geti(L, -1, (lua_Integer)i + 1);
        size_t n = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        bool ok = s && n == 2 * DIGEST;
        for (size_t k = 0; ok && k < DIGEST; k++) {
            int hi = hex_value((unsigned char)s[2 * k]),
                lo = hex_value((unsigned char)s[2 * k + 1]);
            ok = hi >= 0 && lo >= 0;
            if (ok) f->expected[i][k] = (uint8_t)(hi << 4 | lo);
        }
        if (!ok)
            luaL_argerror(L, opts,
                          lua_pushfstring(L, "blocks[%d] is not a SHA-256 hex digest", (int)i + 1));
        lua_pop(L, 1);
    }
}

int pv_stream_verify_blocks(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer size = check_block_size(L, 1);
    const char *what = pv_opt_str(L, 1, "what", "the stream");
    const char *kind = pv_opt_str(L, 1, "kind", "verify");
    blocks_filter *f = pv_stage_new(L, &filter_ops, sizeof *f, 1);
    f->block_size = (size_t)size;
    snprintf(f->what, sizeof f->what, "%s", what);
    snprintf(f->kind, sizeof f->kind, "%s", kind);
    lua_getfield(L, 1, "blocks");
    parse_digests(L, 1, f);
    lua_pop(L, 1);
    return 1;
}
