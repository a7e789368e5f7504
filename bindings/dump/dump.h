/*
 * dump.h: what the files of pgvault.dump share: connection strings without
 * their password, the server probe, client binary discovery and the stage
 * that runs pg_dump / pg_restore / psql as a pipeline source or sink.
 */
#ifndef PGVAULT_DUMP_H
#define PGVAULT_DUMP_H

#include "pgvault.h"

#define DUMP_PATH_MAX 4096

/* ---- conn.c ---- */

/* A connection string split into a password-free conninfo (safe for a
 * command line) and the password (for the child's environment). */
typedef struct dump_conn {
    char *conninfo; /* key='value' ... without password; malloc'd */
    char *password; /* NULL when none; malloc'd */
    char *dbname;   /* NULL when not given; malloc'd */
} dump_conn;

/* Parses a URL or conninfo string; `dbname` (may be NULL) replaces the
 * database. Registers the password as a log secret. */
int dump_conn_parse(const char *url, const char *dbname, dump_conn *out, pv_err *err);
void dump_conn_free(dump_conn *c);
/* The conninfo string, with the password when asked; malloc'd. */
char *dump_conn_string(const dump_conn *c, bool with_password);
/* Connects with libpq (notices kept away from stderr), returns the
 * server's version number (150018) or -1 with err set. */
int dump_server_version(const char *url, pv_err *err);

/* ---- bins.c ---- */

typedef struct dump_bin {
    char path[DUMP_PATH_MAX];
    char version[32]; /* "15.18" */
    int major;        /* 15 */
} dump_bin;

/* Finds `program`. min_major > 0: only versions >= it qualify, and none
 * qualifying is an error naming the package to install; 0: the newest.
 * pg_bin (may be NULL) is the only directory looked at when given. */
int dump_find_bin(const char *program, const char *pg_bin, int min_major, dump_bin *out,
                  pv_err *err);

/* ---- child_stage.c ---- */

enum { DUMP_SOURCE, DUMP_SINK };

/* Creates the stage userdata (pushed on the stack) for `bin` run with
 * `argv` (argv[0] ignored: bin->path is used) and the connection's password
 * in its environment. `mode` is DUMP_SOURCE (its stdout feeds the pipeline)
 * or DUMP_SINK (the pipeline feeds its stdin). Copies what it keeps. */
void dump_stage_push(lua_State *L, int opts, const char *program, const dump_bin *bin,
                     const char *const *argv, const char *password, int mode);

#endif
