/*
 * child_conn.c: how pg_dump, pg_restore and psql get a connection string
 * without a secret on their command line or in their environment: the
 * conninfo minus its secrets goes on the command line, the password into
 * a passfile and the other secrets (sslpassword, which no libpq variable
 * carries) into a service file. Both files are anonymous memory (memfd):
 * the child inherits them and libpq opens /proc/self/fd/N, so no secret
 * touches a disk or outlives pgvault, and no TMPDIR is needed (see
 * conninfo.h).
 */
#include "conninfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHILD_SERVICE "pgvault"
/* libpq reads service file lines into a fixed buffer. */
#define MAX_FILE_VALUE 200

void pg_child_conn_free(pg_child_conn *c)
{
    pg_conninfo_free_string(c->conninfo);
    for (int i = 0; c->env[i]; i++)
        pg_conninfo_free_string(c->env[i]);
    /* 0..2 are never ours (stdio stays open), even in a zeroed struct. */
    if (c->passfd > 2) close(c->passfd);
    if (c->servicefd > 2) close(c->servicefd);
    memset(c, 0, sizeof *c);
    c->passfd = c->servicefd = -1;
}

void pg_child_conn_inherit(const pg_child_conn *c, bool inherit)
{
    int fds[] = {c->passfd, c->servicefd};
    for (int i = 0; i < 2; i++)
        if (fds[i] > 2) fcntl(fds[i], F_SETFD, inherit ? 0 : FD_CLOEXEC);
}

static int oom(pv_err *err)
{
    pv_err_set(err, "internal", "out of memory preparing a client's connection");
    return -1;
}

/* "NAME=value" in the child's environment; with value NULL, "NAME": the
 * variable is removed from what the child inherits. */
static int add_env(pg_child_conn *c, const char *name, const char *value, pv_err *err)
{
    int n = 0;
    while (c->env[n])
        n++;
    size_t len = strlen(name) + (value ? strlen(value) : 0) + 2;
    if (n + 1 >= (int)(sizeof c->env / sizeof c->env[0]) || !(c->env[n] = malloc(len)))
        return oom(err);
    snprintf(c->env[n], len, "%s%s%s", name, value ? "=" : "", value ? value : "");
    return 0;
}

/* A value a file line can carry as it is: one line, no surrounding space
 * (libpq trims service file lines), not too long. */
static bool fits_a_line(const char *v)
{
    size_t n = strlen(v);
    return n > 0 && n < MAX_FILE_VALUE && !strpbrk(v, "\r\n") && v[0] != ' ' && v[0] != '\t' &&
           v[n - 1] != ' ' && v[n - 1] != '\t';
}

/* An anonymous 0600 file holding `text`, named to the child by `var` as
 * /proc/self/fd/N (close-on-exec until pg_child_conn_inherit). */
static int memory_file(pg_child_conn *c, int *fd, const char *var, const char *text, pv_err *err)
{
    *fd = memfd_create(var, MFD_CLOEXEC);
    if (*fd < 0) {
        pv_err_errno(err, errno, "cannot make the file that gives a client its %s", var);
        return -1;
    }
    if (fchmod(*fd, 0600) < 0 || pv_write_all(*fd, text, strlen(text)) < 0) {
        pv_err_errno(err, errno, "cannot write the file that gives a client its %s", var);
        return -1;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", *fd);
    return add_env(c, var, path, err);
}

/* *:*:*:*:password, with ':' and '\' escaped as the passfile wants. */
static int passfile(pg_child_conn *c, const char *pw, pv_err *err)
{
    size_t n = strlen(pw);
    char *line = malloc(2 * n + 16);
    if (!line) return oom(err);
    char *o = line + sprintf(line, "*:*:*:*:");
    for (const char *p = pw; *p; p++) {
        if (*p == ':' || *p == '\\') *o++ = '\\';
        *o++ = *p;
    }
    strcpy(o, "\n");
    int rc = memory_file(c, &c->passfd, "PGPASSFILE", line, err);
    pg_conninfo_free_string(line);
    return rc == 0 ? add_env(c, "PGPASSWORD", NULL, err) : -1;
}

static bool other_secret(const char *key)
{
    return pg_conninfo_is_secret(key) && strcmp(key, "password") != 0;
}

/* The secrets but the password, in a service file the child is pointed at. */
static int service_file(const pg_conninfo *ci, pg_child_conn *c, pv_err *err)
{
    const char *service = pg_conninfo_get(ci, "service");
    size_t len = sizeof "[" CHILD_SERVICE "]\n";
    for (int i = 0; i < ci->n; i++) {
        const char *k = ci->keys[i];
        if (!other_secret(k)) continue;
        if (service) {
            pv_err_set(err, "usage",
                       "%s in the connection string cannot reach a client program together with "
                       "service=%s: put %s in that service's section of the service file instead",
                       k, service, k);
            return -1;
        }
        if (!fits_a_line(ci->vals[i])) {
            pv_err_set(
                err, "usage",
                "the %s in the connection string cannot be handed to a client program: it must "
                "be one line of under %d characters, without leading or trailing spaces",
                k, MAX_FILE_VALUE);
            return -1;
        }
        len += strlen(k) + strlen(ci->vals[i]) + 2;
    }
    char *text = malloc(len), *o = text;
    if (!text) return oom(err);
    o += sprintf(o, "[" CHILD_SERVICE "]\n");
    for (int i = 0; i < ci->n; i++)
        if (other_secret(ci->keys[i])) o += sprintf(o, "%s=%s\n", ci->keys[i], ci->vals[i]);
    int rc = memory_file(c, &c->servicefd, "PGSERVICEFILE", text, err);
    pg_conninfo_free_string(text);
    return rc;
}

/* The conninfo for the command line: no secret, and no passfile setting
 * when ours carries the password (the setting would win over PGPASSFILE). */
static char *command_line_conninfo(const pg_conninfo *ci, bool own_passfile, bool service)
{
    pg_conninfo copy = {0};
    int rc = 0;
    for (int i = 0; i < ci->n && rc == 0; i++)
        if (!pg_conninfo_is_secret(ci->keys[i]) &&
            !(own_passfile && strcmp(ci->keys[i], "passfile") == 0))
            rc = pg_conninfo_set(&copy, ci->keys[i], ci->vals[i]);
    char *plain = rc == 0 ? pg_conninfo_string(&copy, false) : NULL;
    pg_conninfo_free(&copy);
    if (!plain || !service) return plain;
    size_t n = strlen(plain) + sizeof " service='" CHILD_SERVICE "'";
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%sservice='" CHILD_SERVICE "'", plain, plain[0] ? " " : "");
    free(plain);
    return s;
}

int pg_child_conn_make(const pg_conninfo *ci, pg_child_conn *out, pv_err *err)
{
    memset(out, 0, sizeof *out);
    out->passfd = out->servicefd = -1;
    bool others = false;
    for (int i = 0; i < ci->n; i++)
        others = others || other_secret(ci->keys[i]);
    const char *pw = pg_conninfo_get(ci, "password");
    if (!pw) pw = getenv("PGPASSWORD"); /* the child's environment does not pass it on */
    /* A password no passfile line can hold travels as PGPASSWORD. */
    bool own_passfile = pw && *pw && !strpbrk(pw, "\r\n");
    int rc = (out->conninfo = command_line_conninfo(ci, own_passfile, others)) ? 0 : oom(err);
    if (rc == 0 && own_passfile) rc = passfile(out, pw, err);
    if (rc == 0 && pw && *pw && !own_passfile) rc = add_env(out, "PGPASSWORD", pw, err);
    if (rc == 0 && others) rc = service_file(ci, out, err);
    if (rc < 0) pg_child_conn_free(out);
    return rc;
}
