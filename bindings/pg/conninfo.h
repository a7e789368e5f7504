/*
 * conninfo.h: connection strings, read in one place for pgvault.pg and
 * pgvault.dump: libpq's parser (URLs and key=value strings), the secrets
 * they carry (registered with the log before anything can print them),
 * errors that never quote a piece of a password, the conninfo and
 * environment a child program (pg_dump, pg_restore, psql) gets, Neon's
 * pooled hosts, and connecting with a deadline that Ctrl-C interrupts.
 */
#ifndef PGVAULT_PG_CONNINFO_H
#define PGVAULT_PG_CONNINFO_H

#include "pgvault.h"

#include <libpq-fe.h>

/* The settings a connection string names (libpq's keywords, no defaults
 * applied), in libpq's order, as the NULL-terminated arrays that
 * PQconnectStartParams takes. Everything is malloc'd; secrets are zeroed
 * when freed. */
typedef struct pg_conninfo {
    char **keys, **vals;
    int n, cap;
    char *text; /* what the user wrote, for masking messages about it */
} pg_conninfo;

/* Parses a URL or key=value string. Registers every secret value (and
 * what looks like a password in a malformed URL) as a log secret first.
 * A malformed string fails with kind "usage" and a message that quotes
 * no piece of a password; so does a URL whose password holds an '@' or
 * '/' that libpq would read as the end of it. */
int pg_conninfo_parse(const char *text, pg_conninfo *ci, pv_err *err);
void pg_conninfo_free(pg_conninfo *ci);

/* The value of a keyword, or NULL. */
const char *pg_conninfo_get(const pg_conninfo *ci, const char *key);
/* Sets (or with val NULL removes) a keyword; -1 when out of memory. */
int pg_conninfo_set(pg_conninfo *ci, const char *key, const char *val);
/* True for keywords whose value is a secret (password, sslpassword ...). */
bool pg_conninfo_is_secret(const char *key);

/* key='value' ... with libpq's quoting; secrets only when asked. NULL
 * when out of memory. The caller frees (zeroing it when it holds a
 * secret: pg_conninfo_free_string). */
char *pg_conninfo_string(const pg_conninfo *ci, bool with_secrets);
void pg_conninfo_free_string(char *s);

/* Copies `msg` (a message of libpq's about this connection string) into
 * out with every quoted piece of a password masked. */
void pg_conninfo_mask(const pg_conninfo *ci, const char *msg, char *out, size_t outsz);

/* Neon: a pooled host is the endpoint id with "-pooler" in its first DNS
 * label (ep-cool-name-123456-pooler.us-east-2.aws.neon.tech). Rewrites
 * every pooled host of the host list to the direct one, keeping every
 * other setting; `from`/`to` get the first host changed. Returns the
 * number of hosts changed, -1 when out of memory. */
int pg_conninfo_neon_direct(pg_conninfo *ci, char *from, size_t fromsz, char *to, size_t tosz);
/* The direct host of one pooled host name into out; false when `host` is
 * not a Neon pooled host. */
bool pg_neon_direct_host(const char *host, char *out, size_t outsz);

/* ---- child_conn.c ---- */

/* What a child program gets to connect: a conninfo without any secret
 * (for its command line), and files that carry the secrets: the password
 * in a passfile (PGPASSFILE), the secrets libpq reads from no variable
 * (sslpassword) in a service file (PGSERVICEFILE, service=pgvault on the
 * command line). The files are anonymous memory (memfd, 0600) that the
 * child inherits and opens as /proc/self/fd/N: nothing is written to disk,
 * nothing is left behind if pgvault dies, and nothing secret is in the
 * child's environment. */
typedef struct pg_child_conn {
    char *conninfo;
    char *env[4];  /* "KEY=value" (or "KEY": removed), NULL-terminated */
    int passfd;    /* -1 when none */
    int servicefd; /* -1 when none */
} pg_child_conn;

/* The password, when the string has none, is the one libpq would take
 * from this process's PGPASSWORD. */
int pg_child_conn_make(const pg_conninfo *ci, pg_child_conn *out, pv_err *err);
/* Lets the next child started inherit the files (true), or no other child
 * (false): call around pv_child_spawn. */
void pg_child_conn_inherit(const pg_child_conn *c, bool inherit);
/* Closes the files and zeroes the secrets. Idempotent. */
void pg_child_conn_free(pg_child_conn *c);

/* ---- connect.c ---- */

/* Seconds a connection may take when the string sets no connect_timeout. */
#define PG_DEFAULT_CONNECT_TIMEOUT 30

/* Starts connecting to ci (fallback_application_name pgvault): NULL with
 * err set when libpq refuses a setting or cannot resolve the host. Install
 * a notice receiver on the result before pg_conninfo_wait: the server
 * sends its start-up warnings during the handshake. */
PGconn *pg_conninfo_start(const pg_conninfo *ci, pv_err *err);
/* Completes the handshake, waiting at most connect_timeout seconds and
 * stopping on Ctrl-C. On failure (-1) err holds one line naming database,
 * user, host and port, libpq's reason (masked) and what to do, with the
 * fields host, port, database, user, connect=true and a sqlstate where
 * one is known; the caller still owns (and PQfinish-es) pc. */
int pg_conninfo_wait(const pg_conninfo *ci, PGconn *pc, pv_err *err);

#endif
