/*
 * sigv4.c: AWS Signature Version 4 for S3: canonical query strings,
 * canonical headers (lower-cased, trimmed, duplicates joined), the
 * canonical request, the string to sign, and the signature. The derived
 * signing key is cached per day, region and service.
 */
#include "s3int.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

static void hmac_sha256(const uint8_t *key, size_t keylen, const char *msg, size_t msglen,
                        uint8_t out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, msglen, out, &len);
}

typedef struct {
    char *name, *value;
} pair;

static int pair_cmp(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

void s3_canonical_query(s3_buf *out, const char *const *names, const char *const *values, int n)
{
    if (n <= 0) return;
    pair *p = s3_xmalloc((size_t)n * sizeof *p);
    for (int i = 0; i < n; i++) {
        s3_buf a = {0}, b = {0};
        s3_uri_encode(&a, names[i], strlen(names[i]), false);
        if (values[i]) s3_uri_encode(&b, values[i], strlen(values[i]), false);
        p[i].name = s3_xstrdup(s3_buf_str(&a));
        p[i].value = s3_xstrdup(s3_buf_str(&b));
        s3_buf_free(&a);
        s3_buf_free(&b);
    }
    qsort(p, (size_t)n, sizeof *p, pair_cmp);
    for (int i = 0; i < n; i++) {
        if (i) s3_buf_adds(out, "&");
        s3_buf_adds(out, p[i].name);
        s3_buf_adds(out, "=");
        s3_buf_adds(out, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

/* Value trimmed, with every run of white space collapsed to one space. */
static void add_trimmed(s3_buf *out, const char *v)
{
    while (*v && isspace((unsigned char)*v))
        v++;
    bool space = false;
    for (; *v; v++) {
        if (isspace((unsigned char)*v)) {
            space = true;
            continue;
        }
        if (space) s3_buf_add(out, " ", 1);
        space = false;
        s3_buf_add(out, v, 1);
    }
}

typedef struct {
    char *lname;
    int order;
    const char *value;
} hdr_ref;

static int hdr_cmp(const void *a, const void *b)
{
    const hdr_ref *x = a, *y = b;
    int c = strcmp(x->lname, y->lname);
    return c ? c : x->order - y->order;
}

static void derive_key(s3_signer *sg, const char *date8)
{
    if (strcmp(sg->key_date, date8) == 0) return;
    char k0[300];
    int n = snprintf(k0, sizeof k0, "AWS4%s", sg->secret_key);
    uint8_t k1[32], k2[32], k3[32];
    hmac_sha256((const uint8_t *)k0, (size_t)n, date8, 8, k1);
    hmac_sha256(k1, 32, sg->region, strlen(sg->region), k2);
    hmac_sha256(k2, 32, sg->service, strlen(sg->service), k3);
    hmac_sha256(k3, 32, "aws4_request", 12, sg->key);
    memset(k0, 0, sizeof k0);
    memcpy(sg->key_date, date8, 8);
    sg->key_date[8] = '\0';
}

void s3_sign(s3_signer *sg, const char *method, const char *uri, const char *query,
             const s3_headers *headers, const char *payload_hash, const char *amz_date,
             s3_buf *authz, s3_buf *creq_out, s3_buf *sts_out)
{
    int n = headers->n;
    hdr_ref *refs = s3_xmalloc((size_t)(n ? n : 1) * sizeof *refs);
    for (int i = 0; i < n; i++) {
        refs[i].lname = s3_xstrdup(headers->v[i].name);
        for (char *c = refs[i].lname; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        refs[i].order = i;
        refs[i].value = headers->v[i].value;
    }
    qsort(refs, (size_t)n, sizeof *refs, hdr_cmp);

    s3_buf creq = {0}, signed_names = {0};
    s3_buf_addf(&creq, "%s\n%s\n%s\n", method, uri, query);
    for (int i = 0; i < n; i++) {
        bool same = i > 0 && strcmp(refs[i].lname, refs[i - 1].lname) == 0;
        if (same) {
            s3_buf_add(&creq, ",", 1);
        } else {
            if (i) s3_buf_add(&creq, "\n", 1);
            s3_buf_addf(&creq, "%s:", refs[i].lname);
            if (signed_names.len) s3_buf_add(&signed_names, ";", 1);
            s3_buf_adds(&signed_names, refs[i].lname);
        }
        add_trimmed(&creq, refs[i].value);
    }
    if (n) s3_buf_add(&creq, "\n", 1);
    s3_buf_addf(&creq, "\n%s\n%s", s3_buf_str(&signed_names), payload_hash);

    char date8[9];
    memcpy(date8, amz_date, 8);
    date8[8] = '\0';
    char creq_hash[65];
    s3_sha256_hex(creq.p, creq.len, creq_hash);
    s3_buf sts = {0};
    s3_buf_addf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date8,
                sg->region, sg->service, creq_hash);

    derive_key(sg, date8);
    uint8_t sig[32];
    hmac_sha256(sg->key, 32, sts.p, sts.len, sig);
    char sighex[65];
    pv_hex(sig, 32, sighex);
    s3_buf_addf(authz,
                "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                "Signature=%s",
                sg->access_key, date8, sg->region, sg->service, s3_buf_str(&signed_names), sighex);

    if (creq_out) s3_buf_add(creq_out, creq.p, creq.len);
    if (sts_out) s3_buf_add(sts_out, sts.p, sts.len);
    s3_buf_free(&creq);
    s3_buf_free(&sts);
    s3_buf_free(&signed_names);
    for (int i = 0; i < n; i++)
        free(refs[i].lname);
    free(refs);
}
