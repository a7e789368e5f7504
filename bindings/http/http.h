/*
 * http.h: what the pieces of pgvault.http share: one call (a request with
 * its retry rules and the answer it got) run by transfer.c, and the URL
 * building and masking of url.c.
 */
#ifndef PGVAULT_HTTP_H
#define PGVAULT_HTTP_H

#include "net.h"

#include <stddef.h>

#define HTTP_MAX_STATUSES 16

typedef struct http_bytes {
    char *p;
    size_t len, cap;
} http_bytes;

/* Appends (aborts on out-of-memory: everything here is small or capped). */
void http_bytes_add(http_bytes *b, const void *data, size_t len);
void http_bytes_free(http_bytes *b);

typedef struct http_header {
    char *name; /* lower case */
    char *value;
} http_header;

typedef struct http_call {
    /* the request */
    char method[16];
    const char *url;   /* what is sent */
    const char *shown; /* the same with its secrets masked, for messages */
    struct curl_slist *headers;
    const char *body; /* NULL: none */
    size_t body_len;
    long timeout; /* seconds per attempt */
    int max_attempts;
    double retry_base; /* seconds before the second attempt */
    double retry_cap;  /* longest wait between attempts, seconds */
    const char *ca_bundle;
    bool retry_never;
    int retry_statuses[HTTP_MAX_STATUSES];
    int nretry;
    int ok_statuses[HTTP_MAX_STATUSES];
    int nok;
    size_t max_body;
    /* the answer of the last attempt */
    long status;
    char reason[96];
    http_header *resp_headers;
    int nresp_headers;
    http_bytes resp;
    int attempts;
    bool retryable; /* the final failure was of a kind worth retrying later */
} http_call;

/* Runs the call with its retries. 0: an accepted answer (2xx or one of
 * ok_statuses); 1: a refusing answer (status, headers and body kept, the
 * caller words the error); -1: no answer (err set: kind "http", or
 * "interrupted"). */
int http_perform(CURL *e, http_call *c, pv_err *err);
void http_call_free(http_call *c);
/* Value of a response header (name in lower case), or NULL. */
const char *http_resp_header(const http_call *c, const char *name);
/* The request id a server gave (x-request-id and its cousins), or NULL. */
const char *http_request_id(const http_call *c);

/* A header whose value is a secret (Authorization, Cookie, X-Api-Key,
 * anything naming a token, key, secret, password or signature). */
bool http_secret_header(const char *name);

/* Appends `s` percent-encoded (RFC 3986: unreserved characters kept). */
void http_escape(http_bytes *out, const char *s, size_t len);

/* A copy of `url` fit for messages: no user information, the values of
 * query parameters that look secret masked, and the path up to byte
 * `secret_path_end` of url (0: none) masked as well. Free it. */
char *http_mask_url(const char *url, size_t secret_path_end);
/* Registers with the log's redaction what http_mask_url would hide. */
void http_register_url_secrets(const char *url, size_t secret_path_end);

/* ------------------------------------------------------------------ */
/* The Lua side (http.c builds calls, answer.c answers them)            */
/* ------------------------------------------------------------------ */

#define CJSON_KEY "pgvault.http.cjson" /* the module's own lua-cjson instance */

/* A request being built and run: a userdata, so that a Lua error while
 * reading the options frees everything (its __gc). */
typedef struct call_ud {
    http_call call;
    http_bytes url;
    char *shown;
} call_ud;
void http_call_ud_free(call_ud *cu);
/* Runs the call (on the client's handle `easy`); pushes the answer table
 * or frees the call and raises. */
int http_run_call(lua_State *L, CURL *easy, call_ud *cu);

#endif
