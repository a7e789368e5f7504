/*
 * util.c: small pieces of pgvault.s3: growable strings, percent-encoding,
 * headers lists, and the digests (SHA-256, MD5) and base64 it needs.
 */
#include "s3int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void *s3_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        pv_log(PV_LOG_ERROR, "s3: out of memory allocating %zu bytes", n);
        abort();
    }
    return p;
}

char *s3_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = s3_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void s3_buf_add(s3_buf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            pv_log(PV_LOG_ERROR, "s3: out of memory growing a buffer to %zu bytes", cap);
            abort();
        }
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

void s3_buf_adds(s3_buf *b, const char *s)
{
    s3_buf_add(b, s, strlen(s));
}

void s3_buf_addf(s3_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[512];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        s3_buf_add(b, small, (size_t)n);
        return;
    }
    char *big = s3_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s3_buf_add(b, big, (size_t)n);
    free(big);
}

void s3_buf_free(s3_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

const char *s3_buf_str(s3_buf *b)
{
    if (!b->p) return "";
    b->p[b->len] = '\0'; /* a buffer emptied by len = 0 keeps its old bytes */
    return b->p;
}

void s3_uri_encode(s3_buf *out, const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            s3_buf_add(out, &s[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            s3_buf_add(out, e, 3);
        }
    }
}

void s3_headers_add(s3_headers *h, const char *name, const char *value)
{
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 8;
        s3_header *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) abort();
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].name = s3_xstrdup(name);
    h->v[h->n].value = s3_xstrdup(value);
    h->n++;
}

const char *s3_headers_get(const s3_headers *h, const char *name)
{
    for (int i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, name) == 0) return h->v[i].value;
    return NULL;
}

void s3_headers_del(s3_headers *h, const char *name)
{
    for (int i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) != 0) continue;
        free(h->v[i].name);
        free(h->v[i].value);
        h->v[i] = h->v[--h->n];
        i--;
    }
}

void s3_headers_free(s3_headers *h)
{
    for (int i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

void s3_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    pv_hex(md, 32, out);
}

/* Both digests in one pass, a cache-sized slice at a time: a part is read
 * from memory once instead of twice. */
void s3_sha256_md5(const void *data, size_t len, char sha_hex[65], uint8_t md5[16])
{
    enum { SLICE = 64 * 1024 };
    EVP_MD_CTX *a = EVP_MD_CTX_new(), *b = EVP_MD_CTX_new();
    if (!a || !b || EVP_DigestInit_ex(a, EVP_sha256(), NULL) != 1 ||
        EVP_DigestInit_ex(b, EVP_md5(), NULL) != 1)
        abort();
    const uint8_t *p = data;
    for (size_t off = 0; off < len; off += SLICE) {
        size_t n = len - off < SLICE ? len - off : SLICE;
        EVP_DigestUpdate(a, p + off, n);
        EVP_DigestUpdate(b, p + off, n);
    }
    uint8_t md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(a, md, &mdlen);
    EVP_DigestFinal_ex(b, md5, &mdlen);
    EVP_MD_CTX_free(a);
    EVP_MD_CTX_free(b);
    pv_hex(md, 32, sha_hex);
}

void s3_md5(const void *data, size_t len, uint8_t out[16])
{
    unsigned int mdlen = 0;
    EVP_Digest(data, len, out, &mdlen, EVP_md5(), NULL);
}

void s3_base64(const uint8_t *in, size_t len, char *out, size_t outsz)
{
    if (outsz < 4 * ((len + 2) / 3) + 1) {
        if (outsz) out[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}
