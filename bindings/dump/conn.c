/*
 * conn.c: connection strings for pgvault.dump. A URL or conninfo string is
 * parsed by libpq itself (PQconninfoParse) and written back as a conninfo
 * string without its password, which goes to children through PGPASSWORD.
 * Also the quick server probe that picks client binaries by version.
 */
#include "dump.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

void dump_conn_free(dump_conn *c)
{
    if (c->password) {
        explicit_bzero(c->password, strlen(c->password));
        free(c->password);
    }
    free(c->conninfo);
    free(c->dbname);
    c->conninfo = c->password = c->dbname = NULL;
}

/* Appends key='value' with conninfo quoting (backslash before ' and \). */
static int append_kv(char **buf, size_t *len, size_t *cap, const char *key, const char *val)
{
    size_t need = *len + strlen(key) + 2 * strlen(val) + 6;
    if (need > *cap) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap < need)
            ncap *= 2;
        char *p = realloc(*buf, ncap);
        if (!p) return -1;
        *buf = p;
        *cap = ncap;
    }
    char *o = *buf + *len;
    if (*len) *o++ = ' ';
    o += sprintf(o, "%s='", key);
    for (const char *s = val; *s; s++) {
        if (*s == '\'' || *s == '\\') *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '\'';
    *o = '\0';
    *len = (size_t)(o - *buf);
    return 0;
}

int dump_conn_parse(const char *url, const char *dbname, dump_conn *out, pv_err *err)
{
    memset(out, 0, sizeof *out);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", perr ? perr : "out of memory");
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = '\0';
        PQfreemem(perr);
        pv_err_set(err, "config", "invalid connection string: %s", msg);
        return -1;
    }
    size_t len = 0, cap = 0;
    int rc = 0;
    bool have_db = false;
    for (PQconninfoOption *o = opts; o->keyword && rc == 0; o++) {
        if (!o->val) continue;
        if (strcmp(o->keyword, "password") == 0) {
            out->password = strdup(o->val);
            if (!out->password) rc = -1;
            pv_log_add_secret(o->val);
            continue;
        }
        const char *val = o->val;
        if (strcmp(o->keyword, "dbname") == 0) {
            have_db = true;
            if (dbname) val = dbname;
            out->dbname = strdup(val);
            if (!out->dbname) rc = -1;
        }
        if (rc == 0) rc = append_kv(&out->conninfo, &len, &cap, o->keyword, val);
    }
    if (rc == 0 && !have_db && dbname) {
        rc = append_kv(&out->conninfo, &len, &cap, "dbname", dbname);
        if (rc == 0 && !(out->dbname = strdup(dbname))) rc = -1;
    }
    if (rc == 0 && !out->conninfo) rc = append_kv(&out->conninfo, &len, &cap, "dbname", "");
    PQconninfoFree(opts);
    if (rc != 0) {
        dump_conn_free(out);
        pv_err_set(err, "internal", "out of memory parsing a connection string");
        return -1;
    }
    return 0;
}

char *dump_conn_string(const dump_conn *c, bool with_password)
{
    size_t len = strlen(c->conninfo), cap = len + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    memcpy(s, c->conninfo, cap);
    if (with_password && c->password && append_kv(&s, &len, &cap, "password", c->password) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void quiet_notices(void *arg, const PGresult *res)
{
    (void)arg;
    const char *msg = PQresultErrorMessage(res);
    if (msg && *msg) pv_log(PV_LOG_DEBUG, "server notice while probing: %s", msg);
}

/* One line of libpq's error message, without the trailing newline. */
static void conn_error(PGconn *c, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s", c ? PQerrorMessage(c) : "out of memory");
    for (char *p = out; *p; p++)
        if (*p == '\n') *p = (p[1] ? ' ' : '\0');
}

int dump_server_version(const char *url, pv_err *err)
{
    PGconn *c = PQconnectStart(url);
    if (c) PQsetNoticeReceiver(c, quiet_notices, NULL);
    double deadline = pv_now() + 60;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (c && PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        struct pollfd p = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        int r = poll(&p, 1, 200);
        if (pv_interrupted()) {
            PQfinish(c);
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        if (pv_now() > deadline) {
            PQfinish(c);
            pv_err_set(err, "pg", "cannot connect to the database: no answer within 60 seconds");
            return -1;
        }
        if (r < 0 && errno != EINTR) break;
        if (r > 0) st = PQconnectPoll(c);
    }
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        conn_error(c, msg, sizeof msg);
        PQfinish(c);
        pv_err_set(err, "pg", "cannot connect to the database: %s", msg);
        return -1;
    }
    int v = PQserverVersion(c);
    PQfinish(c);
    return v;
}
