/*
 * stream.c: module pgvault.stream, the pipeline engine (stream.run) and the
 * generic stages: files (atomic commit), strings and buffers, stdin and
 * stdout, discard, SHA-256 and byte counters. The zstd and progress stages
 * live in bindings/stream/ and are registered here.
 */
#include "pgvault.h"
#include "stream/stages.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_STAGES 32
#define CHUNK (256 * 1024)

void pv_stage_release(pv_stage *st);

/* ------------------------------------------------------------------ */
/* The engine                                                          */
/* ------------------------------------------------------------------ */

static int stream_run(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    if (n < 2) return luaL_argerror(L, 1, "a pipeline needs a source and a sink");
    if (n > MAX_STAGES) return luaL_argerror(L, 1, "too many stages");
    pv_stage *st[MAX_STAGES];
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        st[i] = pv_stage_check(L, -1);
        lua_pop(L, 1); /* the table keeps it alive */
        if (st[i]->state != PV_STAGE_NEW || st[i]->released)
            return luaL_error(L, "stage %d (%s) was already used in a pipeline", i + 1,
                              st[i]->ops->name);
        for (int j = 0; j < i; j++)
            if (st[j] == st[i]) return luaL_error(L, "stage %d appears twice", i + 1);
        if (i == 0 && !st[i]->ops->run)
            return luaL_error(L, "stage 1 (%s) cannot be a source", st[i]->ops->name);
        if (i > 0 && !st[i]->ops->write)
            return luaL_error(L, "stage %d (%s) cannot take input", i + 1, st[i]->ops->name);
    }
    for (int i = 0; i < n; i++)
        st[i]->next = i + 1 < n ? st[i + 1] : NULL;

    pv_err err;
    pv_err_clear(&err);
    double t0 = pv_now();
    int rc = 0;
    for (int i = n - 1; i >= 0 && rc == 0; i--) {
        st[i]->state = PV_STAGE_STARTED;
        if (st[i]->ops->start) rc = st[i]->ops->start(st[i], &err);
    }
    if (rc == 0) rc = st[0]->ops->run(st[0], &err);
    for (int i = 0; i < n && rc == 0; i++) {
        if (st[i]->ops->finish) rc = st[i]->ops->finish(st[i], &err);
        if (rc == 0) st[i]->state = PV_STAGE_FINISHED;
    }
    if (rc != 0 && !err.set) pv_err_set(&err, "internal", "pipeline failed without a reason");
    if (rc != 0 && pv_interrupted() && strcmp(err.kind, "interrupted") != 0) {
        /* The signal is the cause; the stage's complaint is its consequence. */
        pv_err_clear(&err);
        pv_err_set(&err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
    }
    for (int i = 0; i < n && rc != 0; i++) {
        if (st[i]->state == PV_STAGE_STARTED || st[i]->state == PV_STAGE_FINISHED) {
            if (st[i]->ops->abort) st[i]->ops->abort(st[i]);
            st[i]->state = PV_STAGE_ABORTED;
        }
    }
    double seconds = pv_now() - t0;

    lua_createtable(L, 0, 4 + n);
    lua_pushinteger(L, (lua_Integer)st[0]->bytes_out);
    lua_setfield(L, -2, "bytes");
    lua_pushnumber(L, seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushboolean(L, rc == 0);
    lua_setfield(L, -2, "ok");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        int pushed = st[i]->ops->report ? st[i]->ops->report(st[i], L) : 0;
        if (pushed <= 0) {
            lua_pushboolean(L, 0);
        } else {
            lua_settop(L, lua_gettop(L) - pushed + 1);
            lua_pushvalue(L, -1);
            lua_setfield(L, -4, st[i]->label);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "stages");
    for (int i = 0; i < n; i++) {
        st[i]->state = rc == 0 ? PV_STAGE_USED : st[i]->state;
        pv_stage_release(st[i]);
        st[i]->state = PV_STAGE_USED;
    }
    if (rc != 0) {
        if (strcmp(err.kind, "interrupted") == 0) pv_interrupt_delivered();
        pv_err_push(L, &err);
        lua_insert(L, -2);
        lua_setfield(L, -2, "result"); /* what the stages saw, for diagnosis */
        return lua_error(L);
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* string source and buffer sink                                       */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    const char *data;
    size_t len;
} string_source;

static int string_run(pv_stage *s, pv_err *err)
{
    string_source *ss = (string_source *)s;
    for (size_t off = 0; off < ss->len; off += CHUNK) {
        size_t n = ss->len - off < CHUNK ? ss->len - off : CHUNK;
        if (pv_emit(s, (const uint8_t *)ss->data + off, n, err) < 0) return -1;
    }
    return 0;
}

static const pv_stage_ops string_ops = {.name = "string", .run = string_run};

static int stream_string(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    string_source *ss = pv_stage_new(L, &string_ops, sizeof *ss, 2);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keeps the string alive */
    ss->data = data;
    ss->len = len;
    return 1;
}

typedef struct {
    pv_stage base;
    char *data;
    size_t len, cap, max;
} buffer_sink;

static int buffer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    buffer_sink *b = (buffer_sink *)s;
    if (b->len + n > b->max) {
        pv_err_set(err, "io", "buffer limit of %zu bytes exceeded", b->max);
        return -1;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            pv_err_set(err, "io", "out of memory buffering %zu bytes", b->len + n);
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    return 0;
}

static int buffer_report(pv_stage *s, lua_State *L)
{
    buffer_sink *b = (buffer_sink *)s;
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_setfield(L, -2, "data");
    lua_pushinteger(L, (lua_Integer)b->len);
    lua_setfield(L, -2, "bytes");
    return 1;
}

static void buffer_release(pv_stage *s)
{
    buffer_sink *b = (buffer_sink *)s;
    free(b->data);
    b->data = NULL;
}

static const pv_stage_ops buffer_ops = {
    .name = "buffer", .write = buffer_write, .report = buffer_report, .release = buffer_release};

static int stream_buffer(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    lua_Integer max = pv_opt_int(L, opts, "max", 256 * 1024 * 1024);
    buffer_sink *b = pv_stage_new(L, &buffer_ops, sizeof *b, opts);
    b->max = (size_t)max;
    return 1;
}

/* ------------------------------------------------------------------ */
/* file descriptors: file reader, stdin, stdout, discard               */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    int fd;
    bool owned; /* we opened it and must close it */
    char path[4096];
    uint8_t *buf;
} fd_stage;

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
    f->buf = malloc(CHUNK);
    if (!f->buf) {
        pv_err_set(err, "io", "out of memory");
        return -1;
    }
    return 0;
}

static int fd_reader_run(pv_stage *s, pv_err *err)
{
    fd_stage *f = (fd_stage *)s;
    for (;;) {
        ssize_t n = pv_read_some(f->fd, f->buf, CHUNK);
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

static int stream_file_reader(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 2) ? 2 : 0;
    if (strlen(path) >= sizeof(((fd_stage *)0)->path)) return luaL_argerror(L, 1, "path too long");
    fd_stage *f = pv_stage_new(L, &file_reader_ops, sizeof *f, opts);
    f->fd = -1;
    f->owned = true;
    snprintf(f->path, sizeof f->path, "%s", path);
    return 1;
}

static const pv_stage_ops stdin_ops = {
    .name = "stdin", .start = fd_reader_start, .run = fd_reader_run, .release = fd_close};

static int stream_stdin(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    fd_stage *f = pv_stage_new(L, &stdin_ops, sizeof *f, opts);
    f->fd = STDIN_FILENO;
    snprintf(f->path, sizeof f->path, "standard input");
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

static int stream_stdout(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    fd_stage *f = pv_stage_new(L, &stdout_ops, sizeof *f, opts);
    f->fd = STDOUT_FILENO;
    snprintf(f->path, sizeof f->path, "standard output");
    return 1;
}

static int discard_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    (void)s, (void)d, (void)n, (void)err;
    return 0;
}

static const pv_stage_ops discard_ops = {.name = "discard", .write = discard_write};

static int stream_discard(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    pv_stage_new(L, &discard_ops, sizeof(pv_stage), opts);
    return 1;
}

/* ------------------------------------------------------------------ */
/* file writer: NAME.partial, fsync, rename on commit                  */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    int fd;
    bool atomic; /* regular file: write NAME.partial and rename */
    bool committed;
    bool no_clobber;
    mode_t mode;
    char path[4096];
    char partial[4096 + 16];
} file_writer;

static int fsync_parent_dir(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

static int file_writer_start(pv_stage *s, pv_err *err)
{
    file_writer *w = (file_writer *)s;
    struct stat sb;
    bool exists = stat(w->path, &sb) == 0;
    if (exists && S_ISDIR(sb.st_mode)) {
        pv_err_set(err, "io", "cannot write %s: it is a directory", w->path);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    /* Devices, FIFOs and sockets are written straight through: renaming
     * over /dev/null would replace the device node for everyone. */
    w->atomic = !exists || S_ISREG(sb.st_mode);
    if (exists && w->atomic && w->no_clobber) {
        pv_err_set(err, "io", "%s already exists; choose another name or remove it first", w->path);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    const char *target = w->atomic ? w->partial : w->path;
    int flags = O_WRONLY | O_CLOEXEC | (w->atomic ? O_CREAT | O_TRUNC : 0);
    w->fd = open(target, flags, w->mode);
    if (w->fd < 0) {
        pv_err_errno(err, errno, "cannot create %s", target);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    if (w->atomic) fchmod(w->fd, w->mode);
    return 0;
}

static int file_writer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    file_writer *w = (file_writer *)s;
    if (pv_write_all(w->fd, d, n) < 0) {
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            return -1;
        }
        int e = errno;
        pv_err_errno(err, e, "cannot write %s", w->atomic ? w->partial : w->path);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    return 0;
}

static int file_writer_finish(pv_stage *s, pv_err *err)
{
    file_writer *w = (file_writer *)s;
    if (w->atomic && fsync(w->fd) < 0) {
        pv_err_errno(err, errno, "cannot flush %s to disk", w->partial);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) < 0 && w->atomic) {
        pv_err_errno(err, errno, "cannot close %s", w->partial);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    if (!w->atomic) return 0;
    if (w->no_clobber) {
        /* link() fails if the name was taken meanwhile; rename would not. */
        if (link(w->partial, w->path) < 0) {
            pv_err_errno(err, errno, "cannot create %s", w->path);
            pv_err_str(err, "path", w->path);
            return -1;
        }
        unlink(w->partial);
    } else if (rename(w->partial, w->path) < 0) {
        pv_err_errno(err, errno, "cannot rename %s to %s", w->partial, w->path);
        pv_err_str(err, "path", w->path);
        return -1;
    }
    w->committed = true;
    fsync_parent_dir(w->path);
    return 0;
}

static void file_writer_abort(pv_stage *s)
{
    file_writer *w = (file_writer *)s;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->atomic && !w->committed) unlink(w->partial);
}

static int file_writer_report(pv_stage *s, lua_State *L)
{
    file_writer *w = (file_writer *)s;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, w->path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, (lua_Integer)s->bytes_in);
    lua_setfield(L, -2, "bytes");
    lua_pushboolean(L, w->committed || (!w->atomic && s->state == PV_STAGE_FINISHED));
    lua_setfield(L, -2, "committed");
    return 1;
}

static void file_writer_release(pv_stage *s)
{
    file_writer_abort(s);
}

static const pv_stage_ops file_writer_ops = {.name = "file",
                                             .start = file_writer_start,
                                             .write = file_writer_write,
                                             .finish = file_writer_finish,
                                             .abort = file_writer_abort,
                                             .report = file_writer_report,
                                             .release = file_writer_release};

static int stream_file_writer(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 2) ? 2 : 0;
    if (strlen(path) >= 4096) return luaL_argerror(L, 1, "path too long");
    lua_Integer mode = pv_opt_int(L, opts, "mode", 0600);
    bool no_clobber = pv_opt_bool(L, opts, "no_clobber", false);
    file_writer *w = pv_stage_new(L, &file_writer_ops, sizeof *w, opts);
    w->fd = -1;
    w->mode = (mode_t)mode;
    w->no_clobber = no_clobber;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->partial, sizeof w->partial, "%s.partial", path);
    return 1;
}

/* ------------------------------------------------------------------ */
/* taps: sha256, counter                                               */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    EVP_MD_CTX *ctx;
    char hex[65];
} sha256_tap;

static int sha256_start(pv_stage *s, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    t->ctx = EVP_MD_CTX_new();
    if (!t->ctx || EVP_DigestInit_ex(t->ctx, EVP_sha256(), NULL) != 1) {
        pv_err_set(err, "internal", "cannot initialise SHA-256");
        return -1;
    }
    return 0;
}

static int sha256_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    EVP_DigestUpdate(t->ctx, d, n);
    return pv_emit(s, d, n, err);
}

static int sha256_finish(pv_stage *s, pv_err *err)
{
    sha256_tap *t = (sha256_tap *)s;
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(t->ctx, md, &len) != 1 || len != 32) {
        pv_err_set(err, "internal", "cannot finish SHA-256");
        return -1;
    }
    pv_hex(md, 32, t->hex);
    return 0;
}

static int sha256_report(pv_stage *s, lua_State *L)
{
    sha256_tap *t = (sha256_tap *)s;
    lua_createtable(L, 0, 2);
    if (t->hex[0]) {
        lua_pushstring(L, t->hex);
        lua_setfield(L, -2, "sha256");
    }
    lua_pushinteger(L, (lua_Integer)s->bytes_in);
    lua_setfield(L, -2, "bytes");
    return 1;
}

static void sha256_release(pv_stage *s)
{
    sha256_tap *t = (sha256_tap *)s;
    EVP_MD_CTX_free(t->ctx);
    t->ctx = NULL;
}

static const pv_stage_ops sha256_ops = {.name = "sha256",
                                        .start = sha256_start,
                                        .write = sha256_write,
                                        .finish = sha256_finish,
                                        .report = sha256_report,
                                        .release = sha256_release};

static int stream_sha256(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    pv_stage_new(L, &sha256_ops, sizeof(sha256_tap), opts);
    return 1;
}

static int counter_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    return pv_emit(s, d, n, err);
}

static int counter_report(pv_stage *s, lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, (lua_Integer)s->bytes_in);
    lua_setfield(L, -2, "bytes");
    return 1;
}

static const pv_stage_ops counter_ops = {
    .name = "counter", .write = counter_write, .report = counter_report};

static int stream_counter(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    pv_stage_new(L, &counter_ops, sizeof(pv_stage), opts);
    return 1;
}

static int stream_is_stage(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, "pgvault.stage") != NULL);
    return 1;
}

int luaopen_pgvault_stream(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"run", stream_run},
                                     {"string", stream_string},
                                     {"buffer", stream_buffer},
                                     {"file_reader", stream_file_reader},
                                     {"file_writer", stream_file_writer},
                                     {"stdin", stream_stdin},
                                     {"stdout", stream_stdout},
                                     {"discard", stream_discard},
                                     {"sha256", stream_sha256},
                                     {"counter", stream_counter},
                                     {"zstd", pv_stream_zstd},
                                     {"unzstd", pv_stream_unzstd},
                                     {"progress", pv_stream_progress},
                                     {"handoff", pv_stream_handoff},
                                     {"is_stage", stream_is_stage},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
