/*
 * rows.c: counts a table's rows as its decoded data streams past. COPY
 * text has one row per line (newlines inside values are escaped) and ends
 * with the line "\." (pg_dump adds two empty lines), which must be there:
 * without it rows are missing.
 */
#include "archive.h"

#include <stdio.h>
#include <string.h>

void ar_rows_begin(ar_rows *r, int mode)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
}

static void count_copy(ar_rows *c, ar_entry *e, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        if (c->done) {
            for (; p < end; p++)
                if (*p != '\n') c->garbage = true;
            return;
        }
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;
        size_t seg = (size_t)(stop - p), i = 0;
        for (; i < seg && c->line_len < 2; i++, c->line_len++) {
            if (c->line_len == 0)
                c->c0 = p[i];
            else
                c->c1 = p[i];
        }
        c->line_len += seg - i;
        if (!nl) return;
        if (c->line_len == 2 && c->c0 == '\\' && c->c1 == '.')
            c->done = true;
        else
            e->rows++;
        c->line_len = 0;
        p = nl + 1;
    }
}

void ar_rows_feed(ar_rows *r, ar_entry *e, const uint8_t *data, size_t n)
{
    if (r->mode == AR_ROWS_COPY) count_copy(r, e, data, n);
}

int ar_rows_end(ar_rows *r, ar_entry *e, char *msg, size_t msgsz)
{
    if (r->mode != AR_ROWS_COPY) return 0;
    if (!r->done) {
        snprintf(msg, msgsz,
                 "the COPY data ends without its end-of-data line (\\.): rows are missing");
        return -1;
    }
    if (r->garbage) {
        snprintf(msg, msgsz, "the COPY data continues after its end-of-data line (\\.)");
        return -1;
    }
    e->copy_done = true;
    return 0;
}
