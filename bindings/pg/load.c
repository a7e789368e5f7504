/*
 * load.c: loading data through a lent pgvault.pg connection from a thread
 * of its own (load.h). Each loading thread blocks on its own connection
 * (libpq is thread-safe per connection), so the blocking calls do: PQexec,
 * PQputCopyData (1 or -1 in blocking mode), PQputCopyEnd and PQgetResult
 * until NULL. A cancel request goes on a connection of its own, so another
 * thread may send it while this one is blocked.
 */
#include "load.h"

#include "message.h"
#include "pg_internal.h"

#include <libpq/libpq-fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SQL text runs once this many bytes of complete statements wait. */
#define SQL_BATCH ((size_t)256 << 10)
/* The most bytes one libpq call takes (its lengths are int). */
#define MAX_CALL ((size_t)1 << 30)

enum { SQL_SCAN, SQL_SINGLE, SQL_DOUBLE };

struct pg_load {
    pg_conn *c;
    PGcancel *cancel;
    int lo_fd; /* -1: no large object open */
    uint32_t lo_oid;
    /* SQL text not yet run: done bytes of complete statements, then the
     * start of the next one */
    char *buf;
    size_t len, cap, done;
    int state;
    bool backslash;
};

const char *pg_load_unusable(lua_State *L, int idx)
{
    pg_conn *c = luaL_testudata(L, idx, PG_CONN_MT);
    if (!c) return "is not a pgvault.pg connection";
    return c->conn ? NULL : "is closed";
}

pg_load *pg_load_lend(lua_State *L, int idx)
{
    pg_conn *c = luaL_testudata(L, idx, PG_CONN_MT);
    if (!c || !c->conn) return NULL;
    pg_load *l = calloc(1, sizeof *l);
    if (!l) luaL_error(L, "out of memory");
    l->c = c;
    l->cancel = PQgetCancel(c->conn);
    l->lo_fd = -1;
    return l;
}

void pg_load_close(pg_load *l)
{
    if (l && l->c->conn) {
        PQfinish(l->c->conn);
        l->c->conn = NULL;
    }
}

void pg_load_free(pg_load *l)
{
    if (!l) return;
    pg_load_close(l);
    if (l->cancel) PQfreeCancel(l->cancel);
    free(l->buf);
    free(l);
}

void pg_load_cancel(pg_load *l)
{
    char why[256];
    if (l && l->cancel && !PQcancel(l->cancel, why, sizeof why))
        pv_log(PV_LOG_DEBUG, "cannot cancel a restore session's statement: %s", why);
}

int pg_load_backend_pid(pg_load *l)
{
    return l->c->conn ? PQbackendPID(l->c->conn) : 0;
}

/* ------------------------------------------------------------------ */
/* Results and errors                                                  */
/* ------------------------------------------------------------------ */

/* The server's error with the first line of its context ("COPY t, line
 * 17, column id: ..."), which says where in the data it failed. */
static void load_err(pg_load *l, const PGresult *r, pv_err *err)
{
    pg_result_err(err, r, l->c);
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    if (!ctx || !ctx[0]) return;
    char line[300];
    size_t n = strcspn(ctx, "\n");
    snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), ctx);
    size_t at = strlen(err->message);
    snprintf(err->message + at, sizeof err->message - at, "; context: %s", line);
}

/* Every result of what was sent, until PQgetResult says there is no more;
 * the first error is kept (COPY_IN here would be a COPY nobody feeds: it
 * is ended as failed). Returns 0 or -1. */
static int drain(pg_load *l, PGresult *first, pv_err *err)
{
    PGconn *pc = l->c->conn;
    PGresult *bad = NULL;
    for (PGresult *r = first; r; r = PQgetResult(pc)) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN) PQputCopyEnd(pc, "pgvault: no COPY data was expected here");
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
            PQclear(r);
        } else if (!bad && st != PGRES_COPY_IN) {
            bad = r;
        } else {
            PQclear(r);
        }
        if (PQstatus(pc) == CONNECTION_BAD && !bad) break;
    }
    if (!bad && PQstatus(pc) != CONNECTION_BAD) return 0;
    if (err && !err->set) load_err(l, bad, err);
    PQclear(bad);
    return -1;
}

static int run(pg_load *l, const char *sql, pv_err *err)
{
    if (!PQsendQuery(l->c->conn, sql)) return drain(l, NULL, err);
    return drain(l, PQgetResult(l->c->conn), err);
}

int pg_load_exec(pg_load *l, const char *sql, pv_err *err)
{
    return run(l, sql, err);
}

/* ------------------------------------------------------------------ */
/* SQL text in pieces                                                  */
/* ------------------------------------------------------------------ */

/* Runs the complete statements held, keeps the rest. */
static int run_done(pg_load *l, pv_err *err)
{
    if (l->done == 0) return 0;
    char saved = l->buf[l->done];
    l->buf[l->done] = '\0';
    int rc = run(l, l->buf, err);
    l->buf[l->done] = saved;
    memmove(l->buf, l->buf + l->done, l->len - l->done);
    l->len -= l->done;
    l->done = 0;
    return rc;
}

static int reserve(pg_load *l, size_t more, pv_err *err)
{
    if (l->len + more + 1 <= l->cap) return 0;
    size_t cap = l->cap ? l->cap : SQL_BATCH;
    while (cap < l->len + more + 1)
        cap *= 2;
    char *b = realloc(l->buf, cap);
    if (!b) {
        pv_err_set(err, "internal", "out of memory for a statement of %zu bytes", l->len + more);
        return -1;
    }
    l->buf = b;
    l->cap = cap;
    return 0;
}

/* pg_restore's rule for its INSERT data: a statement ends at a ';'
 * outside '...' and "..."; a backslash escapes a quote only without
 * standard_conforming_strings. */
static void scan(pg_load *l, size_t from, bool std_strings)
{
    for (size_t i = from; i < l->len; i++) {
        char ch = l->buf[i];
        switch (l->state) {
        case SQL_SCAN:
            if (ch == ';') {
                l->done = i + 1;
            } else if (ch == '\'') {
                l->state = SQL_SINGLE;
                l->backslash = false;
            } else if (ch == '"') {
                l->state = SQL_DOUBLE;
            }
            break;
        case SQL_SINGLE:
            if (ch == '\'' && !l->backslash) {
                l->state = SQL_SCAN;
            } else if (ch == '\\' && !std_strings) {
                l->backslash = !l->backslash;
            } else {
                l->backslash = false;
            }
            break;
        default:
            if (ch == '"') l->state = SQL_SCAN;
        }
    }
}

int pg_load_sql(pg_load *l, const uint8_t *text, size_t len, bool std_strings, pv_err *err)
{
    if (memchr(text, 0, len)) {
        pv_err_set(err, "archive", "the SQL holds a zero byte");
        return -1;
    }
    if (reserve(l, len, err) < 0) return -1;
    size_t from = l->len;
    memcpy(l->buf + l->len, text, len);
    l->len += len;
    scan(l, from, std_strings);
    return l->done >= SQL_BATCH ? run_done(l, err) : 0;
}

int pg_load_sql_end(pg_load *l, pv_err *err)
{
    l->done = l->len;
    bool blank = true;
    for (size_t i = 0; i < l->len && blank; i++)
        blank = strchr(" \t\r\n", l->buf[i]) != NULL;
    int rc = blank ? 0 : run_done(l, err);
    l->len = l->done = 0;
    l->state = SQL_SCAN;
    return rc;
}

/* ------------------------------------------------------------------ */
/* COPY FROM STDIN                                                     */
/* ------------------------------------------------------------------ */

int pg_load_copy_begin(pg_load *l, const char *sql, pv_err *err)
{
    PGconn *pc = l->c->conn;
    if (!PQsendQuery(pc, sql)) return drain(l, NULL, err);
    PGresult *r = PQgetResult(pc);
    if (PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        return 0;
    }
    if (drain(l, r, err) == 0) pv_err_set(err, "pg", "the statement did not start a COPY");
    return -1;
}

/* The server's own reason when the connection broke under a write (a
 * terminated backend says why before it goes). */
static int copy_failed(pg_load *l, pv_err *err)
{
    PGconn *pc = l->c->conn;
    PGresult *r = PQgetResult(pc);
    if (r && PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        r = NULL;
    }
    if (r) return drain(l, r, err);
    load_err(l, NULL, err);
    return -1;
}

int pg_load_copy_data(pg_load *l, const uint8_t *data, size_t len, pv_err *err)
{
    while (len > 0) {
        size_t n = len < MAX_CALL ? len : MAX_CALL;
        if (PQputCopyData(l->c->conn, (const char *)data, (int)n) != 1) return copy_failed(l, err);
        data += n;
        len -= n;
    }
    return 0;
}

int pg_load_copy_end(pg_load *l, const char *abandon, pv_err *err)
{
    PGconn *pc = l->c->conn;
    if (PQputCopyEnd(pc, abandon) != 1) return abandon ? -1 : copy_failed(l, err);
    return drain(l, PQgetResult(pc), abandon ? NULL : err);
}

/* ------------------------------------------------------------------ */
/* Large objects                                                       */
/* ------------------------------------------------------------------ */

static int lo_failed(pg_load *l, const char *what, uint32_t oid, pv_err *err)
{
    load_err(l, NULL, err);
    char msg[sizeof err->message];
    int k = snprintf(msg, sizeof msg, "%s large object %u: ", what, oid);
    snprintf(msg + k, sizeof msg - (size_t)k, "%.*s", (int)(sizeof msg - (size_t)k - 1),
             err->message);
    memcpy(err->message, msg, sizeof msg);
    return -1;
}

int pg_load_lo_open(pg_load *l, uint32_t oid, pv_err *err)
{
    l->lo_oid = oid;
    l->lo_fd = lo_open(l->c->conn, (Oid)oid, INV_WRITE);
    return l->lo_fd < 0 ? lo_failed(l, "cannot open", oid, err) : 0;
}

int pg_load_lo_write(pg_load *l, const uint8_t *data, size_t len, pv_err *err)
{
    while (len > 0) {
        size_t n = len < MAX_CALL ? len : MAX_CALL;
        int w = lo_write(l->c->conn, l->lo_fd, (const char *)data, n);
        if (w < 0 || (size_t)w != n) return lo_failed(l, "cannot write", l->lo_oid, err);
        data += n;
        len -= n;
    }
    return 0;
}

int pg_load_lo_close(pg_load *l, pv_err *err)
{
    int fd = l->lo_fd;
    l->lo_fd = -1;
    return lo_close(l->c->conn, fd) < 0 ? lo_failed(l, "cannot close", l->lo_oid, err) : 0;
}
