/*
 * armor.c: age's ASCII armor, the strict PEM encoding of RFC 7468 (label
 * "AGE ENCRYPTED FILE", padded base64 in 64-column lines), streaming both
 * ways. The reader accepts LF or CRLF and whitespace around the block and
 * nothing else: no headers, no blank or short inner lines, canonical base64.
 */
#include "age.h"

#include <string.h>

enum { A_PRE = 0, A_BEGIN, A_BODY, A_POST };

static int is_ws(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int age_armor_write(age_armor_writer *w, const uint8_t *data, size_t len, age_sink_fn sink,
                    void *ctx, pv_err *err)
{
    char out[65 * 64];
    size_t o = 0;
    if (!w->begun) {
        w->begun = true;
        if (sink(ctx, (const uint8_t *)AGE_ARMOR_BEGIN "\n", sizeof AGE_ARMOR_BEGIN, err) < 0)
            return -1;
    }
    while (len > 0) {
        size_t take = 48 - w->ncarry < len ? 48 - w->ncarry : len;
        memcpy(w->carry + w->ncarry, data, take);
        w->ncarry += take;
        data += take;
        len -= take;
        if (w->ncarry < 48) break;
        o += age_b64_encode_padded(w->carry, 48, out + o);
        out[o++] = '\n';
        w->ncarry = 0;
        if (o + 65 > sizeof out) {
            if (sink(ctx, (const uint8_t *)out, o, err) < 0) return -1;
            o = 0;
        }
    }
    return o ? sink(ctx, (const uint8_t *)out, o, err) : 0;
}

int age_armor_close(age_armor_writer *w, age_sink_fn sink, void *ctx, pv_err *err)
{
    char out[128];
    size_t o = 0;
    if (!w->begun && age_armor_write(w, NULL, 0, sink, ctx, err) < 0) return -1;
    if (w->ncarry) {
        o = age_b64_encode_padded(w->carry, w->ncarry, out);
        out[o++] = '\n';
        w->ncarry = 0;
    }
    memcpy(out + o, AGE_ARMOR_END "\n", sizeof AGE_ARMOR_END);
    o += sizeof AGE_ARMOR_END;
    return sink(ctx, (const uint8_t *)out, o, err);
}

static int armor_fail(age_armor_reader *r, pv_err *err, const char *what)
{
    age_fail(err, AGE_FAIL_ARMOR, "age: invalid ASCII armor at line %llu: %s",
             (unsigned long long)r->lineno, what);
    return -1;
}

static int armor_line(age_armor_reader *r, age_sink_fn sink, void *ctx, pv_err *err)
{
    size_t n = r->nline;
    if (n > 0 && r->line[n - 1] == '\r') n--;
    const char *line = r->line;
    if (r->state == A_BEGIN) {
        if (n != strlen(AGE_ARMOR_BEGIN) || memcmp(line, AGE_ARMOR_BEGIN, n) != 0)
            return armor_fail(r, err, "expected \"" AGE_ARMOR_BEGIN "\"");
        r->state = A_BODY;
        return 0;
    }
    if (n == strlen(AGE_ARMOR_END) && memcmp(line, AGE_ARMOR_END, n) == 0) {
        r->state = A_POST;
        return 0;
    }
    if (r->final_seen) return armor_fail(r, err, "data after the short last line");
    if (n == 0) return armor_fail(r, err, "empty line inside the armor");
    if (n > 64) return armor_fail(r, err, "line longer than 64 columns");
    uint8_t buf[48];
    long got = age_b64_decode_padded(line, n, buf, sizeof buf);
    if (got < 0) return armor_fail(r, err, "not canonical padded base64");
    if (n < 64 || line[n - 1] == '=') r->final_seen = true;
    r->nlines++;
    return sink(ctx, buf, (size_t)got, err);
}

int age_armor_read(age_armor_reader *r, const uint8_t *data, size_t len, age_sink_fn sink,
                   void *ctx, pv_err *err)
{
    for (size_t i = 0; i < len; i++) {
        int c = data[i];
        if (r->state == A_PRE) {
            if (c == '\n') r->lineno++;
            if (is_ws(c)) continue;
            r->state = A_BEGIN;
            r->lineno++;
        }
        if (r->state == A_POST) {
            if (is_ws(c)) continue;
            return armor_fail(r, err, "data after the END line");
        }
        if (c == '\n') {
            if (armor_line(r, sink, ctx, err) < 0) return -1;
            r->nline = 0;
            r->lineno++;
            continue;
        }
        if (r->nline >= sizeof r->line) return armor_fail(r, err, "line too long");
        r->line[r->nline++] = (char)c;
    }
    return 0;
}

int age_armor_finish(age_armor_reader *r, pv_err *err)
{
    if (r->state == A_BODY && r->nline > 0) {
        size_t n = r->nline;
        if (n == strlen(AGE_ARMOR_END) && memcmp(r->line, AGE_ARMOR_END, n) == 0) {
            r->state = A_POST;
            r->nline = 0;
        }
    }
    if (r->state == A_POST) return 0;
    if (r->state == A_PRE) return armor_fail(r, err, "no \"" AGE_ARMOR_BEGIN "\" line");
    return armor_fail(r, err, "no \"" AGE_ARMOR_END "\" line: the file is truncated");
}
