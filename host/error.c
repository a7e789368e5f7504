/*
 * error.c: pv_err, errors recorded in C, the list of error kinds, and the
 * Lua error object a pv_err becomes.
 */
#include "pgvault.h"
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const kinds[] = {PV_ERROR_KINDS, NULL};

bool pv_error_kind_known(const char *kind)
{
    for (int i = 0; kind && kinds[i]; i++)
        if (strcmp(kinds[i], kind) == 0) return true;
    return false;
}

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
    /* Messages can quote URLs or commands: never let a secret through. */
    if (pv_error_kind_known(kind)) {
        snprintf(e->kind, sizeof e->kind, "%s", kind);
        pv_redact(raw, e->message, sizeof e->message);
    } else {
        /* A kind nobody can catch by name is a bug; keep what it said. */
        snprintf(e->kind, sizeof e->kind, "internal");
        char tagged[sizeof e->message];
        snprintf(tagged, sizeof tagged, "%.*s (unknown error kind '%s')", 900, raw,
                 kind ? kind : "");
        pv_redact(tagged, e->message, sizeof e->message);
    }
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
