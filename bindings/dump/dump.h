/*
 * dump.h: what the files of pgvault.dump share: connection strings (read
 * by pg/conninfo.c), the server probe, client binary discovery and the stage
 * that runs pg_dump / pg_restore / psql as a pipeline source or sink.
 */
#ifndef PGVAULT_DUMP_H
#define PGVAULT_DUMP_H

#include "pgvault.h"

#include "../pg/conninfo.h"

#define DUMP_PATH_MAX 4096

/* ---- conn.c ---- */

/* Parses `url` (dbname, when not NULL, replaces the database) into a
 * pg_conninfo in a userdata pushed on the stack and freed with it; raises
 * on a malformed string. With `program` (the client that will connect), a
 * Neon pooled host becomes the direct one, with a warning once per host. */
pg_conninfo *dump_conn_push(lua_State *L, const char *url, const char *dbname, const char *program);
/* Connects (notices kept away from stderr) and returns the server's
 * version number (150018), or -1 with err set. */
int dump_server_version(const pg_conninfo *ci, pv_err *err);

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

typedef struct dump_stage dump_stage;

/* Creates the stage userdata (pushed on the stack) that runs `bin` as
 * `program`. `mode` is DUMP_SOURCE (its stdout feeds the pipeline) or
 * DUMP_SINK (the pipeline feeds its stdin). Arguments and the connection
 * are added next; the stage owns everything it is given. */
dump_stage *dump_stage_push(lua_State *L, int opts, const char *program, const dump_bin *bin,
                            int mode);
/* Appends a command-line argument (copied). Raises when there are too many. */
void dump_stage_arg(lua_State *L, dump_stage *d, const char *arg);
/* Appends "-d CONNINFO" without any secret, and gives the child the
 * secrets through its environment (PGPASSWORD, a private service file).
 * Raises on failure. */
void dump_stage_connect(lua_State *L, dump_stage *d, const pg_conninfo *ci);

#endif
