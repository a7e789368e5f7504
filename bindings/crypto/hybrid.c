/*
 * hybrid.c: age's post-quantum hybrid recipient type on the identity side:
 * MLKEM768-X25519 (filippo.io/hpke-pq, draft-ietf-hpke-pq) inside HPKE base
 * mode (RFC 9180) with HKDF-SHA-256 and ChaCha20-Poly1305, info
 * "age-encryption.org/mlkem768x25519": key generation, wrapping a file key
 * for an age1pq1... recipient and unwrapping it with the identity.
 */
#include "age.h"
#include "mlkem.h"

#include <openssl/evp.h>
#include <sodium.h>
#include <string.h>

#define HYBRID_INFO "age-encryption.org/mlkem768x25519"
#define ENC_LEN (MLKEM768_CT + 32)
#define EK_LEN (MLKEM768_EK + 32)

static const uint8_t SUITE[10] = {'H', 'P', 'K', 'E', 0x64, 0x7a, 0x00, 0x01, 0x00, 0x03};
static const uint8_t LABEL[6] = {0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c};

/* The expanded key: ML-KEM decapsulation key, X25519 secret, public key. */
typedef struct {
    uint8_t dk_pq[MLKEM768_DK];
    uint8_t dk_t[32];
    uint8_t ek[EK_LEN];
} expanded_key;

static int expand_key(const uint8_t seed[32], expanded_key *x)
{
    uint8_t full[96];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_shake256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, seed, 32) == 1 && EVP_DigestFinalXOF(ctx, full, 96) == 1;
    EVP_MD_CTX_free(ctx);
    if (ok) ok = mlkem768_keygen(full, x->ek, x->dk_pq) == 0;
    memcpy(x->dk_t, full + 64, 32);
    crypto_scalarmult_base(x->ek + MLKEM768_EK, x->dk_t);
    sodium_memzero(full, sizeof full);
    return ok ? 0 : -1;
}

int age_hybrid_public(const uint8_t seed[32], uint8_t ek[AGE_HYBRID_EK])
{
    expanded_key *x = sodium_malloc(sizeof *x);
    if (!x) return -1;
    int rc = expand_key(seed, x);
    memcpy(ek, x->ek, EK_LEN);
    sodium_free(x);
    return rc;
}

static void hmac(const uint8_t *key, size_t keylen, const uint8_t *const *parts, const size_t *lens,
                 int n, uint8_t out[32])
{
    static const uint8_t nothing[1] = {0};
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, keylen ? key : nothing, keylen);
    for (int i = 0; i < n; i++)
        crypto_auth_hmacsha256_update(&st, parts[i], lens[i]);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

static void labeled_extract(const uint8_t *salt, size_t saltlen, const char *label,
                            const uint8_t *ikm, size_t ikmlen, uint8_t out[32])
{
    const uint8_t *parts[] = {(const uint8_t *)"HPKE-v1", SUITE, (const uint8_t *)label, ikm};
    size_t lens[] = {7, sizeof SUITE, strlen(label), ikmlen};
    hmac(salt, saltlen, parts, lens, ikmlen ? 4 : 3, out);
}

/* One HKDF-Expand block is enough: L <= 32. */
static void labeled_expand(const uint8_t prk[32], const char *label, const uint8_t *info,
                           size_t infolen, size_t L, uint8_t *out)
{
    uint8_t len2[2] = {0, (uint8_t)L}, one = 1, block[32];
    const uint8_t *parts[] = {len2, (const uint8_t *)"HPKE-v1", SUITE, (const uint8_t *)label, info,
                              &one};
    size_t lens[] = {2, 7, sizeof SUITE, strlen(label), infolen, 1};
    hmac(prk, 32, parts, lens, 6, block);
    memcpy(out, block, L);
    sodium_memzero(block, sizeof block);
}

/* RFC 9180 key schedule, mode_base, empty psk and psk_id: the AEAD key and
 * base nonce (sequence number 0 is the only one age uses). */
static void key_schedule(const uint8_t ss[32], uint8_t key[32], uint8_t nonce[12])
{
    uint8_t ksc[65], secret[32];
    ksc[0] = 0;
    labeled_extract(NULL, 0, "psk_id_hash", NULL, 0, ksc + 1);
    labeled_extract(NULL, 0, "info_hash", (const uint8_t *)HYBRID_INFO, strlen(HYBRID_INFO),
                    ksc + 33);
    labeled_extract(ss, 32, "secret", NULL, 0, secret);
    labeled_expand(secret, "key", ksc, sizeof ksc, 32, key);
    labeled_expand(secret, "base_nonce", ksc, sizeof ksc, 12, nonce);
    sodium_memzero(secret, sizeof secret);
}

static int combine(const uint8_t ss_pq[32], const uint8_t ss_t[32], const uint8_t ct_t[32],
                   const uint8_t ek_t[32], uint8_t ss[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha3_256(), NULL) == 1 &&
             EVP_DigestUpdate(md, ss_pq, 32) == 1 && EVP_DigestUpdate(md, ss_t, 32) == 1 &&
             EVP_DigestUpdate(md, ct_t, 32) == 1 && EVP_DigestUpdate(md, ek_t, 32) == 1 &&
             EVP_DigestUpdate(md, LABEL, sizeof LABEL) == 1 &&
             EVP_DigestFinal_ex(md, ss, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

/* 1 opened, 0 not for this identity, -1 malformed or an all-zero share. */
int age_hybrid_unwrap(const char *enc_b64, const uint8_t *body, size_t bodylen,
                      const uint8_t seed[32], uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err)
{
    uint8_t enc[ENC_LEN + 1];
    if (age_b64_decode(enc_b64, strlen(enc_b64), enc, sizeof enc) != ENC_LEN) {
        age_fail(err, AGE_FAIL_HEADER,
                 "age: malformed header: an mlkem768x25519 enc is not 1120 bytes of canonical "
                 "base64");
        return -1;
    }
    if (bodylen != AGE_FILE_KEY_LEN + AGE_TAG_LEN) {
        age_fail(err, AGE_FAIL_HEADER,
                 "age: malformed header: an mlkem768x25519 stanza body is not 32 bytes");
        return -1;
    }
    typedef struct {
        expanded_key x;
        uint8_t ss_pq[32], ss_t[32], ss[32], key[32], nonce[12];
    } work;
    work *w = sodium_malloc(sizeof *w);
    if (!w) {
        pv_err_set(err, "crypto", "cannot allocate secure memory");
        return -1;
    }
    int rc = -1;
    const uint8_t *ct_t = enc + MLKEM768_CT;
    if (expand_key(seed, &w->x) < 0 || mlkem768_decaps(w->x.dk_pq, enc, w->ss_pq) < 0) {
        pv_err_set(err, "crypto", "ML-KEM-768 failed");
    } else if (crypto_scalarmult(w->ss_t, w->x.dk_t, ct_t) != 0) {
        age_fail(err, AGE_FAIL_HEADER,
                 "age: malformed header: the X25519 part of an mlkem768x25519 enc is a "
                 "low-order point");
    } else {
        int ok = combine(w->ss_pq, w->ss_t, ct_t, w->x.ek + MLKEM768_EK, w->ss) == 0;
        if (!ok) {
            pv_err_set(err, "crypto", "SHA3-256 failed");
        } else {
            key_schedule(w->ss, w->key, w->nonce);
            rc = crypto_aead_chacha20poly1305_ietf_decrypt(file_key, NULL, NULL, body, bodylen,
                                                           NULL, 0, w->nonce, w->key) == 0
                     ? 1
                     : 0;
        }
    }
    sodium_free(w);
    return rc;
}

int age_wrap_hybrid(age_text *t, const uint8_t ek[AGE_HYBRID_EK],
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err)
{
    typedef struct {
        uint8_t m[32], sk_e[32], ss_pq[32], ss_t[32], ss[32], key[32], nonce[12];
    } work;
    work *w = sodium_malloc(sizeof *w);
    if (!w) {
        pv_err_set(err, "crypto", "cannot allocate secure memory");
        return -1;
    }
    uint8_t enc[ENC_LEN], body[AGE_FILE_KEY_LEN + AGE_TAG_LEN];
    const uint8_t *ek_t = ek + MLKEM768_EK;
    randombytes_buf(w->m, sizeof w->m);
    randombytes_buf(w->sk_e, sizeof w->sk_e);
    crypto_scalarmult_base(enc + MLKEM768_CT, w->sk_e);
    int rc = -1;
    if (mlkem768_encaps(ek, w->m, enc, w->ss_pq) < 0) {
        pv_err_set(err, "crypto", "ML-KEM-768 failed");
    } else if (crypto_scalarmult(w->ss_t, w->sk_e, ek_t) != 0) {
        pv_err_set(err, "crypto", "invalid post-quantum recipient (a low-order X25519 point)");
    } else if (combine(w->ss_pq, w->ss_t, enc + MLKEM768_CT, ek_t, w->ss) < 0) {
        pv_err_set(err, "crypto", "SHA3-256 failed");
    } else {
        key_schedule(w->ss, w->key, w->nonce);
        crypto_aead_chacha20poly1305_ietf_encrypt(body, NULL, file_key, AGE_FILE_KEY_LEN, NULL, 0,
                                                  NULL, w->nonce, w->key);
        rc = 0;
    }
    sodium_free(w);
    if (rc < 0) return -1;
    char args[16 + (ENC_LEN + 2) / 3 * 4 + 1] = "mlkem768x25519 ";
    age_b64_encode(enc, sizeof enc, args + 15);
    char b64[64];
    age_b64_encode(body, sizeof body, b64);
    if (age_text_add(t, "-> ", 3) < 0 || age_text_add(t, args, strlen(args)) < 0 ||
        age_text_add(t, "\n", 1) < 0 || age_text_add(t, b64, strlen(b64)) < 0 ||
        age_text_add(t, "\n", 1) < 0) {
        pv_err_set(err, "crypto", "out of memory writing the age header");
        return -1;
    }
    return 0;
}

int age_hybrid_generate(age_identity *id, pv_err *err)
{
    memset(id, 0, sizeof *id);
    id->secret = sodium_malloc(AGE_KEY_LEN);
    id->hybrid_ek = malloc(AGE_HYBRID_EK);
    if (!id->secret || !id->hybrid_ek) {
        age_identity_free(id);
        pv_err_set(err, "crypto", "out of memory");
        return -1;
    }
    id->type = AGE_ID_HYBRID;
    id->len = AGE_KEY_LEN;
    randombytes_buf(id->secret, AGE_KEY_LEN);
    if (age_hybrid_public(id->secret, id->hybrid_ek) < 0) {
        age_identity_free(id);
        pv_err_set(err, "crypto", "cannot derive the post-quantum public key");
        return -1;
    }
    return 0;
}
