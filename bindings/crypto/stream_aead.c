/*
 * stream_aead.c: the STREAM construction of the age payload: 64 KiB chunks
 * sealed with ChaCha20-Poly1305 under the payload key, nonce = 11-byte big
 * endian counter || last-chunk flag. The bulk AEAD runs on OpenSSL's EVP
 * (about 3x faster here) or on libsodium, the reference; tests cross-check
 * one against the other.
 */
#include "age.h"

#include <sodium.h>
#include <string.h>

static void chunk_nonce(uint64_t counter, bool last, uint8_t nonce[12])
{
    memset(nonce, 0, 12);
    for (int i = 0; i < 8; i++)
        nonce[10 - i] = (uint8_t)(counter >> (8 * i));
    nonce[11] = last ? 1 : 0;
}

int age_stream_init(age_stream *s, int engine, const uint8_t file_key[AGE_FILE_KEY_LEN],
                    const uint8_t nonce[AGE_NONCE_LEN], bool encrypt, pv_err *err)
{
    memset(s, 0, sizeof *s);
    s->engine = engine;
    s->key = sodium_malloc(AGE_KEY_LEN);
    if (!s->key) {
        pv_err_set(err, "crypto", "cannot allocate secure memory for the payload key");
        return -1;
    }
    age_hkdf(file_key, AGE_FILE_KEY_LEN, nonce, AGE_NONCE_LEN, "payload", s->key);
    if (engine == AGE_AEAD_OPENSSL) {
        s->ctx = EVP_CIPHER_CTX_new();
        int ok = s->ctx != NULL;
        if (ok && encrypt)
            ok = EVP_EncryptInit_ex(s->ctx, EVP_chacha20_poly1305(), NULL, s->key, NULL) == 1;
        else if (ok)
            ok = EVP_DecryptInit_ex(s->ctx, EVP_chacha20_poly1305(), NULL, s->key, NULL) == 1;
        if (!ok) {
            age_stream_free(s);
            pv_err_set(err, "crypto", "cannot initialise OpenSSL's ChaCha20-Poly1305");
            return -1;
        }
    }
    return 0;
}

void age_stream_free(age_stream *s)
{
    if (s->ctx) EVP_CIPHER_CTX_free(s->ctx); /* cleanses the key schedule */
    if (s->key) sodium_free(s->key);
    memset(s, 0, sizeof *s);
}

int age_stream_seal(age_stream *s, const uint8_t *in, size_t n, bool last, uint8_t *out)
{
    uint8_t nonce[12];
    chunk_nonce(s->counter, last, nonce);
    if (s->engine == AGE_AEAD_SODIUM) {
        crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, n, NULL, 0, NULL, nonce, s->key);
    } else {
        int len = 0, fin = 0;
        if (EVP_EncryptInit_ex(s->ctx, NULL, NULL, NULL, nonce) != 1 ||
            EVP_EncryptUpdate(s->ctx, out, &len, in, (int)n) != 1 ||
            EVP_EncryptFinal_ex(s->ctx, out + len, &fin) != 1 ||
            EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_GET_TAG, AGE_TAG_LEN, out + n) != 1)
            return -1;
    }
    s->counter++;
    return 0;
}

int age_stream_open(age_stream *s, const uint8_t *in, size_t n, bool last, uint8_t *out)
{
    if (n < AGE_TAG_LEN || n > AGE_ENC_CHUNK) return -1;
    uint8_t nonce[12];
    chunk_nonce(s->counter, last, nonce);
    size_t plen = n - AGE_TAG_LEN;
    if (s->engine == AGE_AEAD_SODIUM) {
        if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, n, NULL, 0, nonce,
                                                      s->key) != 0)
            return -1;
    } else {
        int len = 0, fin = 0;
        uint8_t tag[AGE_TAG_LEN];
        memcpy(tag, in + plen, AGE_TAG_LEN);
        if (EVP_DecryptInit_ex(s->ctx, NULL, NULL, NULL, nonce) != 1 ||
            EVP_DecryptUpdate(s->ctx, out, &len, in, (int)plen) != 1 ||
            EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_TAG, AGE_TAG_LEN, tag) != 1 ||
            EVP_DecryptFinal_ex(s->ctx, out + len, &fin) != 1) {
            sodium_memzero(out, plen);
            return -1;
        }
    }
    s->counter++;
    return 0;
}
