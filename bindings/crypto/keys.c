/*
 * keys.c: X25519 identities and recipients (Bech32 encodings), passphrase
 * identities, HKDF-SHA-256, and the failure helper. Every secret lives in
 * sodium_malloc'd memory and is wiped by sodium_free.
 */
#include "age.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HRP_RECIPIENT "age"
#define HRP_IDENTITY "age-secret-key-"

void age_fail(pv_err *err, const char *failure, const char *fmt, ...)
{
    if (err->set) return;
    va_list ap;
    va_start(ap, fmt);
    pv_err_setv(err, "crypto", fmt, ap);
    va_end(ap);
    pv_err_str(err, "failure", failure);
}

void age_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
              const char *info, uint8_t out[AGE_KEY_LEN])
{
    static const uint8_t nothing[1] = {0};
    uint8_t prk[32];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, saltlen ? salt : nothing, saltlen);
    crypto_auth_hmacsha256_update(&st, ikm, ikmlen);
    crypto_auth_hmacsha256_final(&st, prk);
    const uint8_t one = 1;
    crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)info, strlen(info));
    crypto_auth_hmacsha256_update(&st, &one, 1);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(prk, sizeof prk);
    sodium_memzero(&st, sizeof st);
}

static int alloc_secret(age_identity *id, size_t len, pv_err *err)
{
    id->secret = sodium_malloc(len ? len : 1);
    if (!id->secret) {
        pv_err_set(err, "crypto", "cannot allocate secure memory for a key");
        return -1;
    }
    id->len = len;
    return 0;
}

void age_identity_free(age_identity *id)
{
    if (id->secret) sodium_free(id->secret);
    free(id->hybrid_ek);
    memset(id, 0, sizeof *id);
}

int age_identity_generate(age_identity *id, pv_err *err)
{
    memset(id, 0, sizeof *id);
    if (alloc_secret(id, AGE_KEY_LEN, err) < 0) return -1;
    id->type = AGE_ID_X25519;
    randombytes_buf(id->secret, AGE_KEY_LEN);
    crypto_scalarmult_base(id->pub, id->secret);
    return 0;
}

int age_identity_passphrase(age_identity *id, const char *pass, size_t len, pv_err *err)
{
    memset(id, 0, sizeof *id);
    if (len == 0) {
        pv_err_set(err, "crypto", "the passphrase is empty");
        return -1;
    }
    if (len > AGE_PASSPHRASE_MAX) {
        pv_err_set(err, "crypto", "the passphrase is longer than %d bytes", AGE_PASSPHRASE_MAX);
        return -1;
    }
    if (alloc_secret(id, len, err) < 0) return -1;
    id->type = AGE_ID_PASSPHRASE;
    memcpy(id->secret, pass, len);
    return 0;
}

int age_identity_copy(age_identity *dst, const age_identity *src, pv_err *err)
{
    memset(dst, 0, sizeof *dst);
    if (alloc_secret(dst, src->len, err) < 0) return -1;
    dst->type = src->type;
    memcpy(dst->secret, src->secret, src->len);
    if (src->hybrid_ek) {
        dst->hybrid_ek = malloc(AGE_HYBRID_EK);
        if (!dst->hybrid_ek) {
            age_identity_free(dst);
            pv_err_set(err, "crypto", "out of memory");
            return -1;
        }
        memcpy(dst->hybrid_ek, src->hybrid_ek, AGE_HYBRID_EK);
    }
    memcpy(dst->pub, src->pub, sizeof dst->pub);
    return 0;
}

int age_identity_parse(age_identity *id, const char *s, size_t len, pv_err *err)
{
    memset(id, 0, sizeof *id);
    char hrp[32] = "";
    uint8_t *data = sodium_malloc(64);
    if (!data) {
        pv_err_set(err, "crypto", "cannot allocate secure memory for a key");
        return -1;
    }
    const char *why = NULL;
    long n = age_bech32_decode(s, len, hrp, sizeof hrp, data, 64, &why);
    int rc = -1;
    if (n == AGE_KEY_LEN && strcmp(hrp, "age-secret-key-pq-") == 0) {
        if (alloc_secret(id, AGE_KEY_LEN, err) == 0) {
            id->type = AGE_ID_HYBRID;
            memcpy(id->secret, data, AGE_KEY_LEN);
            id->hybrid_ek = malloc(AGE_HYBRID_EK);
            if (id->hybrid_ek && age_hybrid_public(id->secret, id->hybrid_ek) == 0) {
                rc = 0;
            } else {
                age_identity_free(id);
                pv_err_set(err, "crypto", "cannot derive the post-quantum public key");
            }
        }
    } else if (strncmp(hrp, "age-plugin-", 11) == 0) {
        pv_err_set(err, "crypto", "age plugin identities are not supported");
    } else if (n < 0) {
        pv_err_set(err, "crypto", "malformed age identity: %s", why);
    } else if (strcmp(hrp, HRP_IDENTITY) != 0 || n != AGE_KEY_LEN) {
        pv_err_set(err, "crypto", "not an age X25519 identity (expected AGE-SECRET-KEY-1...)");
    } else if (alloc_secret(id, AGE_KEY_LEN, err) == 0) {
        id->type = AGE_ID_X25519;
        memcpy(id->secret, data, AGE_KEY_LEN);
        crypto_scalarmult_base(id->pub, id->secret);
        rc = 0;
    }
    sodium_free(data);
    if (rc < 0) pv_err_str(err, "failure", "identity");
    return rc;
}

char *age_identity_encode(const age_identity *id)
{
    char *out = sodium_malloc(128);
    if (!out) return NULL;
    const char *hrp = id->type == AGE_ID_HYBRID ? "age-secret-key-pq-" : HRP_IDENTITY;
    if (age_bech32_encode(hrp, id->secret, AGE_KEY_LEN, true, out, 128) < 0) {
        sodium_free(out);
        return NULL;
    }
    return out;
}

char *age_hybrid_recipient_encode(const uint8_t ek[AGE_HYBRID_EK])
{
    size_t cap = 8 + (AGE_HYBRID_EK * 8 + 4) / 5 + 8;
    char *out = malloc(cap);
    if (out && age_bech32_encode("age1pq", ek, AGE_HYBRID_EK, false, out, cap) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* Whether a string meant as a recipient or public key is a secret: an
 * age identity (of any kind, any case), or anything naming a secret key.
 * Such input is never echoed in an error. */
bool age_looks_secret(const char *s, size_t len)
{
    static const char *const marks[] = {"secret-key", "secret_key", "secretkey", "age-plugin-"};
    for (size_t m = 0; m < sizeof marks / sizeof *marks; m++) {
        size_t k = strlen(marks[m]);
        for (size_t i = 0; i + k <= len; i++)
            if (strncasecmp(s + i, marks[m], k) == 0) return true;
    }
    return false;
}

/* What of a rejected recipient an error may show: the start of something
 * that looks like one (age1..., ssh-...), never more, and nothing of
 * anything else (a pasted secret, a password). */
static void shown_recipient(const char *s, size_t len, char *out, size_t cap)
{
    bool looks =
        (len >= 4 && strncasecmp(s, "age1", 4) == 0) || (len >= 4 && strncmp(s, "ssh-", 4) == 0);
    if (!looks || age_looks_secret(s, len)) {
        snprintf(out, cap, "(not shown)");
        return;
    }
    size_t k = len > 24 ? 24 : len;
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) k = i;
    snprintf(out, cap, "\"%.*s%s\"", (int)k, s, k < len ? "..." : "");
}

static int secret_as_recipient(pv_err *err)
{
    pv_err_set(err, "crypto",
               "this is a secret key (an age identity), not a recipient: give the public "
               "recipient it belongs to ('pgvault keygen -y FILE' prints it), and keep the "
               "secret key out of command lines");
    pv_err_str(err, "failure", "recipient");
    return -1;
}

int age_hybrid_recipient_parse(const char *s, size_t len, uint8_t ek[AGE_HYBRID_EK], pv_err *err)
{
    if (age_looks_secret(s, len)) return secret_as_recipient(err);
    char hrp[32] = "";
    const char *why = "";
    long n = age_bech32_decode(s, len, hrp, sizeof hrp, ek, AGE_HYBRID_EK, &why);
    if (n == AGE_HYBRID_EK && strcmp(hrp, "age1pq") == 0) return 0;
    char shown[48];
    shown_recipient(s, len, shown, sizeof shown);
    pv_err_set(err, "crypto", "malformed post-quantum age recipient %s: %s", shown,
               n < 0 ? why : "wrong length");
    pv_err_str(err, "failure", "recipient");
    return -1;
}

void age_recipient_encode(const uint8_t pub[AGE_KEY_LEN], char *out, size_t outcap)
{
    if (age_bech32_encode(HRP_RECIPIENT, pub, AGE_KEY_LEN, false, out, outcap) < 0 && outcap)
        out[0] = '\0';
}

int age_recipient_parse(const char *s, size_t len, uint8_t pub[AGE_KEY_LEN], pv_err *err)
{
    if (age_looks_secret(s, len)) return secret_as_recipient(err);
    char hrp[32] = "";
    uint8_t data[64];
    const char *why = NULL;
    char shown[48];
    shown_recipient(s, len, shown, sizeof shown);
    long n = age_bech32_decode(s, len, hrp, sizeof hrp, data, sizeof data, &why);
    if (len >= 4 && strncmp(s, "ssh-", 4) == 0) {
        pv_err_set(err, "crypto", "SSH recipients are not supported: %s", shown);
    } else if (strcmp(hrp, "age1pq") == 0) {
        pv_err_set(err, "crypto", "a post-quantum recipient %s is not an X25519 recipient", shown);
    } else if (strncmp(hrp, "age1", 4) == 0 ||
               (len > 4 && strncasecmp(s, "age1", 4) == 0 && memchr(s + 4, '1', len - 4))) {
        pv_err_set(err, "crypto",
                   "unsupported age recipient type %s (post-quantum and plugin recipients "
                   "are not supported; use an X25519 recipient age1...)",
                   shown);
    } else if (n < 0) {
        pv_err_set(err, "crypto", "malformed age recipient %s: %s", shown, why);
    } else if (strcmp(hrp, HRP_RECIPIENT) != 0 || n != AGE_KEY_LEN) {
        pv_err_set(err, "crypto", "not an age X25519 recipient: %s", shown);
    } else {
        memcpy(pub, data, AGE_KEY_LEN);
        return 0;
    }
    pv_err_str(err, "failure", "recipient");
    return -1;
}
