/*
 * decrypt.c: the age decryptor stage (crypto.decryptor). It parses the
 * optional armor and the header, unwraps the file key, checks the header
 * MAC, then opens the STREAM one 64 KiB chunk at a time: plaintext goes
 * downstream only after its chunk authenticated, and whatever is wrong
 * (truncation, tampering, trailing data) fails the pipeline.
 */
#include "age.h"

#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

enum { P_DETECT = 0, P_HEADER, P_NONCE, P_PAYLOAD };

typedef struct {
    pv_stage base;
    age_identity *ids;
    int nids;
    int max_work_factor;
    int armor_mode; /* -1 detect, 0 binary, 1 armored */
    int engine;
    int phase;
    bool armored;
    age_armor_reader ar;
    age_header_parser hp;
    uint8_t nonce[AGE_NONCE_LEN];
    size_t nnonce;
    age_stream stream;
    uint8_t *file_key; /* sodium_malloc'd; wiped once the payload key is derived */
    uint8_t *cbuf;     /* one encrypted chunk */
    size_t clen;
    uint8_t *pbuf; /* its plaintext */
    uint64_t chunks;
    uint64_t plain;
    char matched[16];
    char failure[24];
} decryptor;

static int payload_fail(decryptor *d, pv_err *err, const char *why)
{
    age_fail(err, AGE_FAIL_PAYLOAD, "age: payload chunk %llu %s", (unsigned long long)d->chunks,
             why);
    pv_err_int(err, "chunk", (long long)d->chunks);
    return -1;
}

static int release(decryptor *d, size_t n, pv_err *err)
{
    d->chunks++;
    d->plain += n;
    return pv_emit(&d->base, d->pbuf, n, err);
}

/* A chunk with more data after it: not the last one. */
static int open_middle(decryptor *d, const uint8_t *in, pv_err *err)
{
    if (age_stream_open(&d->stream, in, AGE_ENC_CHUNK, false, d->pbuf) == 0)
        return release(d, AGE_CHUNK, err);
    if (age_stream_open(&d->stream, in, AGE_ENC_CHUNK, true, d->pbuf) == 0) {
        if (release(d, AGE_CHUNK, err) < 0) return -1;
        d->chunks--;
        return payload_fail(d, err,
                            "is the final chunk but data follows it: trailing data after the "
                            "end of the encrypted file (tampered?)");
    }
    return payload_fail(d, err, "failed authentication: file is truncated or tampered");
}

static int payload_feed(decryptor *d, const uint8_t *data, size_t len, pv_err *err)
{
    while (len > 0) {
        if (d->clen == AGE_ENC_CHUNK) {
            d->clen = 0;
            if (open_middle(d, d->cbuf, err) < 0) return -1;
        }
        if (d->clen == 0 && len > AGE_ENC_CHUNK) {
            if (open_middle(d, data, err) < 0) return -1;
            data += AGE_ENC_CHUNK;
            len -= AGE_ENC_CHUNK;
            continue;
        }
        size_t take = AGE_ENC_CHUNK - d->clen < len ? AGE_ENC_CHUNK - d->clen : len;
        memcpy(d->cbuf + d->clen, data, take);
        d->clen += take;
        data += take;
        len -= take;
    }
    return 0;
}

static int header_done(decryptor *d, pv_err *err)
{
    const char *matched = NULL;
    if (age_header_unwrap(&d->hp, d->ids, d->nids, d->max_work_factor, d->file_key, &matched, err) <
        0)
        return -1;
    snprintf(d->matched, sizeof d->matched, "%s", matched);
    uint8_t mac[32];
    age_header_mac(d->file_key, (const uint8_t *)d->hp.buf, d->hp.mac_at + 3, mac);
    if (sodium_memcmp(mac, d->hp.mac, sizeof mac) != 0) {
        age_fail(err, AGE_FAIL_HMAC,
                 "age: the header MAC does not match: the header was tampered with");
        return -1;
    }
    return 0;
}

static int binary_feed(void *ctx, const uint8_t *data, size_t len, pv_err *err)
{
    decryptor *d = ctx;
    while (len > 0) {
        if (d->phase == P_HEADER) {
            long n = age_header_feed(&d->hp, data, len, err);
            if (n < 0) return -1;
            data += n;
            len -= (size_t)n;
            if (d->hp.done) {
                if (header_done(d, err) < 0) return -1;
                d->phase = P_NONCE;
            }
        } else if (d->phase == P_NONCE) {
            size_t take = AGE_NONCE_LEN - d->nnonce < len ? AGE_NONCE_LEN - d->nnonce : len;
            memcpy(d->nonce + d->nnonce, data, take);
            d->nnonce += take;
            data += take;
            len -= take;
            if (d->nnonce == AGE_NONCE_LEN) {
                int rc = age_stream_init(&d->stream, d->engine, d->file_key, d->nonce, false, err);
                sodium_memzero(d->file_key, AGE_FILE_KEY_LEN);
                if (rc < 0) return -1;
                d->phase = P_PAYLOAD;
            }
        } else {
            return payload_feed(d, data, len, err);
        }
    }
    return 0;
}

static int decryptor_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    decryptor *d = (decryptor *)s;
    if (len == 0) return 0;
    if (d->phase == P_DETECT) {
        d->armored =
            d->armor_mode == 1 || (d->armor_mode < 0 && (data[0] == '-' || isspace(data[0])));
        d->phase = P_HEADER;
    }
    int rc = d->armored ? age_armor_read(&d->ar, data, len, binary_feed, d, err)
                        : binary_feed(d, data, len, err);
    if (rc < 0 && err->set) {
        const char *f = NULL;
        for (int i = 0; i < err->nfields; i++)
            if (strcmp(err->fields[i].key, "failure") == 0) f = err->fields[i].str;
        if (f) snprintf(d->failure, sizeof d->failure, "%s", f);
    }
    return rc;
}

static int finish_payload(decryptor *d, pv_err *err)
{
    switch (d->phase) {
    case P_DETECT:
        age_fail(err, AGE_FAIL_HEADER, "age: the input is empty: not an age file");
        return -1;
    case P_HEADER:
        age_fail(err, AGE_FAIL_HEADER, "age: the file ends inside its header: it is truncated");
        return -1;
    case P_NONCE:
        age_fail(err, AGE_FAIL_HEADER,
                 "age: the file ends before its payload nonce: it is truncated");
        return -1;
    default:
        break;
    }
    if (d->clen == 0) {
        if (d->chunks == 0) return payload_fail(d, err, "is missing: the file is truncated");
        d->chunks--;
        return payload_fail(d, err,
                            "is not marked final and nothing follows: the file is "
                            "truncated");
    }
    if (d->clen < AGE_TAG_LEN)
        return payload_fail(d, err, "is shorter than its tag: the file is truncated");
    size_t plen = d->clen - AGE_TAG_LEN;
    if (age_stream_open(&d->stream, d->cbuf, d->clen, true, d->pbuf) == 0) {
        if (plen == 0 && d->chunks > 0)
            return payload_fail(d, err,
                                "is an empty final chunk, which only an empty file may "
                                "have: the file is tampered");
        d->clen = 0;
        return release(d, plen, err);
    }
    if (d->clen == AGE_ENC_CHUNK &&
        age_stream_open(&d->stream, d->cbuf, d->clen, false, d->pbuf) == 0) {
        if (release(d, plen, err) < 0) return -1;
        return payload_fail(d, err, "is missing: the file is truncated after a full chunk");
    }
    return payload_fail(d, err, "failed authentication: file is truncated or tampered");
}

static int decryptor_finish(pv_stage *s, pv_err *err)
{
    decryptor *d = (decryptor *)s;
    int rc = 0;
    if (d->armored) rc = age_armor_finish(&d->ar, err);
    if (rc == 0) rc = finish_payload(d, err);
    if (rc < 0) {
        for (int i = 0; i < err->nfields; i++)
            if (strcmp(err->fields[i].key, "failure") == 0)
                snprintf(d->failure, sizeof d->failure, "%s", err->fields[i].str);
    }
    age_stream_free(&d->stream);
    return rc;
}

static int decryptor_start(pv_stage *s, pv_err *err)
{
    decryptor *d = (decryptor *)s;
    d->cbuf = malloc(AGE_ENC_CHUNK);
    d->pbuf = malloc(AGE_ENC_CHUNK);
    d->file_key = sodium_malloc(AGE_FILE_KEY_LEN);
    if (!d->cbuf || !d->pbuf || !d->file_key) {
        pv_err_set(err, "crypto", "out of memory");
        return -1;
    }
    return 0;
}

static void decryptor_abort(pv_stage *s)
{
    decryptor *d = (decryptor *)s;
    age_stream_free(&d->stream);
    if (d->pbuf) sodium_memzero(d->pbuf, AGE_ENC_CHUNK);
    if (d->file_key) sodium_free(d->file_key);
    d->file_key = NULL;
}

static int decryptor_report(pv_stage *s, lua_State *L)
{
    decryptor *d = (decryptor *)s;
    lua_createtable(L, 0, 6);
    pv_set_int(L, "bytes", (lua_Integer)d->plain);
    pv_set_int(L, "bytes_in", (lua_Integer)s->bytes_in);
    pv_set_int(L, "chunks", (lua_Integer)d->chunks);
    pv_set_bool(L, "armored", d->armored);
    pv_set_str(L, "recipient_type", d->matched[0] ? d->matched : NULL);
    pv_set_str(L, "failure", d->failure[0] ? d->failure : NULL);
    return 1;
}

static void decryptor_release(pv_stage *s)
{
    decryptor *d = (decryptor *)s;
    decryptor_abort(s);
    for (int i = 0; i < d->nids; i++)
        age_identity_free(&d->ids[i]);
    free(d->ids);
    d->ids = NULL;
    d->nids = 0;
    age_header_free(&d->hp);
    free(d->cbuf);
    free(d->pbuf);
    d->cbuf = d->pbuf = NULL;
}

static const pv_stage_ops decryptor_ops = {.name = "decrypt",
                                           .start = decryptor_start,
                                           .write = decryptor_write,
                                           .finish = decryptor_finish,
                                           .abort = decryptor_abort,
                                           .report = decryptor_report,
                                           .release = decryptor_release};

int age_push_decryptor(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int max_wf = (int)pv_opt_int(L, 1, "max_work_factor", AGE_MAX_WORK_FACTOR);
    if (max_wf < 1 || max_wf > 30) return luaL_argerror(L, 1, "max_work_factor must be 1..30");
    const char *aead = pv_opt_str(L, 1, "aead", "openssl");
    if (strcmp(aead, "openssl") != 0 && strcmp(aead, "sodium") != 0)
        return luaL_argerror(L, 1, "aead must be \"openssl\" or \"sodium\"");
    lua_getfield(L, 1, "armor");
    int armor_mode = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    decryptor *d = pv_stage_new(L, &decryptor_ops, sizeof *d, 1);
    d->max_work_factor = max_wf;
    d->armor_mode = armor_mode;
    d->engine = strcmp(aead, "sodium") == 0 ? AGE_AEAD_SODIUM : AGE_AEAD_OPENSSL;
    age_collect_identities(L, 1, &d->ids, &d->nids);
    return 1;
}
