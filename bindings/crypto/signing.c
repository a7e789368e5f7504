/*
 * signing.c: the Lua side of minisign signatures in pgvault.crypto:
 *   crypto.signing_keygen()            -> {key = handle, public_key = "RW...", key_id = "..."}
 *   crypto.read_signing_key(path, {password = handle or string, kdf_limit =})
 *   key:sign(message, {trusted_comment =, untrusted_comment =, legacy =})
 *   key:save(path, {password =, kdf = "sensitive" | "interactive"})
 *   key:public_key(), key:key_id(), key:public_key_file(), key:close()
 *   crypto.public_key(text) / crypto.read_public_key(path)
 *                                      -> {public_key = "RW...", key_id = "..."}
 *   crypto.verify_signature(message, signature, {public keys}, {legacy =})
 *                                      -> {key_id =, trusted_comment =, algorithm =, key =}
 * A signing key is a handle whose secret lives in sodium_malloc'd memory;
 * it never becomes a Lua string. Public keys are plain strings.
 */
#include "age.h"
#include "minisign.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGNING_KEY_MT "pgvault.crypto.signing_key"

typedef struct {
    ms_secret_key *sk; /* NULL once closed */
} signing_handle;

static signing_handle *push_handle(lua_State *L)
{
    signing_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->sk = NULL;
    luaL_setmetatable(L, SIGNING_KEY_MT);
    return h;
}

static ms_secret_key *check_key(lua_State *L, int idx)
{
    signing_handle *h = luaL_checkudata(L, idx, SIGNING_KEY_MT);
    if (!h->sk) luaL_argerror(L, idx, "the signing key is closed");
    return h->sk;
}

static int key_close(lua_State *L)
{
    signing_handle *h = luaL_checkudata(L, 1, SIGNING_KEY_MT);
    ms_secret_free(h->sk);
    h->sk = NULL;
    return 0;
}

static void push_key_id(lua_State *L, const uint8_t key_id[MS_KEYID_LEN])
{
    char hex[MS_KEYID_HEX];
    ms_key_id_hex(key_id, hex);
    lua_pushstring(L, hex);
}

static int key_tostring(lua_State *L)
{
    signing_handle *h = luaL_checkudata(L, 1, SIGNING_KEY_MT);
    if (!h->sk) {
        lua_pushliteral(L, "minisign signing key (closed)");
        return 1;
    }
    char hex[MS_KEYID_HEX];
    ms_key_id_hex(h->sk->key_id, hex);
    lua_pushfstring(L, "minisign signing key %s", hex);
    return 1;
}

static int key_public_key(lua_State *L)
{
    ms_public_key pk;
    ms_secret_public(check_key(L, 1), &pk);
    char line[MS_PUBLIC_B64 + 1];
    ms_public_encode(&pk, line);
    lua_pushstring(L, line);
    return 1;
}

static int key_key_id(lua_State *L)
{
    push_key_id(L, check_key(L, 1)->key_id);
    return 1;
}

/* The text of the ….pub file, as minisign -G writes it. */
static int key_public_key_file(lua_State *L)
{
    ms_public_key pk;
    ms_secret_public(check_key(L, 1), &pk);
    char line[MS_PUBLIC_B64 + 1], hex[MS_KEYID_HEX];
    ms_public_encode(&pk, line);
    ms_key_id_hex(pk.key_id, hex);
    lua_pushfstring(L, "untrusted comment: minisign public key %s\n%s\n", hex, line);
    return 1;
}

/* An optional string field that must hold no NUL byte. */
static const char *opt_line(lua_State *L, int opts, const char *key, const char *dflt)
{
    if (lua_isnoneornil(L, opts)) return dflt;
    lua_getfield(L, opts, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return dflt;
    }
    size_t n;
    const char *s = luaL_checklstring(L, -1, &n);
    if (strlen(s) != n) luaL_argerror(L, opts, lua_pushfstring(L, "%s holds a NUL byte", key));
    lua_pop(L, 1); /* stays alive in the options table */
    return s;
}

static int key_sign(lua_State *L)
{
    ms_secret_key *sk = check_key(L, 1);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    const char *trusted = opt_line(L, 3, "trusted_comment", "");
    const char *untrusted = opt_line(L, 3, "untrusted_comment", "signature from pgvault");
    bool legacy = !lua_isnoneornil(L, 3) && pv_opt_bool(L, 3, "legacy", false);
    pv_err err;
    pv_err_clear(&err);
    char *text = ms_sign(sk, (const uint8_t *)msg, len, untrusted, trusted, legacy, &err);
    if (!text) return pv_err_raise(L, &err);
    lua_pushstring(L, text);
    free(text);
    return 1;
}

/* The password of the options table at opts: a passphrase handle (its
 * bytes stay in secure memory) or a string; NULL when none. */
static const uint8_t *opt_password(lua_State *L, int opts, size_t *len)
{
    if (lua_isnoneornil(L, opts)) return NULL;
    lua_getfield(L, opts, "password");
    const uint8_t *pw = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        pw = (const uint8_t *)lua_tolstring(L, -1, len);
    } else if (!lua_isnil(L, -1)) {
        age_identity *id = age_check_identity(L, -1);
        if (id->type != AGE_ID_PASSPHRASE)
            luaL_argerror(L, opts, "password must be a passphrase handle or a string");
        pw = id->secret;
        *len = id->len;
    }
    lua_pop(L, 1); /* the value stays alive in the options table */
    return pw;
}

/* scrypt's cost by name: "sensitive" (minisign's, the default) or
 * "interactive" (libsodium's, for tests). */
static ms_kdf opt_kdf(lua_State *L, int opts, const char *key)
{
    const char *name = opt_line(L, opts, key, "sensitive");
    if (strcmp(name, "interactive") == 0) return MS_KDF_INTERACTIVE;
    if (strcmp(name, "sensitive") != 0)
        luaL_argerror(L, opts,
                      lua_pushfstring(L, "%s must be \"sensitive\" or \"interactive\"", key));
    return MS_KDF_SENSITIVE;
}

/* key:save(path, {password=, kdf=, comment=}): the secret key file, 0600,
 * never over an existing file; "-" writes to standard output. */
static int key_save(lua_State *L)
{
    ms_secret_key *sk = check_key(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    size_t pwlen = 0;
    const uint8_t *pw = opt_password(L, 3, &pwlen);
    ms_kdf kdf = opt_kdf(L, 3, "kdf");
    const char *comment = opt_line(L, 3, "comment",
                                   pw ? "minisign encrypted secret key"
                                      : "minisign secret key (not encrypted: keep it safe)");
    pv_err err;
    pv_err_clear(&err);
    char *text = ms_secret_encode(sk, comment, pw, pwlen, kdf, &err);
    if (!text) return pv_err_raise(L, &err);
    int rc = age_write_new_file(path, text, strlen(text), &err);
    sodium_free(text);
    return rc < 0 ? pv_err_raise(L, &err) : 0;
}

static void push_pair(lua_State *L, const ms_public_key *pk)
{
    char line[MS_PUBLIC_B64 + 1];
    ms_public_encode(pk, line);
    char hex[MS_KEYID_HEX];
    ms_key_id_hex(pk->key_id, hex);
    lua_createtable(L, 0, 2);
    pv_set_str(L, "public_key", line);
    pv_set_str(L, "key_id", hex);
}

static int crypto_signing_keygen(lua_State *L)
{
    signing_handle *h = push_handle(L);
    pv_err err;
    pv_err_clear(&err);
    h->sk = ms_secret_new(&err);
    if (!h->sk) return pv_err_raise(L, &err);
    if (ms_secret_generate(h->sk) != 0) return pv_raise(L, "crypto", "cannot generate a key pair");
    ms_public_key pk;
    ms_secret_public(h->sk, &pk);
    push_pair(L, &pk);
    lua_insert(L, -2);
    lua_setfield(L, -2, "key");
    return 1;
}

/* Prefixes err's message with where the input came from. */
static int raise_from(lua_State *L, const pv_err *err, const char *what, const char *path)
{
    pv_err out;
    pv_err_clear(&out);
    pv_err_set(&out, err->kind, "%s %s: %s", what, path, err->message);
    memcpy(out.fields, err->fields, sizeof out.fields);
    out.nfields = err->nfields;
    pv_err_str(&out, "path", path);
    return pv_err_raise(L, &out);
}

static int crypto_read_signing_key(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    size_t pwlen = 0;
    const uint8_t *pw = opt_password(L, 2, &pwlen);
    ms_kdf limit = opt_kdf(L, 2, "kdf_limit");
    signing_handle *h = push_handle(L);
    pv_err err;
    pv_err_clear(&err);
    h->sk = ms_secret_new(&err);
    if (!h->sk) return pv_err_raise(L, &err);
    size_t len;
    char *text = age_read_secure(L, path, true, &len);
    int rc = ms_secret_parse(h->sk, text, len, pw, pwlen, limit, &err);
    sodium_free(text);
    if (rc < 0) {
        ms_secret_free(h->sk);
        h->sk = NULL;
        return raise_from(L, &err, "signing key file", path);
    }
    return 1;
}

static int crypto_public_key(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    ms_public_key pk;
    pv_err err;
    pv_err_clear(&err);
    if (ms_public_parse(&pk, text, len, &err) < 0) return pv_err_raise(L, &err);
    push_pair(L, &pk);
    return 1;
}

static int crypto_read_public_key(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    char *text = age_read_secure(L, path, false, &len);
    ms_public_key pk;
    pv_err err;
    pv_err_clear(&err);
    int rc = ms_public_parse(&pk, text, len, &err);
    sodium_free(text);
    if (rc < 0) return raise_from(L, &err, "public key file", path);
    push_pair(L, &pk);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    return 1;
}

/* The public keys of the list at idx: one-line strings, or tables with a
 * public_key field (what crypto.public_key returns). */
static ms_public_key *check_keys(lua_State *L, int idx, int *n)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int)luaL_len(L, idx);
    if (*n == 0) luaL_argerror(L, idx, "no public keys to verify with");
    ms_public_key *keys = lua_newuserdatauv(L, sizeof *keys * (size_t)*n, 0);
    pv_err err;
    pv_err_clear(&err);
    for (int i = 0; i < *n; i++) {
        int top = lua_gettop(L);
        lua_geti(L, idx, i + 1);
        if (lua_istable(L, -1)) lua_getfield(L, -1, "public_key");
        size_t len = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!s) luaL_argerror(L, idx, "public keys must be strings (RW...)");
        if (ms_public_parse(&keys[i], s, len, &err) < 0) pv_err_raise(L, &err);
        lua_settop(L, top);
    }
    return keys;
}

static int crypto_verify_signature(lua_State *L)
{
    size_t len, slen;
    const char *msg = luaL_checklstring(L, 1, &len);
    const char *text = luaL_checklstring(L, 2, &slen);
    int nkeys;
    ms_public_key *keys = check_keys(L, 3, &nkeys);
    bool legacy = lua_istable(L, 4) ? pv_opt_bool(L, 4, "legacy", true) : true;
    ms_signature *sig = lua_newuserdatauv(L, sizeof *sig, 0);
    memset(sig, 0, sizeof *sig);
    pv_err err;
    pv_err_clear(&err);
    int which = -1;
    if (ms_signature_parse(sig, text, slen, &err) < 0 ||
        ms_verify(sig, keys, nkeys, (const uint8_t *)msg, len, legacy, &which, &err) < 0) {
        char hex[MS_KEYID_HEX];
        ms_key_id_hex(sig->key_id, hex);
        if (!sodium_is_zero(sig->key_id, MS_KEYID_LEN)) pv_err_str(&err, "key_id", hex);
        return pv_err_raise(L, &err);
    }
    char hex[MS_KEYID_HEX];
    ms_key_id_hex(sig->key_id, hex);
    lua_createtable(L, 0, 4);
    pv_set_str(L, "key_id", hex);
    pv_set_lstr(L, "trusted_comment", sig->trusted, sig->trusted_len);
    pv_set_str(L, "algorithm", sig->prehashed ? "ED" : "Ed");
    pv_set_int(L, "key", which + 1);
    return 1;
}

void age_open_signing(lua_State *L)
{
    if (luaL_newmetatable(L, SIGNING_KEY_MT)) {
        static const luaL_Reg meta[] = {{"__gc", key_close},
                                        {"__close", key_close},
                                        {"__tostring", key_tostring},
                                        {NULL, NULL}};
        static const luaL_Reg methods[] = {{"sign", key_sign},
                                           {"save", key_save},
                                           {"public_key", key_public_key},
                                           {"public_key_file", key_public_key_file},
                                           {"key_id", key_key_id},
                                           {"close", key_close},
                                           {NULL, NULL}};
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"signing_keygen", crypto_signing_keygen},
                                     {"read_signing_key", crypto_read_signing_key},
                                     {"public_key", crypto_public_key},
                                     {"read_public_key", crypto_read_public_key},
                                     {"verify_signature", crypto_verify_signature},
                                     {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
