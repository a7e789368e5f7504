/*
 * restorer.c: archive.restorer{}, a parallel restore that starts while the
 * archive is still arriving (the sink of `restore --jobs N`). As the bytes
 * pass:
 *  - the header and TOC are written to toc_file; once the TOC is whole, a
 *    thread runs the `predata` stage (pg_restore --section=pre-data on that
 *    file: the tables exist before any data goes in);
 *  - each data block becomes a job in the spill (spill.c): a table's COPY
 *    text (the job names its COPY statement), a table's INSERT statements,
 *    or a block of large objects as records (open OID, write N bytes,
 *    close) loaded in a transaction;
 *  - `workers` (pgvault.pg connections lent to the restorer, one thread
 *    each, libpq in-process: bindings/pg/load.c) take jobs in the order
 *    they started to arrive and feed them in while they arrive
 *    (PQputCopyData, statements, lo_write); a job nobody has taken yet
 *    waits in the spill, whose budget bounds memory;
 *  - a table's COPY text is cut at the end of a line every `split` bytes
 *    into pieces, each a COPY of its own, so that the sessions load one big
 *    table together (rows are lines in COPY text; the table's indexes,
 *    constraints and triggers come after, with post-data).
 * The archive is checked as the verifier checks it; a failure anywhere
 * stops everything. What remains (the data section's entries without
 * blocks, and post-data with pg_restore -j N on toc_file) is run by
 * scripts/lib/streamed_restore.lua after the stream has ended.
 *
 * A failure, an abort or Ctrl-C stops every worker: each blocked in a call
 * on its connection gets a cancel request, and a worker ends its
 * connection when it stops, so the server rolls back what it had begun.
 */
#include "parser.h"
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_WORKERS 16

typedef struct restorer restorer;

typedef struct {
    restorer *r;
    pg_load *load; /* NULL: a session that drops what it gets (tests) */
    pthread_t tid;
    bool started;
} worker;

struct restorer {
    pv_stage base;
    ar_parser p;
    ar_hooks hooks_copy;
    bool ready, complete, list;
    char toc_path[4096];
    int toc_fd;
    bool toc_written;
    worker workers[MAX_WORKERS];
    int nworkers;
    pv_stage *predata;
    pv_stage sink; /* where pre-data's pg_restore sends its (empty) output */
    pthread_t predata_tid;
    bool predata_started;
    sp_spill spill;
    bool spill_ready;
    size_t budget;
    sp_job **jobs; /* every job, freed at release */
    int njobs, jobs_cap;
    sp_job *cur;
    ar_entry *cur_entry;
    size_t split;    /* a table's COPY is cut into pieces of about this size */
    bool splitting;  /* the current block is COPY text that may be cut */
    bool line_start; /* the last byte appended ended a line */
    bool blobs;
    bool std_strings; /* the archive's standard_conforming_strings */
    char *preamble;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sync_ready;
    int predata_state; /* 0 running or not started, 1 done, -1 failed */
    double predata_seconds;
    bool failed;
    pv_err terr; /* the first failure of a thread or a hook */
};

static const pv_stage_ops sink_ops;

/* ------------------------------------------------------------------ */
/* Failures                                                            */
/* ------------------------------------------------------------------ */

/* Stops every worker: those waiting for bytes or jobs at once, those
 * blocked in a call on their connection by a cancel request. */
static void stop_all(restorer *r)
{
    sp_stop(&r->spill);
    for (int i = 0; i < r->nworkers; i++)
        if (r->workers[i].started) pg_load_cancel(r->workers[i].load);
}

/* Records the first failure, stops every thread. */
static void fail(restorer *r, const pv_err *err)
{
    pthread_mutex_lock(&r->mu);
    bool first = !r->failed;
    if (first) {
        r->failed = true;
        r->terr = *err;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (first) stop_all(r);
}

/* The first failure of a thread, for the pipeline's error. */
static int thread_failed(restorer *r, pv_err *err)
{
    pthread_mutex_lock(&r->mu);
    bool failed = r->failed;
    if (failed && !err->set) *err = r->terr;
    pthread_mutex_unlock(&r->mu);
    return failed ? -1 : 0;
}

/* A hook could not go on: the parser stops with the thread's error. */
static int hook_failed(restorer *r)
{
    pv_err e;
    pv_err_clear(&e);
    pv_err_set(&e, "internal", "out of memory for the restore's spill");
    if (!r->failed) fail(r, &e);
    thread_failed(r, r->p.err);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Threads: pre-data, and the workers                                  */
/* ------------------------------------------------------------------ */

static void *predata_main(void *arg)
{
    restorer *r = arg;
    pv_stage *st = r->predata;
    pv_err err;
    pv_err_clear(&err);
    double t0 = pv_now();
    st->next = &r->sink;
    st->state = PV_STAGE_STARTED;
    int rc = st->ops->start ? st->ops->start(st, &err) : 0;
    if (rc == 0) rc = st->ops->run(st, &err);
    if (rc == 0 && st->ops->finish) rc = st->ops->finish(st, &err);
    if (rc == 0) st->state = PV_STAGE_FINISHED;
    pthread_mutex_lock(&r->mu);
    r->predata_state = rc == 0 ? 1 : -1;
    r->predata_seconds = pv_now() - t0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc != 0) fail(r, &err);
    return NULL;
}

static int wait_predata(restorer *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->predata_state == 0 && !r->failed)
        pthread_cond_wait(&r->cv, &r->mu);
    int ok = r->predata_state == 1 && !r->failed;
    pthread_mutex_unlock(&r->mu);
    return ok ? 0 : -1;
}

/* The session's settings, then the jobs; the connection ends with the
 * worker (an unfinished transaction or COPY is rolled back with it). */
static void *worker_main(void *arg)
{
    worker *w = arg;
    restorer *r = w->r;
    pv_err err;
    pv_err_clear(&err);
    int rc = w->load ? pg_load_exec(w->load, r->preamble, &err) : 0;
    if (rc < 0) ar_err_prefix(&err, "setting up a restore session");
    if (rc == 0 && wait_predata(r) < 0) rc = -1; /* pre-data failed: it said why */
    while (rc == 0) {
        sp_job *j = sp_take(&r->spill);
        if (!j) break;
        rc = ar_load_job(&r->spill, w->load, j, r->std_strings, &err);
    }
    pg_load_close(w->load);
    if (rc != 0 && err.set) fail(r, &err);
    return NULL;
}

/* The TOC is on disk: pre-data starts, and the workers connect. */
static int start_threads(restorer *r, pv_err *err)
{
    if (pthread_create(&r->predata_tid, NULL, predata_main, r) != 0) goto fail;
    r->predata_started = true;
    for (int i = 0; i < r->nworkers; i++) {
        if (pthread_create(&r->workers[i].tid, NULL, worker_main, &r->workers[i]) != 0) goto fail;
        r->workers[i].started = true;
    }
    return 0;
fail:
    pv_err_set(err, "internal", "cannot start the restore's threads");
    return -1;
}

static void join_threads(restorer *r)
{
    if (r->predata_started) pthread_join(r->predata_tid, NULL);
    r->predata_started = false;
    for (int i = 0; i < r->nworkers; i++) {
        if (r->workers[i].started) pthread_join(r->workers[i].tid, NULL);
        r->workers[i].started = false;
    }
}

/* ------------------------------------------------------------------ */
/* Hooks: the archive as it passes                                     */
/* ------------------------------------------------------------------ */

/* The settings of pg_restore's sessions (_doSetFixedOutputState), with
 * the archive's own encoding, standard strings and search path; and
 * commits that do not wait for their WAL to reach the disk (a table's
 * pieces commit often): durability is unchanged for the restore as a
 * whole, since post-data's pg_restore and the swap commit synchronously
 * after it, and WAL is flushed in order. */
static int on_toc(void *ctx, ar_toc *t)
{
    restorer *r = ctx;
    static const char head[] = "SET statement_timeout = 0;\nSET lock_timeout = 0;\n"
                               "SET idle_in_transaction_session_timeout = 0;\n";
    static const char tail[] = "SET check_function_bodies = false;\nSET xmloption = content;\n"
                               "SET client_min_messages = warning;\nSET row_security = off;\n"
                               "SET synchronous_commit = off;\n";
    size_t len = sizeof head + sizeof tail;
    for (int i = 0; i < t->nentries; i++)
        if (t->entries[i].sql && !t->entries[i].had_dumper) len += strlen(t->entries[i].sql) + 1;
    r->preamble = malloc(len);
    if (!r->preamble) return hook_failed(r);
    strcpy(r->preamble, head);
    for (int i = 0; i < t->nentries; i++) {
        const char *sql = t->entries[i].had_dumper ? NULL : t->entries[i].sql;
        if (!sql) continue;
        if (t->entries[i].desc && strcmp(t->entries[i].desc, "STDSTRINGS") == 0)
            r->std_strings = strstr(sql, "'on'") != NULL;
        strcat(r->preamble, sql);
        if (sql[0] && sql[strlen(sql) - 1] != '\n') strcat(r->preamble, "\n");
    }
    strcat(r->preamble, tail);
    return 0;
}

static int append(restorer *r, const char *text, size_t len)
{
    return sp_append(&r->spill, r->cur, (const uint8_t *)text, len) < 0 ? hook_failed(r) : 0;
}

/* A new job for the block of entry e, queued at once. */
static int new_job(restorer *r, ar_entry *e)
{
    char name[280];
    ar_entry_name(e, name, sizeof name);
    if (r->njobs == r->jobs_cap) {
        int cap = r->jobs_cap ? r->jobs_cap * 2 : 64;
        sp_job **n = realloc(r->jobs, (size_t)cap * sizeof *n);
        if (!n) return hook_failed(r);
        r->jobs = n;
        r->jobs_cap = cap;
    }
    bool copy = !r->blobs && e->has_copy && e->sql;
    int kind = r->blobs ? JOB_LO : copy ? JOB_COPY : JOB_SQL;
    r->cur = sp_job_new(&r->spill, name, kind, copy ? e->sql : NULL);
    if (!r->cur) return hook_failed(r);
    r->jobs[r->njobs++] = r->cur;
    r->cur_entry = e;
    r->line_start = true;
    return 0;
}

/* INSERT statements: the data is the SQL. */
static int on_block_begin(void *ctx, ar_entry *e)
{
    restorer *r = ctx;
    r->blobs = strcmp(e->desc, "BLOBS") == 0;
    r->splitting = !r->blobs && e->has_copy && e->sql && r->split > 0;
    return new_job(r, e);
}

/* The piece of a table's COPY so far ends and the next one starts:
 * another session may load it at the same time. */
static int next_piece(restorer *r)
{
    sp_job_done(&r->spill, r->cur);
    return new_job(r, r->cur_entry);
}

/* COPY text, cut at a line's end once a piece has `split` bytes, until the
 * data's own end-of-data line has passed. */
static int copy_data(restorer *r, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (r->p.rows.done) return append(r, (const char *)data, len);
        if (r->cur->bytes >= r->split && r->line_start && next_piece(r) < 0) return -1;
        size_t n = len;
        size_t from = r->cur->bytes >= r->split ? 0 : r->split - r->cur->bytes;
        if (from < len) {
            const uint8_t *nl = memchr(data + from, '\n', len - from);
            if (nl) n = (size_t)(nl - data) + 1;
        }
        if (append(r, (const char *)data, n) < 0) return -1;
        r->line_start = data[n - 1] == '\n';
        data += n;
        len -= n;
    }
    return 0;
}

static int lo_record(restorer *r, uint8_t tag, uint32_t v)
{
    const char rec[5] = {(char)tag, (char)(v & 255), (char)(v >> 8 & 255), (char)(v >> 16 & 255),
                         (char)(v >> 24)};
    return append(r, rec, tag == LO_CLOSE ? 1 : 5);
}

static int on_lo_begin(void *ctx, ar_entry *e, uint32_t oid)
{
    (void)e;
    return lo_record(ctx, LO_OPEN, oid);
}

static int lo_data(restorer *r, const uint8_t *data, size_t len)
{
    while (len > 0) {
        size_t n = len < LO_PIECE ? len : LO_PIECE;
        if (lo_record(r, LO_WRITE, (uint32_t)n) < 0 || append(r, (const char *)data, n) < 0)
            return -1;
        data += n;
        len -= n;
    }
    return 0;
}

static int on_data(void *ctx, const uint8_t *data, size_t len)
{
    restorer *r = ctx;
    if (r->blobs) return lo_data(r, data, len);
    if (r->splitting) return copy_data(r, data, len);
    return append(r, (const char *)data, len);
}

static int on_lo_end(void *ctx, ar_entry *e)
{
    (void)e;
    return lo_record(ctx, LO_CLOSE, 0);
}

static int on_block_end(void *ctx, ar_entry *e)
{
    (void)e;
    restorer *r = ctx;
    sp_job_done(&r->spill, r->cur);
    r->cur = NULL;
    return 0;
}

static const ar_hooks restorer_hooks = {.toc_done = on_toc,
                                        .block_begin = on_block_begin,
                                        .lo_begin = on_lo_begin,
                                        .data = on_data,
                                        .lo_end = on_lo_end,
                                        .block_end = on_block_end};

/* ------------------------------------------------------------------ */
/* The stage                                                           */
/* ------------------------------------------------------------------ */

static int sink_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    (void)s, (void)d, (void)n, (void)err;
    return 0;
}

static const pv_stage_ops sink_ops = {.name = "discard", .write = sink_write};

static int restorer_start(pv_stage *s, pv_err *err)
{
    restorer *r = (restorer *)s;
    r->hooks_copy = restorer_hooks;
    r->hooks_copy.ctx = r;
    ar_parser_init(&r->p, err);
    r->ready = true;
    if (r->p.failed) return -1;
    r->p.hooks = &r->hooks_copy;
    r->p.keep_sql = true;
    r->p.pause_at_blocks = true;
    r->p.toc->read = (ar_read_mode){"stream", 1, 1, NULL};
    r->sink.ops = &sink_ops;
    if (sp_init(&r->spill, r->budget) < 0) goto oom;
    r->spill_ready = true;
    if (pthread_mutex_init(&r->mu, NULL) != 0) goto oom;
    if (pthread_cond_init(&r->cv, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        goto oom;
    }
    r->sync_ready = true;
    r->toc_fd = open(r->toc_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (r->toc_fd < 0) {
        pv_err_errno(err, errno, "cannot create %s", r->toc_path);
        return -1;
    }
    return 0;
oom:
    pv_err_set(err, "internal", "out of memory starting the restore");
    return -1;
}

/* The header and the TOC go to the file as they pass; once it is whole,
 * the threads start and the parser goes on to the data. */
static int write_toc(restorer *r, const uint8_t **d, size_t *n, pv_err *err)
{
    uint64_t before = r->p.pos;
    int rc = ar_parser_feed(&r->p, *d, *n);
    size_t used = (size_t)(r->p.pos - before);
    if (used > 0 && pv_write_all(r->toc_fd, *d, used) < 0) {
        pv_err_errno(err, errno, "cannot write %s", r->toc_path);
        return -1;
    }
    *d += used;
    *n -= used;
    if (rc < 0 || r->p.phase < AR_PH_BLOCKS) return rc;
    r->toc_written = true;
    r->p.pause_at_blocks = false;
    if (close(r->toc_fd) < 0) {
        r->toc_fd = -1;
        pv_err_errno(err, errno, "cannot write %s", r->toc_path);
        return -1;
    }
    r->toc_fd = -1;
    return start_threads(r, err);
}

static int restorer_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    restorer *r = (restorer *)s;
    r->p.err = err;
    if (thread_failed(r, err) < 0) return -1;
    if (!r->toc_written && write_toc(r, &d, &n, err) < 0) return -1;
    if (n > 0 && ar_parser_feed(&r->p, d, n) < 0) return -1;
    return thread_failed(r, err);
}

static int restorer_finish(pv_stage *s, pv_err *err)
{
    restorer *r = (restorer *)s;
    r->p.err = err;
    int rc = ar_parser_finish(&r->p);
    if (rc < 0) {
        stop_all(r);
        join_threads(r);
        return -1;
    }
    sp_end(&r->spill);
    join_threads(r);
    if (thread_failed(r, err) < 0) return -1;
    r->complete = true;
    return 0;
}

static void restorer_abort(pv_stage *s)
{
    restorer *r = (restorer *)s;
    if (!r->sync_ready) return;
    stop_all(r);
    join_threads(r);
    if (r->predata->state == PV_STAGE_STARTED && r->predata->ops->abort)
        r->predata->ops->abort(r->predata);
    if (r->predata->state == PV_STAGE_STARTED) r->predata->state = PV_STAGE_ABORTED;
}

static void restorer_release(pv_stage *s)
{
    restorer *r = (restorer *)s;
    restorer_abort(s);
    if (r->toc_fd >= 0) close(r->toc_fd);
    r->toc_fd = -1;
    for (int i = 0; i < r->njobs; i++)
        free(r->jobs[i]);
    free(r->jobs);
    r->jobs = NULL;
    r->njobs = 0;
    if (r->spill_ready) {
        r->spill.queue_head = r->spill.queue_tail = NULL; /* the jobs were freed above */
        sp_free(&r->spill);
    }
    r->spill_ready = false;
    if (r->sync_ready) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
    }
    r->sync_ready = false;
    free(r->preamble);
    r->preamble = NULL;
    for (int i = 0; i < r->nworkers; i++) {
        pg_load_free(r->workers[i].load);
        r->workers[i].load = NULL;
    }
    if (r->ready) ar_parser_free(&r->p);
    r->ready = false;
}

static int restorer_report(pv_stage *s, lua_State *L)
{
    restorer *r = (restorer *)s;
    if (r->ready && r->p.toc && r->p.phase >= AR_PH_BLOCKS) {
        ar_push_summary(L, r->p.toc, s->bytes_in, r->complete);
        if (r->list) {
            ar_list(L, r->p.toc, false);
            lua_setfield(L, -2, "list");
        }
    } else {
        lua_createtable(L, 0, 3);
        pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
        pv_set_bool(L, "complete", false);
    }
    lua_createtable(L, 0, 5);
    pv_set_int(L, "jobs", r->njobs);
    pv_set_int(L, "workers", r->nworkers);
    pv_set_int(L, "spill_peak",
               r->spill_ready ? (lua_Integer)r->spill.peak * (lua_Integer)SP_SLOT : 0);
    pv_set_num(L, "waited", r->spill_ready ? r->spill.waited : 0);
    pv_set_num(L, "predata_seconds", r->predata_seconds);
    lua_setfield(L, -2, "restore");
    return 1;
}

static const pv_stage_ops restorer_ops = {.name = "restorer",
                                          .start = restorer_start,
                                          .write = restorer_write,
                                          .finish = restorer_finish,
                                          .abort = restorer_abort,
                                          .report = restorer_report,
                                          .release = restorer_release};

static pv_stage *unused_stage(lua_State *L, int idx, bool source, const char *what)
{
    pv_stage *st = pv_stage_check(L, idx);
    if (st->state != PV_STAGE_NEW || st->released)
        luaL_error(L, "archive.restorer: %s (%s) was already used", what, st->ops->name);
    if (source ? !st->ops->run : !st->ops->write)
        luaL_error(L, "archive.restorer: %s (%s) must be a %s", what, st->ops->name,
                   source ? "source (pg_restore on toc_file)" : "sink");
    return st;
}

/* Checks workers[1..n]: each a pgvault.pg connection, open and given once,
 * or "discard". Leaves on the stack a copy of the list the restorer keeps
 * (the connections live as long as it does). */
static void check_workers(lua_State *L, int list, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
        lua_geti(L, list, i);
        const char *why =
            lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "discard") == 0
                ? NULL
                : pg_load_unusable(L, -1);
        if (why) luaL_error(L, "archive.restorer: worker %d %s", i, why);
        for (int k = 1; k < i && lua_type(L, -1) == LUA_TUSERDATA; k++) {
            lua_geti(L, -2, k);
            if (lua_rawequal(L, -1, -2)) luaL_error(L, "archive.restorer: a worker appears twice");
            lua_pop(L, 1);
        }
        lua_rawseti(L, -2, i);
    }
}

/* archive.restorer{toc_file=PATH, predata=STAGE, workers={CONN, ...},
 * spill=BYTES, split=BYTES, list=false, label=?}: each worker a
 * pgvault.pg connection, lent to the restorer for good (it ends it), or
 * "discard" (a session that drops the data: tests of the archive's path);
 * list=true puts pg_restore --list's text of the TOC in the report. */
int ar_restorer_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    const char *toc = pv_opt_str(L, 1, "toc_file", NULL);
    lua_Integer budget = pv_opt_int(L, 1, "spill", 64 << 20);
    if (!toc || strlen(toc) >= 4096) return luaL_argerror(L, 1, "toc_file= (a path) is required");
    if (budget < (lua_Integer)(2 * SP_SLOT) || budget > ((lua_Integer)64 << 30))
        return luaL_argerror(L, 1, "spill must be 2 MiB to 64 GiB");
    lua_getfield(L, 1, "predata"); /* 2 */
    pv_stage *pre = unused_stage(L, 2, true, "predata");
    if (lua_getfield(L, 1, "workers") != LUA_TTABLE) /* 3 */
        return luaL_argerror(L, 1, "workers= (a list of pgvault.pg connections) is required");
    int n = (int)luaL_len(L, 3);
    if (n < 1 || n > MAX_WORKERS) return luaL_argerror(L, 1, "workers: 1 to 16 connections");
    check_workers(L, 3, n);
    lua_replace(L, 3);
    restorer *r = pv_stage_new(L, &restorer_ops, sizeof *r, 1); /* 4 */
    snprintf(r->toc_path, sizeof r->toc_path, "%s", toc);
    r->toc_fd = -1;
    r->budget = (size_t)budget;
    r->list = pv_opt_bool(L, 1, "list", false);
    lua_Integer split = pv_opt_int(L, 1, "split", 32 << 20);
    if (split != 0 && (split < 65536 || split > ((lua_Integer)1 << 40)))
        return luaL_argerror(L, 1, "split must be 0 (a table in one piece) or at least 64 KiB");
    r->split = (size_t)split;
    r->predata = pre;
    for (int i = 0; i < n; i++) {
        lua_geti(L, 3, i + 1);
        r->workers[i].r = r;
        r->workers[i].load = pg_load_lend(L, -1);
        r->nworkers = i + 1;
        lua_pop(L, 1);
    }
    lua_createtable(L, 2, 0); /* the stages live as long as the restorer */
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 2);
    lua_setiuservalue(L, 4, 1);
    return 1;
}
