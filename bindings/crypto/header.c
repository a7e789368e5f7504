/*
 * header.c: the age v1 header: an incremental, strict parser (version line,
 * recipient stanzas, MAC line), unwrapping the file key with X25519 and
 * scrypt identities, the header MAC, and the stanza writers the encryptor
 * uses.
 */
#include "age.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION_LINE "age-encryption.org/v1"
#define VERSION_PREFIX "age-encryption.org/"
#define X25519_INFO "age-encryption.org/v1/X25519"
#define SCRYPT_SALT_LABEL "age-encryption.org/v1/scrypt"

enum { H_VERSION = 0, H_LINE, H_BODY };

static const uint8_t ZERO_NONCE[12];

int age_text_add(age_text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) return -1;
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return 0;
}

void age_header_free(age_header_parser *p)
{
    for (int i = 0; i < p->nstanzas; i++) {
        for (int j = 0; j < p->stanzas[i].nargs; j++)
            free(p->stanzas[i].args[j]);
        free(p->stanzas[i].args);
        free(p->stanzas[i].body);
    }
    free(p->stanzas);
    free(p->buf);
    memset(p, 0, sizeof *p);
}

static int header_fail(pv_err *err, const char *fmt, const char *detail)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, detail ? detail : "");
    age_fail(err, AGE_FAIL_HEADER, "age: malformed header: %s", msg);
    return -1;
}

static int parse_arg_line(age_header_parser *p, const char *line, size_t n, pv_err *err)
{
    if (p->nstanzas == p->capstanzas) {
        int cap = p->capstanzas ? p->capstanzas * 2 : 4;
        age_stanza *s = realloc(p->stanzas, (size_t)cap * sizeof *s);
        if (!s) return header_fail(err, "out of memory%s", NULL);
        p->stanzas = s;
        p->capstanzas = cap;
    }
    age_stanza *st = &p->stanzas[p->nstanzas++];
    memset(st, 0, sizeof *st);
    const char *a = line + 3, *end = line + n;
    if (a >= end) return header_fail(err, "a recipient stanza has no arguments%s", NULL);
    int count = 1;
    for (const char *c = a; c < end; c++)
        if (*c == ' ') count++;
    st->args = calloc((size_t)count, sizeof *st->args);
    if (!st->args) return header_fail(err, "out of memory%s", NULL);
    while (a <= end) {
        const char *sp = memchr(a, ' ', (size_t)(end - a));
        if (!sp) sp = end;
        if (sp == a) return header_fail(err, "a recipient stanza has an empty argument%s", NULL);
        for (const char *c = a; c < sp; c++)
            if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
                return header_fail(err, "invalid character in a stanza argument%s", NULL);
        st->args[st->nargs] = strndup(a, (size_t)(sp - a));
        if (!st->args[st->nargs]) return header_fail(err, "out of memory%s", NULL);
        st->nargs++;
        a = sp + 1;
    }
    return 0;
}

static int parse_body_line(age_header_parser *p, const char *line, size_t n, pv_err *err)
{
    age_stanza *st = &p->stanzas[p->nstanzas - 1];
    if (n > 64) return header_fail(err, "a stanza body line is longer than 64 columns%s", NULL);
    for (size_t i = 0; i < n; i++)
        if (!age_b64_char((unsigned char)line[i]))
            return header_fail(err, "invalid character in a stanza body%s", NULL);
    uint8_t *body = realloc(st->body, st->bodylen + 48 + 1);
    if (!body) return header_fail(err, "out of memory%s", NULL);
    st->body = body;
    long got = age_b64_decode(line, n, st->body + st->bodylen, 48);
    if (got < 0) return header_fail(err, "a stanza body is not canonical base64%s", NULL);
    st->bodylen += (size_t)got;
    if (n < 64) p->state = H_LINE;
    return 0;
}

static int parse_mac_line(age_header_parser *p, const char *line, size_t n, pv_err *err)
{
    if (p->nstanzas == 0) return header_fail(err, "the header has no recipient stanza%s", NULL);
    if (n != 4 + 43 || line[3] != ' ')
        return header_fail(err, "the MAC line is not \"--- \" and 43 base64 characters%s", NULL);
    if (age_b64_decode(line + 4, 43, p->mac, sizeof p->mac) != 32)
        return header_fail(err, "the header MAC is not canonical base64%s", NULL);
    p->mac_at = p->line_start;
    p->done = true;
    return 0;
}

static int parse_line(age_header_parser *p, const char *line, size_t n, pv_err *err)
{
    switch (p->state) {
    case H_VERSION:
        if (n == strlen(VERSION_LINE) && memcmp(line, VERSION_LINE, n) == 0) {
            p->state = H_LINE;
            return 0;
        }
        if (n > strlen(VERSION_PREFIX) && memcmp(line, VERSION_PREFIX, 19) == 0) {
            char v[64];
            snprintf(v, sizeof v, "%.*s", (int)(n > 40 ? 40 : n), line);
            age_fail(err, AGE_FAIL_HEADER, "age: unsupported format version \"%s\"", v);
            return -1;
        }
        age_fail(err, AGE_FAIL_HEADER, "age: not an age file: it does not start with \"%s\"",
                 VERSION_LINE);
        return -1;
    case H_LINE:
        if (n >= 3 && memcmp(line, "-> ", 3) == 0) {
            p->state = H_BODY;
            return parse_arg_line(p, line, n, err);
        }
        if (n >= 3 && memcmp(line, "---", 3) == 0) return parse_mac_line(p, line, n, err);
        return header_fail(err, "expected a recipient stanza or the MAC line%s", NULL);
    default:
        return parse_body_line(p, line, n, err);
    }
}

long age_header_feed(age_header_parser *p, const uint8_t *data, size_t len, pv_err *err)
{
    size_t i = 0;
    while (i < len && !p->done) {
        const uint8_t *nl = memchr(data + i, '\n', len - i);
        size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
        if (p->len + take > AGE_HEADER_MAX) {
            age_fail(err, AGE_FAIL_HEADER,
                     "age: the header is longer than %d bytes: not an age "
                     "file, or a damaged one",
                     AGE_HEADER_MAX);
            return -1;
        }
        if (p->len + take + 1 > p->cap) {
            size_t cap = p->cap ? p->cap : 4096;
            while (cap < p->len + take + 1)
                cap *= 2;
            char *b = realloc(p->buf, cap);
            if (!b) {
                age_fail(err, AGE_FAIL_HEADER, "age: out of memory reading the header");
                return -1;
            }
            p->buf = b;
            p->cap = cap;
        }
        memcpy(p->buf + p->len, data + i, take);
        p->len += take;
        i += take;
        if (p->state == H_VERSION) {
            size_t have = p->len < 19 ? p->len : 19;
            if (memcmp(p->buf, VERSION_PREFIX, have) != 0) {
                age_fail(err, AGE_FAIL_HEADER,
                         "age: not an age file: it does not start with \"%s\"", VERSION_LINE);
                return -1;
            }
        }
        if (!nl) break;
        size_t start = p->line_start;
        if (parse_line(p, p->buf + start, p->len - 1 - start, err) < 0) return -1;
        if (!p->done) p->line_start = p->len;
    }
    return (long)i;
}

void age_header_mac(const uint8_t file_key[AGE_FILE_KEY_LEN], const uint8_t *hdr, size_t len,
                    uint8_t mac[32])
{
    uint8_t key[AGE_KEY_LEN];
    age_hkdf(file_key, AGE_FILE_KEY_LEN, NULL, 0, "header", key);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, sizeof key);
    crypto_auth_hmacsha256_update(&st, hdr, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(key, sizeof key);
    sodium_memzero(&st, sizeof st);
}

/* 1 unwrapped, 0 not addressed to this identity, -1 malformed (err set). */
static int unwrap_x25519(const age_stanza *st, const age_identity *id, uint8_t *file_key,
                         pv_err *err)
{
    if (st->nargs != 2)
        return header_fail(err, "an X25519 stanza must have exactly one argument%s", NULL);
    uint8_t share[33];
    if (age_b64_decode(st->args[1], strlen(st->args[1]), share, sizeof share) != AGE_KEY_LEN)
        return header_fail(err, "an X25519 share is not 32 bytes of canonical base64%s", NULL);
    if (st->bodylen != AGE_FILE_KEY_LEN + AGE_TAG_LEN)
        return header_fail(err, "an X25519 stanza body is not 32 bytes%s", NULL);
    uint8_t *k = sodium_malloc(2 * AGE_KEY_LEN);
    if (!k) return header_fail(err, "cannot allocate secure memory%s", NULL);
    uint8_t *shared = k, *wrap = k + AGE_KEY_LEN;
    if (crypto_scalarmult(shared, id->secret, share) != 0) {
        sodium_free(k);
        return header_fail(err, "an X25519 share is a low-order point%s", NULL);
    }
    uint8_t salt[2 * AGE_KEY_LEN];
    memcpy(salt, share, AGE_KEY_LEN);
    memcpy(salt + AGE_KEY_LEN, id->pub, AGE_KEY_LEN);
    age_hkdf(shared, AGE_KEY_LEN, salt, sizeof salt, X25519_INFO, wrap);
    int ok = crypto_aead_chacha20poly1305_ietf_decrypt(file_key, NULL, NULL, st->body, st->bodylen,
                                                       NULL, 0, ZERO_NONCE, wrap);
    sodium_free(k);
    return ok == 0 ? 1 : 0;
}

static int unwrap_scrypt(const age_stanza *st, const age_identity *id, int max_wf,
                         uint8_t *file_key, pv_err *err)
{
    if (st->nargs != 3)
        return header_fail(err, "an scrypt stanza must have exactly two arguments%s", NULL);
    uint8_t salt[sizeof SCRYPT_SALT_LABEL - 1 + 17];
    size_t label = sizeof SCRYPT_SALT_LABEL - 1;
    memcpy(salt, SCRYPT_SALT_LABEL, label);
    if (age_b64_decode(st->args[1], strlen(st->args[1]), salt + label, 17) != 16)
        return header_fail(err, "an scrypt salt is not 16 bytes of canonical base64%s", NULL);
    const char *wf = st->args[2];
    size_t wl = strlen(wf);
    bool digits = wl >= 1 && wl <= 2 && wf[0] >= '1' && wf[0] <= '9';
    for (size_t i = 1; i < wl; i++)
        digits = digits && wf[i] >= '0' && wf[i] <= '9';
    if (!digits) return header_fail(err, "invalid scrypt work factor \"%s\"", wf);
    int logn = atoi(wf);
    if (logn > max_wf) {
        char msg[160];
        snprintf(msg, sizeof msg, "%d (the limit is %d)", logn, max_wf);
        age_fail(err, AGE_FAIL_HEADER,
                 "age: the scrypt work factor is too high: 2^%s; raise max_work_factor only for "
                 "a file you trust",
                 msg);
        return -1;
    }
    if (st->bodylen != AGE_FILE_KEY_LEN + AGE_TAG_LEN)
        return header_fail(err, "an scrypt stanza body is not 32 bytes%s", NULL);
    uint8_t *wrap = sodium_malloc(AGE_KEY_LEN);
    if (!wrap) return header_fail(err, "cannot allocate secure memory%s", NULL);
    if (crypto_pwhash_scryptsalsa208sha256_ll(id->secret, id->len, salt, label + 16,
                                              (uint64_t)1 << logn, 8, 1, wrap, AGE_KEY_LEN) != 0) {
        sodium_free(wrap);
        age_fail(err, AGE_FAIL_HEADER, "age: scrypt with work factor 2^%d failed (out of memory?)",
                 logn);
        return -1;
    }
    int ok = crypto_aead_chacha20poly1305_ietf_decrypt(file_key, NULL, NULL, st->body, st->bodylen,
                                                       NULL, 0, ZERO_NONCE, wrap);
    sodium_free(wrap);
    return ok == 0 ? 1 : 0;
}

int age_header_unwrap(age_header_parser *p, const age_identity *ids, int nids, int max_work_factor,
                      uint8_t file_key[AGE_FILE_KEY_LEN], const char **matched, pv_err *err)
{
    bool has_scrypt = false;
    for (int i = 0; i < p->nstanzas; i++)
        if (strcmp(p->stanzas[i].args[0], "scrypt") == 0) has_scrypt = true;
    if (has_scrypt && p->nstanzas != 1)
        return header_fail(err, "an scrypt stanza must be the only stanza in the header%s", NULL);
    bool have_pass = false;
    for (int k = 0; k < nids; k++) {
        const age_identity *id = &ids[k];
        if (id->type == AGE_ID_PASSPHRASE) have_pass = true;
        for (int i = 0; i < p->nstanzas; i++) {
            const age_stanza *st = &p->stanzas[i];
            int r = 0;
            if (id->type == AGE_ID_X25519 && strcmp(st->args[0], "X25519") == 0)
                r = unwrap_x25519(st, id, file_key, err);
            else if (id->type == AGE_ID_HYBRID && strcmp(st->args[0], "mlkem768x25519") == 0)
                r = st->nargs != 2 ? header_fail(err,
                                                 "an mlkem768x25519 stanza must have exactly one "
                                                 "argument%s",
                                                 NULL)
                                   : age_hybrid_unwrap(st->args[1], st->body, st->bodylen,
                                                       id->secret, file_key, err);
            else if (id->type == AGE_ID_PASSPHRASE && strcmp(st->args[0], "scrypt") == 0)
                r = unwrap_scrypt(st, id, max_work_factor, file_key, err);
            if (r < 0) return -1;
            if (r == 1) {
                *matched = st->args[0];
                return 0;
            }
        }
    }
    char types[256] = "";
    for (int i = 0; i < p->nstanzas && strlen(types) < 200; i++) {
        if (strstr(types, p->stanzas[i].args[0])) continue;
        snprintf(types + strlen(types), sizeof types - strlen(types), "%s%.32s", i ? ", " : "",
                 p->stanzas[i].args[0]);
    }
    if (has_scrypt && !have_pass)
        age_fail(err, AGE_FAIL_NO_MATCH,
                 "age: the file is encrypted with a passphrase: give the passphrase "
                 "(--passphrase-file) to decrypt it");
    else if (has_scrypt)
        age_fail(err, AGE_FAIL_NO_MATCH, "age: incorrect passphrase");
    else
        age_fail(err, AGE_FAIL_NO_MATCH,
                 "age: no identity matched any of the file's %d recipient stanza(s) (%s): wrong "
                 "identity file?",
                 p->nstanzas, types);
    return -1;
}

static int add_stanza_text(age_text *t, const char *args, const uint8_t *body, size_t bodylen,
                           pv_err *err)
{
    char b64[64];
    age_b64_encode(body, bodylen, b64); /* 32 bytes: one short line */
    if (age_text_add(t, "-> ", 3) < 0 || age_text_add(t, args, strlen(args)) < 0 ||
        age_text_add(t, "\n", 1) < 0 || age_text_add(t, b64, strlen(b64)) < 0 ||
        age_text_add(t, "\n", 1) < 0) {
        pv_err_set(err, "crypto", "out of memory writing the age header");
        return -1;
    }
    return 0;
}

int age_wrap_x25519(age_text *t, const uint8_t pub[AGE_KEY_LEN],
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err)
{
    uint8_t *k = sodium_malloc(3 * AGE_KEY_LEN);
    if (!k) {
        pv_err_set(err, "crypto", "cannot allocate secure memory");
        return -1;
    }
    uint8_t *eph = k, *shared = k + AGE_KEY_LEN, *wrap = k + 2 * AGE_KEY_LEN;
    uint8_t salt[2 * AGE_KEY_LEN];
    randombytes_buf(eph, AGE_KEY_LEN);
    crypto_scalarmult_base(salt, eph);
    if (crypto_scalarmult(shared, eph, pub) != 0) {
        sodium_free(k);
        pv_err_set(err, "crypto", "invalid X25519 recipient (a low-order point)");
        return -1;
    }
    memcpy(salt + AGE_KEY_LEN, pub, AGE_KEY_LEN);
    age_hkdf(shared, AGE_KEY_LEN, salt, sizeof salt, X25519_INFO, wrap);
    uint8_t body[AGE_FILE_KEY_LEN + AGE_TAG_LEN];
    crypto_aead_chacha20poly1305_ietf_encrypt(body, NULL, file_key, AGE_FILE_KEY_LEN, NULL, 0, NULL,
                                              ZERO_NONCE, wrap);
    sodium_free(k);
    char args[80] = "X25519 ";
    age_b64_encode(salt, AGE_KEY_LEN, args + 7);
    return add_stanza_text(t, args, body, sizeof body, err);
}

int age_wrap_scrypt(age_text *t, const uint8_t *pass, size_t passlen, int work_factor,
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err)
{
    size_t label = sizeof SCRYPT_SALT_LABEL - 1;
    uint8_t salt[sizeof SCRYPT_SALT_LABEL - 1 + 16];
    memcpy(salt, SCRYPT_SALT_LABEL, label);
    randombytes_buf(salt + label, 16);
    uint8_t *wrap = sodium_malloc(AGE_KEY_LEN);
    if (!wrap) {
        pv_err_set(err, "crypto", "cannot allocate secure memory");
        return -1;
    }
    if (crypto_pwhash_scryptsalsa208sha256_ll(pass, passlen, salt, sizeof salt,
                                              (uint64_t)1 << work_factor, 8, 1, wrap,
                                              AGE_KEY_LEN) != 0) {
        sodium_free(wrap);
        pv_err_set(err, "crypto", "scrypt with work factor 2^%d failed (out of memory?)",
                   work_factor);
        return -1;
    }
    uint8_t body[AGE_FILE_KEY_LEN + AGE_TAG_LEN];
    crypto_aead_chacha20poly1305_ietf_encrypt(body, NULL, file_key, AGE_FILE_KEY_LEN, NULL, 0, NULL,
                                              ZERO_NONCE, wrap);
    sodium_free(wrap);
    char args[80] = "scrypt ";
    size_t n = 7 + age_b64_encode(salt + label, 16, args + 7);
    snprintf(args + n, sizeof args - n, " %d", work_factor);
    return add_stanza_text(t, args, body, sizeof body, err);
}
