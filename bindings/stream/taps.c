/*
 * taps.c: stages that pass bytes on unchanged and report what they saw:
 * stream.sha256 (OpenSSL EVP; optionally checks the digest and size it
 * was told to expect, before the sink commits) and stream.counter.
 */
#include "stages.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
    pv_stage base;
    EVP_MD_CTX *ctx;
    char hex[65];
    char expect[65];        /* "" unless a digest is expected */
    long long expect_bytes; /* -1 unless a size is expected */
    char what[512];         /* what the bytes are, for messages */
} sha256_tap;

static int sha256_start(pv_stage *s, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    t->ctx = EVP_MD_CTX_new();
    if (!t->ctx || EVP_DigestInit_ex(t->ctx, EVP_sha256(), NULL) != 1) {
        pv_err_set(err, "internal", "cannot initialise SHA-256");
        return -1;
    }
    return 0;
}

static int sha256_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    EVP_DigestUpdate(t->ctx, d, n);
    return pv_emit(s, d, n, err);
}

static int sha256_finish(pv_stage *s, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(t->ctx, md, &len) != 1 || len != 32) {
        pv_err_set(err, "internal", "cannot finish SHA-256");
        return -1;
    }
    pv_hex(md, 32, t->hex);
    if (t->expect_bytes >= 0 && (long long)s->bytes_in != t->expect_bytes) {
        pv_err_set(err, "verify", "%s has %llu bytes but its manifest says %lld", t->what,
                   (unsigned long long)s->bytes_in, t->expect_bytes);
        pv_err_str(err, "what", t->what);
        return -1;
    }
    if (t->expect[0] && strcasecmp(t->hex, t->expect) != 0) {
        pv_err_set(err, "verify", "%s has SHA-256 %s but its manifest says %s", t->what, t->hex,
                   t->expect);
        pv_err_str(err, "what", t->what);
        return -1;
    }
    return 0;
}

static int sha256_report(pv_stage *s, lua_State *L)
{
    sha256_tap *t = (sha256_tap *)s;
    lua_createtable(L, 0, 2);
    if (t->hex[0]) {
        pv_set_str(L, "sha256", t->hex);
    }
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    return 1;
}

static void sha256_release(pv_stage *s)
{
    sha256_tap *t = (sha256_tap *)s;
    EVP_MD_CTX_free(t->ctx);
    t->ctx = NULL;
}

static const pv_stage_ops sha256_ops = {.name = "sha256",
                                        .start = sha256_start,
                                        .write = sha256_write,
                                        .finish = sha256_finish,
                                        .report = sha256_report,
                                        .release = sha256_release};

static bool is_sha256_hex(const char *s)
{
    size_t n = 0;
    while (isxdigit((unsigned char)s[n]))
        n++;
    return n == 64 && s[n] == '\0';
}

/* stream.sha256{expect = HEX, bytes = N, what = "s3://b/k", label =} */
int pv_stream_sha256(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    static const char *const known[] = {"expect", "bytes", "what", "label", NULL};
    pv_opt_only(L, opts, known);
    const char *expect = pv_opt_str(L, opts, "expect", NULL);
    lua_Integer bytes = pv_opt_int(L, opts, "bytes", -1);
    const char *what = pv_opt_str(L, opts, "what", "the data");
    if (expect && !is_sha256_hex(expect))
        return luaL_argerror(L, 1, "field 'expect': 64 hexadecimal digits expected");
    if (bytes < -1) return luaL_argerror(L, 1, "field 'bytes': a size (0 or more) expected");
    sha256_tap *t = pv_stage_new(L, &sha256_ops, sizeof *t, opts);
    snprintf(t->expect, sizeof t->expect, "%s", expect ? expect : "");
    t->expect_bytes = bytes;
    snprintf(t->what, sizeof t->what, "%s", what);
    return 1;
}

static int counter_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    return pv_emit(s, d, n, err);
}

static int counter_report(pv_stage *s, lua_State *L)
{
    lua_createtable(L, 0, 1);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    return 1;
}

static const pv_stage_ops counter_ops = {
    .name = "counter", .write = counter_write, .report = counter_report};

int pv_stream_counter(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    pv_stage_new(L, &counter_ops, sizeof(pv_stage), opts);
    return 1;
}
