/*
 * expect.c: the s3.expect tap. Passes bytes through unchanged while
 * counting and hashing them; its finish() fails when the size or SHA-256
 * differs from what a manifest promised. It finishes before the sink
 * commits, so a download that does not match leaves no file behind.
 */
#include "s3int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
    pv_stage base;
    EVP_MD_CTX *md;
    long long bytes; /* expected, -1 for any */
    char sha256[65]; /* expected, "" for any */
    char got[65];
    char what[256];
} s3_expect;

static int expect_start(pv_stage *st, pv_err *err)
{
    s3_expect *e = (s3_expect *)st;
    e->md = EVP_MD_CTX_new();
    if (!e->md || EVP_DigestInit_ex(e->md, EVP_sha256(), NULL) != 1) {
        pv_err_set(err, "verify", "cannot start SHA-256");
        return -1;
    }
    return 0;
}

static int expect_write(pv_stage *st, const uint8_t *data, size_t len, pv_err *err)
{
    s3_expect *e = (s3_expect *)st;
    EVP_DigestUpdate(e->md, data, len);
    return pv_emit(st, data, len, err);
}

static int expect_finish(pv_stage *st, pv_err *err)
{
    s3_expect *e = (s3_expect *)st;
    uint8_t md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(e->md, md, &n);
    pv_hex(md, 32, e->got);
    if (e->bytes >= 0 && (long long)st->bytes_in != e->bytes) {
        pv_err_set(err, "verify", "%s has %llu bytes but its manifest says %lld", e->what,
                   (unsigned long long)st->bytes_in, e->bytes);
        return -1;
    }
    if (e->sha256[0] && strcasecmp(e->sha256, e->got) != 0) {
        pv_err_set(err, "verify", "%s has SHA-256 %s but its manifest says %s", e->what, e->got,
                   e->sha256);
        return -1;
    }
    return 0;
}

static int expect_report(pv_stage *st, lua_State *L)
{
    s3_expect *e = (s3_expect *)st;
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)st->bytes_in);
    lua_setfield(L, -2, "bytes");
    lua_pushstring(L, e->got);
    lua_setfield(L, -2, "sha256");
    return 1;
}

static void expect_release(pv_stage *st)
{
    s3_expect *e = (s3_expect *)st;
    if (e->md) EVP_MD_CTX_free(e->md);
    e->md = NULL;
}

static const pv_stage_ops expect_ops = {.name = "expect",
                                        .start = expect_start,
                                        .write = expect_write,
                                        .finish = expect_finish,
                                        .report = expect_report,
                                        .release = expect_release};

/* s3.expect{bytes=, sha256=, what="s3://…"} */
int s3_push_expect(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer bytes = pv_opt_int(L, 1, "bytes", -1);
    const char *sha = pv_opt_str(L, 1, "sha256", "");
    const char *what = pv_opt_str(L, 1, "what", "the data");
    if (sha[0] && (strlen(sha) != 64 || strspn(sha, "0123456789abcdefABCDEF") != 64))
        return luaL_argerror(L, 1, "sha256 must be 64 hex digits");
    s3_expect *e = pv_stage_new(L, &expect_ops, sizeof *e, 1);
    e->bytes = bytes;
    snprintf(e->sha256, sizeof e->sha256, "%s", sha);
    snprintf(e->what, sizeof e->what, "%s", what);
    return 1;
}
