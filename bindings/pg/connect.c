/*
 * connect.c: opening a libpq connection from a parsed connection string
 * (pg.connect and pgvault.dump's server probe), with a deadline, Ctrl-C,
 * the start-up notices delivered, and a failure turned into one line that
 * says what to do about it.
 */
#include "conninfo.h"
#include "message.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* connect_timeout as libpq reads it: values below 2 seconds count as 2. */
static int connect_timeout_of(const pg_conninfo *ci)
{
    const char *v = pg_conninfo_get(ci, "connect_timeout");
    if (!v) v = getenv("PGCONNECT_TIMEOUT");
    int t = v ? atoi(v) : 0;
    if (t <= 0) return PG_DEFAULT_CONNECT_TIMEOUT;
    return t < 2 ? 2 : t;
}

/* What the user should do about a failed connection, from libpq's text
 * (libpq exposes no SQLSTATE for start-up failures). */
typedef struct {
    const char *needle;
    const char *sqlstate;
    const char *advice;
} conn_failure;

static const conn_failure conn_failures[] = {
    {"password authentication failed", "28P01",
     "check the password (in the URL, PGPASSWORD or ~/.pgpass)"},
    {"no password supplied", NULL, "supply a password in the URL, PGPASSWORD or ~/.pgpass"},
    {"does not exist", NULL, "check the database and user names, or create them"},
    {"no pg_hba.conf entry", "28000",
     "the server's pg_hba.conf does not allow this host, user and database"},
    {"too many clients", "53300", "the server has no free connection slots: try again later"},
    {"the database system is starting up", "57P03", "the server is starting: try again shortly"},
    {"the database system is shutting down", "57P03", "the server is shutting down"},
    {"timeout expired", NULL, "check the host and port, and that nothing blocks the connection"},
    {"Connection refused", NULL,
     "check the host and port, and that the server is running and accepts connections"},
    {"could not translate host name", NULL, "check the host name"},
    {"Network is unreachable", NULL, "check the host name and the network"},
    {"No such file or directory", NULL,
     "no server socket there: check the host (socket directory) and port"},
    {NULL, NULL, "check the connection settings"},
};

static const conn_failure *advice_for(const char *msg)
{
    static const conn_failure no_database = {"", "3D000", "check the database name, or create it"};
    static const conn_failure no_role = {"", "28000", "check the user name"};
    const conn_failure *f = conn_failures;
    while (f->needle && !strstr(msg, f->needle))
        f++;
    if (f->needle && strcmp(f->needle, "does not exist") == 0) {
        if (strstr(msg, "database \"")) return &no_database;
        if (strstr(msg, "role \"")) return &no_role;
    }
    return f;
}

static void failure(pv_err *err, const pg_conninfo *ci, PGconn *pc, const char *why)
{
    char flat[800], msg[800];
    pg_one_line(why, flat, sizeof flat);
    pg_conninfo_mask(ci, flat, msg, sizeof msg);
    const conn_failure *f = advice_for(msg);
    const char *db = or_empty(PQdb(pc)), *user = or_empty(PQuser(pc));
    const char *host = or_empty(PQhost(pc)), *port = or_empty(PQport(pc));
    pv_err_set(err, "pg", "cannot connect to database %s as user %s on %s port %s: %s; %s", db,
               user, host, port, msg, f->advice);
    pv_err_str(err, "host", host);
    pv_err_str(err, "port", port);
    pv_err_str(err, "database", db);
    pv_err_str(err, "user", user);
    if (f->sqlstate) pv_err_str(err, "sqlstate", f->sqlstate);
    pv_err_bool(err, "connect", true);
}

/* The keyword arrays of ci plus fallback_application_name, for
 * PQconnectStartParams (pointers into ci: nothing to free but the arrays). */
static int start_params(const pg_conninfo *ci, const char ***keys, const char ***vals)
{
    *keys = calloc((size_t)ci->n + 2, sizeof **keys);
    *vals = calloc((size_t)ci->n + 2, sizeof **vals);
    if (!*keys || !*vals) return -1;
    for (int i = 0; i < ci->n; i++) {
        (*keys)[i] = ci->keys[i];
        (*vals)[i] = ci->vals[i];
    }
    (*keys)[ci->n] = "fallback_application_name";
    (*vals)[ci->n] = "pgvault";
    return 0;
}

/* Drives PQconnectPoll to the end: 0 when connected, -1 with err set. */
static int poll_until_ready(const pg_conninfo *ci, PGconn *pc, pv_err *err)
{
    double deadline = pv_now() + connect_timeout_of(ci);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            failure(err, ci, pc, PQerrorMessage(pc));
            return -1;
        }
        struct pollfd p = {PQsocket(pc), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        int r = poll(&p, 1, 100);
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted while connecting to PostgreSQL");
            return -1;
        }
        if (r < 0 && errno != EINTR) {
            pv_err_errno(err, errno, "cannot connect: waiting for the server");
            return -1;
        }
        if (r > 0) {
            st = PQconnectPoll(pc);
        } else if (pv_now() > deadline) {
            failure(err, ci, pc, "timeout expired");
            return -1;
        }
    }
    return 0;
}

PGconn *pg_conninfo_start(const pg_conninfo *ci, pv_err *err)
{
    const char **keys = NULL, **vals = NULL;
    PGconn *pc = start_params(ci, &keys, &vals) == 0 ? PQconnectStartParams(keys, vals, 0) : NULL;
    free(keys);
    free(vals);
    if (!pc) {
        pv_err_set(err, "internal", "cannot connect: out of memory");
        return NULL;
    }
    /* A setting libpq refuses, or a host name that does not resolve. */
    if (PQstatus(pc) == CONNECTION_BAD) {
        failure(err, ci, pc, PQerrorMessage(pc));
        PQfinish(pc);
        return NULL;
    }
    return pc;
}

int pg_conninfo_wait(const pg_conninfo *ci, PGconn *pc, pv_err *err)
{
    if (poll_until_ready(ci, pc, err) < 0) return -1;
    pv_log_add_secret(PQpass(pc));
    return 0;
}
