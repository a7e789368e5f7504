/*
 * hybrid.c: age's post-quantum hybrid recipient type on the identity side:
 * MLKEM768-X25519 (filippo.io/hpke-pq, draft-ietf-hpke-pq) inside HPKE base
 * mode (RFC 9180) with HKDF-SHA-256 and ChaCha20-Poly1305, info
 * "age-encryption.org/mlkem768x25519". Files encrypted to age1pq1...
 * recipients can be decrypted; encrypting to them is not offered.
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
        uint8_t ss_pq[32], ss_t[32], ss[32], secret[32], key[32], nonce[12], ctx[65];
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
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int ok = md && EVP_DigestInit_ex(md, EVP_sha3_256(), NULL) == 1 &&
                 EVP_DigestUpdate(md, w->ss_pq, 32) == 1 &&
                 EVP_DigestUpdate(md, w->ss_t, 32) == 1 && EVP_DigestUpdate(md, ct_t, 32) == 1 &&
                 EVP_DigestUpdate(md, w->x.ek + MLKEM768_EK, 32) == 1 &&
                 EVP_DigestUpdate(md, LABEL, sizeof LABEL) == 1 &&
                 EVP_DigestFinal_ex(md, w->ss, NULL) == 1;
        EVP_MD_CTX_free(md);
        if (!ok) {
            pv_err_set(err, "crypto", "SHA3-256 failed");
        } else {
            /* RFC 9180 key schedule, mode_base, empty psk and psk_id */
            uint8_t *ksc = w->ctx;
            ksc[0] = 0;
            labeled_extract(NULL, 0, "psk_id_hash", NULL, 0, ksc + 1);
            labeled_extract(NULL, 0, "info_hash", (const uint8_t *)HYBRID_INFO, strlen(HYBRID_INFO),
                            ksc + 33);
            labeled_extract(w->ss, 32, "secret", NULL, 0, w->secret);
            labeled_expand(w->secret, "key", ksc, 65, 32, w->key);
            labeled_expand(w->secret, "base_nonce", ksc, 65, 12, w->nonce);
            rc = crypto_aead_chacha20poly1305_ietf_decrypt(file_key, NULL, NULL, body, bodylen,
                                                           NULL, 0, w->nonce, w->key) == 0
                     ? 1
                     : 0;
        }
    }
    sodium_free(w);
    return rc;
}
