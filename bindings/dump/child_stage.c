/*
 * child_stage.c: pg_dump, pg_restore and psql as pipeline stages. A source
 * streams the child's stdout downstream; a sink feeds the child's stdin.
 * Either way the child's stderr is read as it comes, line by line: each
 * line goes to the log (redacted), the first error and the last lines are
 * kept for the failure message, and pg_dump's collation-version WARNING is
 * recognised. A child that fails or is killed fails the pipeline.
 */
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

typedef struct {
    pv_stage base;
    int mode;
    char program[32];
    dump_bin bin;
    char *argv[MAX_ARGV + 1];
    char *env[3];
    pv_child child;
    bool spawned, waited;
    int status;
    uint8_t *buf;
    /* stderr, split into lines */
    char line[LINE_MAX_LEN];
    size_t linelen;
    char tail[TAIL_LINES][LINE_MAX_LEN];
    int ntail;
    char first_error[LINE_MAX_LEN * 2];
    int error_lines; /* continuation lines still to add to first_error */
    bool in_error;   /* the lines being read continue an error */
    bool in_notice;  /* ... or the collation WARNING */
    int warnings;
    bool collation_mismatch;
    int pipe_size; /* of the child's stdin (a sink), 0 if unknown */
} dump_stage;

static bool has(const char *s, const char *needle)
{
    return strcasestr(s, needle) != NULL;
}

static void append(char *dst, size_t dstsz, const char *sep, const char *src)
{
    size_t n = strlen(dst);
    if (n && n + 1 < dstsz) snprintf(dst + n, dstsz - n, "%s", sep);
    n = strlen(dst);
    if (n + 1 < dstsz) snprintf(dst + n, dstsz - n, "%s", src);
}

/* Strips "pg_dump: error: " and libpq's "FATAL:  " doubled spaces. */
static const char *message_part(const dump_stage *d, const char *line)
{
    size_t pl = strlen(d->program);
    if (strncmp(line, d->program, pl) == 0 && line[pl] == ':') line += pl + 1;
    while (*line == ' ')
        line++;
    if (strncasecmp(line, "error: ", 7) == 0) line += 7;
    return line;
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

    int level = PV_LOG_INFO;
    bool is_error = has(line, "error:") || has(line, "FATAL:") || has(line, "PANIC:");
    bool continuation = line[0] == ' ' || line[0] == '\t' || has(line, "DETAIL:") ||
                        has(line, "HINT:") || has(line, "detail:") || has(line, "hint:") ||
                        has(line, "LINE ") || has(line, "Command was:");
    if (has(line, "warning:") || has(line, "WARNING:")) {
        d->warnings++;
        level = PV_LOG_WARN;
    }
    /* The caller surfaces this one once (the report says it was seen);
     * the server's own text stays in the debug log. */
    if (has(line, "collation version mismatch")) {
        d->collation_mismatch = true;
        d->in_notice = true;
        level = PV_LOG_DEBUG;
    } else if (continuation && d->in_notice) {
        level = PV_LOG_DEBUG;
    } else if (!continuation) {
        d->in_notice = false;
    }
    if (is_error && !d->first_error[0]) {
        snprintf(d->first_error, sizeof d->first_error, "%s", message_part(d, line));
        d->error_lines = 2;
        d->in_error = true;
        level = PV_LOG_DEBUG; /* it will be in the error message */
    } else if (continuation && d->in_error) {
        if (d->error_lines > 0) {
            append(d->first_error, sizeof d->first_error, " ", message_part(d, line));
            d->error_lines--;
        }
        level = PV_LOG_DEBUG;
    } else if (!continuation) {
        d->error_lines = 0;
        d->in_error = false;
    }
    if (level == PV_LOG_INFO && is_error) level = PV_LOG_WARN;
    /* pg_dump and pg_restore prefix their own name; psql and libpq may not. */
    if (strncmp(line, d->program, strlen(d->program)) == 0)
        pv_log(level, "%s", line);
    else
        pv_log(level, "%s: %s", d->program, line);
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
            append(why, sizeof why, " ", message_part(d, d->tail[i]));
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
    if (pv_child_spawn(&d->child, (const char *const *)d->argv, (const char *const *)d->env, NULL,
                       flags, err) < 0)
        return -1;
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
    for (int i = 1; d->argv[i]; i++) {
        free(d->argv[i]);
        d->argv[i] = NULL;
    }
    for (int i = 0; d->env[i]; i++) {
        explicit_bzero(d->env[i], strlen(d->env[i]));
        free(d->env[i]);
        d->env[i] = NULL;
    }
}

static int stage_report(pv_stage *s, lua_State *L)
{
    dump_stage *d = (dump_stage *)s;
    lua_createtable(L, 0, 10);
    lua_pushstring(L, d->program);
    lua_setfield(L, -2, "program");
    lua_pushstring(L, d->bin.path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, d->bin.version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, d->bin.major);
    lua_setfield(L, -2, "major");
    lua_pushinteger(L, (lua_Integer)(d->mode == DUMP_SOURCE ? s->bytes_out : s->bytes_in));
    lua_setfield(L, -2, "bytes");
    if (d->spawned) {
        lua_pushinteger(L, d->child.pid);
        lua_setfield(L, -2, "pid");
    }
    if (d->waited && WIFEXITED(d->status)) {
        lua_pushinteger(L, WEXITSTATUS(d->status));
        lua_setfield(L, -2, "exit_status");
    } else if (d->waited && WIFSIGNALED(d->status)) {
        lua_pushinteger(L, WTERMSIG(d->status));
        lua_setfield(L, -2, "signal");
    }
    lua_pushinteger(L, d->warnings);
    lua_setfield(L, -2, "warnings");
    lua_pushboolean(L, d->collation_mismatch);
    lua_setfield(L, -2, "collation_mismatch");
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

static const pv_stage_ops source_ops = {.name = "pg_dump",
                                        .start = stage_start,
                                        .run = source_run,
                                        .abort = stage_abort,
                                        .report = stage_report,
                                        .release = stage_release};

/* pg_restore reading a file (parallel restores): a source with no output. */
static const pv_stage_ops restore_source_ops = {.name = "pg_restore",
                                                .start = stage_start,
                                                .run = source_run,
                                                .abort = stage_abort,
                                                .report = stage_report,
                                                .release = stage_release};

static const pv_stage_ops restore_ops = {.name = "pg_restore",
                                         .start = stage_start,
                                         .write = sink_write,
                                         .finish = sink_finish,
                                         .abort = stage_abort,
                                         .report = stage_report,
                                         .release = stage_release};

static const pv_stage_ops psql_ops = {.name = "psql",
                                      .start = stage_start,
                                      .write = sink_write,
                                      .finish = sink_finish,
                                      .abort = stage_abort,
                                      .report = stage_report,
                                      .release = stage_release};

void dump_stage_push(lua_State *L, int opts, const char *program, const dump_bin *bin,
                     const char *const *argv, const char *password, int mode)
{
    bool restore = strcmp(program, "pg_restore") == 0;
    const pv_stage_ops *ops = mode == DUMP_SOURCE ? (restore ? &restore_source_ops : &source_ops)
                              : restore           ? &restore_ops
                                                  : &psql_ops;
    dump_stage *d = pv_stage_new(L, ops, sizeof *d, opts);
    d->mode = mode;
    d->child.in_fd = d->child.out_fd = d->child.err_fd = -1;
    snprintf(d->program, sizeof d->program, "%s", program);
    d->bin = *bin;
    bool oom = false;
    for (int i = 1; argv[i] && i < MAX_ARGV && !oom; i++)
        if (!(d->argv[i] = strdup(argv[i]))) oom = true;
    /* Children inherit no credential: the user's PGPASSWORD is passed on. */
    if (!password) password = getenv("PGPASSWORD");
    if (password && !oom) {
        size_t n = strlen(password) + sizeof "PGPASSWORD=";
        d->env[0] = malloc(n);
        if (d->env[0])
            snprintf(d->env[0], n, "PGPASSWORD=%s", password);
        else
            oom = true;
    }
    if (oom) luaL_error(L, "out of memory"); /* the userdata's __gc frees the rest */
}
