/*
 * result.c: turns what libpq hands back into Lua values and error
 * objects: rows with typed values, errors with their SQLSTATE and fields,
 * and the notices a connection collects.
 */
#include "message.h"
#include "pg_internal.h"

#include <stdlib.h>
#include <string.h>

/* Type OIDs from the server's catalog (pg_type.dat); stable across
 * releases. */
enum {
    BOOLOID = 16,
    INT8OID = 20,
    INT2OID = 21,
    INT4OID = 23,
    OIDOID = 26,
    FLOAT4OID = 700,
    FLOAT8OID = 701,
};

/* ------------------------------------------------------------------ */
/* Rows                                                                */
/* ------------------------------------------------------------------ */

static void push_value(lua_State *L, const PGresult *r, int row, int col, Oid type, int null_idx)
{
    if (PQgetisnull(r, row, col)) {
        lua_pushvalue(L, null_idx);
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    switch (type) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case OIDOID:
        lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
        break;
    case FLOAT4OID:
    case FLOAT8OID:
        /* strtod reads PostgreSQL's NaN, Infinity and -Infinity too. */
        lua_pushnumber(L, strtod(v, NULL));
        break;
    case BOOLOID:
        lua_pushboolean(L, v[0] == 't');
        break;
    default:
        lua_pushlstring(L, v, (size_t)PQgetlength(r, row, col));
    }
}

static void push_rows_unprotected(lua_State *L, const PGresult *r, int null_idx)
{
    int nrows = PQntuples(r), ncols = PQnfields(r);
    lua_createtable(L, nrows, 0);
    int rows = lua_gettop(L);
    lua_createtable(L, ncols, 0);
    int cols = lua_gettop(L);
    for (int f = 0; f < ncols; f++) {
        lua_pushstring(L, PQfname(r, f));
        lua_rawseti(L, cols, f + 1);
    }
    for (int t = 0; t < nrows; t++) {
        lua_createtable(L, 0, ncols);
        for (int f = 0; f < ncols; f++) {
            lua_rawgeti(L, cols, f + 1);
            push_value(L, r, t, f, PQftype(r, f), null_idx);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, t + 1);
    }
}

static int push_rows_protected(lua_State *L)
{
    push_rows_unprotected(L, lua_touserdata(L, 1), 2);
    return 2;
}

void pg_push_rows(lua_State *L, const PGresult *r, int null_idx)
{
    /* Everything made here stays alive, so collecting meanwhile is wasted
     * work (most of the time on a large result): the collector pauses,
     * and restarts even when the conversion fails (out of memory). */
    luaL_checkstack(L, 8, NULL);
    lua_pushcfunction(L, push_rows_protected);
    lua_pushlightuserdata(L, (void *)r);
    lua_pushvalue(L, null_idx < 0 && null_idx > LUA_REGISTRYINDEX ? null_idx - 2 : null_idx);
    int running = lua_gc(L, LUA_GCISRUNNING);
    if (running) lua_gc(L, LUA_GCSTOP);
    int status = lua_pcall(L, 2, 2, 0);
    if (running) lua_gc(L, LUA_GCRESTART);
    if (status != LUA_OK) lua_error(L);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static const char *field(const PGresult *r, int code)
{
    return r ? PQresultErrorField(r, code) : NULL;
}

void pg_result_err(pv_err *err, const PGresult *r, const pg_conn *c)
{
    const char *sqlstate = field(r, PG_DIAG_SQLSTATE);
    const char *severity = field(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (!severity) severity = field(r, PG_DIAG_SEVERITY);
    const char *primary = field(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = field(r, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = field(r, PG_DIAG_MESSAGE_HINT);
    bool lost = PQstatus(c->conn) == CONNECTION_BAD;

    char msg[600], det[300], hin[300];
    pg_one_line(primary ? primary
                        : (r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r)
                                                           : PQerrorMessage(c->conn)),
                msg, sizeof msg);
    if (!msg[0]) snprintf(msg, sizeof msg, "the server returned no result");
    pg_one_line(detail ? detail : "", det, sizeof det);
    pg_one_line(hint ? hint : "", hin, sizeof hin);
    pv_err_set(err, "pg", "%s%s%s%s%s%s%s%s%s", lost ? "lost the connection to " : "",
               lost ? c->desc : "", lost ? ": " : "", msg, sqlstate ? " (SQLSTATE " : "",
               sqlstate ? sqlstate : "", sqlstate ? ")" : "", det[0] ? "; " : "", det);
    if (hin[0]) {
        size_t n = strlen(err->message);
        snprintf(err->message + n, sizeof err->message - n, "; hint: %s", hin);
    }
    if (sqlstate) pv_err_str(err, "sqlstate", sqlstate);
    if (severity) pv_err_str(err, "severity", severity);
    if (detail) pv_err_str(err, "detail", detail);
    if (hint) pv_err_str(err, "hint", hint);
    if (lost) pv_err_bool(err, "connection_lost", true);
    const char *pos = field(r, PG_DIAG_STATEMENT_POSITION);
    if (pos) pv_err_int(err, "position", atoll(pos));
    const char *table = field(r, PG_DIAG_TABLE_NAME);
    if (table) pv_err_str(err, "table", table);
    const char *constraint = field(r, PG_DIAG_CONSTRAINT_NAME);
    if (constraint) pv_err_str(err, "constraint", constraint);
}

/* ------------------------------------------------------------------ */
/* Notices                                                             */
/* ------------------------------------------------------------------ */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void notice_free(pg_notice *n)
{
    free(n->severity);
    free(n->sqlstate);
    free(n->message);
    free(n->detail);
    free(n->hint);
    memset(n, 0, sizeof *n);
}

void pg_notices_free(pg_conn *c)
{
    for (int i = 0; i < c->nnotices; i++)
        notice_free(&c->notices[i]);
    free(c->notices);
    c->notices = NULL;
    c->nnotices = c->cap = c->dropped = 0;
}

static int log_level_of(const char *severity)
{
    if (strcmp(severity, "WARNING") == 0) return PV_LOG_WARN;
    if (strcmp(severity, "NOTICE") == 0 || strcmp(severity, "INFO") == 0) return PV_LOG_INFO;
    return PV_LOG_DEBUG;
}

void pg_notice_receiver(void *arg, const PGresult *res)
{
    pg_conn *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (!severity) severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
    if (!severity) severity = "NOTICE";
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!message) message = PQresultErrorMessage(res);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

    char text[2048];
    pg_sentences(text, sizeof text, message, detail, hint);
    pv_log(c->quiet ? PV_LOG_DEBUG : log_level_of(severity), "server %s on database %s: %s",
           severity, c->conn ? PQdb(c->conn) : "?", text);

    if (c->nnotices == PG_MAX_NOTICES) {
        notice_free(&c->notices[0]);
        memmove(c->notices, c->notices + 1, sizeof *c->notices * (PG_MAX_NOTICES - 1));
        c->nnotices--;
        c->dropped++;
    }
    if (c->nnotices == c->cap) {
        int cap = c->cap ? c->cap * 2 : 8;
        pg_notice *p = realloc(c->notices, sizeof *p * (size_t)cap);
        if (!p) {
            c->dropped++;
            return;
        }
        c->notices = p;
        c->cap = cap;
    }
    pg_notice *n = &c->notices[c->nnotices++];
    n->severity = dup_or_null(severity);
    n->sqlstate = dup_or_null(sqlstate);
    n->message = dup_or_null(message);
    n->detail = dup_or_null(detail);
    n->hint = dup_or_null(hint);
}

void pg_push_notices(lua_State *L, const pg_conn *c)
{
    lua_createtable(L, c->nnotices, 1);
    for (int i = 0; i < c->nnotices; i++) {
        const pg_notice *n = &c->notices[i];
        lua_createtable(L, 0, 6);
        pv_set_str(L, "severity", n->severity);
        pv_set_str(L, "sqlstate", n->sqlstate);
        pv_set_str(L, "message", n->message);
        pv_set_str(L, "detail", n->detail);
        pv_set_str(L, "hint", n->hint);
        char text[2048];
        pg_sentences(text, sizeof text, n->message ? n->message : "", n->detail, n->hint);
        pv_set_str(L, "text", text);
        lua_rawseti(L, -2, i + 1);
    }
    if (c->dropped) pv_set_int(L, "dropped", c->dropped);
}
