/*
 * encrypt.c: the age encryptor stage (crypto.encryptor): a fresh file key
 * wrapped for every X25519 recipient (or one scrypt passphrase stanza), the
 * header MAC, a fresh payload nonce, then the plaintext sealed in 64 KiB
 * STREAM chunks, optionally ASCII-armored.
 */
#include "age.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    uint8_t pub[AGE_KEY_LEN];
    uint8_t *hybrid_ek; /* post-quantum recipient (malloc), else NULL */
} recipient;

typedef struct {
    pv_stage base;
    recipient *pubs;
    int npubs;
    age_identity pass;
    int work_factor;
    bool armor;
    int engine;
    age_stream stream;
    uint8_t *pbuf; /* plaintext waiting to fill a chunk */
    size_t plen;
    uint8_t *cbuf;
    age_armor_writer aw;
    uint64_t chunks;
} encryptor;

static int raw_sink(void *ctx, const uint8_t *data, size_t len, pv_err *err)
{
    return pv_emit(ctx, data, len, err);
}

static int out(encryptor *e, const uint8_t *data, size_t len, pv_err *err)
{
    if (e->armor) return age_armor_write(&e->aw, data, len, raw_sink, &e->base, err);
    return pv_emit(&e->base, data, len, err);
}

static int encryptor_start(pv_stage *s, pv_err *err)
{
    encryptor *e = (encryptor *)s;
    e->pbuf = malloc(AGE_CHUNK);
    e->cbuf = malloc(AGE_ENC_CHUNK);
    uint8_t *file_key = sodium_malloc(AGE_FILE_KEY_LEN);
    if (!e->pbuf || !e->cbuf || !file_key) {
        if (file_key) sodium_free(file_key);
        pv_err_set(err, "crypto", "out of memory");
        return -1;
    }
    randombytes_buf(file_key, AGE_FILE_KEY_LEN);
    age_text t = {0};
    int rc = age_text_add(&t, "age-encryption.org/v1\n", 22);
    for (int i = 0; rc == 0 && i < e->npubs; i++)
        rc = e->pubs[i].hybrid_ek ? age_wrap_hybrid(&t, e->pubs[i].hybrid_ek, file_key, err)
                                  : age_wrap_x25519(&t, e->pubs[i].pub, file_key, err);
    if (rc == 0 && e->pass.secret)
        rc = age_wrap_scrypt(&t, e->pass.secret, e->pass.len, e->work_factor, file_key, err);
    if (rc == 0) rc = age_text_add(&t, "---", 3);
    if (rc == 0) {
        uint8_t mac[32];
        char b64[48];
        age_header_mac(file_key, (const uint8_t *)t.p, t.len, mac);
        age_b64_encode(mac, sizeof mac, b64);
        rc = age_text_add(&t, " ", 1) || age_text_add(&t, b64, strlen(b64)) ||
                     age_text_add(&t, "\n", 1)
                 ? -1
                 : 0;
    }
    uint8_t nonce[AGE_NONCE_LEN];
    randombytes_buf(nonce, sizeof nonce);
    if (rc == 0) rc = age_stream_init(&e->stream, e->engine, file_key, nonce, true, err);
    sodium_free(file_key);
    if (rc == 0) rc = out(e, (const uint8_t *)t.p, t.len, err);
    if (rc == 0) rc = out(e, nonce, sizeof nonce, err);
    free(t.p);
    if (rc < 0 && !err->set) pv_err_set(err, "crypto", "out of memory writing the age header");
    return rc;
}

static int seal(encryptor *e, const uint8_t *in, size_t n, bool last, pv_err *err)
{
    if (age_stream_seal(&e->stream, in, n, last, e->cbuf) < 0) {
        pv_err_set(err, "crypto", "ChaCha20-Poly1305 failed sealing chunk %llu",
                   (unsigned long long)e->chunks);
        return -1;
    }
    e->chunks++;
    return out(e, e->cbuf, n + AGE_TAG_LEN, err);
}

static int encryptor_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    encryptor *e = (encryptor *)s;
    while (len > 0) {
        if (e->plen == AGE_CHUNK) {
            e->plen = 0;
            if (seal(e, e->pbuf, AGE_CHUNK, false, err) < 0) return -1;
        }
        if (e->plen == 0 && len > AGE_CHUNK) {
            if (seal(e, data, AGE_CHUNK, false, err) < 0) return -1;
            data += AGE_CHUNK;
            len -= AGE_CHUNK;
            continue;
        }
        size_t take = AGE_CHUNK - e->plen < len ? AGE_CHUNK - e->plen : len;
        memcpy(e->pbuf + e->plen, data, take);
        e->plen += take;
        data += take;
        len -= take;
    }
    return 0;
}

static int encryptor_finish(pv_stage *s, pv_err *err)
{
    encryptor *e = (encryptor *)s;
    int rc = seal(e, e->pbuf, e->plen, true, err);
    e->plen = 0;
    if (rc == 0 && e->armor) rc = age_armor_close(&e->aw, raw_sink, &e->base, err);
    age_stream_free(&e->stream);
    return rc;
}

static void encryptor_abort(pv_stage *s)
{
    encryptor *e = (encryptor *)s;
    age_stream_free(&e->stream);
}

static int encryptor_report(pv_stage *s, lua_State *L)
{
    encryptor *e = (encryptor *)s;
    lua_createtable(L, 0, 4);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_out);
    pv_set_int(L, "bytes_in", (lua_Integer)s->bytes_in);
    pv_set_int(L, "chunks", (lua_Integer)e->chunks);
    pv_set_bool(L, "armored", e->armor);
    return 1;
}

static void encryptor_release(pv_stage *s)
{
    encryptor *e = (encryptor *)s;
    age_stream_free(&e->stream);
    age_identity_free(&e->pass);
    for (int i = 0; e->pubs && i < e->npubs; i++)
        free(e->pubs[i].hybrid_ek);
    free(e->pubs);
    e->pubs = NULL;
    if (e->pbuf) sodium_memzero(e->pbuf, AGE_CHUNK);
    free(e->pbuf);
    free(e->cbuf);
    e->pbuf = e->cbuf = NULL;
}

static const pv_stage_ops encryptor_ops = {.name = "encrypt",
                                           .start = encryptor_start,
                                           .write = encryptor_write,
                                           .finish = encryptor_finish,
                                           .abort = encryptor_abort,
                                           .report = encryptor_report,
                                           .release = encryptor_release};

int age_push_encryptor(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int wf = (int)pv_opt_int(L, 1, "work_factor", AGE_DEFAULT_WORK_FACTOR);
    if (wf < 1 || wf > 30) return luaL_argerror(L, 1, "work_factor must be 1..30");
    bool armor = pv_opt_bool(L, 1, "armor", false);
    const char *aead = pv_opt_str(L, 1, "aead", "openssl");
    if (strcmp(aead, "openssl") != 0 && strcmp(aead, "sodium") != 0)
        return luaL_argerror(L, 1, "aead must be \"openssl\" or \"sodium\"");
    lua_getfield(L, 1, "recipients");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        return luaL_argerror(L, 1, "recipients must be an array of age1... strings");
    int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    lua_getfield(L, 1, "passphrase");
    bool has_pass = !lua_isnil(L, -1);
    if (n == 0 && !has_pass) return luaL_argerror(L, 1, "no recipients and no passphrase");
    if (n > 0 && has_pass)
        return luaL_argerror(L, 1,
                             "a passphrase cannot be combined with recipients (age "
                             "requires an scrypt stanza to be alone)");
    encryptor *e = pv_stage_new(L, &encryptor_ops, sizeof *e, 1);
    e->work_factor = wf;
    e->armor = armor;
    e->engine = strcmp(aead, "sodium") == 0 ? AGE_AEAD_SODIUM : AGE_AEAD_OPENSSL;
    e->pubs = calloc((size_t)(n + 1), sizeof *e->pubs);
    if (!e->pubs) return luaL_error(L, "out of memory");
    int stage = lua_gettop(L);
    pv_err err;
    pv_err_clear(&err);
    int npq = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, stage - 2, i);
        size_t len;
        const char *r = lua_tolstring(L, -1, &len);
        if (!r) return luaL_argerror(L, 1, "recipients must be strings");
        recipient *rc = &e->pubs[i - 1];
        if (len > 7 && strncasecmp(r, "age1pq1", 7) == 0) {
            rc->hybrid_ek = malloc(AGE_HYBRID_EK);
            if (!rc->hybrid_ek) return luaL_error(L, "out of memory");
            e->npubs++;
            if (age_hybrid_recipient_parse(r, len, rc->hybrid_ek, &err) < 0)
                return pv_err_raise(L, &err);
            npq++;
        } else {
            if (age_recipient_parse(r, len, rc->pub, &err) < 0) return pv_err_raise(L, &err);
            e->npubs++;
        }
        lua_pop(L, 1);
    }
    if (npq > 0 && npq < n)
        return luaL_argerror(L, 1,
                             "post-quantum (age1pq1...) and classic recipients cannot be "
                             "mixed: the file would only be as strong as the classic ones");
    if (has_pass) {
        int rc;
        if (lua_type(L, stage - 1) == LUA_TSTRING) {
            size_t len;
            const char *p = lua_tolstring(L, stage - 1, &len);
            rc = age_identity_passphrase(&e->pass, p, len, &err);
        } else {
            age_identity *h = age_check_identity(L, stage - 1);
            if (h->type != AGE_ID_PASSPHRASE)
                return luaL_argerror(L, 1, "passphrase: expected a passphrase");
            rc = age_identity_copy(&e->pass, h, &err);
        }
        if (rc < 0) return pv_err_raise(L, &err);
    }
    lua_replace(L, stage - 2);
    lua_settop(L, stage - 2);
    return 1;
}
