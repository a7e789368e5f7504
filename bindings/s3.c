/*
 * s3.c: module pgvault.s3, an S3-compatible client (Backblaze B2 first):
 * client handles and their requests (head, list, get, put, delete,
 * multipart uploads listing and abort), the writer and reader stages, and
 * the SigV4 signer exposed for the tests. The pieces live in bindings/s3/.
 */
#include "s3/s3int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_MT "pgvault.s3.client"

size_t s3_choose_part_size(long long expected, size_t wanted);
size_t s3_part_size_for(size_t base, long long expected, int number);

typedef struct {
    s3_client c;
    bool open;
} client_ud;

static client_ud *check_client(lua_State *L, int idx)
{
    client_ud *u = luaL_checkudata(L, idx, CLIENT_MT);
    if (!u->open) luaL_error(L, "attempt to use a closed S3 client");
    return u;
}

static int client_close(lua_State *L)
{
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (u->open) {
        u->open = false;
        s3_client_close(&u->c);
    }
    return 0;
}

static int client_tostring(lua_State *L)
{
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (u->open)
        lua_pushfstring(L, "pgvault s3 client (%s, key %s)", u->c.cfg.endpoint,
                        u->c.cfg.access_key);
    else
        lua_pushliteral(L, "pgvault s3 client (closed)");
    return 1;
}

/* Creates a client from the options table at `opts` (0: none) and pushes it. */
static client_ud *new_client(lua_State *L, int opts)
{
    if (opts && lua_isnoneornil(L, opts)) opts = 0;
    if (opts) luaL_checktype(L, opts, LUA_TTABLE);
    client_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, CLIENT_MT);
    pv_err err;
    pv_err_clear(&err);
    if (s3_config_load(L, opts, &u->c.cfg, &err) < 0) {
        s3_config_free(&u->c.cfg);
        pv_err_raise(L, &err);
    }
    if (s3_client_init(&u->c, &err) < 0) {
        s3_config_free(&u->c.cfg);
        pv_err_raise(L, &err);
    }
    u->open = true;
    return u;
}

static int s3_client_new(lua_State *L)
{
    new_client(L, lua_istable(L, 1) ? 1 : 0);
    return 1;
}

/* Parses the s3:// URL at idx; raises a usage error on a bad one. */
static void check_url(lua_State *L, int idx, char **bucket, char **key)
{
    const char *url = luaL_checkstring(L, idx);
    pv_err err;
    pv_err_clear(&err);
    if (s3_parse_url(url, bucket, key, &err) < 0) pv_err_raise(L, &err);
}

/* Same, for calls that act on one object: the key must not be empty. */
static void check_object_url(lua_State *L, int idx, char **bucket, char **key)
{
    check_url(L, idx, bucket, key);
    if (!(*key)[0]) {
        free(*bucket);
        free(*key);
        luaL_argerror(L, idx, "the url must name an object: s3://bucket/key");
    }
}

/* Runs a request; frees it (and the URL parts) before raising. */
static void run_or_raise(lua_State *L, client_ud *u, s3_req *r, char *bucket, char *key)
{
    pv_err err;
    pv_err_clear(&err);
    if (s3_exec(&u->c, r, &err) < 0) {
        s3_req_free(r);
        free(bucket);
        free(key);
        pv_err_raise(L, &err);
    }
}

static void push_etag(lua_State *L, const char *etag)
{
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
        lua_pushlstring(L, etag + 1, n - 2);
    else
        lua_pushstring(L, etag);
}

static int client_head(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *key;
    check_url(L, 2, &bucket, &key);
    s3_req *r = s3_req_new("HEAD", "HeadObject", bucket, key, NULL);
    r->ok_status[0] = 404;
    run_or_raise(L, u, r, bucket, key);
    if (r->status == 404) {
        lua_pushnil(L);
    } else {
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, r->content_length);
        lua_setfield(L, -2, "size");
        push_etag(L, r->etag);
        lua_setfield(L, -2, "etag");
        lua_pushstring(L, r->last_modified);
        lua_setfield(L, -2, "last_modified");
        lua_pushstring(L, r->content_type);
        lua_setfield(L, -2, "content_type");
    }
    s3_req_free(r);
    free(bucket);
    free(key);
    return 1;
}

static int client_get(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *key;
    check_url(L, 2, &bucket, &key);
    const char *range = lua_istable(L, 3) ? pv_opt_str(L, 3, "range", NULL) : NULL;
    s3_req *r = s3_req_new("GET", "GetObject", bucket, key, NULL);
    if (range) s3_headers_add(&r->extra, "Range", range);
    run_or_raise(L, u, r, bucket, key);
    lua_pushlstring(L, r->resp.p ? r->resp.p : "", r->resp.len);
    s3_req_free(r);
    free(bucket);
    free(key);
    return 1;
}

static int client_put(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    const char *ctype = lua_istable(L, 4) ? pv_opt_str(L, 4, "content_type", NULL) : NULL;
    char *bucket, *key;
    check_object_url(L, 2, &bucket, &key);
    s3_req *r = s3_req_new("PUT", "PutObject", bucket, key, NULL);
    if (ctype) s3_headers_add(&r->extra, "Content-Type", ctype);
    s3_req_body(r, (const uint8_t *)data, len, true);
    run_or_raise(L, u, r, bucket, key);
    lua_createtable(L, 0, 2);
    push_etag(L, r->etag);
    lua_setfield(L, -2, "etag");
    lua_pushinteger(L, (lua_Integer)len);
    lua_setfield(L, -2, "size");
    s3_req_free(r);
    free(bucket);
    free(key);
    return 1;
}

static int client_delete(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *key;
    check_object_url(L, 2, &bucket, &key);
    s3_req *r = s3_req_new("DELETE", "DeleteObject", bucket, key, NULL);
    r->ok_status[0] = 404;
    run_or_raise(L, u, r, bucket, key);
    s3_req_free(r);
    free(bucket);
    free(key);
    lua_pushboolean(L, 1);
    return 1;
}

/* create_bucket(url) -> true when created, false when we already own it */
static int client_create_bucket(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *key;
    check_url(L, 2, &bucket, &key);
    s3_buf body = {0};
    if (strcmp(u->c.cfg.region, "us-east-1") != 0)
        s3_buf_addf(&body,
                    "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>",
                    u->c.cfg.region);
    pv_err err;
    pv_err_clear(&err);
    /* A bucket we can already reach is ours: some servers (RGW, AWS in
     * us-east-1) answer a second CreateBucket of their owner with 200. */
    s3_req *known = s3_req_new("HEAD", "HeadBucket", bucket, NULL, NULL);
    known->ok_status[0] = 404;
    known->ok_status[1] = 403;
    int hrc = s3_exec(&u->c, known, &err);
    bool reachable = hrc == 0 && known->status < 300;
    s3_req_free(known);
    if (hrc < 0) {
        s3_buf_free(&body);
        free(bucket);
        free(key);
        return pv_err_raise(L, &err);
    }
    if (reachable) {
        s3_buf_free(&body);
        free(bucket);
        free(key);
        lua_pushboolean(L, 0);
        return 1;
    }
    s3_req *r = s3_req_new("PUT", "CreateBucket", bucket, NULL, NULL);
    s3_req_body(r, (const uint8_t *)body.p, body.len, false);
    r->ok_status[0] = 409;
    int rc = s3_exec(&u->c, r, &err);
    bool created = r->status < 300;
    bool owned = false;
    if (rc == 0 && r->status == 409) {
        s3_xml *x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, &err);
        const char *code = x ? s3_xml_text(x, "Code") : NULL;
        owned = code && strcmp(code, "BucketAlreadyOwnedByYou") == 0;
        if (!owned && code && strcmp(code, "BucketAlreadyExists") == 0) {
            /* Some servers say so to the owner too: ours if we can reach it. */
            s3_req *hb = s3_req_new("HEAD", "HeadBucket", bucket, NULL, NULL);
            pv_err herr;
            pv_err_clear(&herr);
            owned = s3_exec(&u->c, hb, &herr) == 0;
            s3_req_free(hb);
        }
        if (!owned)
            pv_err_set(&err, "s3", "cannot create bucket '%s': %s (another account owns the name)",
                       bucket, code ? code : "HTTP 409");
        s3_xml_free(x);
    }
    s3_req_free(r);
    s3_buf_free(&body);
    free(bucket);
    free(key);
    if (rc < 0 || (!created && !owned)) return pv_err_raise(L, &err);
    lua_pushboolean(L, created);
    return 1;
}

/* Runs a bucket-level request whose answer is XML; returns the tree. */
static s3_xml *xml_request(lua_State *L, client_ud *u, s3_req *r, char *bucket, char *key)
{
    run_or_raise(L, u, r, bucket, key);
    pv_err err;
    pv_err_clear(&err);
    s3_xml *x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, &err);
    s3_req_free(r);
    if (!x) {
        free(bucket);
        free(key);
        pv_err_raise(L, &err);
    }
    return x;
}

static void set_str(lua_State *L, const s3_xml *x, const char *name, const char *field)
{
    const char *v = s3_xml_text(x, name);
    if (!v) return;
    if (strcmp(name, "ETag") == 0)
        push_etag(L, v);
    else
        lua_pushstring(L, v);
    lua_setfield(L, -2, field);
}

/* list(url, {delimiter=, max=, start_after=, page_size=}) -> objects, prefixes */
static int client_list(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    int opts = lua_istable(L, 3) ? 3 : 0;
    const char *delimiter = pv_opt_str(L, opts, "delimiter", NULL);
    const char *start_after = pv_opt_str(L, opts, "start_after", NULL);
    lua_Integer max = pv_opt_int(L, opts, "max", 0);
    lua_Integer page = pv_opt_int(L, opts, "page_size", 1000);
    if (page < 1 || page > 1000) return luaL_argerror(L, 3, "page_size must be 1 to 1000");
    char *bucket, *prefix;
    check_url(L, 2, &bucket, &prefix);
    lua_newtable(L); /* objects */
    lua_newtable(L); /* common prefixes */
    int nobj = 0, npre = 0;
    char *token = NULL;
    for (;;) {
        const char *names[6], *values[6];
        int n = 0;
        names[n] = "list-type", values[n++] = "2";
        if (prefix[0]) names[n] = "prefix", values[n++] = prefix;
        if (delimiter) names[n] = "delimiter", values[n++] = delimiter;
        if (token)
            names[n] = "continuation-token", values[n++] = token;
        else if (start_after)
            names[n] = "start-after", values[n++] = start_after;
        char maxkeys[32];
        lua_Integer want = max > 0 && max - nobj < page ? max - nobj : page;
        if (want < 1000) {
            snprintf(maxkeys, sizeof maxkeys, "%lld", (long long)want);
            names[n] = "max-keys", values[n++] = maxkeys;
        }
        s3_buf q = {0};
        s3_canonical_query(&q, names, values, n);
        s3_req *r = s3_req_new("GET", "ListObjectsV2", bucket, NULL, s3_buf_str(&q));
        s3_buf_free(&q);
        free(token);
        token = NULL;
        s3_xml *x = xml_request(L, u, r, bucket, prefix);
        for (s3_xml *c = x->child; c; c = c->next) {
            if (strcmp(c->name, "Contents") == 0) {
                lua_createtable(L, 0, 4);
                set_str(L, c, "Key", "key");
                const char *size = s3_xml_text(c, "Size");
                lua_pushinteger(L, size ? strtoll(size, NULL, 10) : 0);
                lua_setfield(L, -2, "size");
                set_str(L, c, "ETag", "etag");
                set_str(L, c, "LastModified", "last_modified");
                set_str(L, c, "StorageClass", "storage_class");
                lua_rawseti(L, -3, ++nobj);
            } else if (strcmp(c->name, "CommonPrefixes") == 0) {
                const char *p = s3_xml_text(c, "Prefix");
                if (p) {
                    lua_pushstring(L, p);
                    lua_rawseti(L, -2, ++npre);
                }
            }
        }
        const char *trunc = s3_xml_text(x, "IsTruncated");
        const char *next = s3_xml_text(x, "NextContinuationToken");
        if (trunc && strcmp(trunc, "true") == 0 && next && *next && (max <= 0 || nobj < max))
            token = s3_xstrdup(next);
        s3_xml_free(x);
        if (!token) break;
    }
    free(bucket);
    free(prefix);
    return 2;
}

/* uploads(url, {page_size=}) -> { {key=, upload_id=, initiated=}, ... } under the URL's prefix */
static int client_uploads(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *prefix;
    lua_Integer page = lua_istable(L, 3) ? pv_opt_int(L, 3, "page_size", 1000) : 1000;
    if (page < 1 || page > 1000) return luaL_argerror(L, 3, "page_size must be 1 to 1000");
    char pagestr[32];
    snprintf(pagestr, sizeof pagestr, "%lld", (long long)page);
    check_url(L, 2, &bucket, &prefix);
    lua_newtable(L);
    int n = 0;
    char *key_marker = NULL, *id_marker = NULL;
    for (;;) {
        const char *names[5], *values[5];
        int k = 0;
        names[k] = "uploads", values[k++] = "";
        if (page < 1000) names[k] = "max-uploads", values[k++] = pagestr;
        if (prefix[0]) names[k] = "prefix", values[k++] = prefix;
        if (key_marker) names[k] = "key-marker", values[k++] = key_marker;
        if (id_marker) names[k] = "upload-id-marker", values[k++] = id_marker;
        s3_buf q = {0};
        s3_canonical_query(&q, names, values, k);
        s3_req *r = s3_req_new("GET", "ListMultipartUploads", bucket, NULL, s3_buf_str(&q));
        s3_buf_free(&q);
        free(key_marker);
        free(id_marker);
        key_marker = id_marker = NULL;
        s3_xml *x = xml_request(L, u, r, bucket, prefix);
        for (s3_xml *c = x->child; c; c = c->next) {
            if (strcmp(c->name, "Upload") != 0) continue;
            lua_createtable(L, 0, 3);
            set_str(L, c, "Key", "key");
            set_str(L, c, "UploadId", "upload_id");
            set_str(L, c, "Initiated", "initiated");
            lua_rawseti(L, -2, ++n);
        }
        const char *trunc = s3_xml_text(x, "IsTruncated");
        const char *nk = s3_xml_text(x, "NextKeyMarker");
        const char *ni = s3_xml_text(x, "NextUploadIdMarker");
        if (trunc && strcmp(trunc, "true") == 0 && nk && *nk) {
            key_marker = s3_xstrdup(nk);
            id_marker = s3_xstrdup(ni ? ni : "");
        }
        s3_xml_free(x);
        if (!key_marker) break;
    }
    free(bucket);
    free(prefix);
    return 1;
}

static int client_abort_upload(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    const char *id = luaL_checkstring(L, 3);
    char *bucket, *key;
    check_url(L, 2, &bucket, &key);
    s3_buf e = {0}, q = {0};
    s3_uri_encode(&e, id, strlen(id), false);
    s3_buf_addf(&q, "uploadId=%s", s3_buf_str(&e));
    s3_req *r = s3_req_new("DELETE", "AbortMultipartUpload", bucket, key, s3_buf_str(&q));
    s3_buf_free(&e);
    s3_buf_free(&q);
    r->ok_status[0] = 404;
    run_or_raise(L, u, r, bucket, key);
    lua_pushboolean(L, r->status != 404);
    s3_req_free(r);
    free(bucket);
    free(key);
    return 1;
}

/* create_upload(url) -> upload id of a new multipart upload (for callers
 * that send parts themselves; s3.writer does all of it) */
static int client_create_upload(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    char *bucket, *key;
    check_object_url(L, 2, &bucket, &key);
    s3_req *r = s3_req_new("POST", "CreateMultipartUpload", bucket, key, "uploads=");
    s3_xml *x = xml_request(L, u, r, bucket, key);
    const char *id = s3_xml_text(x, "UploadId");
    if (!id || !*id) {
        s3_xml_free(x);
        free(bucket);
        free(key);
        return pv_raise(L, "s3", "CreateMultipartUpload answered without an UploadId");
    }
    lua_pushstring(L, id);
    s3_xml_free(x);
    free(bucket);
    free(key);
    return 1;
}

/* delete_many(url_of_bucket, {key, ...}) -> number deleted; raises on the first error */
static int client_delete_many(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer total = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= total; i++) {
        lua_geti(L, 3, i);
        if (!lua_isstring(L, -1)) return luaL_argerror(L, 3, "keys must be strings");
        lua_pop(L, 1);
    }
    char *bucket, *unused;
    check_url(L, 2, &bucket, &unused);
    for (lua_Integer from = 1; from <= total; from += 1000) {
        s3_buf body = {0};
        s3_buf_adds(&body, "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true"
                           "</Quiet>");
        for (lua_Integer i = from; i <= total && i < from + 1000; i++) {
            lua_geti(L, 3, i);
            s3_buf_adds(&body, "<Object><Key>");
            s3_xml_escape(&body, lua_tostring(L, -1));
            s3_buf_adds(&body, "</Key></Object>");
            lua_pop(L, 1);
        }
        s3_buf_adds(&body, "</Delete>");
        s3_req *r = s3_req_new("POST", "DeleteObjects", bucket, NULL, "delete=");
        s3_headers_add(&r->extra, "Content-Type", "application/xml");
        s3_req_body(r, (const uint8_t *)body.p, body.len, true);
        pv_err err;
        pv_err_clear(&err);
        int rc = s3_exec(&u->c, r, &err);
        s3_xml *x = NULL;
        if (rc == 0) {
            x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, &err);
            if (!x) rc = -1;
        }
        s3_xml *bad = x ? s3_xml_child(x, "Error") : NULL;
        if (bad) {
            const char *k = s3_xml_text(bad, "Key"), *code = s3_xml_text(bad, "Code"),
                       *msg = s3_xml_text(bad, "Message");
            pv_err_set(&err, "s3", "DeleteObjects s3://%s/%s failed: %s%s%s%s", bucket, k ? k : "",
                       code ? code : "error", msg ? ": " : "", msg ? msg : "",
                       code && strcmp(code, "AccessDenied") == 0
                           ? "; on Backblaze B2 the application key needs 'deleteFiles'"
                           : "");
            rc = -1;
        }
        s3_xml_free(x);
        s3_req_free(r);
        s3_buf_free(&body);
        if (rc < 0) {
            free(bucket);
            free(unused);
            return pv_err_raise(L, &err);
        }
    }
    free(bucket);
    free(unused);
    lua_pushinteger(L, total);
    return 1;
}

static int client_info(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    const s3_config *c = &u->c.cfg;
    lua_createtable(L, 0, 7);
    lua_pushstring(L, c->access_key);
    lua_setfield(L, -2, "access_key_id");
    lua_pushstring(L, c->cred_source);
    lua_setfield(L, -2, "credentials_from");
    lua_pushstring(L, c->endpoint);
    lua_setfield(L, -2, "endpoint");
    lua_pushstring(L, c->region);
    lua_setfield(L, -2, "region");
    lua_pushstring(L, c->profile);
    lua_setfield(L, -2, "profile");
    lua_pushboolean(L, c->path_style);
    lua_setfield(L, -2, "path_style");
    lua_pushstring(L, c->ca_bundle);
    lua_setfield(L, -2, "ca_bundle");
    lua_pushboolean(L, c->session_token != NULL);
    lua_setfield(L, -2, "session_token");
    return 1;
}

/* Module-level shorthands: s3.head(url, opts) makes a client from opts,
 * runs the method and closes the client. Upvalues: method, opts index. */
static int module_call(lua_State *L)
{
    int opts = (int)lua_tointeger(L, lua_upvalueindex(2));
    new_client(L, lua_gettop(L) >= opts ? opts : 0);
    lua_insert(L, 1);
    lua_toclose(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 2);
    lua_pushvalue(L, 1);
    lua_insert(L, 3);
    int base = lua_gettop(L);
    lua_call(L, base - 2, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* s3._sign{method=, path=, query={{k,v}...}, headers={{n,v}...}, payload=,
 * date=, access_key=, secret_key=, region=, service=} -> authorization,
 * canonical request, string to sign. For the tests. */
static int s3_sign_for_test(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    s3_signer sg;
    memset(&sg, 0, sizeof sg);
    snprintf(sg.access_key, sizeof sg.access_key, "%s", pv_opt_str(L, 1, "access_key", ""));
    snprintf(sg.secret_key, sizeof sg.secret_key, "%s", pv_opt_str(L, 1, "secret_key", ""));
    snprintf(sg.region, sizeof sg.region, "%s", pv_opt_str(L, 1, "region", "us-east-1"));
    snprintf(sg.service, sizeof sg.service, "%s", pv_opt_str(L, 1, "service", "s3"));
    const char *method = pv_opt_str(L, 1, "method", "GET");
    const char *path = pv_opt_str(L, 1, "path", "/");
    const char *date = pv_opt_str(L, 1, "date", NULL);
    if (!date || strlen(date) != 16) return luaL_argerror(L, 1, "date like 20150830T123600Z");
    size_t plen = 0;
    lua_getfield(L, 1, "payload");
    const char *payload = lua_tolstring(L, -1, &plen);
    char hash[65];
    s3_sha256_hex(payload ? payload : "", payload ? plen : 0, hash);
    lua_pop(L, 1);
    s3_buf uri = {0}, q = {0}, authz = {0}, creq = {0}, sts = {0};
    s3_uri_encode(&uri, path, strlen(path), true);
    lua_getfield(L, 1, "query");
    int nq = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    const char **names = s3_xmalloc((size_t)(nq + 1) * sizeof *names);
    const char **values = s3_xmalloc((size_t)(nq + 1) * sizeof *values);
    for (int i = 0; i < nq; i++) {
        lua_geti(L, -1, i + 1);
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        names[i] = lua_tostring(L, -2) ? lua_tostring(L, -2) : "";
        values[i] = lua_tostring(L, -1);
        lua_pop(L, 3); /* the strings stay alive in the table */
    }
    s3_canonical_query(&q, names, values, nq);
    free(names);
    free(values);
    lua_pop(L, 1);
    s3_headers h = {0};
    lua_getfield(L, 1, "headers");
    int nh = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    for (int i = 0; i < nh; i++) {
        lua_geti(L, -1, i + 1);
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        s3_headers_add(&h, luaL_optstring(L, -2, ""), luaL_optstring(L, -1, ""));
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
    if (pv_opt_bool(L, 1, "sha256_header", false)) s3_headers_add(&h, "x-amz-content-sha256", hash);
    s3_sign(&sg, method, s3_buf_str(&uri), s3_buf_str(&q), &h, hash, date, &authz, &creq, &sts);
    lua_pushstring(L, s3_buf_str(&authz));
    lua_pushstring(L, s3_buf_str(&creq));
    lua_pushstring(L, s3_buf_str(&sts));
    s3_headers_free(&h);
    s3_buf_free(&uri);
    s3_buf_free(&q);
    s3_buf_free(&authz);
    s3_buf_free(&creq);
    s3_buf_free(&sts);
    return 3;
}

static void push_xml(lua_State *L, const s3_xml *x, int depth)
{
    luaL_checkstack(L, 4, "XML too deep");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, x->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, x->text ? x->text : "");
    lua_setfield(L, -2, "text");
    int i = 0;
    for (const s3_xml *c = x->child; c; c = c->next) {
        push_xml(L, c, depth + 1);
        lua_rawseti(L, -2, ++i);
    }
}

/* s3._xml(text) -> {name=, text=, [i]=child ...}, or nil and why. For the
 * tests and the fuzz corpus replay. */
static int s3_xml_for_test(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    pv_err err;
    pv_err_clear(&err);
    s3_xml *x = s3_xml_parse(text, len, &err);
    if (!x) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    push_xml(L, x, 0);
    s3_xml_free(x);
    return 1;
}

static int s3_part_size(lua_State *L)
{
    lua_Integer expected = luaL_optinteger(L, 1, -1);
    lua_Integer wanted = luaL_optinteger(L, 2, 8 * 1024 * 1024);
    lua_Integer number = luaL_optinteger(L, 3, 1);
    if (wanted < 1) return luaL_argerror(L, 2, "positive size expected");
    if (number < 1 || number > 10000) return luaL_argerror(L, 3, "part number 1 to 10000");
    size_t base = s3_choose_part_size(expected, (size_t)wanted);
    lua_pushinteger(L, (lua_Integer)s3_part_size_for(base, expected, (int)number));
    return 1;
}

static int s3_parse(lua_State *L)
{
    char *bucket, *key;
    check_url(L, 1, &bucket, &key);
    lua_pushstring(L, bucket);
    lua_pushstring(L, key);
    free(bucket);
    free(key);
    return 2;
}

static int client_writer(lua_State *L)
{
    check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_remove(L, 1);
    return s3_push_writer(L);
}

static int client_reader(lua_State *L)
{
    check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_remove(L, 1);
    return s3_push_reader(L);
}

static const struct {
    const char *name;
    lua_CFunction fn;
    int opts;
} shorthands[] = {
    /* index of the options table in the module-level call */
    {"head", client_head, 2},
    {"get", client_get, 2},
    {"put", client_put, 3},
    {"delete", client_delete, 2},
    {"list", client_list, 2},
    {"uploads", client_uploads, 2},
    {"abort_upload", client_abort_upload, 3},
    {"create_bucket", client_create_bucket, 2},
    {"create_upload", client_create_upload, 2},
    {"delete_many", client_delete_many, 3},
};

int luaopen_pgvault_s3(lua_State *L)
{
    static const luaL_Reg methods[] = {{"head", client_head},
                                       {"get", client_get},
                                       {"put", client_put},
                                       {"delete", client_delete},
                                       {"delete_many", client_delete_many},
                                       {"list", client_list},
                                       {"uploads", client_uploads},
                                       {"abort_upload", client_abort_upload},
                                       {"info", client_info},
                                       {"create_bucket", client_create_bucket},
                                       {"create_upload", client_create_upload},
                                       {"writer", client_writer},
                                       {"reader", client_reader},
                                       {"close", client_close},
                                       {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", client_close},
                                    {"__close", client_close},
                                    {"__tostring", client_tostring},
                                    {NULL, NULL}};
    luaL_newmetatable(L, CLIENT_MT);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    static const luaL_Reg funcs[] = {
        {"client", s3_client_new},   {"writer", s3_push_writer}, {"reader", s3_push_reader},
        {"expect", s3_push_expect},  {"parse_url", s3_parse},    {"part_size", s3_part_size},
        {"_sign", s3_sign_for_test}, {"_xml", s3_xml_for_test},  {NULL, NULL}};
    luaL_newlib(L, funcs);
    for (size_t i = 0; i < sizeof shorthands / sizeof shorthands[0]; i++) {
        lua_pushcfunction(L, shorthands[i].fn);
        lua_pushinteger(L, shorthands[i].opts);
        lua_pushcclosure(L, module_call, 2);
        lua_setfield(L, -2, shorthands[i].name);
    }
    return 1;
}
