/*
 * mlkem.c: ML-KEM-768 (FIPS 203), as much as age's hybrid post-quantum
 * recipient type needs: KeyGen_internal from a 64-byte seed, Encaps with
 * given randomness, and Decaps with implicit rejection. SHA-3 and SHAKE
 * come from OpenSSL. Arithmetic modulo q uses constant divisors only.
 */
#include "mlkem.h"

#include <openssl/evp.h>
#include <sodium.h>
#include <string.h>

#define N 256
#define Q 3329
#define K 3
#define ETA 2 /* eta1 = eta2 = 2 for ML-KEM-768 */
#define DU 10
#define DV 4

typedef struct {
    uint16_t c[N];
} poly;

static uint16_t ZETAS[128], GAMMAS[128];
static bool tables_ready;

static uint32_t pow_mod(uint32_t b, uint32_t e)
{
    uint32_t r = 1;
    while (e) {
        if (e & 1) r = r * b % Q;
        b = b * b % Q;
        e >>= 1;
    }
    return r;
}

static uint32_t bitrev7(uint32_t i)
{
    uint32_t r = 0;
    for (int b = 0; b < 7; b++)
        r |= ((i >> b) & 1) << (6 - b);
    return r;
}

static void init_tables(void)
{
    if (tables_ready) return;
    for (uint32_t i = 0; i < 128; i++) {
        ZETAS[i] = (uint16_t)pow_mod(17, bitrev7(i));
        GAMMAS[i] = (uint16_t)pow_mod(17, 2 * bitrev7(i) + 1);
    }
    tables_ready = true;
}

static int xof(const EVP_MD *md, const uint8_t *in1, size_t n1, const uint8_t *in2, size_t n2,
               uint8_t *out, size_t outlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, in1, n1) == 1 &&
             (n2 == 0 || EVP_DigestUpdate(ctx, in2, n2) == 1);
    if (ok) {
        if (md == EVP_shake128() || md == EVP_shake256())
            ok = EVP_DigestFinalXOF(ctx, out, outlen) == 1;
        else
            ok = EVP_DigestFinal_ex(ctx, out, NULL) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

static void ntt(poly *f)
{
    int i = 1;
    for (int len = 128; len >= 2; len /= 2)
        for (int start = 0; start < N; start += 2 * len) {
            uint32_t zeta = ZETAS[i++];
            for (int j = start; j < start + len; j++) {
                uint32_t t = zeta * f->c[j + len] % Q;
                f->c[j + len] = (uint16_t)((f->c[j] + Q - t) % Q);
                f->c[j] = (uint16_t)((f->c[j] + t) % Q);
            }
        }
}

static void ntt_inverse(poly *f)
{
    int i = 127;
    for (int len = 2; len <= 128; len *= 2)
        for (int start = 0; start < N; start += 2 * len) {
            uint32_t zeta = ZETAS[i--];
            for (int j = start; j < start + len; j++) {
                uint32_t t = f->c[j];
                f->c[j] = (uint16_t)((t + f->c[j + len]) % Q);
                f->c[j + len] = (uint16_t)(zeta * ((f->c[j + len] + Q - t) % Q) % Q);
            }
        }
    for (int j = 0; j < N; j++)
        f->c[j] = (uint16_t)((uint32_t)f->c[j] * 3303 % Q);
}

/* acc += a o b in the NTT domain. */
static void mul_acc(poly *acc, const poly *a, const poly *b)
{
    for (int i = 0; i < 128; i++) {
        uint32_t a0 = a->c[2 * i], a1 = a->c[2 * i + 1];
        uint32_t b0 = b->c[2 * i], b1 = b->c[2 * i + 1];
        uint32_t c0 = (a0 * b0 + a1 * b1 % Q * GAMMAS[i]) % Q;
        uint32_t c1 = (a0 * b1 + a1 * b0) % Q;
        acc->c[2 * i] = (uint16_t)((acc->c[2 * i] + c0) % Q);
        acc->c[2 * i + 1] = (uint16_t)((acc->c[2 * i + 1] + c1) % Q);
    }
}

static void add(poly *r, const poly *a)
{
    for (int j = 0; j < N; j++)
        r->c[j] = (uint16_t)((r->c[j] + a->c[j]) % Q);
}

/* A[i][j] = SampleNTT(rho || j || i) by rejection from SHAKE128. */
static int sample_ntt(poly *a, const uint8_t rho[32], uint8_t j, uint8_t i)
{
    uint8_t in[34];
    memcpy(in, rho, 32);
    in[32] = j;
    in[33] = i;
    uint8_t buf[168 * 12];
    for (size_t len = 168 * 4; len <= sizeof buf; len *= 3) {
        if (xof(EVP_shake128(), in, sizeof in, NULL, 0, buf, len) < 0) return -1;
        int n = 0;
        for (size_t p = 0; p + 3 <= len && n < N; p += 3) {
            uint32_t d1 = buf[p] | (uint32_t)(buf[p + 1] & 15) << 8;
            uint32_t d2 = (uint32_t)(buf[p + 1] >> 4) | (uint32_t)buf[p + 2] << 4;
            if (d1 < Q) a->c[n++] = (uint16_t)d1;
            if (d2 < Q && n < N) a->c[n++] = (uint16_t)d2;
        }
        if (n == N) return 0;
    }
    return -1;
}

static int cbd(poly *f, const uint8_t seed[32], uint8_t nonce)
{
    uint8_t b[64 * ETA];
    if (xof(EVP_shake256(), seed, 32, &nonce, 1, b, sizeof b) < 0) return -1;
    for (int i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)(b[i / 2] >> (4 * (i & 1))) & 15;
        uint32_t x = (bits & 1) + ((bits >> 1) & 1), y = ((bits >> 2) & 1) + ((bits >> 3) & 1);
        f->c[i] = (uint16_t)((x + Q - y) % Q);
    }
    sodium_memzero(b, sizeof b);
    return 0;
}

static void encode(const poly *f, int d, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (int i = 0; i < N; i++) {
        acc |= (uint32_t)f->c[i] << bits;
        bits += d;
        while (bits >= 8) {
            out[o++] = (uint8_t)acc;
            acc >>= 8;
            bits -= 8;
        }
    }
}

static void decode(poly *f, int d, const uint8_t *in)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t p = 0;
    for (int i = 0; i < N; i++) {
        while (bits < d) {
            acc |= (uint32_t)in[p++] << bits;
            bits += 8;
        }
        uint32_t v = acc & ((1u << d) - 1);
        acc >>= d;
        bits -= d;
        f->c[i] = (uint16_t)(d == 12 ? v % Q : v);
    }
}

static void compress(poly *f, int d)
{
    for (int i = 0; i < N; i++)
        f->c[i] = (uint16_t)((((uint32_t)f->c[i] << d) + Q / 2) / Q & ((1u << d) - 1));
}

static void decompress(poly *f, int d)
{
    for (int i = 0; i < N; i++)
        f->c[i] = (uint16_t)(((uint32_t)f->c[i] * Q + (1u << (d - 1))) >> d);
}

static int expand_matrix(poly a[K][K], const uint8_t rho[32])
{
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            if (sample_ntt(&a[i][j], rho, (uint8_t)j, (uint8_t)i) < 0) return -1;
    return 0;
}

int mlkem768_keygen(const uint8_t seed[64], uint8_t ek[MLKEM768_EK], uint8_t dk[MLKEM768_DK])
{
    init_tables();
    uint8_t g[64], din[33];
    memcpy(din, seed, 32);
    din[32] = K;
    if (xof(EVP_sha3_512(), din, sizeof din, NULL, 0, g, 64) < 0) return -1;
    const uint8_t *rho = g, *sigma = g + 32;
    poly a[K][K], s[K], e[K], t[K];
    if (expand_matrix(a, rho) < 0) return -1;
    uint8_t nonce = 0;
    for (int i = 0; i < K; i++)
        if (cbd(&s[i], sigma, nonce++) < 0) return -1;
    for (int i = 0; i < K; i++)
        if (cbd(&e[i], sigma, nonce++) < 0) return -1;
    for (int i = 0; i < K; i++) {
        ntt(&s[i]);
        ntt(&e[i]);
    }
    for (int i = 0; i < K; i++) {
        t[i] = e[i];
        for (int j = 0; j < K; j++)
            mul_acc(&t[i], &a[i][j], &s[j]);
        encode(&t[i], 12, ek + 384 * i);
        encode(&s[i], 12, dk + 384 * i);
    }
    memcpy(ek + 384 * K, rho, 32);
    memcpy(dk + 384 * K, ek, MLKEM768_EK);
    if (xof(EVP_sha3_256(), ek, MLKEM768_EK, NULL, 0, dk + 384 * K + MLKEM768_EK, 32) < 0)
        return -1;
    memcpy(dk + 384 * K + MLKEM768_EK + 32, seed + 32, 32);
    sodium_memzero(g, sizeof g);
    sodium_memzero(din, sizeof din);
    sodium_memzero(s, sizeof s);
    sodium_memzero(e, sizeof e);
    return 0;
}

static int pke_encrypt(const uint8_t *ek, const uint8_t m[32], const uint8_t r[32],
                       uint8_t c[MLKEM768_CT])
{
    poly a[K][K], t[K], y[K], e1[K], e2, u[K], v, mu;
    for (int i = 0; i < K; i++)
        decode(&t[i], 12, ek + 384 * i);
    if (expand_matrix(a, ek + 384 * K) < 0) return -1;
    uint8_t nonce = 0;
    for (int i = 0; i < K; i++)
        if (cbd(&y[i], r, nonce++) < 0) return -1;
    for (int i = 0; i < K; i++)
        if (cbd(&e1[i], r, nonce++) < 0) return -1;
    if (cbd(&e2, r, nonce) < 0) return -1;
    for (int i = 0; i < K; i++)
        ntt(&y[i]);
    for (int i = 0; i < K; i++) {
        memset(&u[i], 0, sizeof u[i]);
        for (int j = 0; j < K; j++)
            mul_acc(&u[i], &a[j][i], &y[j]);
        ntt_inverse(&u[i]);
        add(&u[i], &e1[i]);
        compress(&u[i], DU);
        encode(&u[i], DU, c + 320 * i);
    }
    memset(&v, 0, sizeof v);
    for (int i = 0; i < K; i++)
        mul_acc(&v, &t[i], &y[i]);
    ntt_inverse(&v);
    add(&v, &e2);
    decode(&mu, 1, m);
    decompress(&mu, 1);
    add(&v, &mu);
    compress(&v, DV);
    encode(&v, DV, c + 320 * K);
    sodium_memzero(y, sizeof y);
    sodium_memzero(e1, sizeof e1);
    sodium_memzero(&e2, sizeof e2);
    sodium_memzero(&mu, sizeof mu);
    return 0;
}

static void pke_decrypt(const uint8_t *dk_pke, const uint8_t c[MLKEM768_CT], uint8_t m[32])
{
    poly u[K], v, s, w;
    for (int i = 0; i < K; i++) {
        decode(&u[i], DU, c + 320 * i);
        decompress(&u[i], DU);
        ntt(&u[i]);
    }
    decode(&v, DV, c + 320 * K);
    decompress(&v, DV);
    memset(&w, 0, sizeof w);
    for (int i = 0; i < K; i++) {
        decode(&s, 12, dk_pke + 384 * i);
        mul_acc(&w, &s, &u[i]);
    }
    ntt_inverse(&w);
    for (int j = 0; j < N; j++)
        v.c[j] = (uint16_t)((v.c[j] + Q - w.c[j]) % Q);
    compress(&v, 1);
    encode(&v, 1, m);
    sodium_memzero(&s, sizeof s);
    sodium_memzero(&w, sizeof w);
    sodium_memzero(&v, sizeof v);
}

int mlkem768_encaps(const uint8_t ek[MLKEM768_EK], const uint8_t m[32], uint8_t c[MLKEM768_CT],
                    uint8_t ss[32])
{
    init_tables();
    uint8_t h[32], kr[64];
    if (xof(EVP_sha3_256(), ek, MLKEM768_EK, NULL, 0, h, 32) < 0) return -1;
    if (xof(EVP_sha3_512(), m, 32, h, 32, kr, 64) < 0) return -1;
    int rc = pke_encrypt(ek, m, kr + 32, c);
    memcpy(ss, kr, 32);
    sodium_memzero(kr, sizeof kr);
    return rc;
}

int mlkem768_decaps(const uint8_t dk[MLKEM768_DK], const uint8_t c[MLKEM768_CT], uint8_t ss[32])
{
    init_tables();
    const uint8_t *ek = dk + 384 * K, *h = ek + MLKEM768_EK, *z = h + 32;
    uint8_t m[32], kr[64], reject[32], c2[MLKEM768_CT];
    pke_decrypt(dk, c, m);
    int rc = xof(EVP_sha3_512(), m, 32, h, 32, kr, 64);
    if (rc == 0) rc = xof(EVP_shake256(), z, 32, c, MLKEM768_CT, reject, 32);
    if (rc == 0) rc = pke_encrypt(ek, m, kr + 32, c2);
    if (rc == 0) {
        /* implicit rejection, without a branch on the comparison */
        uint8_t diff = 0;
        for (size_t i = 0; i < MLKEM768_CT; i++)
            diff |= c[i] ^ c2[i];
        uint8_t mask = (uint8_t)(-(int)((diff | (uint8_t)-diff) >> 7));
        for (int i = 0; i < 32; i++)
            ss[i] = (uint8_t)((kr[i] & ~mask) | (reject[i] & mask));
    }
    sodium_memzero(m, sizeof m);
    sodium_memzero(kr, sizeof kr);
    sodium_memzero(reject, sizeof reject);
    return rc;
}
