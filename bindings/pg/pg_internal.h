/*
 * pg_internal.h: what pg.c and its helpers in bindings/pg/ share: the
 * connection handle, notices and the conversion of results and errors.
 */
#ifndef PGVAULT_PG_INTERNAL_H
#define PGVAULT_PG_INTERNAL_H

#include "pgvault.h"

#include <libpq-fe.h>

#define PG_CONN_MT "pgvault.pg.connection"

/* Notices kept per connection; older ones are dropped (and counted). */
#define PG_MAX_NOTICES 500

typedef struct pg_notice {
    char *severity, *sqlstate, *message, *detail, *hint;
} pg_notice;

typedef struct pg_conn {
    PGconn *conn;   /* NULL once closed */
    char desc[320]; /* user@host:port/db: for messages, never a password */
    pg_notice *notices;
    int nnotices, cap, dropped;
    bool quiet; /* notices logged at debug level only (the caller reports them) */
} pg_conn;

/* libpq notice receiver (arg: the pg_conn): logs the notice and keeps a
 * copy. Runs inside libpq: it never calls Lua. */
void pg_notice_receiver(void *arg, const PGresult *res);
void pg_notices_free(pg_conn *c);
/* Pushes the kept notices as an array of {severity, sqlstate, message,
 * detail, hint}. */
void pg_push_notices(lua_State *L, const pg_conn *c);

/* Records the error of a failed statement (r may be NULL: then libpq's
 * connection message is used). */
void pg_result_err(pv_err *err, const PGresult *r, const pg_conn *c);
/* Pushes rows (array of tables keyed by column name) and the column names
 * in order; NULLs become the value at null_idx. */
void pg_push_rows(lua_State *L, const PGresult *r, int null_idx);

#endif
