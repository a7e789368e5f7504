/*
 * unzstd_mt.c: stream.unzstd{threads = N} with N > 1: zstd decompression on
 * several threads. A frame can only be decoded in sequence, but a stream of
 * independent frames (stream.zstd{frame_size=}) can be decoded a frame per
 * thread. The stream's structure is walked as the compressed bytes arrive,
 * without decoding: frame headers and 3-byte block headers (RFC 8878) say
 * where each frame ends. Complete frames are gathered into jobs of about
 * 1 MiB compressed, or of at most about 4 MiB decoded (the walk bounds a
 * frame's decoded size by its blocks: 128 KiB at most each); each job is
 * decoded into its own buffer, and outputs are passed on in order by the
 * writer's thread. Of the N threads decoding, N - 1 are workers and one is
 * the writer's own: instead of waiting for the next output in order, it
 * decodes a job nobody has taken yet. So N threads run for N cores, never
 * N + 1: with a worker per core, the writer's thread (which also runs the
 * stages after this one: verify's digest and parser) got a share of a
 * core while it waited its turn, and verify of a 1.4 GB .zst on two cores
 * took ~20% longer (4.9-5.3 s against 4.1-4.4 s, measured side by side).
 * A frame too big for a job (a stream written as one frame, as every
 * backup before frame_size was) is decoded in sequence as it arrives, as
 * unzstd does, and so is a job whose output would grow past its bound.
 * Memory: max(2 x N, N + 4) jobs (6 on two cores: the writer can gather
 * ahead while outputs wait their turn) of at most 4 MiB in and 16 MiB out,
 * allocated as they are needed, and the jobs out decode to 4 MiB a slot
 * in all (24 MiB on two cores): jobs of bigger frames (older backups' 16
 * MiB) go out fewer at a time, in the first free slots, so the other
 * slots never hold 16 MiB (decoding such a backup peaked at 110 MiB
 * without the budget, 45 with it). With frames of 4 MiB (stream.zstd's
 * default here), 4 MiB out each, however well the data compresses.
 *
 * Errors read as unzstd's: the walk judges nothing itself; from anything it
 * does not know, the rest is decoded in sequence for libzstd to judge.
 */
#include "stages.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#define JOB_TARGET ((size_t)1 << 20)
#define JOB_OUT_TARGET ((size_t)4 << 20)
#define JOB_IN_MAX ((size_t)4 << 20)
#define JOB_OUT_MAX ((size_t)16 << 20)
#define MAX_THREADS 16
#define BLOCK_MAX (128 * 1024)

enum { SLOT_FREE, SLOT_FILLING, SLOT_QUEUED, SLOT_WORKING, SLOT_DONE, SLOT_TOO_BIG, SLOT_FAILED };

typedef struct {
    int state;
    uint64_t seq;
    uint64_t at; /* offset of its first byte in the compressed stream */
    uint8_t *in, *out;
    size_t in_len, in_cap, out_len, out_cap;
    size_t frame_start; /* where the frame being gathered starts in `in` */
    size_t out_bound;   /* its complete frames decode to at most this */
    char reason[96];
    size_t fail_at; /* input decoded when it failed */
} job;

/* Where the walk is: a frame's magic, the rest of its header, a block
 * header, a block's payload, the checksum, a skippable frame. */
enum { W_MAGIC, W_HEADER, W_BLOCK, W_PAYLOAD, W_CHECKSUM, W_SKIP_SIZE, W_SKIP };

typedef struct {
    pv_stage base;
    int threads, nslots;
    job slots[2 * MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int nstarted;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    bool sync_ready, stopping;
    uint64_t next_seq, emit_seq;
    int cur; /* the slot being filled, -1 */
    /* the walk */
    uint64_t pos; /* offset of the next byte in the compressed stream */
    int w;
    uint8_t hdr[18];
    size_t have, need;
    uint64_t left;
    bool in_frame, last_block, checksum;
    size_t frame_bound; /* the frame being walked decodes to at most this */
    /* decoding in sequence: a frame too big for a job, or (rest) all that
     * follows something the walk does not know, for libzstd to judge */
    bool big, rest;
    ZSTD_DCtx *dctx;
    uint8_t *out;
    size_t outcap, frame_left;
    uint64_t frames, frames_in_sequence;
    size_t job_out_max;      /* the largest output of a job decoded in parallel */
    ZSTD_DCtx *helper;       /* the writer's, for the jobs it decodes itself */
    uint64_t jobs_on_writer; /* how many it did */
} unzstd_mt;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int corrupt(unzstd_mt *u, const char *reason, uint64_t at, pv_err *err)
{
    (void)u;
    pv_err_set(err, "io", "not valid zstd data (%s) near compressed byte %llu", reason,
               (unsigned long long)at);
    pv_err_str(err, "reason", reason);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

/* Grows a job's buffer to hold `want` bytes, in steps of 1 MiB: a job's
 * size is about the same every time, so the buffer settles at it. */
static bool grow(uint8_t **buf, size_t *cap, size_t want, size_t max)
{
    if (want <= *cap) return true;
    size_t step = (size_t)1 << 20, n = (want + step - 1) / step * step;
    if (n > max) n = max;
    if (n < want) return false;
    uint8_t *p = realloc(*buf, n);
    if (!p) return false;
    *buf = p;
    *cap = n;
    return true;
}

/* Decodes a job of complete frames into its output buffer: in one call,
 * straight into the buffer (a streaming decoder copies every block out of
 * its window); on an error, again streaming, for the error's place. The
 * buffer is allocated at its bound once: only the pages written count. */
static int decode_job(ZSTD_DCtx *d, job *j)
{
    if (!d) {
        snprintf(j->reason, sizeof j->reason, "out of memory");
        return SLOT_FAILED;
    }
    if (grow(&j->out, &j->out_cap, JOB_OUT_MAX, JOB_OUT_MAX)) {
        size_t n = ZSTD_decompressDCtx(d, j->out, j->out_cap, j->in, j->in_len);
        if (!ZSTD_isError(n)) {
            j->out_len = n;
            return SLOT_DONE;
        }
        if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) return SLOT_TOO_BIG;
    }
    ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {j->in, j->in_len, 0};
    j->out_len = 0;
    for (;;) {
        if (j->out_len == j->out_cap && !grow(&j->out, &j->out_cap, j->out_len + 1, JOB_OUT_MAX))
            return SLOT_TOO_BIG;
        ZSTD_outBuffer out = {j->out, j->out_cap, j->out_len};
        size_t r = ZSTD_decompressStream(d, &out, &in);
        j->out_len = out.pos;
        if (ZSTD_isError(r)) {
            snprintf(j->reason, sizeof j->reason, "%s", ZSTD_getErrorName(r));
            j->fail_at = in.pos;
            return SLOT_FAILED;
        }
        if (in.pos == in.size && r == 0) return SLOT_DONE;
        if (in.pos == in.size && out.pos < out.size) { /* the walk saw the frame end */
            snprintf(j->reason, sizeof j->reason, "%s", "a frame ends early");
            j->fail_at = in.pos;
            return SLOT_FAILED;
        }
    }
}

static int oldest(unzstd_mt *u, int state)
{
    int k = -1;
    for (int i = 0; i < u->nslots; i++)
        if (u->slots[i].state == state && (k < 0 || u->slots[i].seq < u->slots[k].seq)) k = i;
    return k;
}

static void *worker_main(void *arg)
{
    unzstd_mt *u = arg;
    ZSTD_DCtx *d = ZSTD_createDCtx();
    pthread_mutex_lock(&u->mu);
    for (;;) {
        int k;
        while ((k = oldest(u, SLOT_QUEUED)) < 0 && !u->stopping)
            pthread_cond_wait(&u->work, &u->mu);
        if (u->stopping) break;
        u->slots[k].state = SLOT_WORKING;
        pthread_mutex_unlock(&u->mu);
        int state = decode_job(d, &u->slots[k]);
        pthread_mutex_lock(&u->mu);
        u->slots[k].state = state;
        pthread_cond_broadcast(&u->done);
    }
    pthread_mutex_unlock(&u->mu);
    ZSTD_freeDCtx(d);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Decoding in sequence                                                */
/* ------------------------------------------------------------------ */

static int stream_decode(unzstd_mt *u, const uint8_t *data, size_t len, uint64_t at, pv_err *err)
{
    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {u->out, u->outcap, 0};
        size_t r = ZSTD_decompressStream(u->dctx, &out, &in);
        if (ZSTD_isError(r)) return corrupt(u, ZSTD_getErrorName(r), at + in.pos, err);
        u->frame_left = r;
        if (out.pos > 0 && pv_emit(&u->base, u->out, out.pos, err) < 0) return -1;
        if (in.pos == in.size && (r == 0 || out.pos == 0)) return 0;
    }
}

/* ------------------------------------------------------------------ */
/* Jobs: in order                                                      */
/* ------------------------------------------------------------------ */

static void free_slot(unzstd_mt *u, job *j)
{
    pthread_mutex_lock(&u->mu);
    j->state = SLOT_FREE;
    j->in_len = j->out_len = j->frame_start = j->out_bound = 0;
    pthread_mutex_unlock(&u->mu);
}

/* Passes on the output of the next job in order, waiting for it when
 * `wait` (else only if it is done). Returns 1 if it did, 0 if not. */
static int emit_next(unzstd_mt *u, bool wait, pv_err *err)
{
    if (u->emit_seq == u->next_seq) return 0;
    pthread_mutex_lock(&u->mu);
    job *j = NULL;
    for (;;) {
        for (int i = 0; i < u->nslots; i++)
            if (u->slots[i].seq == u->emit_seq && u->slots[i].state >= SLOT_QUEUED)
                j = &u->slots[i];
        if (j && j->state >= SLOT_DONE) break;
        if (!wait) {
            pthread_mutex_unlock(&u->mu);
            return 0;
        }
        int k = oldest(u, SLOT_QUEUED);
        if (k >= 0) { /* a job nobody has taken yet: decoded here rather than waited for */
            u->slots[k].state = SLOT_WORKING;
            pthread_mutex_unlock(&u->mu);
            int state = decode_job(u->helper, &u->slots[k]);
            pthread_mutex_lock(&u->mu);
            u->slots[k].state = state;
            u->jobs_on_writer++;
            continue;
        }
        pthread_cond_wait(&u->done, &u->mu);
    }
    pthread_mutex_unlock(&u->mu);
    u->emit_seq++;
    int rc = 0;
    if (j->state == SLOT_FAILED)
        rc = corrupt(u, j->reason, j->at + j->fail_at, err);
    else if (j->state == SLOT_TOO_BIG) { /* decode it here, streaming */
        ZSTD_DCtx_reset(u->dctx, ZSTD_reset_session_only);
        u->frames_in_sequence++;
        rc = stream_decode(u, j->in, j->in_len, j->at, err);
    } else if (j->out_len > 0) {
        if (j->out_len > u->job_out_max) u->job_out_max = j->out_len;
        /* in pieces: the stages after it (a digest, the parser) each read
         * a piece while it is still in the core's cache */
        for (size_t o = 0; o < j->out_len && rc == 0; o += PV_STREAM_CHUNK)
            rc = pv_emit(&u->base, j->out + o,
                         j->out_len - o < PV_STREAM_CHUNK ? j->out_len - o : PV_STREAM_CHUNK, err);
    }
    free_slot(u, j);
    return rc < 0 ? -1 : 1;
}

static int drain(unzstd_mt *u, pv_err *err)
{
    int rc;
    while ((rc = emit_next(u, true, err)) > 0) {
    }
    return rc;
}

static void queue_job(unzstd_mt *u, job *j)
{
    pthread_mutex_lock(&u->mu);
    j->seq = u->next_seq++;
    j->state = SLOT_QUEUED;
    pthread_cond_signal(&u->work);
    pthread_mutex_unlock(&u->mu);
    u->cur = -1;
}

/* What the jobs given out and not yet passed on may decode to, at most. */
static size_t outstanding(unzstd_mt *u)
{
    size_t sum = 0;
    for (int i = 0; i < u->nslots; i++)
        if (u->slots[i].state >= SLOT_QUEUED) sum += u->slots[i].out_bound;
    return sum;
}

/* The slot to gather bytes into, starting one (waiting for a free slot,
 * passing on finished jobs) when there is none. A new one waits too while
 * the jobs out decode to the budget (4 MiB a slot) or more: jobs of older
 * backups' 16 MiB frames are fewer at a time, not 16 MiB a slot; the first
 * free slot is taken, so the same few hold them. */
static job *current(unzstd_mt *u, uint64_t at, pv_err *err)
{
    if (u->cur >= 0) return &u->slots[u->cur];
    for (;;) {
        pthread_mutex_lock(&u->mu);
        int k = -1;
        if (outstanding(u) < (size_t)u->nslots * JOB_OUT_TARGET)
            for (int i = 0; i < u->nslots && k < 0; i++)
                if (u->slots[i].state == SLOT_FREE) k = i;
        if (k >= 0) u->slots[k].state = SLOT_FILLING;
        pthread_mutex_unlock(&u->mu);
        if (k >= 0) {
            u->cur = k;
            u->slots[k].at = at;
            return &u->slots[k];
        }
        if (emit_next(u, true, err) < 0) return NULL;
    }
}

/* Appends bytes to a job's input (up to `max`). */
static int append(job *j, const uint8_t *p, size_t n, size_t max, pv_err *err)
{
    if (!grow(&j->in, &j->in_cap, j->in_len + n, max)) {
        pv_err_set(err, "internal", "out of memory for zstd decompression");
        return -1;
    }
    memcpy(j->in + j->in_len, p, n);
    j->in_len += n;
    return 0;
}

/* From the frame being gathered on, decoding goes in sequence (a frame too
 * big for a job, or something the walk does not know): the complete frames
 * before it go as a job; once every job is passed on, what was gathered of
 * this frame is decoded here, and so is everything that follows it. */
static int go_big(unzstd_mt *u, job *j, pv_err *err)
{
    size_t start = j->frame_start, tail = j->in_len - start;
    uint64_t at = j->at + start;
    if (start > 0) {
        j->in_len = start;
        queue_job(u, j);
    }
    if (drain(u, err) < 0) return -1;
    if (start == 0) free_slot(u, j);
    u->cur = -1;
    u->big = true;
    u->frames_in_sequence++;
    ZSTD_DCtx_reset(u->dctx, ZSTD_reset_session_only);
    /* the slot is free, but only this thread fills slots: its bytes stay */
    return stream_decode(u, j->in + start, tail, at, err);
}

/* Bytes of the stream at offset `at`, in order. */
static int take(unzstd_mt *u, const uint8_t *p, size_t n, uint64_t at, pv_err *err)
{
    if (u->big) return stream_decode(u, p, n, at, err);
    job *j = current(u, at, err);
    if (!j) return -1;
    bool too_big = j->in_len + n > JOB_IN_MAX;
    if (append(j, p, n, JOB_IN_MAX + (too_big ? n : 0), err) < 0) return -1;
    return too_big ? go_big(u, j, err) : 0;
}

/* ------------------------------------------------------------------ */
/* The walk: where frames end                                          */
/* ------------------------------------------------------------------ */

static void expect(unzstd_mt *u, int w, size_t need)
{
    u->w = w;
    u->have = 0;
    u->need = need;
}

/* A frame has ended: a job that is big enough goes to the workers; a
 * frame decoded in sequence must have ended for its decoder too. */
static int frame_end(unzstd_mt *u, pv_err *err)
{
    u->in_frame = false;
    u->frames++;
    expect(u, W_MAGIC, 4);
    if (u->big) {
        u->big = false;
        if (u->frame_left != 0) return corrupt(u, "a frame ends early", u->pos, err);
        return 0;
    }
    job *j = &u->slots[u->cur];
    j->frame_start = j->in_len;
    j->out_bound += u->frame_bound;
    if (j->in_len >= JOB_TARGET || j->out_bound >= JOB_OUT_TARGET) queue_job(u, j);
    return 0;
}

/* Something the walk does not know (another magic number, a legacy
 * frame, a reserved bit or block type): from the frame it is in on,
 * everything is decoded in sequence, and libzstd says what is wrong,
 * exactly as unzstd on one thread would. */
static int rest_in_sequence(unzstd_mt *u, pv_err *err)
{
    (void)err;
    u->rest = true; /* walk() hands the rest over */
    return 0;
}

/* The walk stopped at something it does not know, `n` bytes before the
 * end of this write: those go with what was gathered of the frame, in one
 * call, so libzstd sees the stream as unzstd on one thread would. */
static int hand_over_rest(unzstd_mt *u, const uint8_t *p, size_t n, pv_err *err)
{
    u->pos += n;
    if (u->big) return stream_decode(u, p, n, u->pos - n, err);
    job *j = &u->slots[u->cur];
    if (append(j, p, n, j->in_len + n, err) < 0) return -1;
    return go_big(u, j, err);
}

/* Size of a frame header from its descriptor byte (RFC 8878 3.1.1.1). */
static size_t header_size(uint8_t fhd)
{
    static const size_t did[4] = {0, 1, 2, 4}, fcs[4] = {0, 2, 4, 8};
    bool single = (fhd >> 5) & 1;
    size_t fcs_size = fcs[fhd >> 6] + ((fhd >> 6) == 0 && single ? 1 : 0);
    return 4 + 1 + (single ? 0 : 1) + did[fhd & 3] + fcs_size;
}

static int on_magic(unzstd_mt *u, pv_err *err)
{
    uint32_t magic = le32(u->hdr);
    u->in_frame = true;
    u->frame_bound = 0;
    if (magic == ZSTD_MAGICNUMBER) {
        expect(u, W_HEADER, 5);
        u->have = 4;
        return 0;
    }
    if ((magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START) {
        expect(u, W_SKIP_SIZE, 8);
        u->have = 4;
        return 0;
    }
    return rest_in_sequence(u, err);
}

static int on_header(unzstd_mt *u, pv_err *err)
{
    uint8_t fhd = u->hdr[4];
    if (fhd & 0x08) return rest_in_sequence(u, err); /* a reserved bit */
    size_t size = header_size(fhd);
    if (u->need < size) { /* the descriptor says how long the rest is */
        u->need = size;
        return 0;
    }
    u->checksum = (fhd >> 2) & 1;
    expect(u, W_BLOCK, 3);
    return 0;
}

static int on_block(unzstd_mt *u, pv_err *err)
{
    uint32_t h = (uint32_t)u->hdr[0] | (uint32_t)u->hdr[1] << 8 | (uint32_t)u->hdr[2] << 16;
    int type = (h >> 1) & 3;
    uint32_t size = h >> 3;
    u->last_block = h & 1;
    if (type == 3 || (type != 1 && size > BLOCK_MAX)) return rest_in_sequence(u, err);
    expect(u, W_PAYLOAD, 0);
    u->left = type == 1 ? 1 : size;
    u->frame_bound += type == 2 ? BLOCK_MAX : size; /* raw and RLE: the size itself */
    return 0;
}

/* A block's payload, the checksum or a skippable frame is over. */
static int on_element_end(unzstd_mt *u, pv_err *err)
{
    if (u->w == W_PAYLOAD && !u->last_block) {
        expect(u, W_BLOCK, 3);
        return 0;
    }
    if (u->w == W_PAYLOAD && u->checksum) {
        expect(u, W_CHECKSUM, 4);
        return 0;
    }
    return frame_end(u, err);
}

static int on_fixed(unzstd_mt *u, pv_err *err)
{
    switch (u->w) {
    case W_MAGIC:
        return on_magic(u, err);
    case W_HEADER:
        return on_header(u, err);
    case W_BLOCK:
        if (on_block(u, err) < 0) return -1;
        return u->left == 0 ? on_element_end(u, err) : 0;
    case W_SKIP_SIZE:
        expect(u, W_SKIP, 0);
        u->left = le32(u->hdr + 4);
        return u->left == 0 ? frame_end(u, err) : 0;
    default: /* W_CHECKSUM */
        return frame_end(u, err);
    }
}

static int walk(unzstd_mt *u, const uint8_t *p, size_t n, pv_err *err)
{
    if (u->rest) {
        u->pos += n;
        return stream_decode(u, p, n, u->pos - n, err);
    }
    while (n > 0 && !u->rest) {
        size_t k;
        bool whole;
        if (u->w == W_PAYLOAD || u->w == W_SKIP) {
            k = n < u->left ? n : (size_t)u->left;
            u->left -= k;
            whole = u->left == 0;
        } else {
            k = u->need - u->have < n ? u->need - u->have : n;
            memcpy(u->hdr + u->have, p, k);
            u->have += k;
            whole = u->have == u->need;
        }
        if (take(u, p, k, u->pos, err) < 0) return -1;
        u->pos += k;
        p += k;
        n -= k;
        if (!whole) continue;
        int rc = u->w == W_PAYLOAD || u->w == W_SKIP ? on_element_end(u, err) : on_fixed(u, err);
        if (rc < 0) return -1;
    }
    return u->rest ? hand_over_rest(u, p, n, err) : 0;
}

/* ------------------------------------------------------------------ */
/* The stage                                                           */
/* ------------------------------------------------------------------ */

static int mt_start(pv_stage *s, pv_err *err)
{
    unzstd_mt *u = (unzstd_mt *)s;
    u->cur = -1;
    u->nslots = u->threads + 4 > 2 * u->threads ? u->threads + 4 : 2 * u->threads;
    expect(u, W_MAGIC, 4);
    u->dctx = ZSTD_createDCtx();
    u->helper = ZSTD_createDCtx();
    u->outcap = ZSTD_DStreamOutSize();
    u->out = malloc(u->outcap);
    if (!u->dctx || !u->helper || !u->out || pthread_mutex_init(&u->mu, NULL) != 0) goto fail;
    if (pthread_cond_init(&u->work, NULL) != 0) {
        pthread_mutex_destroy(&u->mu);
        goto fail;
    }
    if (pthread_cond_init(&u->done, NULL) != 0) {
        pthread_cond_destroy(&u->work);
        pthread_mutex_destroy(&u->mu);
        goto fail;
    }
    u->sync_ready = true;
    for (int i = 0; i < u->threads - 1; i++) { /* the writer's thread is one of them */
        if (pthread_create(&u->tids[i], NULL, worker_main, u) != 0) break;
        u->nstarted++;
    }
    if (u->nstarted == 0) goto fail;
    return 0;
fail:
    pv_err_set(err, "internal", "cannot start zstd decompression on %d threads", u->threads);
    return -1;
}

static int mt_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    unzstd_mt *u = (unzstd_mt *)s;
    if (walk(u, data, len, err) < 0) return -1;
    int rc;
    while ((rc = emit_next(u, false, err)) > 0) { /* what is ready, without waiting */
    }
    return rc;
}

static int mt_finish(pv_stage *s, pv_err *err)
{
    unzstd_mt *u = (unzstd_mt *)s;
    if (s->bytes_in == 0) {
        pv_err_set(err, "io", "empty input: not a zstd stream");
        return -1;
    }
    bool cut = u->rest ? u->frame_left != 0 : u->in_frame || u->have > 0;
    if (cut) { /* inside a frame, or its magic */
        pv_err_set(err, "io",
                   "zstd data is truncated: input ended inside a frame after %llu bytes "
                   "(an incomplete download or copy?)",
                   (unsigned long long)s->bytes_in);
        return -1;
    }
    if (u->cur >= 0 && u->slots[u->cur].in_len > 0) queue_job(u, &u->slots[u->cur]);
    return drain(u, err);
}

static void mt_abort(pv_stage *s)
{
    unzstd_mt *u = (unzstd_mt *)s;
    if (!u->sync_ready) return;
    pthread_mutex_lock(&u->mu);
    u->stopping = true;
    pthread_cond_broadcast(&u->work);
    pthread_mutex_unlock(&u->mu);
    for (int i = 0; i < u->nstarted; i++)
        pthread_join(u->tids[i], NULL);
    u->nstarted = 0;
}

static void mt_release(pv_stage *s)
{
    unzstd_mt *u = (unzstd_mt *)s;
    mt_abort(s); /* after a clean finish: stops the idle workers */
    if (u->sync_ready) {
        pthread_cond_destroy(&u->done);
        pthread_cond_destroy(&u->work);
        pthread_mutex_destroy(&u->mu);
        u->sync_ready = false;
    }
    for (int i = 0; i < 2 * MAX_THREADS; i++) {
        free(u->slots[i].in);
        free(u->slots[i].out);
        u->slots[i].in = u->slots[i].out = NULL;
    }
    ZSTD_freeDCtx(u->dctx);
    u->dctx = NULL;
    ZSTD_freeDCtx(u->helper);
    u->helper = NULL;
    free(u->out);
    u->out = NULL;
}

static int mt_report(pv_stage *s, lua_State *L)
{
    unzstd_mt *u = (unzstd_mt *)s;
    lua_createtable(L, 0, 8);
    pv_set_int(L, "bytes_in", (lua_Integer)s->bytes_in);
    pv_set_int(L, "bytes_out", (lua_Integer)s->bytes_out);
    pv_set_int(L, "threads", u->threads);
    pv_set_int(L, "frames", (lua_Integer)u->frames);
    pv_set_int(L, "frames_in_sequence", (lua_Integer)u->frames_in_sequence);
    pv_set_int(L, "frames_in_parallel", (lua_Integer)(u->frames - u->frames_in_sequence));
    pv_set_int(L, "job_out_max", (lua_Integer)u->job_out_max);
    pv_set_int(L, "jobs_on_writer", (lua_Integer)u->jobs_on_writer);
    return 1;
}

static const pv_stage_ops unzstd_mt_ops = {.name = "unzstd",
                                           .start = mt_start,
                                           .write = mt_write,
                                           .finish = mt_finish,
                                           .abort = mt_abort,
                                           .report = mt_report,
                                           .release = mt_release};

int pv_stream_unzstd_mt(lua_State *L, int opts, int threads)
{
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    unzstd_mt *u = pv_stage_new(L, &unzstd_mt_ops, sizeof *u, opts);
    u->threads = threads;
    return 1;
}
