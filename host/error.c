/*
 * error.c: pv_err (errors recorded in C) and the Lua error object they
 * become, plus the small I/O and option helpers every binding uses.
 */
#include "pgvault.h"
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void pv_err_clear(pv_err *e)
{
    memset(e, 0, sizeof *e);
}

void pv_err_setv(pv_err *e, const char *kind, const char *fmt, va_list ap)
{
    if (e->set) return;
    char raw[sizeof e->message];
    vsnprintf(raw, sizeof raw, fmt, ap);
    e->set = true;
    snprintf(e->kind, sizeof e->kind, "%s", kind);
    /* Messages can quote URLs or commands: never let a secret through. */
    pv_redact(raw, e->message, sizeof e->message);
}

void pv_err_set(pv_err *e, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pv_err_setv(e, kind, fmt, ap);
    va_end(ap);
}

void pv_err_errno(pv_err *e, int errnum, const char *fmt, ...)
{
    if (e->set) return;
    char head[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    pv_err_set(e, "io", "%s: %s", head, strerror(errnum));
    pv_err_int(e, "errno", errnum);
}

static pv_err_field *err_field(pv_err *e, const char *key)
{
    for (int i = 0; i < e->nfields; i++)
        if (strcmp(e->fields[i].key, key) == 0) return &e->fields[i];
    if (e->nfields >= PV_ERR_MAX_FIELDS) return NULL;
    pv_err_field *f = &e->fields[e->nfields++];
    snprintf(f->key, sizeof f->key, "%s", key);
    return f;
}

void pv_err_str(pv_err *e, const char *key, const char *value)
{
    pv_err_field *f = err_field(e, key);
    if (!f || !value) return;
    pv_redact(value, f->str, sizeof f->str);
    f->type = 1;
}

void pv_err_int(pv_err *e, const char *key, long long value)
{
    pv_err_field *f = err_field(e, key);
    if (!f) return;
    f->num = value;
    f->type = 2;
}

void pv_err_bool(pv_err *e, const char *key, bool value)
{
    pv_err_field *f = err_field(e, key);
    if (!f) return;
    f->num = value;
    f->type = 3;
}

void pv_err_push(lua_State *L, const pv_err *e)
{
    lua_createtable(L, 0, 2 + e->nfields);
    lua_pushstring(L, e->set ? e->kind : "internal");
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, e->set ? e->message : "unknown error");
    lua_setfield(L, -2, "message");
    for (int i = 0; i < e->nfields; i++) {
        const pv_err_field *f = &e->fields[i];
        switch (f->type) {
        case 1:
            lua_pushstring(L, f->str);
            break;
        case 2:
            lua_pushinteger(L, f->num);
            break;
        case 3:
            lua_pushboolean(L, (int)f->num);
            break;
        default:
            continue;
        }
        lua_setfield(L, -2, f->key);
    }
    luaL_setmetatable(L, PV_ERROR_MT);
}

int pv_err_raise(lua_State *L, const pv_err *e)
{
    if (strcmp(e->kind, "interrupted") == 0) pv_interrupt_delivered();
    pv_err_push(L, e);
    return lua_error(L);
}

int pv_raise(lua_State *L, const char *kind, const char *fmt, ...)
{
    pv_err e;
    pv_err_clear(&e);
    va_list ap;
    va_start(ap, fmt);
    pv_err_setv(&e, kind, fmt, ap);
    va_end(ap);
    return pv_err_raise(L, &e);
}

int pv_raise_errno(lua_State *L, int errnum, const char *what, const char *path)
{
    pv_err e;
    pv_err_clear(&e);
    pv_err_errno(&e, errnum, "%s %s", what, path);
    pv_err_str(&e, "path", path);
    return pv_err_raise(L, &e);
}

int pv_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR && !pv_interrupted()) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t pv_read_some(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0) return n;
        if (errno == EINTR && !pv_interrupted()) continue;
        return -1;
    }
}

double pv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void pv_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

lua_Integer pv_opt_int(lua_State *L, int idx, const char *key, lua_Integer dflt)
{
    if (idx == 0 || !lua_istable(L, idx)) return dflt;
    lua_getfield(L, idx, key);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) {
            lua_pop(L, 1);
            return luaL_error(L, "option '%s' must be an integer", key);
        }
    }
    lua_pop(L, 1);
    return v;
}

const char *pv_opt_str(lua_State *L, int idx, const char *key, const char *dflt)
{
    if (idx == 0 || !lua_istable(L, idx)) return dflt;
    lua_getfield(L, idx, key);
    const char *v = dflt;
    if (!lua_isnil(L, -1)) {
        /* Only real strings: a number converted by lua_tostring would live
         * on the stack alone and die with the pop below. */
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            luaL_error(L, "option '%s' must be a string", key);
            return NULL;
        }
        v = lua_tostring(L, -1);
    }
    /* The string stays alive: the options table still references it. */
    lua_pop(L, 1);
    return v;
}

bool pv_opt_bool(lua_State *L, int idx, const char *key, bool dflt)
{
    if (idx == 0 || !lua_istable(L, idx)) return dflt;
    lua_getfield(L, idx, key);
    bool v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}
