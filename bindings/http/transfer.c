/*
 * transfer.c: one HTTP call on a libcurl easy handle, attempt after
 * attempt. What is retried: for GET, HEAD, PUT, DELETE and OPTIONS, a
 * failed connection, a reset, a timeout, 408, 429 and 5xx but 501 and 505;
 * for POST and PATCH, which may have been acted on, only an answer that
 * says it was not (429, 503 and the caller's retry_statuses) or a
 * connection that never opened. Waits grow exponentially with jitter and
 * honour Retry-After. Callbacks only record; nothing raises here.
 */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 256
#define MAX_HEADER_BYTES (256 * 1024)

void http_bytes_add(http_bytes *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

void http_bytes_free(http_bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void clear_answer(http_call *c)
{
    for (int i = 0; i < c->nresp_headers; i++) {
        free(c->resp_headers[i].name);
        free(c->resp_headers[i].value);
    }
    free(c->resp_headers);
    c->resp_headers = NULL;
    c->nresp_headers = 0;
    c->reason[0] = '\0';
    c->status = 0;
    http_bytes_free(&c->resp);
}

void http_call_free(http_call *c)
{
    clear_answer(c);
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

const char *http_resp_header(const http_call *c, const char *name)
{
    for (int i = 0; i < c->nresp_headers; i++)
        if (strcmp(c->resp_headers[i].name, name) == 0) return c->resp_headers[i].value;
    return NULL;
}

const char *http_request_id(const http_call *c)
{
    static const char *const names[] = {
        "x-request-id",   "x-amzn-requestid", "request-id", "x-correlation-id",
        "fly-request-id", "cf-ray",           NULL};
    for (int i = 0; names[i]; i++) {
        const char *v = http_resp_header(c, names[i]);
        if (v && *v) return v;
    }
    return NULL;
}

bool http_secret_header(const char *name)
{
    static const char *const exact[] = {"authorization", "proxy-authorization", "cookie",
                                        "set-cookie", NULL};
    static const char *const parts[] = {"token", "key",     "secret",     "password", "signature",
                                        "auth",  "session", "credential", NULL};
    char low[128];
    size_t n = strlen(name);
    if (n >= sizeof low) return true; /* odd enough to keep to ourselves */
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    for (int i = 0; exact[i]; i++)
        if (strcmp(low, exact[i]) == 0) return true;
    for (int i = 0; parts[i]; i++)
        if (strstr(low, parts[i])) return true;
    return false;
}

/* ------------------------------------------------------------------ */
/* Callbacks: they only record                                          */
/* ------------------------------------------------------------------ */

typedef struct attempt_state {
    http_call *c;
    size_t header_bytes;
    bool too_large;
    bool interrupted;
} attempt_state;

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    attempt_state *st = ud;
    http_call *c = st->c;
    size_t len = size * nmemb;
    st->header_bytes += len;
    if (st->header_bytes > MAX_HEADER_BYTES) {
        st->too_large = true;
        return 0;
    }
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new answer (after 100 Continue): forget the previous one's. */
        clear_answer(c);
        const char *sp = memchr(line, ' ', len);
        const char *reason = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line)) : NULL;
        if (reason) {
            size_t rn = len - (size_t)(reason + 1 - line);
            if (rn >= sizeof c->reason) rn = sizeof c->reason - 1;
            memcpy(c->reason, reason + 1, rn);
            c->reason[rn] = '\0';
        }
        return size * nmemb;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line || c->nresp_headers >= MAX_HEADERS) return size * nmemb;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen && isspace((unsigned char)*v))
        v++, vlen--;
    while (vlen && isspace((unsigned char)v[vlen - 1]))
        vlen--;
    char *name = strndup(line, nlen);
    if (!name) abort();
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (int i = 0; i < c->nresp_headers; i++) {
        http_header *h = &c->resp_headers[i];
        if (strcmp(h->name, name) != 0) continue;
        /* A repeated header: one value, joined as RFC 9110 allows. */
        size_t old = strlen(h->value);
        char *joined = realloc(h->value, old + 2 + vlen + 1);
        if (!joined) abort();
        memcpy(joined + old, ", ", 2);
        memcpy(joined + old + 2, v, vlen);
        joined[old + 2 + vlen] = '\0';
        h->value = joined;
        free(name);
        return size * nmemb;
    }
    http_header *nv = realloc(c->resp_headers, (size_t)(c->nresp_headers + 1) * sizeof *nv);
    if (!nv) abort();
    c->resp_headers = nv;
    nv[c->nresp_headers].name = name;
    nv[c->nresp_headers].value = strndup(v, vlen);
    if (!nv[c->nresp_headers].value) abort();
    c->nresp_headers++;
    return size * nmemb;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    attempt_state *st = ud;
    size_t len = size * nmemb;
    if (st->c->resp.len + len > st->c->max_body) {
        st->too_large = true;
        return 0;
    }
    http_bytes_add(&st->c->resp, data, len);
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    attempt_state *st = ud;
    if (pv_interrupted()) {
        st->interrupted = true;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Attempts                                                            */
/* ------------------------------------------------------------------ */

static bool idempotent(const char *method)
{
    static const char *const safe[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", NULL};
    for (int i = 0; safe[i]; i++)
        if (strcmp(method, safe[i]) == 0) return true;
    return false;
}

static bool listed(const int *v, int n, long status)
{
    for (int i = 0; i < n; i++)
        if (v[i] == status) return true;
    return false;
}

static bool status_retryable(const http_call *c, long s)
{
    if (listed(c->retry_statuses, c->nretry, s)) return true;
    if (s == 429 || s == 503) return true;
    if (!idempotent(c->method)) return false;
    return s == 408 || (s >= 500 && s <= 599 && s != 501 && s != 505);
}

static CURLcode attempt(CURL *e, http_call *c, attempt_state *st)
{
    curl_easy_reset(e);
    net_secure(e, c->ca_bundle, c->timeout < 15 ? c->timeout : 15);
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, c->timeout > 0 ? c->timeout : 30L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, st);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, st);
    /* Compressed answers are decoded by libcurl (any encoding it has). */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(c->method, "GET") != 0 || c->body) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
    }
    if (c->body || strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
        strcmp(c->method, "PATCH") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body ? c->body : "");
    }
    /* libcurl sends a request again by itself when a kept-alive
     * connection turns out closed; for a request that may be acted on twice,
     * or one whose caller looks before sending it again (retry = "never"),
     * only a new connection is sure not to be. */
    if (!idempotent(c->method) || c->retry_never) curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    c->attempts++;
    pv_log(PV_LOG_DEBUG, "http: %s %s (attempt %d)", c->method, c->shown, c->attempts);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &c->status);
    return rc;
}

static void transport_error(CURL *e, http_call *c, attempt_state *st, CURLcode rc, pv_err *err)
{
    (void)e;
    if (st->interrupted || pv_interrupted()) {
        pv_err_set(err, "interrupted", "%s %s: interrupted", c->method, c->shown);
        return;
    }
    if (st->too_large) {
        pv_err_set(err, "http", "%s %s: the answer is larger than %zu bytes: refused", c->method,
                   c->shown, c->max_body);
    } else if (net_tls_failure(rc)) {
        pv_err_set(err, "http", "%s %s: cannot connect securely: %s%s", c->method, c->shown,
                   curl_easy_strerror(rc), net_tls_hint(rc));
    } else if (c->attempts > 1) {
        pv_err_set(err, "http",
                   "%s %s failed after %d attempts: %s: check the address and that "
                   "the service is reachable",
                   c->method, c->shown, c->attempts, curl_easy_strerror(rc));
    } else {
        pv_err_set(err, "http", "%s %s failed: %s%s", c->method, c->shown, curl_easy_strerror(rc),
                   idempotent(c->method) || c->retry_never
                       ? ""
                       : " (not sent again: the server may have acted on it)");
    }
    pv_err_bool(err, "retryable", c->retryable);
    pv_err_str(err, "method", c->method);
    pv_err_str(err, "url", c->shown);
    pv_err_int(err, "attempts", c->attempts);
}

/* How long to wait before the next attempt, or -1 when the server asks
 * for a longer wait than we are willing to give (c->retry_cap). */
static double next_delay(const http_call *c)
{
    double delay = net_backoff(c->retry_base, c->attempts, c->retry_cap);
    double ra = net_retry_after(http_resp_header(c, "retry-after"));
    if (ra > c->retry_cap) return -1;
    return ra > delay ? ra : delay;
}

int http_perform(CURL *e, http_call *c, pv_err *err)
{
    c->attempts = 0;
    for (;;) {
        attempt_state st = {.c = c};
        clear_answer(c);
        CURLcode rc = attempt(e, c, &st);
        bool again;
        char why[160];
        if (rc != CURLE_OK) {
            c->retryable = !st.too_large && !net_tls_failure(rc) &&
                           (idempotent(c->method) || net_never_sent(rc));
            again = c->retryable && !st.interrupted;
            snprintf(why, sizeof why, "%s", curl_easy_strerror(rc));
            if (!again || c->retry_never || c->attempts >= c->max_attempts) {
                transport_error(e, c, &st, rc, err);
                return -1;
            }
        } else {
            bool ok =
                (c->status >= 200 && c->status < 300) || listed(c->ok_statuses, c->nok, c->status);
            if (ok) return 0;
            c->retryable = status_retryable(c, c->status);
            if (!c->retryable || c->retry_never || c->attempts >= c->max_attempts) return 1;
            snprintf(why, sizeof why, "HTTP %ld%s%s", c->status, c->reason[0] ? " " : "",
                     c->reason);
        }
        double delay = next_delay(c);
        if (delay < 0) return 1; /* Retry-After beyond our patience: the caller says so */
        pv_log(PV_LOG_INFO, "http: %s %s: %s; retrying in %.1fs (attempt %d of %d)", c->method,
               c->shown, why, delay, c->attempts + 1, c->max_attempts);
        if (!net_sleep(delay)) {
            pv_err_set(err, "interrupted", "%s %s: interrupted", c->method, c->shown);
            return -1;
        }
    }
}
