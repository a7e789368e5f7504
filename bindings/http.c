/*
 * http.c: module pgvault.http, JSON over HTTP(S) for SaaS APIs and
 * notifications: client handles with a base URL and default headers, their
 * requests (query strings, JSON or raw bodies, retry rules, statuses that
 * count as answers) and the one-off http.request. The transfer and its
 * retries live in bindings/http/transfer.c, what becomes of an answer in
 * bindings/http/answer.c, the network rules shared with other clients in
 * bindings/http/net.c.
 *
 * Secrets: the values of secret headers (Authorization ...), the password
 * of a URL and secret-looking query values are registered with the log's
 * redaction as soon as they are seen, and every URL a message shows is
 * masked (a client made with secret_url = true masks its base path too).
 */
#include "http/http.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CLIENT_MT "pgvault.http.client"
#define CALL_MT "pgvault.http.call"

typedef struct client_ud {
    bool open;
    CURL *easy;
    char *base_url;         /* NULL for one-off requests */
    bool secret_url;        /* the URL's path is a credential */
    size_t secret_path_end; /* mask the base path up to here in messages */
    char **hnames, **hvalues;
    int nheaders;
    long timeout;
    int max_attempts;
    double retry_base;
    char *ca_bundle;
    size_t max_body;
} client_ud;

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

static void free_strings(char **v, int n, bool wipe)
{
    for (int i = 0; v && i < n; i++) {
        if (v[i] && wipe) explicit_bzero(v[i], strlen(v[i]));
        free(v[i]);
    }
    free(v);
}

static void client_release(client_ud *u)
{
    if (!u->open) return;
    u->open = false;
    if (u->easy) curl_easy_cleanup(u->easy);
    u->easy = NULL;
    free(u->base_url);
    free(u->ca_bundle);
    free_strings(u->hnames, u->nheaders, false);
    free_strings(u->hvalues, u->nheaders, true);
    u->base_url = u->ca_bundle = NULL;
    u->hnames = u->hvalues = NULL;
    u->nheaders = 0;
}

static int client_close(lua_State *L)
{
    client_release(luaL_checkudata(L, 1, CLIENT_MT));
    return 0;
}

static client_ud *check_client(lua_State *L, int idx)
{
    client_ud *u = luaL_checkudata(L, idx, CLIENT_MT);
    if (!u->open) luaL_error(L, "attempt to use a closed HTTP client");
    return u;
}

static int client_tostring(lua_State *L)
{
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (!u->open) {
        lua_pushliteral(L, "pgvault http client (closed)");
    } else {
        char *shown = http_mask_url(u->base_url ? u->base_url : "", u->secret_path_end);
        lua_pushfstring(L, "pgvault http client (%s)", shown);
        free(shown);
    }
    return 1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* A header name or value must not smuggle another header in. */
static void check_header(lua_State *L, const char *name, const char *value)
{
    if (!*name || strpbrk(name, ":\r\n \t")) luaL_error(L, "'%s' is not an HTTP header name", name);
    if (strpbrk(value, "\r\n")) luaL_error(L, "the value of HTTP header %s has a line break", name);
}

/* Registers a secret header value, and the credential after its scheme
 * word ("Bearer abc" -> "abc" too), with the log's redaction. */
static void register_secret_value(const char *value)
{
    pv_log_add_secret(value);
    const char *sp = strchr(value, ' ');
    if (sp) pv_log_add_secret(sp + 1);
}

static bool is_http_url(const char *url)
{
    return strncasecmp(url, "https://", 8) == 0 || strncasecmp(url, "http://", 7) == 0;
}

static void check_url_text(lua_State *L, const char *url, const char *what)
{
    if (!is_http_url(url)) luaL_error(L, "%s must start with https:// or http://", what);
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            luaL_error(L, "%s has a space or a control character: percent-encode it", what);
}

/* Reads the client settings from the table at idx; a one-off request
 * (http.request) takes no base_url and its headers are the request's. */
static void read_client(lua_State *L, int idx, client_ud *u, bool one_off)
{
    u->timeout = (long)pv_opt_int(L, idx, "timeout", 30);
    u->max_attempts = (int)pv_opt_int(L, idx, "max_attempts", 6);
    lua_Integer base_ms = pv_opt_int(L, idx, "retry_base_ms", 200);
    if (u->timeout < 1) luaL_error(L, "option 'timeout' must be at least 1 (seconds)");
    if (u->max_attempts < 1) luaL_error(L, "option 'max_attempts' must be at least 1");
    u->retry_base = (double)(base_ms < 1 ? 1 : base_ms) / 1000.0;
    lua_Integer max_body = pv_opt_int(L, idx, "max_body", 64 << 20);
    u->max_body = max_body < 1 ? 1 : (size_t)max_body;
    const char *ca = pv_opt_str(L, idx, "ca_bundle", NULL);
    if (!ca) ca = getenv("SSL_CERT_FILE");
    if (ca && *ca) u->ca_bundle = xstrdup(ca);
    u->secret_url = pv_opt_bool(L, idx, "secret_url", false);
    if (one_off) return;
    const char *base = pv_opt_str(L, idx, "base_url", NULL);
    if (!base) luaL_error(L, "http.client needs base_url");
    check_url_text(L, base, "base_url");
    u->base_url = xstrdup(base);
    if (u->secret_url) {
        /* The base path is the credential: masked up to its end. */
        size_t end = strcspn(base, "?#");
        const char *auth = strstr(base, "://") + 3;
        if ((size_t)(auth - base) + strcspn(auth, "/?#") < end) u->secret_path_end = end;
    }
    http_register_url_secrets(base, u->secret_path_end);
    lua_getfield(L, idx, "headers");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                luaL_error(L, "headers must map names to strings");
            const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
            check_header(L, name, value);
            char **nn = realloc(u->hnames, (size_t)(u->nheaders + 1) * sizeof *nn);
            if (!nn) abort();
            u->hnames = nn;
            char **nv = realloc(u->hvalues, (size_t)(u->nheaders + 1) * sizeof *nv);
            if (!nv) abort();
            u->hvalues = nv;
            u->hnames[u->nheaders] = xstrdup(name);
            u->hvalues[u->nheaders] = xstrdup(value);
            u->nheaders++;
            if (http_secret_header(name)) register_secret_value(value);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static client_ud *new_client(lua_State *L, int idx, bool one_off)
{
    client_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, CLIENT_MT);
    u->open = true; /* from here on __gc frees whatever is acquired */
    read_client(L, idx, u, one_off);
    u->easy = curl_easy_init();
    if (!u->easy) pv_raise(L, "http", "cannot create a libcurl handle");
    return u;
}

static int http_client_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    new_client(L, 1, false);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Building a request                                                  */
/* ------------------------------------------------------------------ */

void http_call_ud_free(call_ud *cu)
{
    http_call_free(&cu->call);
    http_bytes_free(&cu->url);
    free(cu->shown);
    cu->shown = NULL;
    cu->call.url = cu->call.shown = NULL;
}

static int call_gc(lua_State *L)
{
    http_call_ud_free(luaL_checkudata(L, 1, CALL_MT));
    return 0;
}

static void add_query_pair(lua_State *L, http_bytes *url, bool *first, int kidx, int vidx)
{
    int t = lua_type(L, vidx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        luaL_error(L, "query value of '%s' must be a string, number or boolean",
                   lua_tostring(L, kidx));
    size_t kn, vn;
    const char *k = lua_tolstring(L, kidx, &kn);
    const char *v = t == LUA_TBOOLEAN ? (lua_toboolean(L, vidx) ? "true" : "false")
                                      : lua_tolstring(L, vidx, &vn);
    if (t == LUA_TBOOLEAN) vn = strlen(v);
    http_bytes_add(url, *first ? "?" : "&", 1);
    *first = false;
    http_escape(url, k, kn);
    http_bytes_add(url, "=", 1);
    http_escape(url, v, vn);
}

/* Appends the query table at idx, keys sorted (the same request always
 * reads the same), arrays as repeated keys. */
static void add_query(lua_State *L, int idx, http_bytes *url)
{
    bool first = strchr(url->p, '?') == NULL;
    lua_newtable(L);
    int keys = lua_gettop(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "query keys must be strings");
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++n);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, keys);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, keys, i);
        int k = lua_gettop(L);
        lua_pushvalue(L, k);
        lua_gettable(L, idx);
        if (lua_istable(L, -1)) {
            lua_Integer len = luaL_len(L, -1);
            for (lua_Integer j = 1; j <= len; j++) {
                lua_geti(L, -1, j);
                add_query_pair(L, url, &first, k, lua_gettop(L));
                lua_pop(L, 1);
            }
        } else {
            add_query_pair(L, url, &first, k, lua_gettop(L));
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

static void read_statuses(lua_State *L, int idx, const char *key, int *out, int *n)
{
    lua_getfield(L, idx, key);
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_Integer len = luaL_len(L, -1);
        if (len > HTTP_MAX_STATUSES)
            luaL_error(L, "at most %d statuses in '%s'", HTTP_MAX_STATUSES, key);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_geti(L, -1, i);
            lua_Integer s = lua_tointeger(L, -1);
            if (s < 100 || s > 599) luaL_error(L, "'%s' must list HTTP statuses (100-599)", key);
            out[(*n)++] = (int)s;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static bool has_header(struct curl_slist *l, const char *name)
{
    size_t n = strlen(name);
    for (; l; l = l->next)
        if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':') return true;
    return false;
}

static void add_header(call_ud *cu, const char *name, const char *value)
{
    char *line = NULL;
    if (asprintf(&line, "%s: %s", name, value) < 0) abort();
    struct curl_slist *l = curl_slist_append(cu->call.headers, line);
    explicit_bzero(line, strlen(line));
    free(line);
    if (!l) abort();
    cu->call.headers = l;
}

/* The request's own headers first, then the client's it does not
 * override; JSON's content type and accept unless given. */
static bool read_headers(lua_State *L, int idx, client_ud *u, call_ud *cu, bool json)
{
    bool secret = false;
    lua_getfield(L, idx, "headers");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                luaL_error(L, "headers must map names to strings");
            const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
            check_header(L, name, value);
            if (http_secret_header(name)) {
                register_secret_value(value);
                secret = true;
            }
            add_header(cu, name, value);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    for (int i = 0; i < u->nheaders; i++) {
        if (has_header(cu->call.headers, u->hnames[i])) continue;
        if (http_secret_header(u->hnames[i])) secret = true;
        add_header(cu, u->hnames[i], u->hvalues[i]);
    }
    if (json && !has_header(cu->call.headers, "Content-Type"))
        add_header(cu, "Content-Type", "application/json");
    if (json && !has_header(cu->call.headers, "Accept"))
        add_header(cu, "Accept", "application/json");
    /* No "100 Continue" round trip for our small bodies. */
    add_header(cu, "Expect", "");
    return secret;
}

static bool loopback(const char *url)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    const char *at = memchr(h, '@', strcspn(h, "/?#"));
    if (at) h = at + 1;
    return strncmp(h, "127.", 4) == 0 || strncasecmp(h, "localhost", 9) == 0 ||
           strncmp(h, "[::1]", 5) == 0;
}

/* Encodes the value at top with our cjson instance; leaves the string. */
static void encode_json(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CJSON_KEY);
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 1);
    lua_remove(L, -2);
    lua_remove(L, -2);
}

static void read_body(lua_State *L, int idx, int call_idx, call_ud *cu, bool *json)
{
    lua_getfield(L, idx, "json");
    *json = !lua_isnil(L, -1);
    if (*json) {
        encode_json(L);
    } else {
        lua_pop(L, 1);
        lua_getfield(L, idx, "body");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "option 'body' must be a string");
    }
    if (!lua_isnil(L, -1)) {
        cu->call.body = lua_tolstring(L, -1, &cu->call.body_len);
        lua_setiuservalue(L, call_idx, 1); /* keeps the body alive with the call */
    } else {
        lua_pop(L, 1);
    }
}

static void read_method(lua_State *L, int idx, call_ud *cu)
{
    const char *m = pv_opt_str(L, idx, "method", cu->call.body ? "POST" : "GET");
    size_t n = strlen(m);
    if (n == 0 || n >= sizeof cu->call.method) luaL_error(L, "'%s' is not an HTTP method", m);
    for (size_t i = 0; i <= n; i++)
        cu->call.method[i] = (char)toupper((unsigned char)m[i]);
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)cu->call.method[i]))
            luaL_error(L, "'%s' is not an HTTP method", m);
}

static void read_url(lua_State *L, int idx, client_ud *u, call_ud *cu)
{
    if (u->base_url) {
        const char *path = pv_opt_str(L, idx, "path", "");
        if (is_http_url(path) || (path[0] && path[0] != '/' && path[0] != '?'))
            luaL_error(L, "path '%s' must start with '/' (it is added to the base URL)", path);
        const char *base = u->base_url;
        size_t blen = strlen(base);
        if (blen && base[blen - 1] == '/' && path[0] == '/') blen--;
        http_bytes_add(&cu->url, base, blen);
        http_bytes_add(&cu->url, path, strlen(path));
    } else {
        const char *url = pv_opt_str(L, idx, "url", NULL);
        if (!url) luaL_error(L, "http.request needs url");
        check_url_text(L, url, "url");
        if (u->secret_url) u->secret_path_end = strcspn(url, "?#");
        http_bytes_add(&cu->url, url, strlen(url));
    }
    check_url_text(L, cu->url.p, "the URL");
    lua_getfield(L, idx, "query");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        add_query(L, lua_gettop(L), &cu->url);
    }
    lua_pop(L, 1);
    http_register_url_secrets(cu->url.p, u->secret_path_end);
    cu->shown = http_mask_url(cu->url.p, u->secret_path_end);
}

static call_ud *build_call(lua_State *L, client_ud *u, int idx)
{
    call_ud *cu = lua_newuserdatauv(L, sizeof *cu, 1);
    memset(cu, 0, sizeof *cu);
    luaL_setmetatable(L, CALL_MT);
    int call_idx = lua_gettop(L);
    http_call *c = &cu->call;
    read_url(L, idx, u, cu);
    c->url = cu->url.p;
    c->shown = cu->shown;
    bool json;
    read_body(L, idx, call_idx, cu, &json);
    read_method(L, idx, cu);
    bool secret = read_headers(L, idx, u, cu, json);
    if (secret && strncasecmp(c->url, "http://", 7) == 0 && !loopback(c->url))
        pv_raise(L, "config", "refusing to send a credential over plain http to %s: use https",
                 c->shown);
    const char *retry = pv_opt_str(L, idx, "retry", "auto");
    if (strcmp(retry, "auto") != 0 && strcmp(retry, "never") != 0)
        luaL_error(L, "option 'retry' must be \"auto\" or \"never\"");
    c->retry_never = strcmp(retry, "never") == 0;
    read_statuses(L, idx, "retry_statuses", c->retry_statuses, &c->nretry);
    read_statuses(L, idx, "ok", c->ok_statuses, &c->nok);
    c->timeout = (long)pv_opt_int(L, idx, "timeout", u->timeout);
    c->max_attempts = (int)pv_opt_int(L, idx, "max_attempts", u->max_attempts);
    if (c->timeout < 1 || c->max_attempts < 1)
        luaL_error(L, "options 'timeout' and 'max_attempts' must be at least 1");
    c->retry_base = u->retry_base;
    c->retry_cap = 60;
    c->ca_bundle = u->ca_bundle;
    c->max_body = u->max_body;
    return cu;
}

static int client_request(lua_State *L)
{
    client_ud *u = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    call_ud *cu = build_call(L, u, 2);
    return http_run_call(L, u->easy, cu);
}

/* http.request{url = ..., <client and request options>}: a one-off. */
static int http_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    client_ud *u = new_client(L, 1, true);
    call_ud *cu = build_call(L, u, 1);
    int n = http_run_call(L, u->easy, cu);
    client_release(u);
    return n;
}

/* http.escape(s): percent-encodes one path segment or query value. */
static int http_escape_lua(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    http_bytes b = {0};
    http_escape(&b, s, n);
    lua_pushlstring(L, b.p ? b.p : "", b.len);
    http_bytes_free(&b);
    return 1;
}

/* http.mask_url(url [, {secret_path = true}]): the URL as messages show it. */
static int http_mask_lua(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    size_t end = 0;
    if (pv_opt_bool(L, lua_istable(L, 2) ? 2 : 0, "secret_path", false)) end = strcspn(url, "?#");
    char *m = http_mask_url(url, end);
    lua_pushstring(L, m);
    free(m);
    return 1;
}

/* http.hmac_sha256(key, data): lower-case hex of HMAC-SHA256 (webhook
 * signatures). */
static int http_hmac_sha256(lua_State *L)
{
    size_t klen, dlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, klen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)data, dlen);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
    char hex[2 * sizeof mac + 1];
    pv_hex(mac, sizeof mac, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* http._retry_after(value): seconds a Retry-After value asks for, or nil
 * (for the tests). */
static int http_retry_after_lua(lua_State *L)
{
    double s = net_retry_after(luaL_checkstring(L, 1));
    if (s < 0) return 0;
    lua_pushnumber(L, s);
    return 1;
}

int luaopen_pgvault_http(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"request", client_request}, {"close", client_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", client_close},
                                    {"__close", client_close},
                                    {"__tostring", client_tostring},
                                    {NULL, NULL}};
    luaL_newmetatable(L, CLIENT_MT);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, CALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    /* Our own cjson instance: its settings are not shared with scripts. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    lua_call(L, 0, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, CJSON_KEY);
    lua_pop(L, 1);

    static const luaL_Reg funcs[] = {{"client", http_client_new},
                                     {"request", http_request},
                                     {"escape", http_escape_lua},
                                     {"mask_url", http_mask_lua},
                                     {"hmac_sha256", http_hmac_sha256},
                                     {"_retry_after", http_retry_after_lua},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
