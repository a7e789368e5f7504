/*
 * archive_fuzz.c: libFuzzer target for the PGDMP reader, which parses
 * untrusted bytes (a backup from storage, a dump streaming by). Each input
 * is parsed twice: pushed through the streaming parser in pieces whose
 * sizes come from the input itself, and read as a whole file (from a
 * memfd) with two threads, so the range-split path runs too; then the
 * listing and the summary are built. Both readers must agree on success.
 * Half the pushes keep the SQL a restorer needs and tell hooks what
 * passes, as archive.restorer's parser does; the hooks check that the
 * events come in a sane order and that the data they see is what the
 * summary counts.
 */
#include "../../bindings/archive/archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    bool toc, in_block, in_lo;
    uint64_t bytes;
} events;

static int on_toc(void *ctx, ar_toc *t)
{
    events *ev = ctx;
    if (ev->toc || !t) abort();
    ev->toc = true;
    return 0;
}

static int on_block_begin(void *ctx, ar_entry *e)
{
    events *ev = ctx;
    if (!ev->toc || ev->in_block || !e->had_dumper) abort();
    ev->in_block = true;
    return 0;
}

static int on_lo_begin(void *ctx, ar_entry *e, uint32_t oid)
{
    events *ev = ctx;
    (void)e;
    if (!ev->in_block || ev->in_lo || oid == 0) abort();
    ev->in_lo = true;
    return 0;
}

static int on_data(void *ctx, const uint8_t *d, size_t n)
{
    events *ev = ctx;
    if (!ev->in_block || (n && !d)) abort();
    ev->bytes += n;
    return 0;
}

static int on_lo_end(void *ctx, ar_entry *e)
{
    events *ev = ctx;
    (void)e;
    if (!ev->in_lo) abort();
    ev->in_lo = false;
    return 0;
}

static int on_block_end(void *ctx, ar_entry *e)
{
    events *ev = ctx;
    (void)e;
    if (!ev->in_block || ev->in_lo) abort();
    ev->in_block = false;
    return 0;
}

static const ar_hooks hook_table = {.toc_done = on_toc,
                                    .block_begin = on_block_begin,
                                    .lo_begin = on_lo_begin,
                                    .data = on_data,
                                    .lo_end = on_lo_end,
                                    .block_end = on_block_end};

/* Decoded bytes of every block, as the summary counts them. */
static uint64_t decoded(const ar_toc *t)
{
    uint64_t n = 0;
    for (int i = 0; i < t->ndata; i++)
        n += t->entries[t->data_idx[i]].raw_bytes;
    return n;
}

static int push_in_pieces(const uint8_t *data, size_t size, lua_State *L)
{
    pv_err err;
    pv_err_clear(&err);
    ar_parser p;
    ar_parser_init(&p, &err);
    size_t at = 0;
    unsigned seed = size ? data[size - 1] : 0;
    events ev = {0};
    ar_hooks hooks = hook_table;
    hooks.ctx = &ev;
    if (seed & 2) {
        p.keep_sql = true;
        p.hooks = &hooks;
    } else { /* a verifier: entries without data let go, listed as they pass */
        p.lean = true;
        p.list = (seed & 4) ? ((seed & 1) ? AR_LIST_VERBOSE : AR_LIST) : AR_LIST_NONE;
    }
    int rc = 0;
    while (at < size && rc == 0) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 97;
        if ((seed >> 8) % 5 == 0) n = size; /* sometimes everything at once */
        if (n > size - at) n = size - at;
        rc = ar_parser_feed(&p, data + at, n);
        at += n;
    }
    if (rc == 0) rc = ar_parser_finish(&p);
    if (rc != 0 && (!err.set || strcmp(err.kind, "archive") != 0)) abort();
    if (rc == 0 && p.hooks && (!ev.toc || ev.in_block || ev.bytes != decoded(p.toc))) abort();
    if (p.toc && p.phase >= AR_PH_BLOCKS) {
        ar_push_summary(L, p.toc, size, rc == 0);
        ar_list(L, p.toc, (seed & 1) != 0);
        lua_settop(L, 0);
    }
    ar_parser_free(&p);
    return rc;
}

static int read_whole(const uint8_t *data, size_t size)
{
    int fd = memfd_create("archive", 0);
    if (fd < 0) return -2;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return -2;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    pv_err err;
    pv_err_clear(&err);
    ar_toc *toc = NULL;
    uint64_t bytes = 0;
    int rc = ar_read_file(path, 2, false, AR_LIST, &toc, &bytes, &err);
    ar_toc_free(toc);
    close(fd);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (!L) L = luaL_newstate();
    int a = push_in_pieces(data, size, L);
    int b = read_whole(data, size);
    if (b != -2 && (a == 0) != (b == 0)) abort();
    return 0;
}
