/*
 * zstd.c: the zstd stages of pgvault.stream: a compressing filter on
 * libzstd's multithreaded streaming API (ZSTD_c_nbWorkers, all cores by
 * default), in independent frames of frame_size input bytes so that they
 * can be decompressed in parallel, and a decompressing filter that accepts
 * concatenated frames and tells corrupt input from truncated input.
 */
#include "stages.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* The smallest default frame: with level 3's ratio on database rows, about
 * 2 MiB compressed, well inside a decoding job of unzstd_mt.c. */
#define PV_ZSTD_FRAME_MIN (4LL << 20)

/* ------------------------------------------------------------------ */
/* compress                                                            */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    ZSTD_CCtx *cctx;
    int level;
    int threads; /* workers actually in use (0: compress in this thread) */
    int requested_threads;
    long job_size;
    long long frame_size; /* input bytes per frame; 0: one frame; -1: default */
    long long frame_in;   /* input bytes in the current frame */
    long long frames;     /* frames ended */
    bool checksum;
    uint8_t *out;
    size_t outcap;
} zstd_filter;

static int zstd_start(pv_stage *s, pv_err *err)
{
    zstd_filter *z = (zstd_filter *)s;
    z->cctx = ZSTD_createCCtx();
    z->outcap = ZSTD_CStreamOutSize();
    z->out = malloc(z->outcap);
    if (!z->cctx || !z->out) {
        pv_err_set(err, "internal", "out of memory starting zstd compression");
        return -1;
    }
    size_t r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, z->level);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, z->checksum);
    if (ZSTD_isError(r)) {
        pv_err_set(err, "internal", "cannot configure zstd: %s", ZSTD_getErrorName(r));
        return -1;
    }
    int workers = z->requested_threads;
    if (workers == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        workers = cpus > 0 ? (int)cpus : 1;
    }
    /* A libzstd built without threads refuses nbWorkers: compress inline. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_nbWorkers, workers))) workers = 0;
    /* Each worker holds a job's input and output: smaller jobs than the
     * default (4 windows, 8 MiB at level 3) bound memory with the same
     * ratio, since jobs still overlap by part of a window. */
    if (workers > 0 && z->job_size > 0)
        ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_jobSize, (int)z->job_size);
    z->threads = workers;
    /* Independent frames decode in parallel (stream.unzstd{threads=}), a
     * frame per decoding job, and its jobs hold at most 4 MiB compressed:
     * a frame is one job per worker (every worker busy until the frame's
     * end flushes them) and at least 4 MiB: 4 MiB on 2 workers of 2 MiB
     * jobs, 16 MiB on 8 (those decode in sequence, as single frames do). */
    if (z->frame_size < 0) {
        long long jobs =
            (long long)(workers > 0 ? workers : 1) * (z->job_size > 0 ? z->job_size : 2LL << 20);
        z->frame_size = jobs > PV_ZSTD_FRAME_MIN ? jobs : PV_ZSTD_FRAME_MIN;
    }
    return 0;
}

/* Runs the compressor over `in` with directive `op`, emitting output. */
static int zstd_pump(zstd_filter *z, ZSTD_inBuffer *in, ZSTD_EndDirective op, pv_err *err)
{
    for (;;) {
        ZSTD_outBuffer out = {z->out, z->outcap, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, in, op);
        if (ZSTD_isError(left)) {
            pv_err_set(err, "io", "zstd compression failed: %s", ZSTD_getErrorName(left));
            return -1;
        }
        if (out.pos > 0 && pv_emit(&z->base, z->out, out.pos, err) < 0) return -1;
        if (op == ZSTD_e_end ? left == 0 : in->pos == in->size) return 0;
    }
}

static int zstd_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    zstd_filter *z = (zstd_filter *)s;
    while (len > 0) {
        size_t n = len;
        bool ends = false;
        if (z->frame_size > 0 && z->frame_in + (long long)n >= z->frame_size) {
            n = (size_t)(z->frame_size - z->frame_in);
            ends = true;
        }
        ZSTD_inBuffer in = {data, n, 0};
        if (zstd_pump(z, &in, ends ? ZSTD_e_end : ZSTD_e_continue, err) < 0) return -1;
        z->frame_in = ends ? 0 : z->frame_in + (long long)n;
        z->frames += ends;
        data += n;
        len -= n;
    }
    return 0;
}

static int zstd_finish(pv_stage *s, pv_err *err)
{
    zstd_filter *z = (zstd_filter *)s;
    if (s->bytes_in > 0 && z->frame_in == 0) return 0; /* the last frame ended with the input */
    ZSTD_inBuffer in = {NULL, 0, 0};
    if (zstd_pump(z, &in, ZSTD_e_end, err) < 0) return -1;
    z->frames++;
    return 0;
}

static void zstd_release(pv_stage *s)
{
    zstd_filter *z = (zstd_filter *)s;
    ZSTD_freeCCtx(z->cctx); /* joins the worker threads */
    z->cctx = NULL;
    free(z->out);
    z->out = NULL;
}

static int zstd_report(pv_stage *s, lua_State *L)
{
    zstd_filter *z = (zstd_filter *)s;
    lua_createtable(L, 0, 5);
    pv_set_int(L, "bytes_in", (lua_Integer)s->bytes_in);
    pv_set_int(L, "bytes_out", (lua_Integer)s->bytes_out);
    pv_set_num(L, "ratio", s->bytes_in ? (double)s->bytes_out / (double)s->bytes_in : 0.0);
    pv_set_int(L, "level", z->level);
    pv_set_int(L, "threads", z->threads);
    pv_set_int(L, "frames", z->frames);
    pv_set_int(L, "frame_size", z->frame_size > 0 ? z->frame_size : 0);
    return 1;
}

static const pv_stage_ops zstd_ops = {.name = "zstd",
                                      .start = zstd_start,
                                      .write = zstd_write,
                                      .finish = zstd_finish,
                                      .report = zstd_report,
                                      .release = zstd_release};

int pv_stream_zstd(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    lua_Integer level = pv_opt_int(L, opts, "level", 3);
    lua_Integer threads = pv_opt_int(L, opts, "threads", 0);
    bool checksum = pv_opt_bool(L, opts, "checksum", true);
    static const char *const known[] = {"level",      "threads", "checksum", "job_size",
                                        "frame_size", "label",   NULL};
    pv_opt_only(L, opts, known);
    lua_Integer job_size = pv_opt_int(L, opts, "job_size", 2 << 20);
    lua_Integer frame_size = pv_opt_int(L, opts, "frame_size", -1);
    if (frame_size < -1 || (frame_size > 0 && frame_size < (64 << 10)))
        return luaL_argerror(L, 1, "frame_size must be 0 (one frame) or at least 64 KiB");
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return luaL_argerror(
            L, 1,
            lua_pushfstring(L, "zstd level must be %d..%d", ZSTD_minCLevel(), ZSTD_maxCLevel()));
    if (threads < 0 || threads > 256) return luaL_argerror(L, 1, "threads must be 0..256");
    if (job_size != 0 && (job_size < (1 << 20) || job_size > (512 << 20)))
        return luaL_argerror(L, 1, "job_size must be 0 (libzstd's default) or 1 MiB..512 MiB");
    zstd_filter *z = pv_stage_new(L, &zstd_ops, sizeof *z, opts);
    z->level = (int)level;
    z->requested_threads = (int)threads;
    z->checksum = checksum;
    z->job_size = (long)job_size;
    z->frame_size = frame_size;
    return 1;
}

/* ------------------------------------------------------------------ */
/* decompress                                                          */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    ZSTD_DCtx *dctx;
    uint8_t *out;
    size_t outcap;
    size_t frame_left; /* last ZSTD_decompressStream hint: 0 at a frame end */
    long long frames;  /* frames ended */
} unzstd_filter;

static int unzstd_start(pv_stage *s, pv_err *err)
{
    unzstd_filter *u = (unzstd_filter *)s;
    u->dctx = ZSTD_createDCtx();
    u->outcap = ZSTD_DStreamOutSize();
    u->out = malloc(u->outcap);
    if (!u->dctx || !u->out) {
        pv_err_set(err, "internal", "out of memory starting zstd decompression");
        return -1;
    }
    u->frame_left = 0;
    return 0;
}

static int unzstd_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    unzstd_filter *u = (unzstd_filter *)s;
    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {u->out, u->outcap, 0};
        size_t was = in.pos;
        size_t r = ZSTD_decompressStream(u->dctx, &out, &in);
        if (ZSTD_isError(r)) {
            pv_err_set(err, "io", "not valid zstd data (%s) near compressed byte %llu",
                       ZSTD_getErrorName(r), (unsigned long long)(s->bytes_in - len + in.pos));
            pv_err_str(err, "reason", ZSTD_getErrorName(r));
            return -1;
        }
        if (r == 0 && (in.pos > was || out.pos > 0)) u->frames++; /* a frame ended */
        u->frame_left = r;
        if (out.pos > 0 && pv_emit(s, u->out, out.pos, err) < 0) return -1;
        /* Input consumed: stop at a frame end, or once a call makes no more
         * output (the decoder may hold decoded bytes after eating input). */
        if (in.pos == in.size && (r == 0 || out.pos == 0)) return 0;
    }
}

static int unzstd_finish(pv_stage *s, pv_err *err)
{
    unzstd_filter *u = (unzstd_filter *)s;
    if (s->bytes_in == 0) {
        pv_err_set(err, "io", "empty input: not a zstd stream");
        return -1;
    }
    if (u->frame_left != 0) {
        pv_err_set(err, "io",
                   "zstd data is truncated: input ended inside a frame after %llu bytes "
                   "(an incomplete download or copy?)",
                   (unsigned long long)s->bytes_in);
        return -1;
    }
    return 0;
}

static void unzstd_release(pv_stage *s)
{
    unzstd_filter *u = (unzstd_filter *)s;
    ZSTD_freeDCtx(u->dctx);
    u->dctx = NULL;
    free(u->out);
    u->out = NULL;
}

static int unzstd_report(pv_stage *s, lua_State *L)
{
    unzstd_filter *u = (unzstd_filter *)s;
    lua_createtable(L, 0, 6);
    pv_set_int(L, "bytes_in", (lua_Integer)s->bytes_in);
    pv_set_int(L, "bytes_out", (lua_Integer)s->bytes_out);
    pv_set_int(L, "threads", 1);
    pv_set_int(L, "frames", u->frames);
    pv_set_int(L, "frames_in_sequence", u->frames);
    pv_set_int(L, "frames_in_parallel", 0);
    return 1;
}

static const pv_stage_ops unzstd_ops = {.name = "unzstd",
                                        .start = unzstd_start,
                                        .write = unzstd_write,
                                        .finish = unzstd_finish,
                                        .report = unzstd_report,
                                        .release = unzstd_release};

int pv_stream_unzstd(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    static const char *const known[] = {"threads", "label", NULL};
    pv_opt_only(L, opts, known);
    lua_Integer threads = pv_opt_int(L, opts, "threads", 0);
    if (threads < 0 || threads > 64) return luaL_argerror(L, 1, "threads must be 0..64");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads == 0) threads = cpus < 1 ? 1 : cpus > 4 ? 4 : cpus;
    if (threads > 1) return pv_stream_unzstd_mt(L, opts, (int)threads);
    pv_stage_new(L, &unzstd_ops, sizeof(unzstd_filter), opts);
    return 1;
}
