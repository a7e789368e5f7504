/*
 * answer.c: what pgvault.http makes of an answer: the table a request
 * returns (status, lower-case headers, body, JSON decoded with whole
 * numbers as integers), or the error of a refusal in one line with the
 * server's own message, request id and decoded error body.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool json_type(const char *ct)
{
    if (!ct) return false;
    size_t n = strcspn(ct, ";");
    for (size_t i = 0; i + 4 <= n; i++)
        if (strncasecmp(ct + i, "json", 4) == 0) return true;
    return false;
}

/* lua-cjson 2.1 reads every number as a float: whole numbers become
 * integers again (as lib.json does), so 3 is 3 and not 3.0. */
static void integers_back(lua_State *L, int idx, int depth)
{
    if (depth > 1100) return; /* deeper than cjson decodes */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_istable(L, -1)) {
            integers_back(L, lua_gettop(L), depth + 1);
        } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number n = lua_tonumber(L, -1);
            lua_Integer i;
            if (n >= -9007199254740992.0 && n <= 9007199254740992.0 && lua_numbertointeger(n, &i) &&
                (lua_Number)i == n) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, i);
                lua_rawset(L, idx);
            }
        }
        lua_pop(L, 1);
    }
}

/* Pushes the decoded body, or nil (and returns false) when it is not JSON. */
static bool decode_json(lua_State *L, const http_bytes *body)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CJSON_KEY);
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, body->p ? body->p : "", body->len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return false;
    }
    if (lua_istable(L, -1)) integers_back(L, lua_gettop(L), 0);
    return true;
}

static void push_headers(lua_State *L, const http_call *c)
{
    lua_createtable(L, 0, c->nresp_headers);
    for (int i = 0; i < c->nresp_headers; i++) {
        lua_pushstring(L, c->resp_headers[i].value);
        lua_setfield(L, -2, c->resp_headers[i].name);
    }
}

/* What the server said about a refusal, from a JSON error body (message,
 * error, error.message, detail, title, errors[1].message) or the first
 * line of a plain-text one; "" when nothing readable. At idx: the decoded
 * body or nil. */
static void server_message(lua_State *L, int idx, const http_call *c, char *out, size_t outsz)
{
    out[0] = '\0';
    const char *found = NULL;
    if (lua_istable(L, idx)) {
        static const char *const keys[] = {
            "message", "error_description", "detail", "title", "error", NULL};
        for (int i = 0; keys[i] && !found; i++) {
            lua_getfield(L, idx, keys[i]);
            if (lua_istable(L, -1)) lua_getfield(L, -1, "message");
            if (lua_type(L, -1) == LUA_TSTRING) found = lua_tostring(L, -1);
            lua_settop(L, idx);
        }
        if (!found) {
            lua_getfield(L, idx, "errors");
            if (lua_istable(L, -1)) {
                lua_geti(L, -1, 1);
                if (lua_istable(L, -1)) lua_getfield(L, -1, "message");
                if (lua_type(L, -1) == LUA_TSTRING) found = lua_tostring(L, -1);
            }
        }
        if (found) snprintf(out, outsz, "%s", found);
        lua_settop(L, idx);
    } else if (c->resp.len > 0) {
        const char *ct = http_resp_header(c, "content-type");
        if (ct && strncasecmp(ct, "text/plain", 10) == 0)
            snprintf(out, outsz, "%.*s", (int)strcspn(c->resp.p, "\r\n"), c->resp.p);
    }
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < ' ') *p = ' ';
    if (strlen(out) > 300) strcpy(out + 297, "...");
}

static const char *status_advice(long s)
{
    if (s == 401) return ": check the token or credentials";
    if (s == 403) return ": the credentials lack the permission for this";
    if (s == 404) return ": check the address";
    return "";
}

/* Builds the error for a refusing answer (transfer returned 1), frees
 * the call, and raises. The error carries json = the decoded error body. */
static int raise_refusal(lua_State *L, call_ud *cu)
{
    http_call *c = &cu->call;
    bool is_json = json_type(http_resp_header(c, "content-type"));
    if (is_json)
        decode_json(L, &c->resp);
    else
        lua_pushnil(L);
    int body = lua_gettop(L);
    char said[320], what[160];
    server_message(L, body, c, said, sizeof said);
    snprintf(what, sizeof what, "HTTP %ld%s%s", c->status, c->reason[0] ? " " : "", c->reason);
    pv_err e;
    pv_err_clear(&e);
    double ra = net_retry_after(http_resp_header(c, "retry-after"));
    const char *location = http_resp_header(c, "location");
    if (c->status >= 300 && c->status < 400 && location) {
        char *to = http_mask_url(location, 0);
        pv_err_set(&e, "http", "%s %s was redirected (%s): use the new address, %s", c->method,
                   c->shown, what, to);
        free(to);
    } else if (c->retryable && ra > c->retry_cap && c->attempts < c->max_attempts) {
        pv_err_set(&e, "http", "%s %s: %s%s%s: the server asks to wait %.0f s before trying again",
                   c->method, c->shown, what, said[0] ? ": " : "", said, ra);
    } else if (c->retryable && c->attempts > 1) {
        pv_err_set(&e, "http", "%s %s failed after %d attempts: %s%s%s", c->method, c->shown,
                   c->attempts, what, said[0] ? ": " : "", said);
    } else {
        pv_err_set(&e, "http", "%s %s: %s%s%s%s", c->method, c->shown, what, said[0] ? ": " : "",
                   said, status_advice(c->status));
    }
    pv_err_int(&e, "http_status", c->status);
    pv_err_bool(&e, "retryable", c->retryable);
    pv_err_str(&e, "method", c->method);
    pv_err_str(&e, "url", c->shown);
    pv_err_int(&e, "attempts", c->attempts);
    const char *rid = http_request_id(c);
    if (rid) pv_err_str(&e, "request_id", rid);
    if (lua_istable(L, body)) {
        lua_getfield(L, body, "code");
        if (lua_type(L, -1) == LUA_TSTRING) pv_err_str(&e, "code", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    http_call_ud_free(cu);
    pv_err_push(L, &e);
    lua_pushvalue(L, body);
    lua_setfield(L, -2, "json");
    if (strcmp(e.kind, "interrupted") == 0) pv_interrupt_delivered();
    return lua_error(L);
}

static void push_answer(lua_State *L, call_ud *cu)
{
    http_call *c = &cu->call;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, c->status);
    lua_setfield(L, -2, "status");
    push_headers(L, c);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, c->resp.p ? c->resp.p : "", c->resp.len);
    lua_setfield(L, -2, "body");
    lua_pushinteger(L, c->attempts);
    lua_setfield(L, -2, "attempts");
}

int http_run_call(lua_State *L, CURL *easy, call_ud *cu)
{
    pv_err err;
    pv_err_clear(&err);
    int rc = http_perform(easy, &cu->call, &err);
    if (rc < 0) {
        http_call_ud_free(cu);
        return pv_err_raise(L, &err);
    }
    if (rc == 1) return raise_refusal(L, cu);
    push_answer(L, cu);
    http_call *c = &cu->call;
    if (json_type(http_resp_header(c, "content-type")) && c->resp.len > 0) {
        if (!decode_json(L, &c->resp)) {
            pv_err_set(&err, "http", "%s %s: HTTP %ld but the answer is not valid JSON", c->method,
                       c->shown, c->status);
            pv_err_int(&err, "http_status", c->status);
            pv_err_bool(&err, "retryable", false);
            pv_err_str(&err, "url", c->shown);
            http_call_ud_free(cu);
            return pv_err_raise(L, &err);
        }
        lua_setfield(L, -2, "json");
    }
    http_call_ud_free(cu);
    return 1;
}
