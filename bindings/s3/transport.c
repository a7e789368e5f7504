/*
 * transport.c: S3 requests on the curl multi interface. Every attempt is
 * signed afresh; failures are sorted into retryable ones (5xx, 429,
 * SlowDown, RequestTimeout, BadDigest, resets and timeouts: exponential
 * backoff with jitter, Retry-After honoured), a skewed clock (corrected from the
 * server's Date, then retried) and final ones (authentication and
 * permission errors fail at once, naming the key id, endpoint and profile).
 */
#include "s3int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define MAX_ERROR_BODY (1024 * 1024)
#define MAX_XML_BODY (64 * 1024 * 1024)

static double jitter(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (uint32_t)rand();
    return (double)r / 4294967296.0;
}

int s3_client_init(s3_client *c, pv_err *err)
{
    static bool global_done;
    if (!global_done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = true;
    }
    c->multi = curl_multi_init();
    if (!c->multi) {
        pv_err_set(err, "s3", "cannot create a libcurl multi handle");
        return -1;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 32L);
    memset(&c->signer, 0, sizeof c->signer);
    snprintf(c->signer.access_key, sizeof c->signer.access_key, "%s", c->cfg.access_key);
    snprintf(c->signer.secret_key, sizeof c->signer.secret_key, "%s", c->cfg.secret_key);
    snprintf(c->signer.region, sizeof c->signer.region, "%s", c->cfg.region);
    snprintf(c->signer.service, sizeof c->signer.service, "s3");
    c->signer.session_token = c->cfg.session_token;
    return 0;
}

void s3_client_close(s3_client *c)
{
    s3_cancel_all(c);
    if (c->multi) curl_multi_cleanup(c->multi);
    c->multi = NULL;
    free(c->live);
    c->live = NULL;
    c->nlive = c->caplive = 0;
    memset(&c->signer, 0, sizeof c->signer);
    s3_config_free(&c->cfg);
}

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

static const char *describe_url(const s3_req *r, char *out, size_t outsz)
{
    snprintf(out, outsz, "s3://%s/%s", r->bucket, r->key ? r->key : "");
    return out;
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

static void start_attempt(s3_client *c, s3_req *r)
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

    const s3_config *cfg = &c->cfg;
    char host[600], scheme[8];
    host_of(cfg->endpoint, host, sizeof host);
    snprintf(scheme, sizeof scheme, "%s",
             strncmp(cfg->endpoint, "https", 5) == 0 ? "https" : "http");
    s3_buf uri = {0}, url = {0};
    if (cfg->path_style) {
        s3_buf_adds(&uri, "/");
        s3_uri_encode(&uri, r->bucket, strlen(r->bucket), false);
        if (r->key) {
            s3_buf_adds(&uri, "/");
            s3_uri_encode(&uri, r->key, strlen(r->key), true);
        }
    } else {
        char base[512];
        host_of(cfg->endpoint, base, sizeof base);
        snprintf(host, sizeof host, "%.64s.%s", r->bucket, base);
        s3_buf_adds(&uri, "/");
        if (r->key) s3_uri_encode(&uri, r->key, strlen(r->key), true);
    }
    s3_buf_addf(&url, "%s://%s%s%s%s", scheme, host, s3_buf_str(&uri), r->query[0] ? "?" : "",
                r->query);

    time_t now = (time_t)((double)time(NULL) + c->clock_offset + cfg->clock_skew);
    struct tm tm;
    gmtime_r(&now, &tm);
    char amz_date[32];
    strftime(amz_date, sizeof amz_date, "%Y%m%dT%H%M%SZ", &tm);

    s3_headers h = {0};
    s3_headers_add(&h, "Host", host);
    s3_headers_add(&h, "x-amz-content-sha256", r->payload_hash);
    s3_headers_add(&h, "x-amz-date", amz_date);
    if (c->signer.session_token)
        s3_headers_add(&h, "x-amz-security-token", c->signer.session_token);
    for (int i = 0; i < r->extra.n; i++)
        s3_headers_add(&h, r->extra.v[i].name, r->extra.v[i].value);
    s3_buf authz = {0};
    s3_sign(&c->signer, r->method, s3_buf_str(&uri), r->query, &h, r->payload_hash, amz_date,
            &authz, NULL, NULL);
    s3_buf line = {0};
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

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, s3_buf_str(&url));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->slist);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, cfg->timeout > 0 ? cfg->timeout : 60L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->ca_bundle[0]) curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_bundle);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "pgvault/" PGVAULT_VERSION);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
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
    s3_buf_free(&uri);
    s3_buf_free(&url);
    pv_log(PV_LOG_DEBUG, "s3: %s %s s3://%s/%s%s%s (attempt %d)", r->op, r->method, r->bucket,
           r->key ? r->key : "", r->query[0] ? "?" : "", r->query, r->attempt);
    curl_multi_add_handle(c->multi, e);
    r->active = true;
}

void s3_submit(s3_client *c, s3_req *r)
{
    r->done = false;
    r->attempt = 0;
    r->not_before = 0;
    pv_err_clear(&r->err);
    if (c->nlive == c->caplive) {
        int cap = c->caplive ? c->caplive * 2 : 16;
        s3_req **v = realloc(c->live, (size_t)cap * sizeof *v);
        if (!v) abort();
        c->live = v;
        c->caplive = cap;
    }
    c->live[c->nlive++] = r;
    start_attempt(c, r);
}

static void unlive(s3_client *c, s3_req *r)
{
    for (int i = 0; i < c->nlive; i++) {
        if (c->live[i] == r) {
            c->live[i] = c->live[--c->nlive];
            return;
        }
    }
}

static void finish(s3_client *c, s3_req *r)
{
    r->done = true;
    unlive(c, r);
    r->next_done = NULL;
    s3_req **tail = &c->queue;
    while (*tail)
        tail = &(*tail)->next_done;
    *tail = r;
}

void s3_cancel_all(s3_client *c)
{
    for (int i = 0; i < c->nlive; i++) {
        s3_req *r = c->live[i];
        if (r->active && c->multi) curl_multi_remove_handle(c->multi, r->easy);
        r->active = false;
        r->done = true;
    }
    c->nlive = 0;
    c->queue = NULL;
}

/* ------------------------------------------------------------------ */
/* Sorting outcomes                                                    */
/* ------------------------------------------------------------------ */

static bool is_auth_code(const char *code)
{
    static const char *const codes[] = {
        "AccessDenied",    "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
        "ExpiredToken",    "TokenRefreshRequired",  "AllAccessDisabled",  "AccountProblem",
        "InvalidSecurity", "Unauthorized",          "Forbidden",          NULL};
    for (int i = 0; codes[i]; i++)
        if (strcmp(code, codes[i]) == 0) return true;
    return false;
}

/* What a Backblaze B2 application key needs for an operation. */
static const char *b2_capability(const char *op)
{
    static const struct {
        const char *op, *cap;
    } caps[] = {
        {"PutObject", "writeFiles"},
        {"CreateMultipartUpload", "writeFiles"},
        {"UploadPart", "writeFiles"},
        {"CompleteMultipartUpload", "writeFiles"},
        {"AbortMultipartUpload", "writeFiles"},
        {"GetObject", "readFiles"},
        {"HeadObject", "readFiles"},
        {"ListObjectsV2", "listFiles"},
        {"ListMultipartUploads", "listFiles"},
        {"DeleteObject", "deleteFiles"},
        {"DeleteObjects", "deleteFiles"},
        {"HeadBucket", "listBuckets"},
    };
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        if (strcmp(op, caps[i].op) == 0) return caps[i].cap;
    return NULL;
}

static const char *b2_named_capability(const char *message)
{
    static const char *const caps[] = {
        "listAllBucketNames", "listBuckets", "listFiles",   "readFiles",    "shareFiles",
        "writeFiles",         "deleteFiles", "readBuckets", "writeBuckets", NULL};
    for (int i = 0; caps[i]; i++)
        if (strstr(message, caps[i])) return caps[i];
    return NULL;
}

static void final_error(s3_client *c, s3_req *r, const char *code, const char *message)
{
    char where[1200], who[900];
    describe_url(r, where, sizeof where);
    s3_config_describe(&c->cfg, who, sizeof who);
    pv_err *e = &r->err;
    if (strcmp(code, "NoSuchBucket") == 0 || (r->status == 404 && !r->key && !code[0])) {
        pv_err_set(e, "s3", "bucket '%s' does not exist at %s (%s %s): create it or check the name",
                   r->bucket, c->cfg.endpoint, r->op, where);
    } else if (is_auth_code(code) || r->status == 401 || r->status == 403) {
        const char *named = b2_named_capability(message);
        const char *cap = named ? named : b2_capability(r->op);
        const char *hint = "";
        char b2[256] = "";
        if (strcmp(code, "SignatureDoesNotMatch") == 0)
            hint = "; the secret access key does not match the key id";
        else if (strcmp(code, "InvalidAccessKeyId") == 0)
            hint = "; the server does not know this access key id";
        else if (strcmp(code, "RequestTimeTooSkewed") != 0 && cap)
            snprintf(b2, sizeof b2,
                     "; on Backblaze B2 the application key needs the '%s' capability%s", cap,
                     named ? "" : " (keys restricted to one bucket also need listAllBucketNames)");
        char what[96];
        if (code[0])
            snprintf(what, sizeof what, "%s", code);
        else
            snprintf(what, sizeof what, "HTTP %ld", r->status);
        pv_err_set(e, "s3", "%s %s refused: %s%s%s (%s)%s%s", r->op, where, what,
                   message[0] ? ": " : "", message, who, hint, b2);
    } else {
        pv_err_set(e, "s3", "%s %s failed: HTTP %ld%s%s%s%s (endpoint %s)", r->op, where, r->status,
                   code[0] ? " " : "", code, message[0] ? ": " : "", message, c->cfg.endpoint);
    }
    pv_err_int(e, "http_status", r->status);
    if (code[0]) pv_err_str(e, "code", code);
    pv_err_bool(e, "retryable", false);
    pv_err_str(e, "bucket", r->bucket);
    if (r->key) pv_err_str(e, "key", r->key);
    if (r->request_id[0]) pv_err_str(e, "request_id", r->request_id);
    snprintf(r->error_code, sizeof r->error_code, "%s", code);
}

/* Seconds between the server's clock (from its Date header) and ours. */
static bool server_clock_offset(const s3_req *r, double *offset)
{
    if (!r->date[0]) return false;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(r->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end) return false;
    time_t server = timegm(&tm);
    *offset = (double)server - (double)time(NULL);
    return true;
}

static void schedule_retry(s3_client *c, s3_req *r, const char *why)
{
    double delay = c->cfg.retry_base;
    for (int i = 1; i < r->attempt && delay < 20; i++)
        delay *= 2;
    if (delay > 20) delay = 20;
    delay = delay / 2 + jitter() * delay / 2;
    if (r->retry_after[0]) {
        double ra = strtod(r->retry_after, NULL);
        if (ra > delay) delay = ra > 60 ? 60 : ra;
    }
    char where[1200];
    pv_log(PV_LOG_INFO, "s3: %s %s: %s; retrying in %.1fs (attempt %d of %d)", r->op,
           describe_url(r, where, sizeof where), why, delay, r->attempt + 1, c->cfg.max_attempts);
    r->not_before = pv_now() + delay;
}

/* Decides what a finished transfer means: done (ok or final error) or retry. */
static void settle(s3_client *c, s3_req *r, CURLcode rc)
{
    r->active = false;
    curl_multi_remove_handle(c->multi, r->easy);
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    int max = r->no_interrupt && c->cfg.max_attempts > 3 ? 3 : c->cfg.max_attempts;
    char why[1400];
    char where[1200];
    describe_url(r, where, sizeof where);

    if (rc != CURLE_OK) {
        if (r->sink_failed) {
            finish(c, r); /* the sink's error is already in r->err */
            return;
        }
        const char *msg = curl_easy_strerror(rc);
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
            rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CONNECT_ERROR ||
            rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
            pv_err_set(&r->err, "s3", "%s %s: cannot connect securely to %s: %s%s", r->op, where,
                       c->cfg.endpoint, msg,
                       rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE
                           ? "; if the server uses a private CA, pass --ca-bundle FILE or set "
                             "AWS_CA_BUNDLE"
                           : "");
            pv_err_bool(&r->err, "retryable", false);
            finish(c, r);
            return;
        }
        snprintf(why, sizeof why, "%s", msg);
    } else {
        bool ok = r->status >= 200 && r->status < 300;
        for (int i = 0; i < 4 && !ok; i++)
            ok = r->ok_status[i] && r->ok_status[i] == r->status;
        char code[64] = "", message[512] = "";
        s3_xml *x = NULL;
        bool parse_body = r->resp.len > 0 && (!ok || strcmp(r->method, "POST") == 0);
        if (parse_body) {
            pv_err xerr;
            pv_err_clear(&xerr);
            x = s3_xml_parse(r->resp.p, r->resp.len, &xerr);
            if (x && strcmp(x->name, "Error") == 0) {
                snprintf(code, sizeof code, "%s",
                         s3_xml_text(x, "Code") ? s3_xml_text(x, "Code") : "");
                snprintf(message, sizeof message, "%s",
                         s3_xml_text(x, "Message") ? s3_xml_text(x, "Message") : "");
                ok = false; /* an error inside a 200 answer (CompleteMultipartUpload) */
                if (r->status < 300) r->status = 500;
            }
            s3_xml_free(x);
        }
        if (ok) {
            finish(c, r);
            return;
        }
        if (!code[0] && r->status == 404 && r->key && strcmp(r->method, "HEAD") != 0)
            snprintf(code, sizeof code, "NoSuchKey");
        /* BadDigest / XAmzContentSHA256Mismatch: the body was damaged on the
         * way; it is still in memory, so it is sent again. */
        bool retryable = r->status >= 500 || r->status == 429 || strcmp(code, "SlowDown") == 0 ||
                         strcmp(code, "RequestTimeout") == 0 ||
                         strcmp(code, "InternalError") == 0 || strcmp(code, "Throttling") == 0 ||
                         strcmp(code, "BadDigest") == 0 ||
                         strcmp(code, "XAmzContentSHA256Mismatch") == 0;
        if (strcmp(code, "RequestTimeTooSkewed") == 0) {
            double off;
            if (server_clock_offset(r, &off) && r->attempt < max) {
                double sent = c->clock_offset + c->cfg.clock_skew;
                c->clock_offset = off - c->cfg.clock_skew;
                pv_log(PV_LOG_WARN,
                       "s3: the request time was %.0f s off the server's clock; using the "
                       "server's time",
                       off - sent);
                r->not_before = 0;
                return; /* retried at once by the caller's loop */
            }
        }
        if (!retryable || r->attempt >= max) {
            if (retryable) {
                pv_err_set(&r->err, "s3", "%s %s failed after %d attempts: HTTP %ld %s%s%s", r->op,
                           where, r->attempt, r->status, code, message[0] ? ": " : "", message);
                pv_err_int(&r->err, "http_status", r->status);
                pv_err_bool(&r->err, "retryable", true);
            } else {
                final_error(c, r, code, message);
            }
            finish(c, r);
            return;
        }
        snprintf(why, sizeof why, "HTTP %ld %s", r->status, code[0] ? code : "");
    }
    if (r->attempt >= max) {
        pv_err_set(&r->err, "s3", "%s %s failed after %d attempts: %s (endpoint %s)", r->op, where,
                   r->attempt, why, c->cfg.endpoint);
        pv_err_bool(&r->err, "retryable", true);
        finish(c, r);
        return;
    }
    schedule_retry(c, r, why);
}

s3_req *s3_wait(s3_client *c, bool block, pv_err *err)
{
    for (;;) {
        if (c->queue) {
            s3_req *r = c->queue;
            c->queue = r->next_done;
            r->next_done = NULL;
            return r;
        }
        if (pv_interrupted()) {
            bool all_cleanup = true;
            for (int i = 0; i < c->nlive; i++)
                if (!c->live[i]->no_interrupt) all_cleanup = false;
            if (!all_cleanup || c->nlive == 0) {
                pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
                return NULL;
            }
        }
        double now = pv_now(), next = now + 0.1;
        for (int i = 0; i < c->nlive; i++) {
            s3_req *r = c->live[i];
            if (r->active) continue;
            if (r->not_before <= now)
                start_attempt(c, r);
            else if (r->not_before < next)
                next = r->not_before;
        }
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            s3_req *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            if (r) settle(c, r, m->data.result);
        }
        if (c->queue) continue;
        if (!block) return NULL;
        if (c->nlive == 0) {
            pv_err_set(err, "internal", "s3: waiting with no request pending");
            return NULL;
        }
        int ms = (int)((next - pv_now()) * 1000);
        if (ms < 0) ms = 0;
        if (ms > 100) ms = 100;
        curl_multi_poll(c->multi, NULL, 0, ms, NULL);
    }
}

int s3_exec(s3_client *c, s3_req *r, pv_err *err)
{
    s3_submit(c, r);
    for (;;) {
        s3_req *d = s3_wait(c, true, err);
        if (!d) {
            s3_cancel_all(c);
            return -1;
        }
        if (d == r) break;
    }
    if (r->err.set) {
        *err = r->err;
        return -1;
    }
    return 0;
}

int s3_parse_url(const char *url, char **bucket, char **key, pv_err *err)
{
    *bucket = *key = NULL;
    if (strncmp(url, "s3://", 5) != 0) {
        pv_err_set(err, "usage", "'%s' is not an S3 address: write s3://BUCKET/KEY", url);
        return -1;
    }
    const char *b = url + 5;
    size_t n = strcspn(b, "/");
    if (n == 0 || n > 63) {
        pv_err_set(err, "usage", "'%s' has no valid bucket name: write s3://BUCKET/KEY", url);
        return -1;
    }
    *bucket = s3_xmalloc(n + 1);
    memcpy(*bucket, b, n);
    (*bucket)[n] = '\0';
    *key = s3_xstrdup(b[n] == '/' ? b + n + 1 : "");
    return 0;
}
