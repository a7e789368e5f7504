/*
 * outcome.c: what a finished attempt means. Failures are sorted into
 * retryable ones (5xx, 429, SlowDown, RequestTimeout, BadDigest, resets and
 * timeouts: exponential backoff with jitter, Retry-After honoured), a
 * skewed clock (corrected from the server's Date, then retried at once)
 * and final ones (authentication and permission errors fail at once,
 * naming the key id, endpoint and profile, and for Backblaze B2 the
 * capability the key lacks).
 */
#include "s3int.h"

#include "../http/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *describe_url(const s3_req *r, char *out, size_t outsz)
{
    snprintf(out, outsz, "s3://%s/%s", r->bucket, r->key ? r->key : "");
    return out;
}

static bool is_auth_code(const char *code)
{
    static const char *const codes[] = {"AccessDenied",
                                        "SignatureDoesNotMatch",
                                        "InvalidAccessKeyId",
                                        "InvalidToken",
                                        "ExpiredToken",
                                        "TokenRefreshRequired",
                                        "AllAccessDisabled",
                                        "AccountProblem",
                                        "InvalidSecurity",
                                        "Unauthorized",
                                        "Forbidden",
                                        "UserSuspended",
                                        NULL};
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
    s3_config_describe(&c->set->cfg, who, sizeof who);
    pv_err *e = &r->err;
    if (strcmp(code, "NoSuchBucket") == 0 || (r->status == 404 && !r->key && !code[0])) {
        pv_err_set(e, "s3", "bucket '%s' does not exist at %s (%s %s): create it or check the name",
                   r->bucket, c->set->cfg.endpoint, r->op, where);
    } else if (is_auth_code(code) || r->status == 401 || r->status == 403) {
        const char *named = b2_named_capability(message);
        const char *cap = named ? named : b2_capability(r->op);
        const char *hint = "";
        char b2[256] = "";
        if (strcmp(code, "SignatureDoesNotMatch") == 0)
            hint = "; the secret access key does not match the key id";
        else if (strcmp(code, "InvalidAccessKeyId") == 0)
            hint = "; the server does not know this access key id";
        else if (strcmp(code, "UserSuspended") == 0 || strcmp(code, "AccountProblem") == 0 ||
                 strcmp(code, "AllAccessDisabled") == 0)
            hint = "; the account or its keys are disabled";
        else if (strcmp(code, "ExpiredToken") == 0 || strcmp(code, "InvalidToken") == 0)
            hint = "; the session token has expired or is not valid";
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
                   code[0] ? " " : "", code, message[0] ? ": " : "", message, c->set->cfg.endpoint);
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

/* RequestTimeTooSkewed, or a HEAD refused without a body (so without a
 * code) by a server whose clock is more than 15 minutes from the time we
 * signed with, which is what S3 refuses. */
static bool skewed(const s3_client *c, const s3_req *r, const char *code, double *off)
{
    if (!server_clock_offset(r, off)) return false;
    if (strcmp(code, "RequestTimeTooSkewed") == 0) return true;
    double sent = c->set->clock_offset + c->set->cfg.clock_skew;
    return r->status == 403 && !code[0] && fabs(*off - sent) > 900;
}

static void schedule_retry(s3_client *c, s3_req *r, const char *why)
{
    double delay = net_backoff(c->set->cfg.retry_base, r->attempt, 20);
    double asked = net_retry_after(r->retry_after[0] ? r->retry_after : NULL);
    if (asked > delay) delay = asked > 60 ? 60 : asked;
    char where[1200];
    pv_log(PV_LOG_INFO, "s3: %s %s: %s; retrying in %.1fs (attempt %d of %d)", r->op,
           describe_url(r, where, sizeof where), why, delay, r->attempt + 1,
           c->set->cfg.max_attempts);
    r->not_before = pv_now() + delay;
}

/* A transfer that failed below HTTP: TLS problems are final, the rest
 * (resets, timeouts, refused connections) worth another attempt. */
static bool transport_failure(s3_client *c, s3_req *r, CURLcode rc, char *why, size_t whysz)
{
    /* libcurl's detail ("SSL certificate problem: certificate has expired")
     * says more than the code's name */
    const char *msg = r->curl_error[0] ? r->curl_error : curl_easy_strerror(rc);
    if (net_tls_failure(rc)) {
        char where[1200];
        pv_err_set(&r->err, "s3", "%s %s: cannot connect securely to %s: %s%s", r->op,
                   describe_url(r, where, sizeof where), c->set->cfg.endpoint, msg,
                   net_tls_hint(rc));
        pv_err_bool(&r->err, "retryable", false);
        return false;
    }
    snprintf(why, whysz, "%s", msg);
    return true;
}

/* The S3 error code and message of an answer, if its body is an <Error>
 * (which a 200 answer to CompleteMultipartUpload can be too). */
static bool error_answer(s3_req *r, bool ok, char *code, size_t codesz, char *message,
                         size_t messagesz)
{
    if (r->resp.len == 0 || (ok && strcmp(r->method, "POST") != 0)) return false;
    pv_err xerr;
    pv_err_clear(&xerr);
    s3_xml *x = s3_xml_parse(r->resp.p, r->resp.len, &xerr);
    bool is_error = x && strcmp(x->name, "Error") == 0;
    if (is_error) {
        const char *c = s3_xml_text(x, "Code"), *m = s3_xml_text(x, "Message");
        snprintf(code, codesz, "%s", c ? c : "");
        snprintf(message, messagesz, "%s", m ? m : "");
    }
    s3_xml_free(x);
    return is_error;
}

static bool retryable_answer(const s3_req *r, const char *code)
{
    static const char *const codes[] = {
        "SlowDown", "RequestTimeout", "InternalError", "Throttling",
        /* the body was damaged on the way; it is still in memory, so it is sent again */
        "BadDigest", "XAmzContentSHA256Mismatch",
        /* another conditional write of the key was in progress (AWS) */
        "ConditionalRequestConflict", NULL};
    /* 501 Not Implemented and 505 HTTP Version Not Supported never change */
    if (r->status == 501 || r->status == 505) return false;
    if (r->status >= 500 || r->status == 429) return true;
    for (int i = 0; codes[i]; i++)
        if (strcmp(code, codes[i]) == 0) return true;
    return false;
}

/* An HTTP answer: done (ok, or a final error) or worth another attempt
 * (true, with why). */
static bool http_answer(s3_client *c, s3_req *r, int max, char *why, size_t whysz, bool *now)
{
    bool expected = false; /* a status the caller handles (404 of a HEAD ...) */
    for (int i = 0; i < 4 && !expected; i++)
        expected = r->ok_status[i] && r->ok_status[i] == r->status;
    bool ok = expected || (r->status >= 200 && r->status < 300);
    char code[64] = "", message[512] = "";
    if (error_answer(r, ok, code, sizeof code, message, sizeof message) && !expected) {
        ok = false; /* an error inside a 200 answer (CompleteMultipartUpload) */
        if (r->status < 300) r->status = 500;
    }
    if (ok) return false;
    if (!code[0] && r->status == 404 && r->key && strcmp(r->method, "HEAD") != 0)
        snprintf(code, sizeof code, "NoSuchKey");
    double off;
    if (skewed(c, r, code, &off) && r->attempt < max) {
        s3_settings *set = c->set;
        double sent = set->clock_offset + set->cfg.clock_skew;
        set->clock_offset = off - set->cfg.clock_skew;
        pv_log(PV_LOG_WARN,
               "s3: the request time was %.0f s off the server's clock; using the server's time",
               off - sent);
        *now = true;
        return true;
    }
    bool retryable = retryable_answer(r, code);
    if (retryable && r->attempt < max) {
        snprintf(why, whysz, "HTTP %ld %s", r->status, code);
        return true;
    }
    if (retryable) {
        char where[1200];
        pv_err_set(&r->err, "s3", "%s %s failed after %d attempts: HTTP %ld %s%s%s", r->op,
                   describe_url(r, where, sizeof where), r->attempt, r->status, code,
                   message[0] ? ": " : "", message);
        pv_err_int(&r->err, "http_status", r->status);
        pv_err_bool(&r->err, "retryable", true);
    } else {
        final_error(c, r, code, message);
    }
    return false;
}

void s3_outcome(s3_client *c, s3_req *r, CURLcode rc, bool *retry)
{
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    int max = r->no_interrupt && c->set->cfg.max_attempts > 3 ? 3 : c->set->cfg.max_attempts;
    char why[1400] = "";
    bool again, now = false;
    *retry = false;
    if (rc != CURLE_OK) /* a sink that refused the bytes has put its error in r->err */
        again = !r->sink_failed && transport_failure(c, r, rc, why, sizeof why);
    else
        again = http_answer(c, r, max, why, sizeof why, &now);
    if (!again) return;
    if (now) {
        r->not_before = 0;
        *retry = true;
        return;
    }
    if (r->attempt >= max) {
        char where[1200];
        pv_err_set(&r->err, "s3", "%s %s failed after %d attempts: %s (endpoint %s)", r->op,
                   describe_url(r, where, sizeof where), r->attempt, why, c->set->cfg.endpoint);
        pv_err_bool(&r->err, "retryable", true);
        return;
    }
    schedule_retry(c, r, why);
    *retry = true;
}
