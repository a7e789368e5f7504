/*
 * methods.c: the request methods of a client object (head, get, put,
 * delete, delete_many, list, uploads, abort_upload, create_upload,
 * create_bucket, get_many). What a method allocates (the URL's parts, the request,
 * a parsed answer, a body) lives in a box: a userdata marked to be closed
 * with lua_toclose, whose __close and __gc free it, so a method raises
 * wherever it fails and nothing leaks (lauxlib's box pattern).
 */
#include "s3int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOX_MT "pgvault.s3.request"

typedef struct {
    char *bucket, *key; /* from the method's s3:// URL */
    s3_req *req;
    s3_xml *xml; /* the parsed answer */
    s3_buf body;
    char *marker[2]; /* pagination state */
} s3_box;

static void box_clear(s3_box *b)
{
    free(b->bucket);
    free(b->key);
    s3_req_free(b->req);
    s3_xml_free(b->xml);
    s3_buf_free(&b->body);
    free(b->marker[0]);
    free(b->marker[1]);
    memset(b, 0, sizeof *b);
}

static int box_close(lua_State *L)
{
    box_clear(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

/* A new box on the top of the stack, closed when the method returns or
 * raises; the URL at `url_idx` parsed into it (a usage error when it is
 * not s3://BUCKET/...; an argument error when an object is needed and the
 * key is empty). */
/* A zeroed userdata of `size` on the top of the stack whose __gc and
 * __close are `close`, marked to be closed when the method ends. */
static void *closing_userdata(lua_State *L, size_t size, const char *mt, lua_CFunction close)
{
    void *p = lua_newuserdatauv(L, size, 0);
    memset(p, 0, size);
    if (luaL_newmetatable(L, mt)) {
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);
    return p;
}

static s3_box *new_box(lua_State *L, int url_idx, bool object)
{
    const char *url = luaL_checkstring(L, url_idx);
    s3_box *b = closing_userdata(L, sizeof *b, BOX_MT, box_close);
    pv_err err;
    pv_err_clear(&err);
    if (s3_parse_url(url, &b->bucket, &b->key, &err) < 0) pv_err_raise(L, &err);
    if (object && !b->key[0])
        luaL_argerror(L, url_idx, "the url must name an object: s3://bucket/key");
    return b;
}

/* The box's next request (the previous one and its answer are freed). */
static s3_req *box_request(s3_box *b, const char *method, const char *op, bool on_key,
                           const char *query)
{
    s3_req_free(b->req);
    s3_xml_free(b->xml);
    b->xml = NULL;
    b->req = s3_req_new(method, op, b->bucket, on_key ? b->key : NULL, query);
    return b->req;
}

/* Runs the box's request; raises its error. */
static s3_req *box_run(lua_State *L, s3_client *c, s3_box *b)
{
    pv_err err;
    pv_err_clear(&err);
    if (s3_exec(c, b->req, &err) < 0) pv_err_raise(L, &err);
    return b->req;
}

/* Runs the box's request and parses its XML answer; raises on failure. */
static s3_xml *box_run_xml(lua_State *L, s3_client *c, s3_box *b)
{
    s3_req *r = box_run(L, c, b);
    pv_err err;
    pv_err_clear(&err);
    b->xml = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, &err);
    if (!b->xml) pv_err_raise(L, &err);
    return b->xml;
}

static void set_marker(s3_box *b, int i, const char *value)
{
    free(b->marker[i]);
    b->marker[i] = value ? s3_xstrdup(value) : NULL;
}

static void push_etag(lua_State *L, const char *etag)
{
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
        lua_pushlstring(L, etag + 1, n - 2);
    else
        lua_pushstring(L, etag);
}

/* Copies the text of child `name` of x into field `field` of the table on top. */
static void set_text(lua_State *L, const s3_xml *x, const char *name, const char *field)
{
    const char *v = s3_xml_text(x, name);
    if (!v) return;
    if (strcmp(name, "ETag") == 0)
        push_etag(L, v);
    else
        lua_pushstring(L, v);
    lua_setfield(L, -2, field);
}

static int client_head(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    s3_box *b = new_box(L, 2, false);
    box_request(b, "HEAD", "HeadObject", true, NULL)->ok_status[0] = 404;
    s3_req *r = box_run(L, c, b);
    if (r->status == 404) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    pv_set_int(L, "size", r->content_length);
    push_etag(L, r->etag);
    lua_setfield(L, -2, "etag");
    pv_set_str(L, "last_modified", r->last_modified);
    pv_set_str(L, "content_type", r->content_type);
    return 1;
}

static int client_get(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    const char *range = lua_istable(L, 3) ? pv_opt_str(L, 3, "range", NULL) : NULL;
    s3_box *b = new_box(L, 2, false);
    s3_req *r = box_request(b, "GET", "GetObject", true, NULL);
    if (range) s3_headers_add(&r->extra, "Range", range);
    box_run(L, c, b);
    lua_pushlstring(L, r->resp.p ? r->resp.p : "", r->resp.len);
    return 1;
}

/* put(url, data, {content_type=, if_none_match=}) -> {etag=, size=} */
static int client_put(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    int opts = lua_istable(L, 4) ? 4 : 0;
    const char *ctype = pv_opt_str(L, opts, "content_type", NULL);
    bool if_none_match = pv_opt_bool(L, opts, "if_none_match", false);
    s3_box *b = new_box(L, 2, true);
    s3_req *r = box_request(b, "PUT", "PutObject", true, NULL);
    if (ctype) s3_headers_add(&r->extra, "Content-Type", ctype);
    s3_req_body(r, (const uint8_t *)data, len, true);
    pv_err err;
    pv_err_clear(&err);
    if (s3_final_write(c, r, if_none_match, &err) < 0) return pv_err_raise(L, &err);
    lua_createtable(L, 0, 2);
    push_etag(L, r->etag);
    lua_setfield(L, -2, "etag");
    pv_set_int(L, "size", (lua_Integer)len);
    return 1;
}

static int client_delete(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    s3_box *b = new_box(L, 2, true);
    box_request(b, "DELETE", "DeleteObject", true, NULL)->ok_status[0] = 404;
    box_run(L, c, b);
    lua_pushboolean(L, 1);
    return 1;
}

/* create_bucket(url) -> true when created, false when we already own it */
static int client_create_bucket(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    s3_box *b = new_box(L, 2, false);
    /* A bucket we can already reach is ours: some servers (RGW, AWS in
     * us-east-1) answer a second CreateBucket of their owner with 200. */
    s3_req *r = box_request(b, "HEAD", "HeadBucket", false, NULL);
    r->ok_status[0] = 404;
    r->ok_status[1] = 403;
    if (box_run(L, c, b)->status < 300) {
        lua_pushboolean(L, 0);
        return 1;
    }
    const char *region = c->set->cfg.region;
    if (strcmp(region, "us-east-1") != 0)
        s3_buf_addf(&b->body,
                    "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>",
                    region);
    r = box_request(b, "PUT", "CreateBucket", false, NULL);
    s3_req_body(r, (const uint8_t *)b->body.p, b->body.len, false);
    r->ok_status[0] = 409;
    if (box_run(L, c, b)->status < 300) {
        lua_pushboolean(L, 1);
        return 1;
    }
    pv_err err;
    pv_err_clear(&err);
    s3_xml *x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, &err);
    b->xml = x;
    const char *code = x ? s3_xml_text(x, "Code") : NULL;
    bool owned = code && strcmp(code, "BucketAlreadyOwnedByYou") == 0;
    if (!owned)
        pv_raise(L, "s3", "cannot create bucket '%s': %s (another account owns the name)",
                 b->bucket, code ? code : "HTTP 409");
    lua_pushboolean(L, 0);
    return 1;
}

static void push_object(lua_State *L, const s3_xml *c)
{
    lua_createtable(L, 0, 5);
    set_text(L, c, "Key", "key");
    const char *size = s3_xml_text(c, "Size");
    pv_set_int(L, "size", size ? strtoll(size, NULL, 10) : 0);
    set_text(L, c, "ETag", "etag");
    set_text(L, c, "LastModified", "last_modified");
    set_text(L, c, "StorageClass", "storage_class");
}

/* One ListObjectsV2 page's query: after the continuation token in
 * marker[0], or from start_after. */
static void list_query(s3_buf *q, const s3_box *b, const char *delimiter, const char *start_after,
                       lua_Integer want)
{
    const char *names[6], *values[6];
    int n = 0;
    char maxkeys[32];
    names[n] = "list-type", values[n++] = "2";
    if (b->key[0]) names[n] = "prefix", values[n++] = b->key;
    if (delimiter) names[n] = "delimiter", values[n++] = delimiter;
    if (b->marker[0])
        names[n] = "continuation-token", values[n++] = b->marker[0];
    else if (start_after)
        names[n] = "start-after", values[n++] = start_after;
    if (want < 1000) {
        snprintf(maxkeys, sizeof maxkeys, "%lld", (long long)want);
        names[n] = "max-keys", values[n++] = maxkeys;
    }
    s3_canonical_query(q, names, values, n);
}

/* list(url, {delimiter=, max=, start_after=, page_size=}) -> objects, prefixes */
static int client_list(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    int opts = lua_istable(L, 3) ? 3 : 0;
    const char *delimiter = pv_opt_str(L, opts, "delimiter", NULL);
    const char *start_after = pv_opt_str(L, opts, "start_after", NULL);
    lua_Integer max = pv_opt_int(L, opts, "max", 0);
    lua_Integer page = pv_opt_int(L, opts, "page_size", 1000);
    if (page < 1 || page > 1000) return luaL_argerror(L, 3, "page_size must be 1 to 1000");
    s3_box *b = new_box(L, 2, false);
    lua_newtable(L); /* objects */
    lua_newtable(L); /* common prefixes */
    int nobj = 0, npre = 0;
    do {
        s3_buf q = {0};
        list_query(&q, b, delimiter, start_after, max > 0 && max - nobj < page ? max - nobj : page);
        box_request(b, "GET", "ListObjectsV2", false, s3_buf_str(&q));
        s3_buf_free(&q);
        s3_xml *x = box_run_xml(L, c, b);
        for (s3_xml *e = x->child; e; e = e->next) {
            if (strcmp(e->name, "Contents") == 0) {
                push_object(L, e);
                lua_rawseti(L, -3, ++nobj);
            } else if (strcmp(e->name, "CommonPrefixes") == 0 && s3_xml_text(e, "Prefix")) {
                lua_pushstring(L, s3_xml_text(e, "Prefix"));
                lua_rawseti(L, -2, ++npre);
            }
        }
        const char *trunc = s3_xml_text(x, "IsTruncated");
        const char *next = s3_xml_text(x, "NextContinuationToken");
        bool more =
            trunc && strcmp(trunc, "true") == 0 && next && *next && (max <= 0 || nobj < max);
        set_marker(b, 0, more ? next : NULL);
    } while (b->marker[0]);
    return 2;
}

/* uploads(url, {page_size=}) -> { {key=, upload_id=, initiated=}, ... } under the URL's prefix */
static int client_uploads(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    lua_Integer page = lua_istable(L, 3) ? pv_opt_int(L, 3, "page_size", 1000) : 1000;
    if (page < 1 || page > 1000) return luaL_argerror(L, 3, "page_size must be 1 to 1000");
    char pagestr[32];
    snprintf(pagestr, sizeof pagestr, "%lld", (long long)page);
    s3_box *b = new_box(L, 2, false);
    lua_newtable(L);
    int n = 0;
    do {
        const char *names[5], *values[5];
        int k = 0;
        names[k] = "uploads", values[k++] = "";
        if (page < 1000) names[k] = "max-uploads", values[k++] = pagestr;
        if (b->key[0]) names[k] = "prefix", values[k++] = b->key;
        if (b->marker[0]) names[k] = "key-marker", values[k++] = b->marker[0];
        if (b->marker[1]) names[k] = "upload-id-marker", values[k++] = b->marker[1];
        s3_buf q = {0};
        s3_canonical_query(&q, names, values, k);
        box_request(b, "GET", "ListMultipartUploads", false, s3_buf_str(&q));
        s3_buf_free(&q);
        s3_xml *x = box_run_xml(L, c, b);
        for (s3_xml *e = x->child; e; e = e->next) {
            if (strcmp(e->name, "Upload") != 0) continue;
            lua_createtable(L, 0, 3);
            set_text(L, e, "Key", "key");
            set_text(L, e, "UploadId", "upload_id");
            set_text(L, e, "Initiated", "initiated");
            lua_rawseti(L, -2, ++n);
        }
        const char *trunc = s3_xml_text(x, "IsTruncated");
        const char *nk = s3_xml_text(x, "NextKeyMarker");
        const char *ni = s3_xml_text(x, "NextUploadIdMarker");
        bool more = trunc && strcmp(trunc, "true") == 0 && nk && *nk;
        set_marker(b, 0, more ? nk : NULL);
        set_marker(b, 1, more ? (ni ? ni : "") : NULL);
    } while (b->marker[0]);
    return 1;
}

static int client_abort_upload(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    const char *id = luaL_checkstring(L, 3);
    s3_box *b = new_box(L, 2, true);
    s3_uri_encode(&b->body, id, strlen(id), false);
    char *q = s3_xmalloc(b->body.len + 16);
    snprintf(q, b->body.len + 16, "uploadId=%s", s3_buf_str(&b->body));
    box_request(b, "DELETE", "AbortMultipartUpload", true, q)->ok_status[0] = 404;
    free(q);
    lua_pushboolean(L, box_run(L, c, b)->status != 404);
    return 1;
}

/* create_upload(url) -> upload id of a new multipart upload (for callers
 * that send parts themselves; s3.writer does all of it) */
static int client_create_upload(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    s3_box *b = new_box(L, 2, true);
    box_request(b, "POST", "CreateMultipartUpload", true, "uploads=");
    const char *id = s3_xml_text(box_run_xml(L, c, b), "UploadId");
    if (!id || !*id) return pv_raise(L, "s3", "CreateMultipartUpload answered without an UploadId");
    lua_pushstring(L, id);
    return 1;
}

/* Raises the first per-key error of a DeleteObjects answer, if any. */
static void check_deleted(lua_State *L, const s3_box *b)
{
    s3_xml *bad = s3_xml_child(b->xml, "Error");
    if (!bad) return;
    const char *k = s3_xml_text(bad, "Key"), *code = s3_xml_text(bad, "Code"),
               *msg = s3_xml_text(bad, "Message");
    pv_raise(L, "s3", "DeleteObjects s3://%s/%s failed: %s%s%s%s", b->bucket, k ? k : "",
             code ? code : "error", msg && *msg ? ": " : "", msg ? msg : "",
             code && strcmp(code, "AccessDenied") == 0
                 ? "; on Backblaze B2 the application key needs 'deleteFiles'"
                 : "");
}

/* delete_many(url_of_bucket, {key, ...}) -> number deleted; raises on the first error */
static int client_delete_many(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer total = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= total; i++) {
        if (lua_geti(L, 3, i) != LUA_TSTRING) return luaL_argerror(L, 3, "keys must be strings");
        lua_pop(L, 1);
    }
    s3_box *b = new_box(L, 2, false);
    for (lua_Integer from = 1; from <= total; from += 1000) {
        b->body.len = 0;
        s3_buf_adds(&b->body, "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                              "<Quiet>true</Quiet>");
        for (lua_Integer i = from; i <= total && i < from + 1000; i++) {
            lua_geti(L, 3, i);
            s3_buf_adds(&b->body, "<Object><Key>");
            s3_xml_escape(&b->body, lua_tostring(L, -1));
            s3_buf_adds(&b->body, "</Key></Object>");
            lua_pop(L, 1);
        }
        s3_buf_adds(&b->body, "</Delete>");
        s3_req *r = box_request(b, "POST", "DeleteObjects", false, "delete=");
        s3_headers_add(&r->extra, "Content-Type", "application/xml");
        s3_req_body(r, (const uint8_t *)b->body.p, b->body.len, true);
        box_run_xml(L, c, b);
        check_deleted(L, b);
    }
    lua_pushinteger(L, total);
    return 1;
}

/* The requests of one get_many call: freed by the box's __close too. */
typedef struct {
    s3_req **reqs;
    int n;
} req_set;

#define SET_MT "pgvault.s3.request_set"

static int set_close(lua_State *L)
{
    req_set *rs = luaL_checkudata(L, 1, SET_MT);
    for (int i = 0; i < rs->n; i++)
        s3_req_free(rs->reqs[i]);
    free(rs->reqs);
    rs->reqs = NULL;
    rs->n = 0;
    return 0;
}

static req_set *new_set(lua_State *L, int n)
{
    req_set *rs = closing_userdata(L, sizeof *rs, SET_MT, set_close);
    rs->reqs = calloc((size_t)(n > 0 ? n : 1), sizeof *rs->reqs);
    if (!rs->reqs) abort();
    rs->n = n;
    return rs;
}

/* get_many({url, ...}, {parallel=16}) -> {[i] = body or error object}: the
 * objects read at once, at most `parallel` requests in flight; one that
 * fails does not stop the others (its error object takes its place). */
static int client_get_many(lua_State *L)
{
    s3_client *c = s3_client_of(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer parallel = lua_istable(L, 3) ? pv_opt_int(L, 3, "parallel", 16) : 16;
    if (parallel < 1 || parallel > 64) return luaL_argerror(L, 3, "parallel must be 1 to 64");
    int n = (int)luaL_len(L, 2);
    req_set *rs = new_set(L, n);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        const char *url = lua_tostring(L, -1);
        char *bucket = NULL, *key = NULL;
        pv_err err;
        pv_err_clear(&err);
        if (!url || s3_parse_url(url, &bucket, &key, &err) < 0 || !key[0]) {
            free(bucket);
            free(key);
            return luaL_argerror(L, 2, "every entry must be an s3://bucket/key url");
        }
        rs->reqs[i] = s3_req_new("GET", "GetObject", bucket, key, NULL);
        free(bucket);
        free(key);
        lua_pop(L, 1);
    }
    lua_createtable(L, n, 0);
    int next = 0, pending = 0;
    while (next < n || pending > 0) {
        while (next < n && pending < parallel) {
            s3_submit(c, rs->reqs[next++]);
            pending++;
        }
        pv_err err;
        pv_err_clear(&err);
        s3_req *r = s3_wait(c, true, &err);
        if (!r) {
            s3_cancel_all(c);
            return pv_err_raise(L, &err); /* interrupted */
        }
        pending--;
        int i = 0;
        while (i < n && rs->reqs[i] != r)
            i++;
        if (r->err.set)
            pv_err_push(L, &r->err);
        else
            lua_pushlstring(L, r->resp.p ? r->resp.p : "", r->resp.len);
        lua_rawseti(L, -2, i + 1);
        s3_req_free(r);
        rs->reqs[i] = NULL;
    }
    return 1;
}

const luaL_Reg s3_request_methods[] = {{"get_many", client_get_many},
                                       {"head", client_head},
                                       {"get", client_get},
                                       {"put", client_put},
                                       {"delete", client_delete},
                                       {"delete_many", client_delete_many},
                                       {"list", client_list},
                                       {"uploads", client_uploads},
                                       {"abort_upload", client_abort_upload},
                                       {"create_bucket", client_create_bucket},
                                       {"create_upload", client_create_upload},
                                       {NULL, NULL}};
