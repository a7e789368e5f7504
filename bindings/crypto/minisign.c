/*
 * minisign.c: minisign's key and signature formats on libsodium (see
 * minisign.h). A secret key file is an "untrusted comment:" line and the
 * base64 of: "Ed", the KDF ("Sc" for scrypt or two zero bytes), "B2", the
 * scrypt salt and limits, then the key id, the Ed25519 secret key and a
 * BLAKE2b-256 checksum of "Ed" || key id || secret key, these last three
 * XORed with scrypt's output when a password protects them. A signature
 * file is the untrusted comment, base64("ED" or "Ed" || key id ||
 * signature), the trusted comment and base64(signature of the signature
 * followed by the trusted comment).
 */
#include "minisign.h"
#include "age.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNTRUSTED_PREFIX "untrusted comment: "
#define TRUSTED_PREFIX "trusted comment: "

/* The secret key structure: offsets and sizes. */
enum {
    SK_ALG = 0,
    SK_KDF = 2,
    SK_CHK_ALG = 4,
    SK_SALT = 6,
    SK_OPS = SK_SALT + 32,
    SK_MEM = SK_OPS + 8,
    SK_KEYID = SK_MEM + 8,
    SK_SECRET = SK_KEYID + MS_KEYID_LEN,
    SK_CHK = SK_SECRET + MS_SK_LEN,
    SK_BYTES = SK_CHK + 32,
    SK_SEALED = SK_BYTES - SK_KEYID, /* what the password encrypts */
    SK_B64 = (SK_BYTES + 2) / 3 * 4,
    SIG_BYTES = 2 + MS_KEYID_LEN + MS_SIG_LEN,
    SIG_B64 = (SIG_BYTES + 2) / 3 * 4,
    GLOBAL_B64 = (MS_SIG_LEN + 2) / 3 * 4,
    PK_BYTES = 2 + MS_KEYID_LEN + MS_PK_LEN,
};

const ms_kdf MS_KDF_SENSITIVE = {crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE,
                                 crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_SENSITIVE};
const ms_kdf MS_KDF_INTERACTIVE = {crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_INTERACTIVE,
                                   crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_INTERACTIVE};

static uint64_t le64_load(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void le64_store(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

void ms_key_id_hex(const uint8_t key_id[MS_KEYID_LEN], char out[MS_KEYID_HEX])
{
    snprintf(out, MS_KEYID_HEX, "%llX", (unsigned long long)le64_load(key_id));
}

/* The next line of [*p, end): without its "\n" and one "\r" before it.
 * False at the end of the text. */
static bool take_line(const char **p, const char *end, const char **line, size_t *n)
{
    if (*p >= end) return false;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *stop = nl ? nl : end;
    *line = *p;
    *n = (size_t)(stop - *p);
    if (*n > 0 && (*line)[*n - 1] == '\r') (*n)--;
    *p = nl ? nl + 1 : end;
    return true;
}

/* Nothing but blank lines may follow the last line of a key or signature. */
static bool only_blank(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p != '\n' && *p != '\r' && *p != ' ' && *p != '\t') return false;
    return true;
}

static bool has_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0;
}

/* A comment must be one line of text: no line break, no NUL. */
static bool one_line(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' || s[i] == '\r' || s[i] == '\0') return false;
    return true;
}

static long b64_exact(const char *s, size_t n, size_t chars, uint8_t *out, size_t bytes)
{
    if (n != chars) return -1;
    long got = age_b64_decode_padded(s, n, out, bytes);
    return got == (long)bytes ? got : -1;
}

/* ---- public keys ---------------------------------------------------- */

static int public_fail(pv_err *err, const char *why)
{
    pv_err_set(err, "crypto", "not a minisign public key: %s", why);
    pv_err_str(err, "failure", "public key");
    return -1;
}

int ms_public_parse(ms_public_key *pk, const char *text, size_t len, pv_err *err)
{
    const char *p = text, *end = text + len, *line = NULL;
    size_t n = 0;
    bool got;
    while ((got = take_line(&p, end, &line, &n)) && only_blank(line, line + n)) {
    }
    if (!got) return public_fail(err, "it is empty");
    if (has_prefix(line, n, "untrusted comment:") && !take_line(&p, end, &line, &n))
        return public_fail(err, "nothing follows its comment line");
    /* a pasted one-line key may carry blanks around it */
    while (n > 0 && (*line == ' ' || *line == '\t'))
        line++, n--;
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    if (!only_blank(p, end))
        return public_fail(err, "expected one line of base64 (RW...), or a comment line and that");
    if (n == SK_B64)
        return public_fail(err, "this is a secret key (keep it private): give its public key file "
                                "(FILE.pub, RW...)");
    uint8_t raw[PK_BYTES + 2];
    if (b64_exact(line, n, MS_PUBLIC_B64, raw, PK_BYTES) < 0)
        return public_fail(err, "expected 56 base64 characters starting with RW");
    if (memcmp(raw, "Ed", 2) != 0) return public_fail(err, "its algorithm is not Ed25519 (\"Ed\")");
    memcpy(pk->key_id, raw + 2, MS_KEYID_LEN);
    memcpy(pk->pk, raw + 2 + MS_KEYID_LEN, MS_PK_LEN);
    return 0;
}

void ms_public_encode(const ms_public_key *pk, char out[MS_PUBLIC_B64 + 1])
{
    uint8_t raw[PK_BYTES];
    memcpy(raw, "Ed", 2);
    memcpy(raw + 2, pk->key_id, MS_KEYID_LEN);
    memcpy(raw + 2 + MS_KEYID_LEN, pk->pk, MS_PK_LEN);
    out[age_b64_encode_padded(raw, sizeof raw, out)] = '\0';
}

/* ---- secret keys ---------------------------------------------------- */

ms_secret_key *ms_secret_new(pv_err *err)
{
    ms_secret_key *sk = sodium_malloc(sizeof *sk);
    if (!sk) {
        pv_err_set(err, "crypto", "cannot allocate secure memory for a signing key");
        return NULL;
    }
    sodium_memzero(sk, sizeof *sk);
    return sk;
}

void ms_secret_free(ms_secret_key *sk)
{
    if (sk) sodium_free(sk);
}

int ms_secret_generate(ms_secret_key *sk)
{
    uint8_t pk[MS_PK_LEN];
    randombytes_buf(sk->key_id, MS_KEYID_LEN);
    return crypto_sign_keypair(pk, sk->sk);
}

void ms_secret_public(const ms_secret_key *sk, ms_public_key *pk)
{
    memcpy(pk->key_id, sk->key_id, MS_KEYID_LEN);
    crypto_sign_ed25519_sk_to_pk(pk->pk, sk->sk);
}

/* BLAKE2b-256 of "Ed" || key id || secret key: the key file's checksum. */
static void secret_checksum(const uint8_t *raw, uint8_t chk[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, raw + SK_ALG, 2);
    crypto_generichash_update(&st, raw + SK_KEYID, MS_KEYID_LEN + MS_SK_LEN);
    crypto_generichash_final(&st, chk, 32);
    sodium_memzero(&st, sizeof st);
}

/* XORs the sealed part of raw with scrypt(password). */
static int secret_crypt(uint8_t *raw, const uint8_t *password, size_t pwlen, pv_err *err)
{
    uint8_t *stream = sodium_malloc(SK_SEALED);
    if (!stream) {
        pv_err_set(err, "crypto", "cannot allocate secure memory for a signing key");
        return -1;
    }
    int rc = crypto_pwhash_scryptsalsa208sha256(stream, SK_SEALED, (const char *)password, pwlen,
                                                raw + SK_SALT, le64_load(raw + SK_OPS),
                                                le64_load(raw + SK_MEM));
    if (rc == 0)
        for (size_t i = 0; i < SK_SEALED; i++)
            raw[SK_KEYID + i] ^= stream[i];
    sodium_free(stream);
    if (rc != 0)
        pv_err_set(err, "crypto",
                   "cannot derive the key that protects the signing key (scrypt needs %llu MiB "
                   "of memory)",
                   (unsigned long long)(le64_load(raw + SK_MEM) >> 20));
    return rc == 0 ? 0 : -1;
}

static int secret_fail(pv_err *err, const char *failure, const char *why)
{
    pv_err_set(err, "crypto", "%s", why);
    pv_err_str(err, "failure", failure);
    return -1;
}

/* Checks the decoded structure and opens it with the password. */
static int secret_open(uint8_t *raw, const uint8_t *password, size_t pwlen, ms_kdf limit,
                       pv_err *err)
{
    if (memcmp(raw + SK_ALG, "Ed", 2) != 0)
        return secret_fail(err, "secret key", "not an Ed25519 minisign secret key");
    if (memcmp(raw + SK_CHK_ALG, "B2", 2) != 0)
        return secret_fail(err, "secret key", "unknown checksum algorithm (expected BLAKE2b)");
    bool sealed = memcmp(raw + SK_KDF, "Sc", 2) == 0;
    if (!sealed && (raw[SK_KDF] | raw[SK_KDF + 1]) != 0)
        return secret_fail(err, "secret key", "unknown key derivation (expected scrypt or none)");
    if (sealed && !password)
        return secret_fail(err, "password",
                           "the signing key is encrypted with a password, and none was given");
    if (sealed &&
        (le64_load(raw + SK_OPS) > limit.opslimit || le64_load(raw + SK_MEM) > limit.memlimit))
        return secret_fail(err, "secret key",
                           "its password protection asks for more scrypt work than allowed");
    if (sealed && secret_crypt(raw, password, pwlen, err) < 0) return -1;
    uint8_t chk[32];
    secret_checksum(raw, chk);
    bool zero = sodium_is_zero(raw + SK_CHK, 32);
    int same = sodium_memcmp(chk, raw + SK_CHK, 32);
    sodium_memzero(chk, sizeof chk);
    /* minisign leaves the checksum of an unencrypted key zero */
    if (same != 0 && (sealed || !zero))
        return secret_fail(err, sealed ? "password" : "secret key",
                           sealed ? "wrong password for the signing key"
                                  : "the signing key's checksum does not match: it is damaged");
    uint8_t *again = sodium_malloc(MS_SK_LEN);
    if (!again) return secret_fail(err, "secret key", "cannot allocate secure memory");
    uint8_t pk[MS_PK_LEN];
    crypto_sign_seed_keypair(pk, again, raw + SK_SECRET);
    int ok = sodium_memcmp(again, raw + SK_SECRET, MS_SK_LEN);
    sodium_free(again);
    if (ok != 0)
        return secret_fail(
            err, "secret key",
            "the signing key's public half does not match its secret: it is damaged");
    return 0;
}

int ms_secret_parse(ms_secret_key *sk, const char *text, size_t len, const uint8_t *password,
                    size_t pwlen, ms_kdf limit, pv_err *err)
{
    const char *p = text, *end = text + len, *line;
    size_t n;
    if (!take_line(&p, end, &line, &n) || !has_prefix(line, n, "untrusted comment:"))
        return secret_fail(err, "secret key",
                           "not a minisign secret key: it does not start with an untrusted "
                           "comment line");
    if (!take_line(&p, end, &line, &n) || !only_blank(p, end))
        return secret_fail(err, "secret key",
                           "not a minisign secret key: expected a comment line and one line of "
                           "base64");
    uint8_t *raw = sodium_malloc(SK_BYTES + 2);
    if (!raw) return secret_fail(err, "secret key", "cannot allocate secure memory");
    int rc = -1;
    if (b64_exact(line, n, SK_B64, raw, SK_BYTES) < 0)
        secret_fail(err, "secret key",
                    "not a minisign secret key: its key line is not 212 base64 characters");
    else if (secret_open(raw, password, pwlen, limit, err) == 0)
        rc = 0;
    if (rc == 0) {
        memcpy(sk->key_id, raw + SK_KEYID, MS_KEYID_LEN);
        memcpy(sk->sk, raw + SK_SECRET, MS_SK_LEN);
    }
    sodium_free(raw);
    return rc;
}

/* Seals raw with the password, halving the cost while scrypt cannot get
 * the memory (as minisign does). */
static int secret_seal(uint8_t *raw, const uint8_t *password, size_t pwlen, ms_kdf kdf, pv_err *err)
{
    memcpy(raw + SK_KDF, "Sc", 2);
    randombytes_buf(raw + SK_SALT, 32);
    for (;;) {
        le64_store(raw + SK_OPS, kdf.opslimit);
        le64_store(raw + SK_MEM, kdf.memlimit);
        uint8_t *copy = sodium_malloc(SK_BYTES);
        if (!copy) return secret_fail(err, "secret key", "cannot allocate secure memory");
        memcpy(copy, raw, SK_BYTES);
        int rc = secret_crypt(copy, password, pwlen, err);
        if (rc == 0) memcpy(raw, copy, SK_BYTES);
        sodium_free(copy);
        if (rc == 0) return 0;
        kdf.opslimit /= 2;
        kdf.memlimit /= 2;
        if (kdf.opslimit < crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_MIN ||
            kdf.memlimit < crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_MIN)
            return -1;
        pv_err_clear(err);
        pv_log(PV_LOG_WARN,
               "not enough memory for scrypt: protecting the signing key with %llu "
               "MiB instead",
               (unsigned long long)(kdf.memlimit >> 20));
    }
}

char *ms_secret_encode(const ms_secret_key *sk, const char *comment, const uint8_t *password,
                       size_t pwlen, ms_kdf kdf, pv_err *err)
{
    size_t clen = strlen(comment);
    if (clen > MS_UNTRUSTED_MAX || !one_line(comment, clen)) {
        secret_fail(err, "secret key", "the key file's comment must be one short line");
        return NULL;
    }
    if (password && (pwlen == 0 || pwlen > MS_PASSWORD_MAX || memchr(password, '\0', pwlen))) {
        secret_fail(err, "password", "a signing key's password must be 1 to 1022 bytes, no NUL");
        return NULL;
    }
    uint8_t *raw = sodium_malloc(SK_BYTES);
    size_t cap = sizeof UNTRUSTED_PREFIX + clen + SK_B64 + 2;
    char *text = sodium_malloc(cap);
    if (!raw || !text) {
        if (raw) sodium_free(raw);
        if (text) sodium_free(text);
        secret_fail(err, "secret key", "cannot allocate secure memory");
        return NULL;
    }
    sodium_memzero(raw, SK_BYTES);
    memcpy(raw + SK_ALG, "Ed", 2);
    memcpy(raw + SK_CHK_ALG, "B2", 2);
    memcpy(raw + SK_KEYID, sk->key_id, MS_KEYID_LEN);
    memcpy(raw + SK_SECRET, sk->sk, MS_SK_LEN);
    secret_checksum(raw, raw + SK_CHK);
    if (password && secret_seal(raw, password, pwlen, kdf, err) < 0) {
        sodium_free(raw);
        sodium_free(text);
        return NULL;
    }
    size_t n = (size_t)snprintf(text, cap, UNTRUSTED_PREFIX "%s\n", comment);
    n += age_b64_encode_padded(raw, SK_BYTES, text + n);
    text[n++] = '\n';
    text[n] = '\0';
    sodium_free(raw);
    return text;
}

/* ---- signatures ----------------------------------------------------- */

/* What the Ed25519 signature covers: the message, or BLAKE2b-512 of it. */
static const uint8_t *signed_part(bool prehashed, const uint8_t *msg, size_t len, uint8_t hash[64],
                                  size_t *n)
{
    if (!prehashed) {
        *n = len;
        return msg;
    }
    crypto_generichash(hash, 64, msg, len, NULL, 0);
    *n = 64;
    return hash;
}

/* sig || trusted comment: what the global signature covers (malloc'd). */
static uint8_t *global_part(const uint8_t sig[MS_SIG_LEN], const char *trusted, size_t tlen)
{
    uint8_t *buf = malloc(MS_SIG_LEN + tlen + 1);
    if (!buf) return NULL;
    memcpy(buf, sig, MS_SIG_LEN);
    memcpy(buf + MS_SIG_LEN, trusted, tlen);
    return buf;
}

char *ms_sign(const ms_secret_key *sk, const uint8_t *msg, size_t len, const char *untrusted,
              const char *trusted, bool legacy, pv_err *err)
{
    size_t ulen = strlen(untrusted), tlen = strlen(trusted);
    if (ulen > MS_UNTRUSTED_MAX || !one_line(untrusted, ulen)) {
        pv_err_set(err, "crypto", "the untrusted comment must be one line of at most %d bytes",
                   MS_UNTRUSTED_MAX);
        return NULL;
    }
    if (tlen > MS_TRUSTED_MAX || !one_line(trusted, tlen)) {
        pv_err_set(err, "crypto", "the trusted comment must be one line of at most %d bytes",
                   MS_TRUSTED_MAX);
        return NULL;
    }
    uint8_t raw[SIG_BYTES], hash[64], global[MS_SIG_LEN];
    size_t n;
    const uint8_t *m = signed_part(!legacy, msg, len, hash, &n);
    memcpy(raw, legacy ? "Ed" : "ED", 2);
    memcpy(raw + 2, sk->key_id, MS_KEYID_LEN);
    crypto_sign_detached(raw + 2 + MS_KEYID_LEN, NULL, m, n, sk->sk);
    uint8_t *both = global_part(raw + 2 + MS_KEYID_LEN, trusted, tlen);
    size_t cap =
        sizeof UNTRUSTED_PREFIX + ulen + SIG_B64 + sizeof TRUSTED_PREFIX + tlen + GLOBAL_B64 + 8;
    char *text = both ? malloc(cap) : NULL;
    if (!text) {
        free(both);
        pv_err_set(err, "crypto", "out of memory");
        return NULL;
    }
    crypto_sign_detached(global, NULL, both, MS_SIG_LEN + tlen, sk->sk);
    free(both);
    size_t o = (size_t)snprintf(text, cap, UNTRUSTED_PREFIX "%s\n", untrusted);
    o += age_b64_encode_padded(raw, sizeof raw, text + o);
    o += (size_t)snprintf(text + o, cap - o, "\n" TRUSTED_PREFIX "%s\n", trusted);
    o += age_b64_encode_padded(global, sizeof global, text + o);
    text[o++] = '\n';
    text[o] = '\0';
    return text;
}

static int sig_fail(pv_err *err, const char *why)
{
    pv_err_set(err, "trust", "not a minisign signature: %s", why);
    pv_err_str(err, "reason", "malformed");
    return -1;
}

int ms_signature_parse(ms_signature *sig, const char *text, size_t len, pv_err *err)
{
    const char *p = text, *end = text + len, *line;
    size_t n;
    if (!take_line(&p, end, &line, &n) || !has_prefix(line, n, UNTRUSTED_PREFIX))
        return sig_fail(err, "the first line is not an untrusted comment");
    if (n > MS_UNTRUSTED_MAX + sizeof UNTRUSTED_PREFIX)
        return sig_fail(err, "the untrusted comment is too long");
    uint8_t raw[SIG_BYTES + 2];
    if (!take_line(&p, end, &line, &n) || b64_exact(line, n, SIG_B64, raw, SIG_BYTES) < 0)
        return sig_fail(err, "the second line is not 100 base64 characters");
    if (memcmp(raw, "ED", 2) != 0 && memcmp(raw, "Ed", 2) != 0)
        return sig_fail(err, "its algorithm is neither ED nor Ed");
    if (!take_line(&p, end, &line, &n) || !has_prefix(line, n, TRUSTED_PREFIX))
        return sig_fail(err, "the third line is not a trusted comment");
    size_t tlen = n - strlen(TRUSTED_PREFIX);
    const char *tc = line + strlen(TRUSTED_PREFIX);
    if (tlen > MS_TRUSTED_MAX || !one_line(tc, tlen))
        return sig_fail(err, "the trusted comment is too long or not one line");
    if (!take_line(&p, end, &line, &n) ||
        b64_exact(line, n, GLOBAL_B64, sig->global_sig, MS_SIG_LEN) < 0)
        return sig_fail(err, "the fourth line is not 88 base64 characters");
    if (!only_blank(p, end)) return sig_fail(err, "something follows its fourth line");
    sig->prehashed = raw[1] == 'D';
    memcpy(sig->key_id, raw + 2, MS_KEYID_LEN);
    memcpy(sig->sig, raw + 2 + MS_KEYID_LEN, MS_SIG_LEN);
    memcpy(sig->trusted, tc, tlen);
    sig->trusted[tlen] = '\0';
    sig->trusted_len = tlen;
    return 0;
}

static int verify_fail(pv_err *err, const char *reason, const char *fmt, const char *arg)
{
    pv_err_set(err, "trust", fmt, arg);
    pv_err_str(err, "reason", reason);
    return -1;
}

int ms_verify(const ms_signature *sig, const ms_public_key *keys, int nkeys, const uint8_t *msg,
              size_t len, bool allow_legacy, int *which, pv_err *err)
{
    char id[MS_KEYID_HEX];
    ms_key_id_hex(sig->key_id, id);
    if (!sig->prehashed && !allow_legacy)
        return verify_fail(err, "legacy",
                           "the signature by key %s is in minisign's legacy format (Ed), which "
                           "is not accepted here",
                           id);
    uint8_t hash[64];
    size_t n;
    const uint8_t *m = signed_part(sig->prehashed, msg, len, hash, &n);
    int candidates = 0;
    for (int i = 0; i < nkeys; i++) {
        if (memcmp(keys[i].key_id, sig->key_id, MS_KEYID_LEN) != 0) continue;
        candidates++;
        if (crypto_sign_verify_detached(sig->sig, m, n, keys[i].pk) != 0) continue;
        uint8_t *both = global_part(sig->sig, sig->trusted, sig->trusted_len);
        if (!both) return verify_fail(err, "internal", "out of memory%s", "");
        int rc = crypto_sign_verify_detached(sig->global_sig, both, MS_SIG_LEN + sig->trusted_len,
                                             keys[i].pk);
        free(both);
        if (rc != 0)
            return verify_fail(err, "bad trusted comment",
                               "the trusted comment of the signature by key %s does not verify: "
                               "the signature file was altered",
                               id);
        *which = i;
        return 0;
    }
    if (candidates == 0)
        return verify_fail(err, "untrusted key",
                           "signed with key %s, which is not one of the trusted keys", id);
    return verify_fail(err, "bad signature",
                       "the signature by key %s does not verify: the signed file was altered, "
                       "or the signature belongs to another file",
                       id);
}
