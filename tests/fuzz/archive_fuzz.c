/*
 * archive_fuzz.c: libFuzzer target for the PGDMP reader, which parses
 * untrusted bytes (a backup from storage, a dump streaming by). Each input
 * is parsed twice: pushed through the streaming parser in pieces whose
 * sizes come from the input itself, and read as a whole file (from a
 * memfd) with two threads, so the range-split path runs too; then the
 * listing and the summary are built. Both readers must agree on success.
 */
#include "../../bindings/archive/archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int push_in_pieces(const uint8_t *data, size_t size, lua_State *L)
{
    pv_err err;
    pv_err_clear(&err);
    ar_parser p;
    ar_parser_init(&p, &err);
    size_t at = 0;
    unsigned seed = size ? data[size - 1] : 0;
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
    int rc = ar_read_file(path, 2, false, &toc, &bytes, &err);
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
