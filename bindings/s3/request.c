/*
 * request.c: one S3 request: its lifecycle, the libcurl callbacks (which
 * only record: nothing raises there) and the preparation of each attempt:
 * the URL (path or virtual-host style), the signed headers and the curl
 * options. Every attempt is signed afresh, with the clock the settings
 * hold.
 */
#include "s3int.h"

#include "../http/net.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ERROR_BODY (1024 * 1024)
#define MAX_XML_BODY (64 * 1024 * 1024)

s3_req *s3_req_new(const char *method, const char *op, const char *bucket, const char *key,
                   const char *query)
{
    s3_req *r = calloc(1, sizeof *r);
    if (!r) abort();
    snprintf(r->method, sizeof r->method, "%s", method);
    r->op = op;
    r->bucket = s3_xstrdup(bucket);
    r->key = key ? s3_xstrdup(key) : NULL;
    r->query = s3_xstrdup(query ? query : "");
    s3_req_body(r, NULL, 0, false);
    r->content_length = -1;
    return r;
}

void s3_req_free(s3_req *r)
{
    if (!r) return;
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->slist);
    s3_headers_free(&r->extra);
    s3_buf_free(&r->resp);
    free(r->bucket);
    free(r->key);
    free(r->query);
    free(r);
}

void s3_req_body(s3_req *r, const uint8_t *body, size_t len, bool with_md5)
{
    r->body = body;
    r->body_len = len;
    if (!with_md5) {
        s3_sha256_hex(body ? (const void *)body : "", len, r->payload_hash);
        return;
    }
    s3_sha256_md5(body ? (const void *)body : "", len, r->payload_hash, r->md5);
    char b64[32];
    s3_base64(r->md5, 16, b64, sizeof b64);
    s3_headers_add(&r->extra, "Content-MD5", b64);
}

/* ------------------------------------------------------------------ */
/* curl callbacks: they only record; nothing raises here               */
/* ------------------------------------------------------------------ */

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *ud)
{
    s3_req *r = ud;
    size_t want = size * nmemb, left = r->body_len - r->body_off;
    size_t n = want < left ? want : left;
    if (n) memcpy(dst, r->body + r->body_off, n);
    r->body_off += n;
    return n;
}

static int seek_cb(void *ud, curl_off_t offset, int origin)
{
    s3_req *r = ud;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static void copy_header_value(char *dst, size_t dstsz, const char *v, size_t len)
{
    while (len && isspace((unsigned char)*v))
        v++, len--;
    while (len && isspace((unsigned char)v[len - 1]))
        len--;
    if (len >= dstsz) len = dstsz - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static size_t header_cb(char *line, size_t size, size_t nmemb, void *ud)
{
    s3_req *r = ud;
    size_t len = size * nmemb;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue or a redirect): start over. */
        r->etag[0] = r->date[0] = r->retry_after[0] = r->content_range[0] = '\0';
        r->content_length = -1;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    struct {
        const char *name;
        char *dst;
        size_t sz;
    } known[] = {
        {"etag", r->etag, sizeof r->etag},
        {"date", r->date, sizeof r->date},
        {"retry-after", r->retry_after, sizeof r->retry_after},
        {"content-range", r->content_range, sizeof r->content_range},
        {"last-modified", r->last_modified, sizeof r->last_modified},
        {"content-type", r->content_type, sizeof r->content_type},
        {"x-amz-request-id", r->request_id, sizeof r->request_id},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strlen(known[i].name) == nlen && strncasecmp(line, known[i].name, nlen) == 0) {
            copy_header_value(known[i].dst, known[i].sz, v, vlen);
            return len;
        }
    }
    if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
        char tmp[32];
        copy_header_value(tmp, sizeof tmp, v, vlen);
        r->content_length = strtoll(tmp, NULL, 10);
    }
    return len;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    s3_req *r = ud;
    size_t len = size * nmemb;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (r->sink && (status == 200 || status == 206)) {
        if (r->sink(r, data, len, r->sink_ud) < 0) {
            r->sink_failed = true;
            return 0; /* curl stops with CURLE_WRITE_ERROR; we raise later */
        }
        return len;
    }
    size_t limit = status >= 300 ? MAX_ERROR_BODY : MAX_XML_BODY;
    if (r->resp.len + len > limit) return 0;
    s3_buf_add(&r->resp, data, len);
    return len;
}

/* ------------------------------------------------------------------ */
/* Attempts                                                            */
/* ------------------------------------------------------------------ */

static void host_of(const char *endpoint, char *out, size_t outsz)
{
    const char *h = strstr(endpoint, "://");
    h = h ? h + 3 : endpoint;
    size_t n = strcspn(h, "/");
    if (n >= outsz) n = outsz - 1;
    memcpy(out, h, n);
    out[n] = '\0';
}

/* The URL of the request (into url) and its canonical path (into uri);
 * host receives the Host header's value. */
static void build_url(const s3_config *cfg, const s3_req *r, char *host, size_t hostsz, s3_buf *uri,
                      s3_buf *url)
{
    host_of(cfg->endpoint, host, hostsz);
    const char *scheme = strncmp(cfg->endpoint, "https", 5) == 0 ? "https" : "http";
    if (cfg->path_style) {
        s3_buf_adds(uri, "/");
        s3_uri_encode(uri, r->bucket, strlen(r->bucket), false);
        if (r->key) {
            s3_buf_adds(uri, "/");
            s3_uri_encode(uri, r->key, strlen(r->key), true);
        }
    } else {
        char base[512];
        host_of(cfg->endpoint, base, sizeof base);
        snprintf(host, hostsz, "%.64s.%s", r->bucket, base);
        s3_buf_adds(uri, "/");
        if (r->key) s3_uri_encode(uri, r->key, strlen(r->key), true);
    }
    s3_buf_addf(url, "%s://%s%s%s%s", scheme, host, s3_buf_str(uri), r->query[0] ? "?" : "",
                r->query);
}

/* The signed header list of this attempt, into r->slist. */
static void sign_headers(s3_settings *set, s3_req *r, const char *host, s3_buf *uri)
{
    time_t now = (time_t)((double)time(NULL) + set->clock_offset + set->cfg.clock_skew);
    struct tm tm;
    gmtime_r(&now, &tm);
    char amz_date[32];
    strftime(amz_date, sizeof amz_date, "%Y%m%dT%H%M%SZ", &tm);

    s3_headers h = {0};
    s3_headers_add(&h, "Host", host);
    s3_headers_add(&h, "x-amz-content-sha256", r->payload_hash);
    s3_headers_add(&h, "x-amz-date", amz_date);
    if (set->signer.session_token)
        s3_headers_add(&h, "x-amz-security-token", set->signer.session_token);
    for (int i = 0; i < r->extra.n; i++)
        s3_headers_add(&h, r->extra.v[i].name, r->extra.v[i].value);
    s3_buf authz = {0}, line = {0};
    s3_sign(&set->signer, r->method, s3_buf_str(uri), r->query, &h, r->payload_hash, amz_date,
            &authz, NULL, NULL);
    for (int i = 0; i < h.n; i++) {
        line.len = 0;
        s3_buf_addf(&line, "%s: %s", h.v[i].name, h.v[i].value);
        r->slist = curl_slist_append(r->slist, s3_buf_str(&line));
    }
    line.len = 0;
    s3_buf_addf(&line, "Authorization: %s", s3_buf_str(&authz));
    r->slist = curl_slist_append(r->slist, s3_buf_str(&line));
    r->slist = curl_slist_append(r->slist, "Expect:");
    if (!s3_headers_get(&r->extra, "Content-Type"))
        r->slist = curl_slist_append(r->slist, "Content-Type:");
    s3_buf_free(&line);
    s3_buf_free(&authz);
    s3_headers_free(&h);
}

static void set_method(CURL *e, s3_req *r)
{
    if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (r->body || strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    }
}

static void set_transfer_options(CURL *e, const s3_config *cfg, s3_req *r, const char *url)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->slist);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    r->curl_error[0] = '\0';
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_error);
    net_secure(e, cfg->ca_bundle, 15L); /* the rules pgvault.http follows too */
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, cfg->timeout > 0 ? cfg->timeout : 60L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
    set_method(e, r);
}

void s3_attempt_prepare(s3_client *c, s3_req *r)
{
    if (r->before_attempt) r->before_attempt(r, r->sink_ud);
    r->attempt++;
    r->status = 0;
    r->body_off = 0;
    r->sink_failed = false;
    r->error_code[0] = '\0';
    s3_buf_free(&r->resp);
    if (!r->easy)
        r->easy = curl_easy_init();
    else
        curl_easy_reset(r->easy);
    if (!r->easy) abort();
    curl_slist_free_all(r->slist);
    r->slist = NULL;

    const s3_config *cfg = &c->set->cfg;
    char host[600];
    s3_buf uri = {0}, url = {0};
    build_url(cfg, r, host, sizeof host, &uri, &url);
    sign_headers(c->set, r, host, &uri);
    set_transfer_options(r->easy, cfg, r, s3_buf_str(&url));
    s3_buf_free(&uri);
    s3_buf_free(&url);
    pv_log(PV_LOG_DEBUG, "s3: %s %s s3://%s/%s%s%s (attempt %d)", r->op, r->method, r->bucket,
           r->key ? r->key : "", r->query[0] ? "?" : "", r->query, r->attempt);
}
