/*
 * taps.c: stages that pass bytes on unchanged and report what they saw:
 * stream.sha256 (OpenSSL EVP) and stream.counter.
 */
#include "stages.h"

#include <openssl/evp.h>

typedef struct {
    pv_stage base;
    EVP_MD_CTX *ctx;
    char hex[65];
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

int pv_stream_sha256(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    pv_stage_new(L, &sha256_ops, sizeof(sha256_tap), opts);
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
    int opts = lua_istable(L, 1) ? 1 : 0;
    pv_stage_new(L, &counter_ops, sizeof(pv_stage), opts);
    return 1;
}
