/*
 * error.c: pv_err, errors recorded in C, the list of error kinds, the Lua
 * error object a pv_err becomes (pgvault.error, raise, is_error), and the
 * one line a failed run prints.
 */
#include "pgvault.h"
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ------------------------------------------------------------------ */
/* The Lua error object                                                */
/* ------------------------------------------------------------------ */

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "kind");
        lua_pushfstring(L, "%s error", lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown");
    }
    return 1;
}

/* pgvault.error(kind, message [, fields]) -> error object */
static int base_error(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    if (!pv_error_kind_known(kind))
        return luaL_argerror(
            L, 1, lua_pushfstring(L, "unknown error kind '%s' (see pgvault.error_kinds)", kind));
    lua_createtable(L, 0, 4);
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, -4);
        }
    }
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    char clean[2048];
    pv_redact(message, clean, sizeof clean);
    lua_pushstring(L, clean);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, PV_ERROR_MT);
    return 1;
}

static int base_raise(lua_State *L)
{
    base_error(L);
    return lua_error(L);
}

static int base_is_error(lua_State *L)
{
    bool is = false;
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, PV_ERROR_MT);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, is);
    return 1;
}

void pv_error_open(lua_State *L)
{
    luaL_newmetatable(L, PV_ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void pv_error_funcs(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"error", base_error}, {"raise", base_raise}, {"is_error", base_is_error}, {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
    static const char *const names[] = {PV_ERROR_KINDS};
    lua_createtable(L, (int)(sizeof names / sizeof *names), 0);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "error_kinds");
}

/* ------------------------------------------------------------------ */
/* Reporting an error at the top level                                 */
/* ------------------------------------------------------------------ */

static const char *error_kind(lua_State *L, int idx)
{
    if (!lua_istable(L, idx)) return NULL;
    lua_getfield(L, idx, "kind");
    const char *kind = lua_tostring(L, -1);
    lua_pop(L, 1); /* the table still holds the string */
    return kind;
}

int pv_runtime_exit_code(lua_State *L)
{
    const char *kind = error_kind(L, -1);
    if (pv_interrupted() || (kind && strcmp(kind, "interrupted") == 0)) return 130;
    if (kind && strcmp(kind, "usage") == 0) return 2;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "exit_code");
        int isnum;
        lua_Integer code = lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (isnum && code > 0 && code < 256) return (int)code;
    }
    return 1;
}

void pv_runtime_report(lua_State *L, const char *context)
{
    const char *kind = error_kind(L, -1);
    const char *msg;
    const char *trace = NULL;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "traceback");
        trace = lua_tostring(L, -1);
        lua_pop(L, 1);
        msg = luaL_tolstring(L, -1, NULL);
    } else {
        msg = luaL_tolstring(L, -1, NULL);
    }
    char clean[4096];
    pv_redact(msg ? msg : "unknown error", clean, sizeof clean);
    char where[512];
    pv_redact(context, where, sizeof where); /* a mistyped command can be a URL */
    if (kind && strcmp(kind, "interrupted") == 0)
        fprintf(stderr, "pgvault: %s: interrupted\n", where);
    else
        fprintf(stderr, "pgvault: %s: %s\n", where, clean);
    if (trace && pv_verbose) {
        size_t tn = strlen(trace) + 256;
        char *t = malloc(tn);
        if (t) {
            pv_redact(trace, t, tn);
            fprintf(stderr, "%s\n", t);
            free(t);
        }
    }
    fflush(stderr);
    lua_pop(L, 1);
}
