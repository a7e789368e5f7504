/*
 * file.c: whole-file verification. The header and TOC are read first; when
 * every data entry has a stored position (pg_dump wrote to a seekable file)
 * the data area is cut at block boundaries into one range per thread and
 * each thread inflates its own blocks, checking that each block starts
 * exactly where the TOC says and ends where the next one begins. Without
 * positions (pg_dump wrote to a pipe) the blocks are read in sequence.
 * With fill_offsets, the positions found are written into the TOC's offset
 * fields in place, so pg_restore can seek (parallel restore).
 */
#include "archive.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define MAX_THREADS 16

typedef struct range_job {
    ar_toc *toc;
    int fd;
    int first, last;
    uint64_t start, end;
    bool bounded; /* not the last range: the next block's offset is the end */
    pv_err err;
    int rc;
} range_job;

static int read_range(ar_parser *p, int fd, uint64_t from, uint64_t to, pv_err *err)
{
    uint8_t *buf = malloc(READ_CHUNK);
    if (!buf) {
        pv_err_set(err, "archive", "out of memory");
        return -1;
    }
    uint64_t at = from;
    int rc = 0;
    while (at < to) {
        if (pv_interrupted()) {
            pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
            rc = -1;
            break;
        }
        size_t want = to - at < READ_CHUNK ? (size_t)(to - at) : READ_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            pv_err_errno(err, errno, "cannot read the archive at byte %llu",
                         (unsigned long long)at);
            rc = -1;
            break;
        }
        if (n == 0) break; /* the file shrank: the parser reports truncation */
        if (ar_parser_feed(p, buf, (size_t)n) < 0) {
            rc = -1;
            break;
        }
        at += (uint64_t)n;
        if (p->pause_at_blocks && p->phase == AR_PH_BLOCKS) break;
    }
    free(buf);
    return rc;
}

static void *range_main(void *arg)
{
    range_job *j = arg;
    ar_parser p;
    ar_parser_init_blocks(&p, j->toc, j->first, j->last, j->start, &j->err);
    if (j->bounded) p.end_limit = j->end;
    j->rc = read_range(&p, j->fd, j->start, j->end, &j->err);
    if (j->rc == 0) j->rc = ar_parser_finish(&p);
    ar_parser_free(&p);
    return NULL;
}

static long long err_offset(const pv_err *e)
{
    for (int i = 0; i < e->nfields; i++)
        if (strcmp(e->fields[i].key, "offset") == 0) return e->fields[i].num;
    return -1;
}

/* Why the data area cannot be cut into ranges of blocks read at the same
 * time, or NULL when it can: the positions must be where sequential
 * blocks would be, the first right after the TOC, then increasing. */
static const char *no_split_reason(const ar_toc *t, uint64_t size, int threads)
{
    if (threads < 2) return "one thread was asked for";
    if (t->ndata < 2) return "the archive has fewer than two data blocks";
    if (!t->all_offsets) return "the TOC has no data offsets (pg_dump wrote to a pipe)";
    uint64_t prev = t->toc_end;
    for (int i = 0; i < t->ndata; i++) {
        uint64_t o = t->entries[t->data_idx[i]].off_pos;
        if ((i == 0 && o != t->toc_end) || (i > 0 && o <= prev) || o >= size)
            return "the TOC's data offsets are not where the blocks are";
        prev = o;
    }
    return NULL;
}

/* Cuts the data area at block boundaries into at most `threads` ranges of
 * about equal size; returns how many. */
static int plan_ranges(ar_toc *t, int fd, uint64_t size, int threads, range_job *jobs)
{
    uint64_t data = size - t->toc_end, target = data / (uint64_t)threads + 1;
    int njobs = 0, first = 0;
    for (int i = 0; i < t->ndata && njobs < threads; i++) {
        uint64_t start = t->entries[t->data_idx[first]].off_pos;
        uint64_t next = i + 1 < t->ndata ? t->entries[t->data_idx[i + 1]].off_pos : size;
        bool last_job = njobs == threads - 1 || i + 1 == t->ndata;
        if (next - start < target && !last_job) continue;
        if (last_job) {
            i = t->ndata - 1;
            next = size;
        }
        range_job *j = &jobs[njobs++];
        memset(j, 0, sizeof *j);
        j->toc = t;
        j->fd = fd;
        j->first = first;
        j->last = i;
        j->start = start;
        j->end = next;
        j->bounded = i + 1 < t->ndata;
        first = i + 1;
    }
    return njobs;
}

/* Runs every range, each on a thread of its own where one can be started
 * (the rest on this thread); records how many ran at the same time. */
static void run_ranges(ar_toc *t, range_job *jobs, int njobs)
{
    pthread_t tids[MAX_THREADS];
    bool started[MAX_THREADS];
    int nstarted = 0, ninline = 0;
    for (int k = 0; k < njobs; k++) {
        started[k] = pthread_create(&tids[k], NULL, range_main, &jobs[k]) == 0;
        nstarted += started[k];
    }
    for (int k = 0; k < njobs; k++) {
        if (started[k]) continue;
        range_main(&jobs[k]);
        ninline++;
    }
    for (int k = 0; k < njobs; k++)
        if (started[k]) pthread_join(tids[k], NULL);
    int threads = nstarted + (ninline > 0);
    t->read = (ar_read_mode){threads > 1 ? "parallel" : "sequential", threads, njobs,
                             threads > 1 ? NULL : "no thread could be started"};
}

static int read_parallel(ar_toc *t, int fd, uint64_t size, int threads, pv_err *err)
{
    if (threads > t->ndata) threads = t->ndata;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    range_job jobs[MAX_THREADS];
    int njobs = plan_ranges(t, fd, size, threads, jobs);
    run_ranges(t, jobs, njobs);
    int worst = -1;
    for (int k = 0; k < njobs; k++) {
        if (jobs[k].rc == 0) continue;
        if (worst < 0 || err_offset(&jobs[k].err) < err_offset(&jobs[worst].err)) worst = k;
    }
    if (worst < 0) return 0;
    *err = jobs[worst].err;
    return -1;
}

static int fill(ar_toc *t, int fd, pv_err *err)
{
    for (int i = 0; i < t->ndata; i++) {
        ar_entry *e = &t->entries[t->data_idx[i]];
        if (e->off_flag == AR_OFF_SET) continue;
        if (t->off_size < 8 && (e->block_pos >> (8 * t->off_size)) != 0) {
            pv_err_set(err, "archive", "byte %llu does not fit the archive's %d-byte offsets",
                       (unsigned long long)e->block_pos, t->off_size);
            return -1;
        }
        uint8_t field[9];
        field[0] = AR_OFF_SET;
        for (int k = 0; k < t->off_size; k++)
            field[1 + k] = (uint8_t)(e->block_pos >> (8 * k));
        if (pwrite(fd, field, (size_t)(1 + t->off_size), (off_t)e->off_field_pos) !=
            1 + t->off_size) {
            pv_err_errno(err, errno, "cannot write the data offsets into the archive");
            return -1;
        }
        e->off_flag = AR_OFF_SET;
        e->off_pos = e->block_pos;
    }
    if (fsync(fd) < 0) {
        pv_err_errno(err, errno, "cannot flush the archive to disk");
        return -1;
    }
    t->all_offsets = t->ndata > 0;
    return 0;
}

int ar_read_file(const char *path, int threads, bool fill_offsets, int list, ar_toc **out,
                 uint64_t *bytes, pv_err *err)
{
    *out = NULL;
    *bytes = 0;
    int fd = open(path, (fill_offsets ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        pv_err_errno(err, errno, "cannot open %s", path);
        pv_err_str(err, "path", path);
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        pv_err_set(err, "io", "%s is not a regular file", path);
        pv_err_str(err, "path", path);
        close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)sb.st_size;
    *bytes = size;
    ar_parser p;
    ar_parser_init(&p, err);
    p.lean = true;
    p.list = list;
    p.pause_at_blocks = true;
    int rc = read_range(&p, fd, 0, size, err);
    if (rc == 0 && p.phase != AR_PH_BLOCKS) rc = ar_parser_finish(&p); /* ends in the TOC */
    if (rc == 0) {
        p.pause_at_blocks = false;
        const char *why = no_split_reason(p.toc, size, threads);
        if (!why) {
            rc = read_parallel(p.toc, fd, size, threads, err);
        } else {
            p.toc->read = (ar_read_mode){"sequential", 1, 1, why};
            if ((rc = read_range(&p, fd, p.pos, size, err)) == 0) rc = ar_parser_finish(&p);
        }
    }
    if (rc == 0 && fill_offsets) rc = fill(p.toc, fd, err);
    if (p.phase >= AR_PH_BLOCKS) {
        *out = p.toc;
        p.owns_toc = false;
    }
    ar_parser_free(&p);
    close(fd);
    return rc;
}

int ar_fill_positions(const char *path, int off_size, int n, const uint64_t *field,
                      const uint64_t *pos, pv_err *err)
{
    if (off_size < 1 || off_size > 8) {
        pv_err_set(err, "archive", "offset size %d is not 1 to 8", off_size);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        pv_err_errno(err, errno, "cannot open %s", path);
        pv_err_str(err, "path", path);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        uint8_t cur[9], want[9];
        size_t len = (size_t)(1 + off_size);
        want[0] = AR_OFF_SET;
        for (int k = 0; k < off_size; k++)
            want[1 + k] = (uint8_t)(pos[i] >> (8 * k));
        if (off_size < 8 && (pos[i] >> (8 * off_size)) != 0) {
            pv_err_set(err, "archive", "byte %llu does not fit the archive's %d-byte offsets",
                       (unsigned long long)pos[i], off_size);
            rc = -1;
        } else if (pread(fd, cur, len, (off_t)field[i]) != (ssize_t)len) {
            pv_err_errno(err, errno, "cannot read the TOC of %s", path);
            rc = -1;
        } else if (!(cur[0] == AR_OFF_NOT_SET || memcmp(cur, want, len) == 0)) {
            pv_err_set(err, "archive", "%s: byte %llu is not an unset data offset: wrong file?",
                       path, (unsigned long long)field[i]);
            rc = -1;
        } else if (pwrite(fd, want, len, (off_t)field[i]) != (ssize_t)len) {
            pv_err_errno(err, errno, "cannot write the data offsets into %s", path);
            rc = -1;
        }
    }
    if (rc == 0 && fsync(fd) < 0) {
        pv_err_errno(err, errno, "cannot flush %s to disk", path);
        rc = -1;
    }
    close(fd);
    return rc;
}
