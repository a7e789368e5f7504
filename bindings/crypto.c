/*
 * crypto.c: module pgvault.crypto, the age v1 file format (C2SP age) on
 * libsodium: the encryptor and decryptor pipeline stages, key generation,
 * identity handles, and age's identity, recipients and passphrase files.
 *
 * Secrets stay out of Lua strings: an identity (X25519 secret key or
 * passphrase) is a handle whose bytes live in sodium_malloc'd memory,
 * wiped when the handle is closed or collected. Strings are accepted too
 * (tests, the test vectors), but files are read straight into secure memory.
 */
#include "crypto/age.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    age_identity id; /* type 0 when closed */
} identity_handle;

static identity_handle *push_identity(lua_State *L)
{
    identity_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, AGE_IDENTITY_MT);
    return h;
}

age_identity *age_check_identity(lua_State *L, int idx)
{
    identity_handle *h = luaL_checkudata(L, idx, AGE_IDENTITY_MT);
    if (h->id.type == 0) luaL_argerror(L, idx, "the identity is closed");
    return &h->id;
}

/* One identity from the value at idx: a string is parsed, a handle copied;
 * `passphrase` says which of the two the option wants. Raises on error. */
static void load_identity(lua_State *L, age_identity *id, int idx, bool passphrase)
{
    pv_err err;
    pv_err_clear(&err);
    int rc;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        rc = passphrase ? age_identity_passphrase(id, s, n, &err)
                        : age_identity_parse(id, s, n, &err);
    } else {
        age_identity *h = age_check_identity(L, idx);
        if (passphrase != (h->type == AGE_ID_PASSPHRASE))
            luaL_error(L, passphrase ? "passphrase: expected a passphrase, got a key"
                                     : "identities: expected keys, got a passphrase");
        rc = age_identity_copy(id, h, &err);
    }
    if (rc < 0) pv_err_raise(L, &err);
}

void age_collect_identities(lua_State *L, int opts, age_identity **ids, int *n)
{
    opts = lua_absindex(L, opts);
    lua_getfield(L, opts, "identities");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        luaL_argerror(L, opts, "identities must be an array");
    int nids = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    lua_getfield(L, opts, "passphrase");
    bool has_pass = !lua_isnil(L, -1);
    if (nids + has_pass == 0) luaL_argerror(L, opts, "no identities and no passphrase");
    *ids = calloc((size_t)nids + 1, sizeof **ids);
    if (!*ids) luaL_error(L, "out of memory");
    for (int i = 1; i <= nids; i++) {
        lua_geti(L, -2, i);
        load_identity(L, &(*ids)[*n], lua_gettop(L), false);
        (*n)++;
        lua_pop(L, 1);
    }
    if (has_pass) {
        load_identity(L, &(*ids)[*n], lua_gettop(L), true);
        (*n)++;
    }
    lua_pop(L, 2);
}

static int identity_close(lua_State *L)
{
    identity_handle *h = luaL_checkudata(L, 1, AGE_IDENTITY_MT);
    age_identity_free(&h->id);
    return 0;
}

static int identity_tostring(lua_State *L)
{
    identity_handle *h = luaL_checkudata(L, 1, AGE_IDENTITY_MT);
    if (h->id.type == AGE_ID_X25519) {
        char r[128];
        age_recipient_encode(h->id.pub, r, sizeof r);
        lua_pushfstring(L, "age identity (X25519, recipient %s)", r);
    } else if (h->id.type == AGE_ID_HYBRID) {
        lua_pushliteral(L, "age identity (post-quantum hybrid, ML-KEM-768 + X25519)");
    } else if (h->id.type == AGE_ID_PASSPHRASE) {
        lua_pushliteral(L, "age identity (passphrase)");
    } else {
        lua_pushliteral(L, "age identity (closed)");
    }
    return 1;
}

static int push_recipient(lua_State *L, int idx)
{
    age_identity *id = age_check_identity(L, idx);
    if (id->type == AGE_ID_HYBRID) {
        char *pq = age_hybrid_recipient_encode(id->hybrid_ek);
        if (!pq) return luaL_error(L, "out of memory");
        lua_pushstring(L, pq);
        free(pq);
        return 1;
    }
    if (id->type != AGE_ID_X25519) return luaL_argerror(L, idx, "a passphrase has no recipient");
    char r[128];
    age_recipient_encode(id->pub, r, sizeof r);
    lua_pushstring(L, r);
    return 1;
}

static int identity_recipient(lua_State *L)
{
    return push_recipient(L, 1);
}

static int identity_type(lua_State *L)
{
    age_identity *id = age_check_identity(L, 1);
    lua_pushstring(L, id->type == AGE_ID_X25519   ? "X25519"
                      : id->type == AGE_ID_HYBRID ? "mlkem768x25519"
                                                  : "passphrase");
    return 1;
}

/* The age-keygen layout: created, public key, the secret; 0600, never
 * over an existing file. "-" writes to standard output. */
static int identity_save(lua_State *L)
{
    age_identity *id = age_check_identity(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (id->type == AGE_ID_PASSPHRASE) return luaL_argerror(L, 1, "a passphrase cannot be saved");
    push_recipient(L, 1);
    const char *r = lua_tostring(L, -1);
    char created[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%S", &tm);
    long off = tm.tm_gmtoff;
    size_t cl = strlen(created);
    if (off == 0)
        snprintf(created + cl, sizeof created - cl, "Z");
    else
        snprintf(created + cl, sizeof created - cl, "%c%02ld:%02ld", off < 0 ? '-' : '+',
                 labs(off) / 3600, labs(off) % 3600 / 60);
    char *secret = age_identity_encode(id);
    size_t cap = strlen(r) + 256;
    char *text = sodium_malloc(cap);
    if (!secret || !text) {
        if (secret) sodium_free(secret);
        if (text) sodium_free(text);
        return pv_raise(L, "crypto", "cannot allocate secure memory");
    }
    int n = snprintf(text, cap, "# created: %s\n# public key: %s\n%s\n", created, r, secret);
    sodium_free(secret);
    pv_err err;
    pv_err_clear(&err);
    int rc = age_write_new_file(path, text, (size_t)n, &err);
    sodium_free(text);
    return rc < 0 ? pv_err_raise(L, &err) : 0;
}

static int crypto_read_identities(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len, pos = 0, n;
    int lineno = 0;
    char *buf = age_read_secure(L, path, true, &len);
    lua_newtable(L);
    const char *line;
    pv_err err;
    pv_err_clear(&err);
    while ((line = age_next_line(buf, len, &pos, &n, &lineno))) {
        identity_handle *h = push_identity(L);
        if (age_identity_parse(&h->id, line, n, &err) < 0) {
            char msg[sizeof err.message];
            snprintf(msg, sizeof msg, "%s", err.message);
            sodium_free(buf);
            pv_err_clear(&err);
            pv_err_set(&err, "crypto", "identity file %s, line %d: %s", path, lineno, msg);
            pv_err_str(&err, "path", path);
            return pv_err_raise(L, &err);
        }
        lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    }
    sodium_free(buf);
    if (luaL_len(L, -1) == 0) {
        pv_err_set(&err, "crypto", "identity file %s holds no identity", path);
        pv_err_str(&err, "path", path);
        return pv_err_raise(L, &err);
    }
    return 1;
}

/* Validates an age1... or age1pq1... recipient and pushes it in its
 * canonical (lower-case) form; -1 with err set when it is not one. */
static int push_checked_recipient(lua_State *L, const char *s, size_t n, pv_err *err)
{
    if (n > 7 && strncasecmp(s, "age1pq1", 7) == 0) {
        uint8_t *ek = malloc(AGE_HYBRID_EK);
        if (!ek) return luaL_error(L, "out of memory");
        char *r = NULL;
        if (age_hybrid_recipient_parse(s, n, ek, err) == 0) r = age_hybrid_recipient_encode(ek);
        free(ek);
        if (!r) return -1;
        lua_pushstring(L, r);
        free(r);
        return 0;
    }
    uint8_t pub[AGE_KEY_LEN];
    if (age_recipient_parse(s, n, pub, err) < 0) return -1;
    char r[128];
    age_recipient_encode(pub, r, sizeof r);
    lua_pushstring(L, r);
    return 0;
}

static int crypto_read_recipients(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len, pos = 0, n;
    int lineno = 0;
    char *buf = age_read_secure(L, path, false, &len);
    lua_newtable(L);
    const char *line;
    pv_err err;
    pv_err_clear(&err);
    while ((line = age_next_line(buf, len, &pos, &n, &lineno))) {
        if (push_checked_recipient(L, line, n, &err) < 0) {
            char msg[sizeof err.message];
            snprintf(msg, sizeof msg, "%s", err.message);
            sodium_free(buf);
            pv_err_clear(&err);
            pv_err_set(&err, "crypto", "recipients file %s, line %d: %s", path, lineno, msg);
            pv_err_str(&err, "path", path);
            return pv_err_raise(L, &err);
        }
        lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    }
    sodium_free(buf);
    if (luaL_len(L, -1) == 0) {
        pv_err_set(&err, "crypto", "recipients file %s holds no recipient", path);
        pv_err_str(&err, "path", path);
        return pv_err_raise(L, &err);
    }
    return 1;
}

/* The first line of a file, as a passphrase handle. */
static int crypto_read_passphrase(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    char *buf = age_read_secure(L, path, true, &len);
    char *nl = memchr(buf, '\n', len);
    size_t n = nl ? (size_t)(nl - buf) : len;
    if (n > 0 && buf[n - 1] == '\r') n--;
    identity_handle *h = push_identity(L);
    pv_err err;
    pv_err_clear(&err);
    int rc = age_identity_passphrase(&h->id, buf, n, &err);
    sodium_free(buf);
    if (rc < 0) {
        char msg[sizeof err.message];
        snprintf(msg, sizeof msg, "%s", err.message);
        pv_err_clear(&err);
        pv_err_set(&err, "crypto", "passphrase file %s: %s", path, msg);
        pv_err_str(&err, "path", path);
        return pv_err_raise(L, &err);
    }
    return 1;
}

static int crypto_passphrase(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    identity_handle *h = push_identity(L);
    pv_err err;
    pv_err_clear(&err);
    if (age_identity_passphrase(&h->id, s, n, &err) < 0) return pv_err_raise(L, &err);
    return 1;
}

static int crypto_identity(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    identity_handle *h = push_identity(L);
    pv_err err;
    pv_err_clear(&err);
    if (age_identity_parse(&h->id, s, n, &err) < 0) return pv_err_raise(L, &err);
    return 1;
}

/* keygen() or keygen{pq = true}: a new X25519 or hybrid post-quantum identity. */
static int crypto_keygen(lua_State *L)
{
    bool pq = lua_istable(L, 1) && pv_opt_bool(L, 1, "pq", false);
    lua_settop(L, 0);
    lua_createtable(L, 0, 2);
    identity_handle *h = push_identity(L);
    pv_err err;
    pv_err_clear(&err);
    int rc = pq ? age_hybrid_generate(&h->id, &err) : age_identity_generate(&h->id, &err);
    if (rc < 0) return pv_err_raise(L, &err);
    lua_setfield(L, 1, "identity");
    lua_getfield(L, 1, "identity");
    push_recipient(L, 2);
    lua_setfield(L, 1, "recipient");
    lua_settop(L, 1);
    return 1;
}

static int crypto_recipient_of(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING) {
        crypto_identity(L);
        lua_replace(L, 1);
    }
    return identity_recipient(L);
}

static int crypto_check_recipient(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    pv_err err;
    pv_err_clear(&err);
    if (push_checked_recipient(L, s, n, &err) < 0) return pv_err_raise(L, &err);
    return 1;
}

/* A short public fingerprint of a recipient for manifests and logs:
 * "sha256:" and the first 16 hex digits of SHA-256 of the age1... string. */
static int crypto_fingerprint(lua_State *L)
{
    crypto_check_recipient(L);
    size_t n;
    const char *r = lua_tolstring(L, -1, &n);
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const uint8_t *)r, n);
    char hex[2 * sizeof h + 1];
    pv_hex(h, 8, hex);
    lua_pushfstring(L, "sha256:%s", hex);
    return 1;
}

/* check_header(path, {identities=, passphrase=, max_work_factor=, data=}):
 * reads only the header of an age file (binary or armored) and checks that
 * one of the identities unwraps the file key and the header MAC matches,
 * without touching the payload. With data= (the file's first bytes, e.g.
 * a ranged GET of an object) nothing is opened and `path` only names it.
 * Returns {recipient_type=, stanzas=}; raises the decryptor's errors. The
 * probe userdata owns everything it allocates. */
typedef struct {
    age_identity *ids;
    int nids;
    age_header_parser hp;
    age_armor_reader ar;
    uint8_t *file_key;
    int fd;
} header_probe;

static int probe_gc(lua_State *L)
{
    header_probe *p = lua_touserdata(L, 1);
    for (int i = 0; p->ids && i < p->nids; i++)
        age_identity_free(&p->ids[i]);
    free(p->ids);
    p->ids = NULL;
    age_header_free(&p->hp);
    if (p->file_key) sodium_free(p->file_key);
    p->file_key = NULL;
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    return 0;
}

static int probe_feed(void *ctx, const uint8_t *data, size_t len, pv_err *err)
{
    header_probe *p = ctx;
    if (p->hp.done) return 0;
    return age_header_feed(&p->hp, data, len, err) < 0 ? -1 : 0;
}

static int crypto_check_header(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int max_wf = (int)pv_opt_int(L, 2, "max_work_factor", AGE_MAX_WORK_FACTOR);
    header_probe *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    p->fd = -1;
    if (luaL_newmetatable(L, "pgvault.crypto.probe")) {
        lua_pushcfunction(L, probe_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    p->file_key = sodium_malloc(AGE_FILE_KEY_LEN);
    if (!p->file_key) return luaL_error(L, "out of memory");
    age_collect_identities(L, 2, &p->ids, &p->nids);
    size_t data_len = 0, data_off = 0;
    lua_getfield(L, 2, "data");
    const char *data = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &data_len);
    lua_pop(L, 1); /* the string stays alive in the options table */
    if (!data) {
        p->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (p->fd < 0) return pv_raise_errno(L, errno, "cannot open", path);
    }
    pv_err err;
    pv_err_clear(&err);
    uint8_t buf[16384];
    bool first = true, armored = false;
    int rc = 0;
    while (rc == 0 && !p->hp.done) {
        ssize_t got;
        if (data) {
            got = (ssize_t)(data_len - data_off < sizeof buf ? data_len - data_off : sizeof buf);
            memcpy(buf, data + data_off, (size_t)got);
            data_off += (size_t)got;
        } else {
            got = pv_read_some(p->fd, buf, sizeof buf);
        }
        if (got < 0) return pv_raise_errno(L, errno, "cannot read", path);
        if (got == 0) break;
        if (first)
            armored = buf[0] == '-' || buf[0] == ' ' || buf[0] == '\t' || buf[0] == '\r' ||
                      buf[0] == '\n';
        first = false;
        rc = armored ? age_armor_read(&p->ar, buf, (size_t)got, probe_feed, p, &err)
                     : probe_feed(p, buf, (size_t)got, &err);
    }
    if (rc == 0 && !p->hp.done)
        age_fail(&err, AGE_FAIL_HEADER, "age: %s ends inside its header%s", path,
                 data ? " (in the bytes given)" : ": it is truncated");
    const char *matched = NULL;
    if (!err.set &&
        age_header_unwrap(&p->hp, p->ids, p->nids, max_wf, p->file_key, &matched, &err) == 0) {
        uint8_t mac[32];
        age_header_mac(p->file_key, (const uint8_t *)p->hp.buf, p->hp.mac_at + 3, mac);
        if (sodium_memcmp(mac, p->hp.mac, sizeof mac) != 0)
            age_fail(&err, AGE_FAIL_HMAC,
                     "age: the header MAC does not match: the header was tampered with");
    }
    if (err.set) {
        pv_err_str(&err, "path", path);
        return pv_err_raise(L, &err);
    }
    lua_createtable(L, 0, 2);
    pv_set_str(L, "recipient_type", matched);
    pv_set_int(L, "stanzas", p->hp.nstanzas);
    return 1;
}

static int crypto_encryptor(lua_State *L)
{
    return age_push_encryptor(L);
}

static int crypto_decryptor(lua_State *L)
{
    return age_push_decryptor(L);
}

int luaopen_pgvault_crypto(lua_State *L)
{
    if (sodium_init() < 0) return luaL_error(L, "cannot initialise libsodium");
    if (luaL_newmetatable(L, AGE_IDENTITY_MT)) {
        static const luaL_Reg meta[] = {{"__gc", identity_close},
                                        {"__close", identity_close},
                                        {"__tostring", identity_tostring},
                                        {NULL, NULL}};
        static const luaL_Reg methods[] = {{"recipient", identity_recipient},
                                           {"type", identity_type},
                                           {"save", identity_save},
                                           {"close", identity_close},
                                           {NULL, NULL}};
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"encryptor", crypto_encryptor},
                                     {"decryptor", crypto_decryptor},
                                     {"keygen", crypto_keygen},
                                     {"identity", crypto_identity},
                                     {"passphrase", crypto_passphrase},
                                     {"read_identities", crypto_read_identities},
                                     {"read_recipients", crypto_read_recipients},
                                     {"read_passphrase", crypto_read_passphrase},
                                     {"recipient_of", crypto_recipient_of},
                                     {"check_recipient", crypto_check_recipient},
                                     {"fingerprint", crypto_fingerprint},
                                     {"check_header", crypto_check_header},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    age_open_signing(L);
    return 1;
}
