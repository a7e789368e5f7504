/*
 * load.h: a pgvault.pg connection lent to C code that loads data into it
 * from a thread of its own (archive.restorer's sessions): SQL scripts cut
 * into statements as they arrive, COPY ... FROM STDIN fed with PQputCopyData,
 * and large objects written through libpq's lo_* calls. Each failure is
 * one line in a pv_err (the server's message, its SQLSTATE, and for COPY
 * the context that names the line). Once lent, the connection belongs to
 * the loader: only the loading thread uses it, and pg_load_close ends it
 * (the Lua handle then reads as closed).
 */
#ifndef PGVAULT_PG_LOAD_H
#define PGVAULT_PG_LOAD_H

#include "pgvault.h"

#include <stdint.h>

typedef struct pg_load pg_load;

/* Why the value at idx cannot be lent ("is not a pgvault.pg
 * connection", "is closed"), or NULL. */
const char *pg_load_unusable(lua_State *L, int idx);
/* The connection at idx lent to a loader (check it first); NULL when idx
 * holds none. Call it before any thread uses the connection. */
pg_load *pg_load_lend(lua_State *L, int idx);
/* Closes the connection if still open, frees the loader. */
void pg_load_free(pg_load *l);
/* Ends the connection (its backend ends with it). */
void pg_load_close(pg_load *l);
/* Asks the server to stop what the connection runs; safe from any thread
 * at any time until pg_load_free. */
void pg_load_cancel(pg_load *l);
/* The process id of the connection's backend. */
int pg_load_backend_pid(pg_load *l);

/* Runs one or more statements (the simple query protocol). */
int pg_load_exec(pg_load *l, const char *sql, pv_err *err);

/* SQL text that arrives in pieces: complete statements run in batches
 * (statements end at a ';' outside quotes, as pg_dump writes its INSERT
 * data; std_strings: standard_conforming_strings of the text). */
int pg_load_sql(pg_load *l, const uint8_t *text, size_t len, bool std_strings, pv_err *err);
/* Runs what is left of the text. */
int pg_load_sql_end(pg_load *l, pv_err *err);

/* COPY ... FROM STDIN: the statement, the data, the end. abandon: NULL to
 * finish the COPY, else the reason to give the server for dropping it
 * (then err keeps whatever it held). */
int pg_load_copy_begin(pg_load *l, const char *sql, pv_err *err);
int pg_load_copy_data(pg_load *l, const uint8_t *data, size_t len, pv_err *err);
int pg_load_copy_end(pg_load *l, const char *abandon, pv_err *err);

/* A large object's content, opened for writing inside a transaction the
 * caller started. */
int pg_load_lo_open(pg_load *l, uint32_t oid, pv_err *err);
int pg_load_lo_write(pg_load *l, const uint8_t *data, size_t len, pv_err *err);
int pg_load_lo_close(pg_load *l, pv_err *err);

#endif
