/*
 * s3.c: module pgvault.s3, an S3-compatible client (Backblaze B2 first).
 * A client object holds settings (shared with every stage made from it)
 * and a transfer engine for its own requests (bindings/s3/methods.c);
 * client:reader{} and client:writer{} are stages on the client's settings,
 * and the module-level s3.reader{}, s3.writer{} and s3.head(url, opts) ...
 * build a client and take the same path. Also the SigV4 signer and the XML
 * parser exposed for the tests. The pieces live in bindings/s3/.
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

s3_client *s3_client_of(lua_State *L, int idx)
{
    return &check_client(L, idx)->c;
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
        lua_pushfstring(L, "pgvault s3 client (%s, key %s)", u->c.set->cfg.endpoint,
                        u->c.set->cfg.access_key);
    else
        lua_pushliteral(L, "pgvault s3 client (closed)");
    return 1;
}

/* Creates a client from the options table at `opts` (0: none) and pushes it. */
static client_ud *new_client(lua_State *L, int opts)
{
    if (opts && lua_isnoneornil(L, opts)) opts = 0;
    if (opts) luaL_checktype(L, opts, LUA_TTABLE);
    pv_err err;
    pv_err_clear(&err);
    s3_settings *set = s3_settings_load(L, opts, &err);
    if (!set) return pv_err_raise(L, &err), NULL;
    client_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, CLIENT_MT);
    int rc = s3_client_init(&u->c, set, &err);
    s3_settings_unref(set); /* the client holds its own reference now */
    if (rc < 0) pv_err_raise(L, &err);
    u->open = true;
    return u;
}

static int s3_client_new(lua_State *L)
{
    new_client(L, lua_istable(L, 1) ? 1 : 0);
    return 1;
}

static int client_info(lua_State *L)
{
    const s3_config *c = &check_client(L, 1)->c.set->cfg;
    lua_createtable(L, 0, 8);
    pv_set_str(L, "access_key_id", c->access_key);
    pv_set_str(L, "credentials_from", c->cred_source);
    pv_set_str(L, "endpoint", c->endpoint);
    pv_set_str(L, "region", c->region);
    pv_set_str(L, "profile", c->profile);
    pv_set_bool(L, "path_style", c->path_style);
    pv_set_str(L, "ca_bundle", c->ca_bundle);
    pv_set_bool(L, "session_token", c->session_token != NULL);
    return 1;
}

/* A stage made from the client at 1 with the stage options at 2. Settings
 * in those options would be ignored, so they are refused: they belong on
 * s3.client{}. The client stays on the stack (above the options, which
 * `push` reads at 1) until the stage holds its own reference to the
 * settings: unreachable, it could be finalized by a collection inside
 * push's allocations, its settings freed before the stage took them. */
static int stage_of_client(lua_State *L, int (*push)(lua_State *, s3_settings *))
{
    client_ud *u = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    for (int i = 0; s3_setting_names[i]; i++) {
        if (lua_getfield(L, 2, s3_setting_names[i]) != LUA_TNIL)
            luaL_error(L,
                       "bad argument #1 to '%s' (field '%s' is a setting of the client: pass it "
                       "to s3.client{})",
                       lua_tostring(L, lua_upvalueindex(1)), s3_setting_names[i]);
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_rotate(L, 1, 1); /* options at 1, the client at 2 */
    return push(L, u->c.set);
}

static int client_writer(lua_State *L)
{
    return stage_of_client(L, s3_push_writer);
}

static int client_reader(lua_State *L)
{
    return stage_of_client(L, s3_push_reader);
}

/* s3.writer{...} / s3.reader{...}: a client from the same table, then the
 * client's stage (which keeps the settings when the client is collected).
 * The client stays at 2 until push returns (see stage_of_client). */
static int module_stage(lua_State *L, int (*push)(lua_State *, s3_settings *))
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    client_ud *u = new_client(L, 1);
    return push(L, u->c.set);
}

static int module_writer(lua_State *L)
{
    return module_stage(L, s3_push_writer);
}

static int module_reader(lua_State *L)
{
    return module_stage(L, s3_push_reader);
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

/* s3._ini(text, section) -> {found=, {key, value}, ...}. For the tests and
 * the fuzz corpus replay. */
static int s3_ini_for_test(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *section = luaL_checkstring(L, 2);
    s3_ini_section sec;
    s3_ini_parse(text, len, section, &sec);
    lua_createtable(L, sec.n, 1);
    pv_set_bool(L, "found", sec.found);
    for (int i = 0; i < sec.n; i++) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, sec.v[i].key);
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, sec.v[i].value);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    s3_ini_free(&sec);
    return 1;
}

static int s3_parse(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    char *bucket, *key;
    pv_err err;
    pv_err_clear(&err);
    if (s3_parse_url(url, &bucket, &key, &err) < 0) return pv_err_raise(L, &err);
    lua_pushstring(L, bucket);
    lua_pushstring(L, key);
    free(bucket);
    free(key);
    return 2;
}

/* The index of the options table in each module-level shorthand. */
static const struct {
    const char *name;
    int opts;
} shorthands[] = {
    {"head", 2},          {"get", 2},         {"put", 3},          {"delete", 2},
    {"list", 2},          {"uploads", 2},     {"abort_upload", 3}, {"create_bucket", 2},
    {"create_upload", 2}, {"delete_many", 3}, {"get_many", 2},
};

static lua_CFunction request_method(const char *name)
{
    for (const luaL_Reg *m = s3_request_methods; m->name; m++)
        if (strcmp(m->name, name) == 0) return m->func;
    return NULL;
}

static void register_client(lua_State *L)
{
    static const luaL_Reg own[] = {{"info", client_info}, {"close", client_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", client_close},
                                    {"__close", client_close},
                                    {"__tostring", client_tostring},
                                    {NULL, NULL}};
    luaL_newmetatable(L, CLIENT_MT);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, s3_request_methods, 0);
    luaL_setfuncs(L, own, 0);
    lua_pushliteral(L, "writer");
    lua_pushcclosure(L, client_writer, 1);
    lua_setfield(L, -2, "writer");
    lua_pushliteral(L, "reader");
    lua_pushcclosure(L, client_reader, 1);
    lua_setfield(L, -2, "reader");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

int luaopen_pgvault_s3(lua_State *L)
{
    register_client(L);
    static const luaL_Reg funcs[] = {
        {"client", s3_client_new}, {"writer", module_writer},   {"reader", module_reader},
        {"parse_url", s3_parse},   {"part_size", s3_part_size}, {"_sign", s3_sign_for_test},
        {"_xml", s3_xml_for_test}, {"_ini", s3_ini_for_test},   {NULL, NULL}};
    luaL_newlib(L, funcs);
    for (size_t i = 0; i < sizeof shorthands / sizeof shorthands[0]; i++) {
        lua_pushcfunction(L, request_method(shorthands[i].name));
        lua_pushinteger(L, shorthands[i].opts);
        lua_pushcclosure(L, module_call, 2);
        lua_setfield(L, -2, shorthands[i].name);
    }
    return 1;
}
