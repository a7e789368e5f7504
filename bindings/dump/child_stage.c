/*
 * child_stage.c: pg_dump, pg_restore and psql as pipeline stages. A source
 * streams the child's stdout downstream; a sink feeds the child's stdin.
 * Either way the child's diagnostics are read as they come and put
 * together into messages (a line and its DETAIL:, HINT: ... lines), each
 * logged once as one line of sentences (redacted): the first error is
 * kept for the failure message, the warnings for the report, where the
 * workflow decides what they mean. A child that fails or is killed fails
 * the pipeline.
 */
#include "../pg/message.h"
#include "dump.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
#define MAX_ARGV 128
#define TAIL_LINES 6
#define LINE_MAX_LEN 1024
#define MAX_WARNINGS 32

enum { MSG_NONE, MSG_OTHER, MSG_WARNING, MSG_ERROR };

/* One message of the child: its first line and what continues it
 * (libpq's DETAIL: and HINT: lines, CONTEXT:, LINE n:, pg_restore's
 * "Command was:"), put together before it is logged or kept. */
typedef struct {
    int kind;
    char head[LINE_MAX_LEN]; /* without the program's and severity's prefixes */
    char detail[LINE_MAX_LEN], hint[LINE_MAX_LEN];
    char more[LINE_MAX_LEN]; /* other continuation lines, the first two */
    int nmore;
} child_msg;

struct dump_stage {
    pv_stage base;
    int mode;
    char program[32];
    dump_bin bin;
    char *argv[MAX_ARGV + 1];
    int argc;
    pg_child_conn conn; /* the conninfo on argv, the secrets for the environment */
    bool log_warnings;  /* false: warnings go to the report only (and the debug log) */
    pv_child child;
    bool spawned, waited;
    int status;
    uint8_t *buf;
    /* diagnostics, split into lines and then messages */
    char line[LINE_MAX_LEN];
    size_t linelen;
    char tail[TAIL_LINES][LINE_MAX_LEN];
    int ntail;
    child_msg msg;
    char first_error[LINE_MAX_LEN * 2];
    char *warnings[MAX_WARNINGS]; /* each a whole message, malloc'd */
    int nwarnings, warnings_dropped;
    int pipe_size; /* of the child's stdin (a sink), 0 if unknown */
};

static void append(char *dst, size_t dstsz, const char *sep, const char *src)
{
    size_t n = strlen(dst);
    if (n && n + 1 < dstsz) snprintf(dst + n, dstsz - n, "%s", sep);
    n = strlen(dst);
    if (n + 1 < dstsz) snprintf(dst + n, dstsz - n, "%s", src);
}

static const char *skip_spaces(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Skips "pg_dump: ", psql's "psql:FILE:LINE: " and the like. */
static const char *after_program(const dump_stage *d, const char *line)
{
    size_t pl = strlen(d->program);
    if (strncmp(line, d->program, pl) != 0 || line[pl] != ':') return line;
    line += pl + 1;
    /* psql:<stdin>:3: names where in the script */
    const char *loc = line, *colon = strchr(loc, ':');
    if (*loc != ' ' && colon && colon[1] && strspn(colon + 1, "0123456789") > 0) {
        const char *after = colon + 1 + strspn(colon + 1, "0123456789");
        if (*after == ':') line = after + 1;
    }
    return skip_spaces(line);
}

/* The severity a line starts with, and where its text begins. pg_dump's
 * own messages say "error: " and "warning: "; the server's, relayed by
 * libpq, "ERROR:  " and "WARNING:  ". */
static int severity_of(const char *s, const char **text)
{
    static const struct {
        const char *prefix;
        int kind;
    } prefixes[] = {{"error:", MSG_ERROR}, {"ERROR:", MSG_ERROR},     {"FATAL:", MSG_ERROR},
                    {"PANIC:", MSG_ERROR}, {"warning:", MSG_WARNING}, {"WARNING:", MSG_WARNING},
                    {NULL, MSG_OTHER}};
    int i = 0;
    while (prefixes[i].prefix && strncmp(s, prefixes[i].prefix, strlen(prefixes[i].prefix)) != 0)
        i++;
    *text = prefixes[i].prefix ? skip_spaces(s + strlen(prefixes[i].prefix)) : s;
    return prefixes[i].kind;
}

/* A line that continues the message before it: where it goes, or NULL. */
static char *continuation(dump_stage *d, const char *line, const char **text)
{
    child_msg *m = &d->msg;
    const char *s = after_program(d, line);
    static const char *const details[] = {"DETAIL:", "detail:", NULL};
    static const char *const hints[] = {"HINT:", "hint:", NULL};
    for (int i = 0; details[i]; i++) {
        if (strncmp(s, details[i], strlen(details[i])) == 0) {
            *text = skip_spaces(s + strlen(details[i]));
            return m->detail;
        }
        if (strncmp(s, hints[i], strlen(hints[i])) == 0) {
            *text = skip_spaces(s + strlen(hints[i]));
            return m->hint;
        }
    }
    static const char *const others[] = {"CONTEXT:", "QUERY:", "LINE ", "Command was:", NULL};
    bool other = line[0] == ' ' || line[0] == '\t';
    for (int i = 0; others[i] && !other; i++)
        other = strncmp(s, others[i], strlen(others[i])) == 0;
    *text = skip_spaces(s);
    return other ? m->more : NULL;
}

static void keep_warning(dump_stage *d, const char *text)
{
    if (d->nwarnings == MAX_WARNINGS) {
        d->warnings_dropped++;
        return;
    }
    char *copy = strdup(text);
    if (copy)
        d->warnings[d->nwarnings++] = copy;
    else
        d->warnings_dropped++;
}

/* The message read so far is complete: logged once, as one line of
 * sentences, and kept when it is the first error or a warning. */
static void finish_message(dump_stage *d)
{
    child_msg *m = &d->msg;
    if (m->kind == MSG_NONE) return;
    char text[LINE_MAX_LEN * 2];
    pg_sentences(text, sizeof text, m->head, m->detail, m->hint);
    if (m->more[0]) append(text, sizeof text, " ", m->more);
    int level = PV_LOG_INFO;
    if (m->kind == MSG_ERROR && !d->first_error[0]) {
        snprintf(d->first_error, sizeof d->first_error, "%s", text);
        level = PV_LOG_DEBUG; /* it will be in the error message */
    } else if (m->kind == MSG_ERROR) {
        level = PV_LOG_WARN;
    } else if (m->kind == MSG_WARNING) {
        keep_warning(d, text);
        level = d->log_warnings ? PV_LOG_WARN : PV_LOG_DEBUG;
    }
    pv_log(level, "%s: %s%s", d->program,
           m->kind == MSG_WARNING ? "warning: " : (m->kind == MSG_ERROR ? "error: " : ""), text);
    memset(m, 0, sizeof *m);
}

static void stderr_line(dump_stage *d, char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (n == 0) return;
    if (d->ntail == TAIL_LINES) {
        memmove(d->tail[0], d->tail[1], sizeof d->tail[0] * (TAIL_LINES - 1));
        d->ntail--;
    }
    snprintf(d->tail[d->ntail++], LINE_MAX_LEN, "%s", line);

    const char *text;
    char *into = d->msg.kind != MSG_NONE ? continuation(d, line, &text) : NULL;
    if (into == d->msg.more && d->msg.nmore++ >= 2) return;
    if (into) {
        append(into, LINE_MAX_LEN, " ", text);
        return;
    }
    finish_message(d);
    d->msg.kind = severity_of(after_program(d, line), &text);
    snprintf(d->msg.head, sizeof d->msg.head, "%s", text);
}

/* Reads what the child wrote on its error pipe; returns 0, or 1 at EOF. */
static int drain_stderr(dump_stage *d, int fd)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) return (errno == EINTR || errno == EAGAIN) ? 0 : 1;
    if (n == 0) {
        if (d->linelen) {
            d->line[d->linelen] = '\0';
            stderr_line(d, d->line);
            d->linelen = 0;
        }
        finish_message(d);
        return 1;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || d->linelen == LINE_MAX_LEN - 1) {
            d->line[d->linelen] = '\0';
            stderr_line(d, d->line);
            d->linelen = 0;
            if (buf[i] == '\n') continue;
        }
        d->line[d->linelen++] = buf[i];
    }
    return 0;
}

/* The fd carrying the child's diagnostics: stderr for a source, the merged
 * stdout+stderr for a sink. */
static int *diag_fd(dump_stage *d)
{
    return d->mode == DUMP_SOURCE ? &d->child.err_fd : &d->child.out_fd;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* Reads diagnostics to EOF, reaps the child and turns a failure into err. */
static int wait_child(dump_stage *d, pv_err *err)
{
    int *fd = diag_fd(d);
    while (*fd >= 0) {
        struct pollfd p = {*fd, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        if (r > 0 && drain_stderr(d, *fd)) close_fd(fd);
    }
    d->status = pv_child_wait(&d->child);
    d->waited = true;
    if (d->status == 0) return 0;
    char how[128];
    pv_child_describe(d->status, how, sizeof how);
    char why[LINE_MAX_LEN * 2] = "";
    if (d->first_error[0]) {
        snprintf(why, sizeof why, "%s", d->first_error);
    } else {
        for (int i = d->ntail > 2 ? d->ntail - 2 : 0; i < d->ntail; i++)
            append(why, sizeof why, " ", after_program(d, d->tail[i]));
    }
    pv_err_set(err, "child", "%s %s%s%s", d->program, how, why[0] ? ": " : "", why);
    pv_err_str(err, "program", d->program);
    if (WIFEXITED(d->status)) pv_err_int(err, "exit_status", WEXITSTATUS(d->status));
    if (WIFSIGNALED(d->status)) pv_err_int(err, "signal", WTERMSIG(d->status));
    if (why[0]) pv_err_str(err, "stderr", why);
    return -1;
}

static int stage_start(pv_stage *s, pv_err *err)
{
    dump_stage *d = (dump_stage *)s;
    d->buf = malloc(CHUNK);
    if (!d->buf) {
        pv_err_set(err, "internal", "out of memory");
        return -1;
    }
    int flags = d->mode == DUMP_SOURCE ? (PV_PIPE_OUT | PV_PIPE_ERR | PV_NULL_IN)
                                       : (PV_PIPE_IN | PV_PIPE_OUT | PV_ERR_TO_OUT);
    d->argv[0] = d->bin.path;
    pg_child_conn_inherit(&d->conn, true);
    int spawned = pv_child_spawn(&d->child, (const char *const *)d->argv,
                                 (const char *const *)d->conn.env, NULL, flags, err);
    pg_child_conn_inherit(&d->conn, false);
    if (spawned < 0) return -1;
    d->spawned = true;
    pv_log(PV_LOG_DEBUG, "started %s %s (pid %d)", d->bin.path, d->bin.version, (int)d->child.pid);
    /* Bigger pipes than the default 64 KiB: fewer wake-ups per megabyte on
     * the data path (best effort; the system may cap it). */
    fcntl(d->mode == DUMP_SINK ? d->child.in_fd : d->child.out_fd, F_SETPIPE_SZ, 1 << 20);
    if (d->mode == DUMP_SINK) {
        fcntl(d->child.in_fd, F_SETFL, O_NONBLOCK);
        int size = fcntl(d->child.in_fd, F_GETPIPE_SZ);
        d->pipe_size = size > 0 ? size : 0;
    }
    fcntl(*diag_fd(d), F_SETFL, O_NONBLOCK);
    return 0;
}

/* Source: the child's stdout flows downstream until EOF, then the child
 * must exit 0. */
static int source_run(pv_stage *s, pv_err *err)
{
    dump_stage *d = (dump_stage *)s;
    while (d->child.out_fd >= 0) {
        struct pollfd p[2] = {{d->child.out_fd, POLLIN, 0}, {d->child.err_fd, POLLIN, 0}};
        int r = poll(p, d->child.err_fd >= 0 ? 2 : 1, 500);
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        if (r <= 0) continue;
        if (d->child.err_fd >= 0 && p[1].revents && drain_stderr(d, d->child.err_fd))
            close_fd(&d->child.err_fd);
        if (!p[0].revents) continue;
        ssize_t n = read(d->child.out_fd, d->buf, CHUNK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) {
            pv_err_errno(err, errno, "cannot read the output of %s", d->program);
            return -1;
        }
        if (n == 0) {
            close_fd(&d->child.out_fd);
            break;
        }
        if (pv_emit(s, d->buf, (size_t)n, err) < 0) return -1;
    }
    return wait_child(d, err);
}

/* Once the child's stdin is full, waits until it has read half of it
 * (still reading its diagnostics, and seeing it go away), so the pipe is
 * refilled in large writes. Waiting for room as such (POLLOUT) would wake
 * us for every page the child reads, two context switches per 4 KiB read:
 * tens of thousands a second for pg_restore, which reads 4 KiB at a time. */
static void wait_half_empty(dump_stage *d)
{
    for (;;) {
        int queued = 0;
        if (!d->pipe_size || ioctl(d->child.in_fd, FIONREAD, &queued) < 0 ||
            queued <= d->pipe_size / 2)
            return;
        int *dfd = diag_fd(d);
        struct pollfd p[2] = {{d->child.in_fd, 0, 0}, {*dfd, POLLIN, 0}};
        int r = poll(p, *dfd >= 0 ? 2 : 1, 1);
        if (pv_interrupted()) return;
        if (r > 0 && *dfd >= 0 && p[1].revents && drain_stderr(d, *dfd)) close_fd(dfd);
        if (r > 0 && (p[0].revents & (POLLERR | POLLHUP))) return; /* the write says why */
    }
}

/* Sink: feeds the child's stdin while reading its diagnostics, so neither
 * side can block the other. */
static int sink_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    dump_stage *d = (dump_stage *)s;
    size_t off = 0;
    while (off < len) {
        int *dfd = diag_fd(d);
        struct pollfd p[2] = {{d->child.in_fd, POLLOUT, 0}, {*dfd, POLLIN, 0}};
        int r = poll(p, *dfd >= 0 ? 2 : 1, 500);
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        if (r <= 0) continue;
        if (*dfd >= 0 && p[1].revents && drain_stderr(d, *dfd)) close_fd(dfd);
        if (!p[0].revents) continue;
        ssize_t w = write(d->child.in_fd, data + off, len - off);
        if (w > 0) {
            off += (size_t)w;
            if (off < len) wait_half_empty(d); /* the pipe is full */
        } else if (w < 0 && errno == EAGAIN) {
            wait_half_empty(d);
        } else if (w < 0 && errno != EINTR) {
            int e = errno;
            close_fd(&d->child.in_fd);
            /* The child stopped reading: its own complaint is the cause. */
            if (wait_child(d, err) < 0) return -1;
            pv_err_errno(err, e, "%s stopped reading its input before the end", d->program);
            return -1;
        }
    }
    return 0;
}

static int sink_finish(pv_stage *s, pv_err *err)
{
    dump_stage *d = (dump_stage *)s;
    close_fd(&d->child.in_fd);
    return wait_child(d, err);
}

static void stage_abort(pv_stage *s)
{
    dump_stage *d = (dump_stage *)s;
    if (d->spawned && !d->child.reaped) {
        pv_child_kill(&d->child, 2000);
        d->status = d->child.status;
        d->waited = true;
    }
    pv_child_close_fds(&d->child);
}

static void stage_release(pv_stage *s)
{
    dump_stage *d = (dump_stage *)s;
    stage_abort(s);
    free(d->buf);
    d->buf = NULL;
    for (int i = 1; i < d->argc; i++) {
        free(d->argv[i]);
        d->argv[i] = NULL;
    }
    d->argc = 0;
    pg_child_conn_free(&d->conn);
    for (int i = 0; i < d->nwarnings; i++) {
        free(d->warnings[i]);
        d->warnings[i] = NULL;
    }
    d->nwarnings = 0;
}

/* {program, path, version, major, bytes, pid, exit_status | signal,
 * warnings = {text, ...}, warnings_dropped, stderr = last lines} */
static int stage_report(pv_stage *s, lua_State *L)
{
    dump_stage *d = (dump_stage *)s;
    lua_createtable(L, 0, 11);
    pv_set_str(L, "program", d->program);
    pv_set_str(L, "path", d->bin.path);
    pv_set_str(L, "version", d->bin.version);
    pv_set_int(L, "major", d->bin.major);
    pv_set_int(L, "bytes", (lua_Integer)(d->mode == DUMP_SOURCE ? s->bytes_out : s->bytes_in));
    if (d->spawned) pv_set_int(L, "pid", d->child.pid);
    if (d->waited && WIFEXITED(d->status)) pv_set_int(L, "exit_status", WEXITSTATUS(d->status));
    if (d->waited && WIFSIGNALED(d->status)) pv_set_int(L, "signal", WTERMSIG(d->status));
    lua_createtable(L, d->nwarnings, 0);
    for (int i = 0; i < d->nwarnings; i++) {
        lua_pushstring(L, d->warnings[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "warnings");
    if (d->warnings_dropped) pv_set_int(L, "warnings_dropped", d->warnings_dropped);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < d->ntail; i++) {
        luaL_addstring(&b, d->tail[i]);
        luaL_addchar(&b, '\n');
    }
    luaL_pushresult(&b);
    lua_setfield(L, -2, "stderr");
    return 1;
}

/* Every client program has the same hooks; the report's key is the
 * program's name (set when the stage is made). A source's stdout feeds
 * the pipeline (pg_restore reading a file emits nothing); a sink reads
 * the pipeline on stdin. */
static const pv_stage_ops source_ops = {.name = "client",
                                        .start = stage_start,
                                        .run = source_run,
                                        .abort = stage_abort,
                                        .report = stage_report,
                                        .release = stage_release};

static const pv_stage_ops sink_ops = {.name = "client",
                                      .start = stage_start,
                                      .write = sink_write,
                                      .finish = sink_finish,
                                      .abort = stage_abort,
                                      .report = stage_report,
                                      .release = stage_release};

dump_stage *dump_stage_push(lua_State *L, int opts, const char *program, const dump_bin *bin,
                            int mode)
{
    dump_stage *d = pv_stage_new(L, mode == DUMP_SOURCE ? &source_ops : &sink_ops, sizeof *d, opts);
    d->conn.passfd = d->conn.servicefd = -1;
    if (strcmp(d->base.label, source_ops.name) == 0)
        snprintf(d->base.label, sizeof d->base.label, "%s", program);
    d->log_warnings = pv_opt_bool(L, opts, "log_warnings", true);
    d->mode = mode;
    d->child.in_fd = d->child.out_fd = d->child.err_fd = -1;
    snprintf(d->program, sizeof d->program, "%s", program);
    d->bin = *bin;
    d->argc = 1; /* argv[0] is the binary's path, set when it starts */
    return d;
}

void dump_stage_arg(lua_State *L, dump_stage *d, const char *arg)
{
    if (d->argc >= MAX_ARGV) luaL_error(L, "too many arguments for %s", d->program);
    if (!(d->argv[d->argc] = strdup(arg))) luaL_error(L, "out of memory");
    d->argc++;
}

void dump_stage_connect(lua_State *L, dump_stage *d, const pg_conninfo *ci)
{
    pv_err err;
    pv_err_clear(&err);
    pg_child_conn_free(&d->conn);
    if (pg_child_conn_make(ci, &d->conn, &err) < 0) pv_err_raise(L, &err);
    dump_stage_arg(L, d, "-d");
    dump_stage_arg(L, d, d->conn.conninfo);
}
