/*
 * reader.c: the s3.reader source. One streaming GetObject (optionally a
 * byte range) whose body goes straight downstream; when the connection
 * breaks, the request resumes where it stopped with a Range and If-Match
 * on the first answer's ETag, so a changed object is never spliced in.
 */
#include "s3int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pv_stage base;
    s3_client client;
    bool client_ready;
    char *bucket, *key;
    long long first, last; /* requested range, -1 for open ends */
    long long received;
    long long expected; /* bytes of the whole answer, -1 until known */
    char etag[128];
    double t0, seconds;
} s3_reader;

static void reader_before_attempt(s3_req *r, void *ud)
{
    s3_reader *rd = ud;
    s3_headers_free(&r->extra);
    long long from = (rd->first < 0 ? 0 : rd->first) + rd->received;
    char range[96];
    if (rd->received > 0 || rd->first >= 0 || rd->last >= 0) {
        if (rd->last >= 0)
            snprintf(range, sizeof range, "bytes=%lld-%lld", from, rd->last);
        else
            snprintf(range, sizeof range, "bytes=%lld-", from);
        s3_headers_add(&r->extra, "Range", range);
    }
    if (rd->etag[0]) s3_headers_add(&r->extra, "If-Match", rd->etag);
}

static int reader_sink(s3_req *r, const char *data, size_t len, void *ud)
{
    s3_reader *rd = ud;
    if (rd->expected < 0) {
        if (r->status == 200 && rd->received > 0) {
            pv_err_set(&r->err, "s3", "the server ignored the Range of a resumed download");
            return -1;
        }
        rd->expected = r->content_length >= 0 ? r->content_length + rd->received : -1;
        if (!rd->etag[0]) snprintf(rd->etag, sizeof rd->etag, "%s", r->etag);
    }
    if (pv_emit(&rd->base, (const uint8_t *)data, len, &r->err) < 0) return -1;
    rd->received += (long long)len;
    return 0;
}

static int reader_run(pv_stage *st, pv_err *err)
{
    s3_reader *rd = (s3_reader *)st;
    rd->t0 = pv_now();
    s3_req *r = s3_req_new("GET", "GetObject", rd->bucket, rd->key, NULL);
    r->sink = reader_sink;
    r->sink_ud = rd;
    r->before_attempt = reader_before_attempt;
    int rc = 0, resumes = 0;
    for (;;) {
        rd->expected = -1;
        rc = s3_exec(&rd->client, r, err);
        if (rc < 0) break;
        if (r->status == 200 || r->status == 206) {
            /* An empty body never calls the sink. */
            if (rd->expected < 0 && r->content_length >= 0)
                rd->expected = r->content_length + rd->received;
            if (rd->expected >= 0 && rd->received < rd->expected) {
                /* The body ended early without a transport error: resume. */
                if (++resumes >= rd->client.set->cfg.max_attempts) {
                    pv_err_set(err, "s3", "s3://%s/%s: the body ended after %lld of %lld bytes",
                               rd->bucket, rd->key, rd->received, rd->expected);
                    rc = -1;
                    break;
                }
                continue;
            }
        }
        break;
    }
    s3_req_free(r);
    rd->seconds = pv_now() - rd->t0;
    return rc;
}

static int reader_report(pv_stage *st, lua_State *L)
{
    s3_reader *rd = (s3_reader *)st;
    lua_createtable(L, 0, 4);
    char url[1200];
    snprintf(url, sizeof url, "s3://%s/%s", rd->bucket, rd->key);
    pv_set_str(L, "url", url);
    pv_set_int(L, "bytes", (lua_Integer)rd->received);
    pv_set_str(L, "etag", rd->etag);
    pv_set_num(L, "seconds", rd->seconds);
    return 1;
}

static void reader_release(pv_stage *st)
{
    s3_reader *rd = (s3_reader *)st;
    if (rd->client_ready) s3_client_close(&rd->client);
    rd->client_ready = false;
    free(rd->bucket);
    free(rd->key);
    rd->bucket = rd->key = NULL;
}

static const pv_stage_ops reader_ops = {
    .name = "s3", .run = reader_run, .report = reader_report, .release = reader_release};

/* Reads range = {first, last} or "bytes=FIRST-LAST" from the options at 1. */
static void read_range(lua_State *L, long long *first, long long *last)
{
    *first = *last = -1;
    lua_getfield(L, 1, "range");
    if (lua_istable(L, -1)) {
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        *first = lua_isinteger(L, -2) ? (long long)lua_tointeger(L, -2) : -1;
        *last = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -1;
        lua_pop(L, 2);
        if (*first < 0 || (*last >= 0 && *last < *first))
            luaL_argerror(L, 1, "range must be {first, last} with 0 <= first <= last");
    } else if (lua_isstring(L, -1)) {
        const char *s = lua_tostring(L, -1);
        if (sscanf(s, "bytes=%lld-%lld", first, last) < 1 || *first < 0 ||
            (*last >= 0 && *last < *first))
            luaL_argerror(L, 1, "range must look like \"bytes=FIRST-LAST\"");
    } else if (!lua_isnil(L, -1)) {
        luaL_argerror(L, 1, "range must be a table {first, last} or a string");
    }
    lua_pop(L, 1);
}

/* reader{url=, range={first, last} or "bytes=A-B"} on the settings of a client */
int s3_push_reader(lua_State *L, s3_settings *set)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *url = pv_opt_str(L, 1, "url", NULL);
    if (!url) return luaL_argerror(L, 1, "url = \"s3://bucket/key\" is required");
    long long first, last;
    read_range(L, &first, &last);
    s3_reader *rd = pv_stage_new(L, &reader_ops, sizeof *rd, 1);
    pv_err err;
    pv_err_clear(&err);
    if (s3_parse_url(url, &rd->bucket, &rd->key, &err) < 0) return pv_err_raise(L, &err);
    const char *key = rd->key;
    rd->first = first;
    rd->last = last;
    rd->expected = -1;
    if (!key[0]) return luaL_argerror(L, 1, "the url must name an object: s3://bucket/key");
    if (s3_client_init(&rd->client, set, &err) < 0) return pv_err_raise(L, &err);
    rd->client_ready = true;
    return 1;
}
