/*
 * decode.c: the stream decoders of the PGDMP reader (none, zlib, LZ4 frame,
 * zstd frame), each required to reach its codec's own end of stream; the
 * decoded output is measured and goes to the row counter (rows.c).
 */
#include "archive.h"

#include <stdlib.h>
#include <string.h>

const char *ar_algo_name(int algo)
{
    switch (algo) {
    case AR_ALGO_NONE:
        return "none";
    case AR_ALGO_GZIP:
        return "gzip";
    case AR_ALGO_LZ4:
        return "lz4";
    case AR_ALGO_ZSTD:
        return "zstd";
    default:
        return "???";
    }
}

static int count(ar_decoder *d, ar_entry *e, ar_rows *rows, const uint8_t *out, size_t n)
{
    e->raw_bytes += n;
    if (rows) ar_rows_feed(rows, e, out, n);
    return d->data ? d->data(d->data_ctx, out, n) : 0;
}

static int stopped(char *msg, size_t msgsz)
{
    snprintf(msg, msgsz, "the data's consumer stopped");
    return -1;
}

int ar_dec_begin(ar_decoder *d, int algo, char *msg, size_t msgsz)
{
    d->algo = algo;
    d->active = true;
    d->ended = false;
    if (algo == AR_ALGO_NONE) return 0;
    if (!d->out) {
        d->out = malloc(AR_DEC_OUT);
        if (!d->out) goto oom;
    }
    switch (algo) {
    case AR_ALGO_GZIP:
        if (!d->isal) {
            d->isal = calloc(1, sizeof *d->isal);
            if (!d->isal) goto oom;
        }
        isal_inflate_init(d->isal);
        d->isal->crc_flag = ISAL_ZLIB; /* parse the zlib header, verify the Adler-32 */
        return 0;
    case AR_ALGO_LZ4:
        if (!d->lz4) {
            if (LZ4F_isError(LZ4F_createDecompressionContext(&d->lz4, LZ4F_VERSION))) {
                d->lz4 = NULL;
                goto oom;
            }
        } else {
            LZ4F_resetDecompressionContext(d->lz4);
        }
        return 0;
    case AR_ALGO_ZSTD:
        if (!d->zstd) {
            d->zstd = ZSTD_createDCtx();
            if (!d->zstd) goto oom;
            /* pg_dump's long mode uses 2^27; refuse bigger windows. */
            ZSTD_DCtx_setParameter(d->zstd, ZSTD_d_windowLogMax, 27);
        } else {
            ZSTD_DCtx_reset(d->zstd, ZSTD_reset_session_only);
        }
        return 0;
    default:
        snprintf(msg, msgsz, "unknown compression algorithm %d", algo);
        return -1;
    }
oom:
    snprintf(msg, msgsz, "cannot initialise the %s decoder (out of memory)", ar_algo_name(algo));
    return -1;
}

static int trailing(ar_decoder *d, char *msg, size_t msgsz)
{
    snprintf(msg, msgsz, "data continues after the end of the %s stream", ar_algo_name(d->algo));
    return -1;
}

static const char *isal_error(int rc)
{
    switch (rc) {
    case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
        return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
        return "invalid distance too far back";
    case ISAL_INVALID_WRAPPER:
        return "incorrect header check";
    case ISAL_UNSUPPORTED_METHOD:
        return "unknown compression method";
    case ISAL_INCORRECT_CHECKSUM:
        return "incorrect data check";
    case ISAL_NEED_DICT:
        return "needs a dictionary";
    default:
        return "error";
    }
}

static int feed_gzip(ar_decoder *d, const uint8_t *in, size_t len, ar_entry *e, ar_rows *c,
                     char *msg, size_t msgsz)
{
    struct inflate_state *st = d->isal;
    while (len > 0) {
        /* avail_in is 32 bits: feed big pieces in slices */
        uint32_t slice = len > (1u << 30) ? (1u << 30) : (uint32_t)len;
        st->next_in = (uint8_t *)in;
        st->avail_in = slice;
        for (;;) {
            st->next_out = d->out;
            st->avail_out = AR_DEC_OUT;
            int rc = isal_inflate(st);
            size_t got = AR_DEC_OUT - st->avail_out;
            if (got && count(d, e, c, d->out, got) < 0) return stopped(msg, msgsz);
            if (rc < 0 || rc == ISAL_NEED_DICT) {
                snprintf(msg, msgsz, "gzip data is corrupt: %s", isal_error(rc));
                return -1;
            }
            if (st->block_state == ISAL_BLOCK_FINISH) {
                d->ended = true;
                if (st->avail_in > 0 || len > slice) return trailing(d, msg, msgsz);
                return 0;
            }
            if (st->avail_in == 0 && got < AR_DEC_OUT) break; /* needs more input */
        }
        in += slice;
        len -= slice;
    }
    return 0;
}

static int feed_lz4(ar_decoder *d, const uint8_t *in, size_t len, ar_entry *e, ar_rows *c,
                    char *msg, size_t msgsz)
{
    while (len > 0 || !d->ended) {
        size_t src = len, dst = AR_DEC_OUT;
        size_t r = LZ4F_decompress(d->lz4, d->out, &dst, in, &src, NULL);
        if (LZ4F_isError(r)) {
            snprintf(msg, msgsz, "lz4 data is corrupt: %s", LZ4F_getErrorName(r));
            return -1;
        }
        if (dst && count(d, e, c, d->out, dst) < 0) return stopped(msg, msgsz);
        in += src;
        len -= src;
        if (r == 0) {
            d->ended = true;
            if (len > 0) return trailing(d, msg, msgsz);
            return 0;
        }
        if (src == 0 && dst == 0) break;
        if (len == 0 && dst < AR_DEC_OUT) break;
    }
    return 0;
}

static int feed_zstd(ar_decoder *d, const uint8_t *in, size_t len, ar_entry *e, ar_rows *c,
                     char *msg, size_t msgsz)
{
    ZSTD_inBuffer ib = {in, len, 0};
    for (;;) {
        ZSTD_outBuffer ob = {d->out, AR_DEC_OUT, 0};
        size_t r = ZSTD_decompressStream(d->zstd, &ob, &ib);
        if (ZSTD_isError(r)) {
            snprintf(msg, msgsz, "zstd data is corrupt: %s", ZSTD_getErrorName(r));
            return -1;
        }
        if (ob.pos && count(d, e, c, d->out, ob.pos) < 0) return stopped(msg, msgsz);
        if (r == 0) {
            d->ended = true;
            if (ib.pos < ib.size) return trailing(d, msg, msgsz);
            return 0;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) return 0;
    }
}

int ar_dec_feed(ar_decoder *d, const uint8_t *in, size_t len, ar_entry *e, ar_rows *c, char *msg,
                size_t msgsz)
{
    if (len == 0) return 0;
    if (d->ended) return trailing(d, msg, msgsz);
    switch (d->algo) {
    case AR_ALGO_NONE:
        return count(d, e, c, in, len) < 0 ? stopped(msg, msgsz) : 0;
    case AR_ALGO_GZIP:
        return feed_gzip(d, in, len, e, c, msg, msgsz);
    case AR_ALGO_LZ4:
        return feed_lz4(d, in, len, e, c, msg, msgsz);
    default:
        return feed_zstd(d, in, len, e, c, msg, msgsz);
    }
}

int ar_dec_end(ar_decoder *d, char *msg, size_t msgsz)
{
    d->active = false;
    if (d->algo == AR_ALGO_NONE || d->ended) return 0;
    snprintf(msg, msgsz, "the %s stream is cut off before its end", ar_algo_name(d->algo));
    return -1;
}

void ar_dec_free(ar_decoder *d)
{
    free(d->isal);
    d->isal = NULL;
    if (d->lz4) LZ4F_freeDecompressionContext(d->lz4);
    d->lz4 = NULL;
    if (d->zstd) ZSTD_freeDCtx(d->zstd);
    d->zstd = NULL;
    free(d->out);
    d->out = NULL;
}
