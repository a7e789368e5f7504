/*
 * files.c: the file stages of pgvault.stream: file_reader, stdin (sources),
 * stdout (a sink written as it is), and file_writer (a pv_file: a new
 * temporary file put in place when the pipeline succeeds, devices and
 * FIFOs written through).
 */
#include "stages.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    pv_stage base;
    int fd;
    bool owned; /* we opened it and must close it */
    char path[4096];
    uint8_t *buf;
    const char *prefix; /* emitted before what the file gives (a head already read) */
    size_t prefix_len;
} fd_stage;

/* {prefix = STRING}: kept alive as the stage's user value. */
static void set_prefix(lua_State *L, fd_stage *f, int opts)
{
    static const char *const known[] = {"prefix", "label", NULL};
    pv_opt_only(L, opts, known);
    if (!pv_opt_str(L, opts, "prefix", NULL)) return;
    lua_getfield(L, opts, "prefix");
    f->prefix = lua_tolstring(L, -1, &f->prefix_len);
    lua_setiuservalue(L, -2, 1);
}

static int fd_reader_start(pv_stage *s, pv_err *err)
{
    fd_stage *f = (fd_stage *)s;
    if (f->owned) {
        f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0) {
            pv_err_errno(err, errno, "cannot open %s", f->path);
            pv_err_str(err, "path", f->path);
            return -1;
        }
        struct stat sb;
        if (fstat(f->fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            pv_err_set(err, "io", "cannot read %s: it is a directory", f->path);
            pv_err_str(err, "path", f->path);
            return -1;
        }
        posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    f->buf = malloc(PV_STREAM_CHUNK);
    if (!f->buf) {
        pv_err_set(err, "io", "out of memory");
        return -1;
    }
    return 0;
}

static int fd_reader_run(pv_stage *s, pv_err *err)
{
    fd_stage *f = (fd_stage *)s;
    if (f->prefix_len && pv_emit(s, (const uint8_t *)f->prefix, f->prefix_len, err) < 0) return -1;
    for (;;) {
        ssize_t n = pv_read_some(f->fd, f->buf, PV_STREAM_CHUNK);
        if (n < 0) {
            if (pv_interrupted()) {
                pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
                return -1;
            }
            pv_err_errno(err, errno, "cannot read %s", f->path);
            pv_err_str(err, "path", f->path);
            return -1;
        }
        if (n == 0) return 0;
        if (pv_emit(s, f->buf, (size_t)n, err) < 0) return -1;
    }
}

static void fd_close(pv_stage *s)
{
    fd_stage *f = (fd_stage *)s;
    if (f->owned && f->fd >= 0) close(f->fd);
    f->fd = -1;
    free(f->buf);
    f->buf = NULL;
}

static const pv_stage_ops file_reader_ops = {
    .name = "file", .start = fd_reader_start, .run = fd_reader_run, .release = fd_close};

int pv_stream_file_reader(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_isnoneornil(L, 2) ? 0 : 2;
    if (strlen(path) >= sizeof(((fd_stage *)0)->path)) return luaL_argerror(L, 1, "path too long");
    fd_stage *f = pv_stage_new(L, &file_reader_ops, sizeof *f, opts);
    f->fd = -1;
    f->owned = true;
    snprintf(f->path, sizeof f->path, "%s", path);
    set_prefix(L, f, opts);
    return 1;
}

static const pv_stage_ops stdin_ops = {
    .name = "stdin", .start = fd_reader_start, .run = fd_reader_run, .release = fd_close};

int pv_stream_stdin(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    fd_stage *f = pv_stage_new(L, &stdin_ops, sizeof *f, opts);
    f->fd = STDIN_FILENO;
    snprintf(f->path, sizeof f->path, "standard input");
    set_prefix(L, f, opts);
    return 1;
}

static int fd_writer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    fd_stage *f = (fd_stage *)s;
    if (pv_write_all(f->fd, d, n) < 0) {
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        pv_err_errno(err, errno, "cannot write %s", f->path);
        pv_err_str(err, "path", f->path);
        return -1;
    }
    return 0;
}

static const pv_stage_ops stdout_ops = {.name = "stdout", .write = fd_writer_write};

int pv_stream_stdout(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    fd_stage *f = pv_stage_new(L, &stdout_ops, sizeof *f, opts);
    f->fd = STDOUT_FILENO;
    snprintf(f->path, sizeof f->path, "standard output");
    return 1;
}

typedef struct {
    pv_stage base;
    pv_file file;
    bool no_clobber;
    mode_t mode;
    char path[4096];
} file_writer;

static int file_writer_start(pv_stage *s, pv_err *err)
{
    file_writer *w = (file_writer *)s;
    return pv_file_open(&w->file, w->path, w->mode, w->no_clobber, err);
}

static int file_writer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    return pv_file_write(&((file_writer *)s)->file, d, n, err);
}

static int file_writer_finish(pv_stage *s, pv_err *err)
{
    return pv_file_commit(&((file_writer *)s)->file, err);
}

static void file_writer_abort(pv_stage *s)
{
    pv_file_abort(&((file_writer *)s)->file);
}

static int file_writer_report(pv_stage *s, lua_State *L)
{
    file_writer *w = (file_writer *)s;
    lua_createtable(L, 0, 3);
    pv_set_str(L, "path", w->path);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    pv_set_bool(L, "committed", w->file.committed);
    return 1;
}

static const pv_stage_ops file_writer_ops = {.name = "file",
                                             .start = file_writer_start,
                                             .write = file_writer_write,
                                             .finish = file_writer_finish,
                                             .abort = file_writer_abort,
                                             .report = file_writer_report,
                                             .release = file_writer_abort};

int pv_stream_file_writer(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_isnoneornil(L, 2) ? 0 : 2;
    if (strlen(path) >= sizeof(((file_writer *)0)->path))
        return luaL_argerror(L, 1, "path too long");
    static const char *const known[] = {"mode", "no_clobber", "label", NULL};
    pv_opt_only(L, opts, known);
    lua_Integer mode = pv_opt_int(L, opts, "mode", 0600);
    bool no_clobber = pv_opt_bool(L, opts, "no_clobber", false);
    file_writer *w = pv_stage_new(L, &file_writer_ops, sizeof *w, opts);
    pv_file_init(&w->file);
    w->mode = (mode_t)mode;
    w->no_clobber = no_clobber;
    snprintf(w->path, sizeof w->path, "%s", path);
    return 1;
}
