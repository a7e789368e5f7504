/*
 * s3int.h: what the pieces of pgvault.s3 share: growable strings, the
 * SigV4 signer, settings from the AWS sources, the XML tree built with
 * expat, the request engine on the curl multi interface (retries included)
 * and the pipeline stages (writer, reader).
 */
#ifndef PGVAULT_S3INT_H
#define PGVAULT_S3INT_H

#include "pgvault.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Growable strings (abort on out-of-memory: they are all small)        */
/* ------------------------------------------------------------------ */

typedef struct s3_buf {
    char *p;
    size_t len, cap;
} s3_buf;

void s3_buf_add(s3_buf *b, const void *data, size_t len);
void s3_buf_adds(s3_buf *b, const char *s);
void s3_buf_addf(s3_buf *b, const char *fmt, ...) PV_PRINTF(2, 3);
void s3_buf_free(s3_buf *b);
const char *s3_buf_str(s3_buf *b); /* NUL-terminated at len, "" when empty */
void *s3_xmalloc(size_t n);
char *s3_xstrdup(const char *s);

/* Percent-encodes per SigV4 (unreserved A-Z a-z 0-9 - _ . ~ kept); '/'
 * kept too when keep_slash (object keys in paths). */
void s3_uri_encode(s3_buf *out, const char *s, size_t len, bool keep_slash);

/* ------------------------------------------------------------------ */
/* SigV4                                                               */
/* ------------------------------------------------------------------ */

typedef struct s3_header {
    char *name;
    char *value;
} s3_header;

typedef struct s3_headers {
    s3_header *v;
    int n, cap;
} s3_headers;

void s3_headers_add(s3_headers *h, const char *name, const char *value);
const char *s3_headers_get(const s3_headers *h, const char *name); /* case-insensitive */
void s3_headers_del(s3_headers *h, const char *name);
void s3_headers_free(s3_headers *h);

typedef struct s3_signer {
    char access_key[256];
    char secret_key[256];
    char *session_token; /* NULL when none */
    char region[64];
    char service[32];
    /* The derived signing key depends only on secret, date, region and
     * service: computed once per day. */
    char key_date[9];
    uint8_t key[32];
} s3_signer;

/* Canonical query string from raw name=value pairs (value may be NULL
 * for a name with no '='), sorted by encoded name then value. */
void s3_canonical_query(s3_buf *out, const char *const *names, const char *const *values, int n);

/*
 * Signs a request: `uri` is the canonical (already encoded) path, `query`
 * the canonical query string, `headers` every header to sign (host and
 * x-amz-date included), `payload_hash` the hex SHA-256 of the body (or
 * UNSIGNED-PAYLOAD), `amz_date` like 20150830T123600Z. Writes the
 * Authorization value; the canonical request and string to sign too when
 * creq/sts are not NULL (for the tests).
 */
void s3_sign(s3_signer *sg, const char *method, const char *uri, const char *query,
             const s3_headers *headers, const char *payload_hash, const char *amz_date,
             s3_buf *authz, s3_buf *creq, s3_buf *sts);

void s3_sha256_hex(const void *data, size_t len, char out[65]);
void s3_md5(const void *data, size_t len, uint8_t out[16]);
void s3_sha256_md5(const void *data, size_t len, char sha_hex[65], uint8_t md5[16]);
void s3_base64(const uint8_t *in, size_t len, char *out, size_t outsz);

/* ------------------------------------------------------------------ */
/* Settings                                                            */
/* ------------------------------------------------------------------ */

typedef struct s3_config {
    char access_key[256];
    char secret_key[256];
    char *session_token;
    char region[64];
    char endpoint[512];    /* scheme://host[:port], no trailing slash */
    bool path_style;       /* custom endpoints: https://host/bucket/key */
    char ca_bundle[1024];  /* "" for the system's CAs only */
    char profile[128];     /* the profile in use */
    char cred_source[160]; /* where the keys came from, for messages */
    int max_attempts;
    double retry_base; /* seconds of the first backoff */
    long timeout;      /* seconds without progress before a transfer fails */
    double clock_skew; /* added to the local clock (tests) */
} s3_config;

/* The aws CLI's shared files (ini.c): section `want` ("default",
 * "profile NAME", or a credentials file's "NAME"), nested blocks as
 * "parent.key". A missing file is an empty section. */
typedef struct {
    char key[64];
    char value[2048];
} s3_ini_entry;

typedef struct {
    s3_ini_entry *v;
    int n;
    bool found; /* the section exists */
} s3_ini_section;

void s3_ini_parse(const char *text, size_t len, const char *want, s3_ini_section *out);
void s3_ini_read(const char *path, const char *want, s3_ini_section *out);
const char *s3_ini_get(const s3_ini_section *s, const char *key); /* the last one wins */
void s3_ini_free(s3_ini_section *s);

/* The option names s3_config_load reads (NULL-terminated): a stage made
 * from a client refuses them, since its client's settings apply. */
extern const char *const s3_setting_names[];

/* Reads the options table at `idx` (0: none): endpoint_url, region,
 * profile, ca_bundle, access_key_id/secret_access_key/session_token,
 * max_attempts, retry_base_ms, timeout, clock_skew; then the environment,
 * then ~/.aws/config and ~/.aws/credentials. Fails with kind "config". */
int s3_config_load(lua_State *L, int idx, s3_config *cfg, pv_err *err);
void s3_config_free(s3_config *cfg);
/* "access key id AKIA..., endpoint https://..., profile default (environment)". */
void s3_config_describe(const s3_config *cfg, char *out, size_t outsz);

/*
 * What a client is: its settings, the signer made from them and the clock
 * offset learned from the server. Shared (reference counted) by the
 * client object and every stage made from it, each of which drives its
 * own transfers (an s3_client below), so a reader and a writer in one
 * pipeline never share a curl multi handle.
 */
typedef struct s3_settings {
    int refs;
    s3_config cfg;
    s3_signer signer;
    double clock_offset; /* server time minus ours, from a RequestTimeTooSkewed */
    bool no_conditional; /* the server answered If-None-Match with 501 */
} s3_settings;

/* Loads settings (s3_config_load) into a new object with one reference;
 * NULL with err set on failure. */
s3_settings *s3_settings_load(lua_State *L, int idx, pv_err *err);
s3_settings *s3_settings_ref(s3_settings *s);
void s3_settings_unref(s3_settings *s);

/* ------------------------------------------------------------------ */
/* XML (expat) into a small tree                                       */
/* ------------------------------------------------------------------ */

typedef struct s3_xml {
    char *name;
    char *text;
    struct s3_xml *child, *next;
} s3_xml;

/* Parses a whole document; NULL with err set when it is not well formed. */
s3_xml *s3_xml_parse(const char *data, size_t len, pv_err *err);
void s3_xml_free(s3_xml *x);
/* First child element named `name` (namespace prefixes ignored). */
s3_xml *s3_xml_child(const s3_xml *x, const char *name);
/* Text of the first child named `name`, or NULL. */
const char *s3_xml_text(const s3_xml *x, const char *name);
/* XML-escapes text into out. */
void s3_xml_escape(s3_buf *out, const char *s);

/* ------------------------------------------------------------------ */
/* Requests: one client drives a curl multi handle                     */
/* ------------------------------------------------------------------ */

typedef struct s3_client s3_client;
typedef struct s3_req s3_req;

/* Body chunks of a streamed response; return -1 (err set) to stop. */
typedef int (*s3_sink_fn)(s3_req *r, const char *data, size_t len, void *ud);

struct s3_req {
    /* inputs */
    char method[8];
    char *bucket;
    char *key;        /* NULL for bucket-level requests */
    char *query;      /* canonical query ("" for none) */
    s3_headers extra; /* content-md5, content-type, range ... */
    const uint8_t *body;
    size_t body_len;
    char payload_hash[65];
    uint8_t md5[16]; /* the body's MD5 when s3_req_body was asked for it */
    const char *op;  /* "PutObject", "UploadPart" ... for messages and B2 hints */
    s3_sink_fn sink; /* streamed response body; NULL buffers it in `resp` */
    void *sink_ud;
    bool no_interrupt; /* clean-up request: runs even after a signal */
    /* Called before each attempt (a resumed download moves its Range). */
    void (*before_attempt)(s3_req *r, void *ud);
    bool sink_failed;
    int ok_status[4]; /* statuses besides 2xx that count as answers (404 ...) */
    /* per attempt */
    CURL *easy;
    struct curl_slist *slist;
    size_t body_off;
    int attempt;
    double not_before;
    bool active, done;
    /* outputs */
    long status;
    s3_buf resp;
    char etag[128];
    char date[64];
    char retry_after[32];
    char content_range[96];
    long long content_length;
    char last_modified[64];
    char content_type[128];
    char request_id[96];
    char error_code[64];              /* S3 error Code when the answer was an error */
    char curl_error[CURL_ERROR_SIZE]; /* libcurl's own words on a failed transfer */
    pv_err err;                       /* set when the request finally failed */
    s3_req *next_done;
};

struct s3_client {
    s3_settings *set; /* one reference, dropped by s3_client_close */
    CURLM *multi;
    s3_req *queue; /* done requests not yet collected */
    s3_req **live; /* every submitted, undone request */
    int nlive, caplive;
};

/* Starts a transfer engine on `set`, taking a reference to it. */
int s3_client_init(s3_client *c, s3_settings *set, pv_err *err);
void s3_client_close(s3_client *c);

/* A request for bucket/key; op names it for messages. */
s3_req *s3_req_new(const char *method, const char *op, const char *bucket, const char *key,
                   const char *query);
void s3_req_free(s3_req *r);
/* Sets the body and its SHA-256 (x-amz-content-sha256); with_md5 also
 * sends Content-MD5 and keeps the digest in r->md5. One pass over the
 * bytes computes both. */
void s3_req_body(s3_req *r, const uint8_t *body, size_t len, bool with_md5);

/* Starts a request; its result arrives through s3_wait. */
void s3_submit(s3_client *c, s3_req *r);
/* Drives transfers until a submitted request is done (success or final
 * failure, see r->err), returning it; NULL with err set when interrupted
 * or nothing is pending. With block=false returns NULL at once when none
 * is done yet (err not set). */
s3_req *s3_wait(s3_client *c, bool block, pv_err *err);
/* Submits and waits for one request; 0 or -1 with err copied from it. */
int s3_exec(s3_client *c, s3_req *r, pv_err *err);
/* Cancels every live request (they are freed by their owners). */
void s3_cancel_all(s3_client *c);

/*
 * Writes that never replace an object (conditional.c). s3_final_write
 * runs a PutObject or CompleteMultipartUpload that must not replace an
 * existing key: a HEAD first (some servers ignore If-None-Match, RGW on
 * CompleteMultipartUpload among them), then the request with
 * If-None-Match: * (without it once the server has answered it with 501).
 * A taken key fails with kind "exists" (field url). s3_check_free is the
 * HEAD alone (a writer checks before it uploads anything).
 */
int s3_check_free(s3_client *c, const char *bucket, const char *key, pv_err *err);
int s3_final_write(s3_client *c, s3_req *r, bool if_none_match, pv_err *err);

/* One attempt of a request (request.c): URL, signed headers and curl
 * options set on r->easy, ready for the multi handle. */
void s3_attempt_prepare(s3_client *c, s3_req *r);
/* Sorts a finished attempt (outcome.c): done (answer or final error in
 * r->err, *retry false) or to be retried (*retry true, r->not_before set). */
void s3_outcome(s3_client *c, s3_req *r, CURLcode rc, bool *retry);

/* Parses s3://bucket/key into newly allocated strings. */
int s3_parse_url(const char *url, char **bucket, char **key, pv_err *err);

/* ------------------------------------------------------------------ */
/* Stages and Lua plumbing                                             */
/* ------------------------------------------------------------------ */

/* The stages, made from a client's settings: the options table at 1 (the
 * stage options: url, part_size ...; settings come from `set`). Each takes
 * its own reference to `set`. */
int s3_push_writer(lua_State *L, s3_settings *set);
int s3_push_reader(lua_State *L, s3_settings *set);

/* The request methods of a client object (methods.c); each takes the
 * client at 1. s3_client_of checks and returns its transfer engine. */
extern const luaL_Reg s3_request_methods[];
s3_client *s3_client_of(lua_State *L, int idx);

#endif
