/*
 * parser.c: the driver of the push parser of pg_dump's custom format
 * (archive versions 1.12 to 1.16). It takes the archive in pieces of any
 * size, so the same code reads a file, a pipe, or bytes passing through a
 * pipeline tap. Fields are read one after the other as the table in
 * toc.c lays them out; once a field is whole its handler runs (toc.c for
 * the header and TOC, blocks.c for the data blocks).
 *
 * Every field is read into a small fixed buffer, or streamed (strings that
 * are not kept, compressed chunks), so no length in the input decides how
 * much memory is allocated beyond the bounded kept strings and TOC.
 */
#include "parser.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Names and errors                                                    */
/* ------------------------------------------------------------------ */

static void put_clean(char *out, size_t outsz, const char *s, size_t max)
{
    size_t n = 0, o = strlen(out);
    for (; s && s[n] && n < max && o + 1 < outsz; n++)
        out[o++] = (unsigned char)s[n] < 32 ? ' ' : s[n];
    if (s && s[n] && n >= max && o + 4 < outsz) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

void ar_entry_name(const ar_entry *e, char *out, size_t outsz)
{
    snprintf(out, outsz, "entry %d", (int)e->dump_id);
    if (!e->desc) return;
    put_clean(out, outsz, " (", 2);
    put_clean(out, outsz, e->desc, 40);
    put_clean(out, outsz, " ", 1);
    if (e->ns && e->ns[0]) {
        put_clean(out, outsz, e->ns, 64);
        put_clean(out, outsz, ".", 1);
    }
    put_clean(out, outsz, e->tag ? e->tag : "", 80);
    put_clean(out, outsz, ")", 1);
}

/* ", TOC entry 3 of 40, entry 7 (TABLE public.t)", or what is known. */
static void where(const ar_parser *p, const ar_entry *e, char *who, size_t whosz)
{
    char name[280] = "";
    if (e) ar_entry_name(e, name, sizeof name);
    if (p->phase == AR_PH_TOC)
        snprintf(who, whosz, ", TOC entry %d of %d%s%s", p->cur + 1, (int)p->toc->toc_count,
                 e ? ", " : "", name);
    else if (e)
        snprintf(who, whosz, ", %s", name);
    else if (p->phase == AR_PH_HEADER)
        snprintf(who, whosz, ", header");
    else
        who[0] = '\0';
}

/* Records the failure: "<what> at byte N, entry X (TYPE schema.name): msg". */
int ar_fail_at(ar_parser *p, bool truncated, uint64_t at, const ar_entry *e, const char *fmt, ...)
{
    char msg[600], who[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    where(p, e, who, sizeof who);
    pv_err_set(p->err, "archive", "%s at byte %llu%s: %s",
               truncated ? "archive truncated" : "invalid archive", (unsigned long long)at, who,
               msg);
    pv_err_int(p->err, "offset", (long long)at);
    pv_err_bool(p->err, "truncated", truncated);
    if (e) {
        pv_err_int(p->err, "dump_id", e->dump_id);
        if (e->desc) pv_err_str(p->err, "entry_kind", e->desc);
        if (e->tag) pv_err_str(p->err, "entry_name", e->tag);
        if (e->ns) pv_err_str(p->err, "entry_schema", e->ns);
    }
    p->failed = true;
    return -1;
}

static ar_entry *cur_entry(ar_parser *p)
{
    /* the entry being read is the last one (a lean parser drops some) */
    if (p->phase == AR_PH_TOC && p->cur < p->toc->toc_count && p->toc->nentries > 0)
        return &p->toc->entries[p->toc->nentries - 1];
    if (p->phase == AR_PH_BLOCKS && p->block_entry >= 0) return &p->toc->entries[p->block_entry];
    /* inside a block header: the block that should be starting */
    if (p->phase == AR_PH_BLOCKS && (p->state == B_DUMPID || p->have > 0) &&
        p->next_data <= p->last_data)
        return &p->toc->entries[p->toc->data_idx[p->next_data]];
    return NULL;
}

int ar_fail(ar_parser *p, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ar_fail_at(p, false, p->field_pos, cur_entry(p), "%s", msg);
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */
/* ------------------------------------------------------------------ */

void ar_expect(ar_parser *p, int state)
{
    p->state = state;
    p->field_pos = p->pos;
    p->have = 0;
    p->in_str = false;
    switch (ar_fields[state].kind) {
    case K_BYTE:
        p->need = 1;
        break;
    case K_MAGIC:
        p->need = 5;
        break;
    case K_OFF:
        p->need = 1 + p->toc->off_size;
        break;
    case K_PAYLOAD:
        p->need = 0;
        break;
    default: /* an Int, or a string's length */
        p->need = 1 + p->toc->int_size;
        break;
    }
}

void ar_parser_init(ar_parser *p, pv_err *err)
{
    memset(p, 0, sizeof *p);
    p->err = err;
    p->toc = calloc(1, sizeof *p->toc);
    p->owns_toc = true;
    p->block_entry = -1;
    p->phase = AR_PH_HEADER;
    if (!p->toc) {
        pv_err_set(err, "archive", "out of memory");
        p->failed = true;
        return;
    }
    p->toc->level = -2;
    ar_expect(p, H_MAGIC);
}

void ar_parser_init_blocks(ar_parser *p, ar_toc *toc, int first, int last, uint64_t start,
                           pv_err *err)
{
    memset(p, 0, sizeof *p);
    p->err = err;
    p->toc = toc;
    p->phase = AR_PH_BLOCKS;
    p->pos = p->base = start;
    p->next_data = first;
    p->last_data = last;
    p->block_entry = -1;
    ar_expect(p, B_TYPE);
}

void ar_entry_free(ar_entry *e)
{
    free(e->tag);
    free(e->desc);
    free(e->ns);
    free(e->owner);
    free(e->sql);
    free(e->deps);
    memset(e, 0, sizeof *e);
}

void ar_toc_free(ar_toc *toc)
{
    if (!toc) return;
    for (int i = 0; i < toc->nentries; i++)
        ar_entry_free(&toc->entries[i]);
    free(toc->entries);
    free(toc->dropped_ids);
    free(toc->listing.s);
    free(toc->data_idx);
    free(toc->dbname);
    free(toc->server_version);
    free(toc->dump_version);
    free(toc);
}

void ar_parser_free(ar_parser *p)
{
    free(p->str);
    p->str = NULL;
    free(p->dep_buf);
    p->dep_buf = NULL;
    ar_dec_free(&p->dec);
    if (p->owns_toc) ar_toc_free(p->toc);
    p->toc = NULL;
}

bool ar_account(ar_parser *p, size_t n)
{
    if (p->toc->memory + n > AR_MAX_TOC_MEMORY) return false;
    p->toc->memory += n;
    return true;
}

int ar_hook_failed(ar_parser *p)
{
    p->failed = true;
    if (!p->err->set)
        pv_err_set(p->err, "internal", "the archive's consumer stopped without a reason");
    return -1;
}

char *ar_take_str(ar_parser *p)
{
    char *s = p->str;
    p->str = NULL;
    return s;
}

/* ------------------------------------------------------------------ */
/* A field is whole                                                    */
/* ------------------------------------------------------------------ */

/* Sign-magnitude Int. pg_dump writes sign 0 or 1 and magnitudes that fit a
 * C int (an OID >= 2^31 is stored negated), so anything else is damage. */
static int decode_int(ar_parser *p, int64_t *out)
{
    if (p->tmp[0] > 1) return ar_fail(p, "bad sign byte %u in an integer", p->tmp[0]);
    uint64_t mag = 0;
    for (int i = p->toc->int_size; i >= 1; i--)
        mag = (mag << 8) | p->tmp[i];
    if (mag > ((uint64_t)1 << 31) || (p->tmp[0] == 0 && mag == ((uint64_t)1 << 31)))
        return ar_fail(p, "integer %s%llu is out of range", p->tmp[0] ? "-" : "",
                       (unsigned long long)mag);
    *out = p->tmp[0] ? -(int64_t)mag : (int64_t)mag;
    return 0;
}

static bool present(const ar_toc *t, int state)
{
    return t->vmin >= ar_fields[state].since && t->vmin <= ar_fields[state].until;
}

/* Runs the handler of the field just read, then moves on to the next
 * field this archive version has, unless the handler chose one. */
static int handle(ar_parser *p, int64_t v)
{
    const ar_field *f = &ar_fields[p->state];
    int rc = AR_NEXT;
    if (f->done) rc = f->done(p, cur_entry(p), v);
    if (rc != AR_NEXT) return rc < 0 ? -1 : 0;
    int next = p->state + 1;
    while (next < AR_NFIELDS && !present(p->toc, next))
        next++;
    if (next >= AR_NFIELDS) return ar_fail(p, "internal: no field after %s", f->what);
    ar_expect(p, next);
    return 0;
}

static int check_range(ar_parser *p, int64_t v)
{
    const ar_field *f = &ar_fields[p->state];
    if (f->lo == f->hi || (v >= f->lo && v <= f->hi)) return 0;
    return ar_fail(p, "%s is %lld, not %lld to %lld", f->what, (long long)v, (long long)f->lo,
                   (long long)f->hi);
}

/* The string's body has been read (kept in p->str or only measured). */
static int str_done(ar_parser *p)
{
    if (p->str_keep && !p->str_null) p->str[p->str_len] = '\0'; /* pg_restore sees a C string */
    return handle(p, p->str_null ? -1 : (int64_t)p->str_len);
}

/* The SQL a restorer needs: COPY statements, and the settings a session
 * restoring the data must have (encoding, standard strings, search path). */
static bool keeps_sql(const ar_parser *p)
{
    if (!p->keep_sql || p->phase != AR_PH_TOC) return false;
    const ar_entry *e = &p->toc->entries[p->toc->nentries - 1];
    const char *d = e->desc;
    if (p->state == E_COPY) return e->had_dumper;
    return p->state == E_DEFN && d &&
           (strcmp(d, "ENCODING") == 0 || strcmp(d, "STDSTRINGS") == 0 ||
            strcmp(d, "SEARCHPATH") == 0);
}

static int str_begin(ar_parser *p, int64_t len)
{
    const ar_field *f = &ar_fields[p->state];
    p->str_null = len < 0;
    p->str_len = 0;
    p->str_head_len = 0;
    if (len < -1) return ar_fail(p, "string length %lld is negative", (long long)len);
    if (len < 0 && (f->flags & F_NOT_NULL)) return ar_fail(p, "%s is NULL", f->what);
    p->str_keep = (f->flags & F_KEEP) != 0 || keeps_sql(p);
    if (p->str_keep && len >= 0) {
        if (len > AR_MAX_KEPT_STR)
            return ar_fail(p, "%s is %lld bytes long, more than the %d allowed", f->what,
                           (long long)len, AR_MAX_KEPT_STR);
        if (!ar_account(p, (size_t)len + 1))
            return ar_fail(p, "the TOC needs more memory than allowed");
        p->str = malloc((size_t)len + 1);
        if (!p->str) return ar_fail(p, "out of memory");
    }
    if (len <= 0) return str_done(p);
    p->in_str = true;
    p->str_left = (uint64_t)len;
    return 0;
}

static int field_done(ar_parser *p)
{
    int64_t v = 0;
    switch (ar_fields[p->state].kind) {
    case K_MAGIC:
    case K_OFF:
        return handle(p, 0);
    case K_BYTE:
        v = p->tmp[0];
        break;
    case K_STR:
        if (decode_int(p, &v) < 0) return -1;
        return str_begin(p, v);
    default:
        if (decode_int(p, &v) < 0) return -1;
        break;
    }
    if (check_range(p, v) < 0) return -1;
    return handle(p, v);
}

/* ------------------------------------------------------------------ */
/* Feeding                                                             */
/* ------------------------------------------------------------------ */

/* Up to n bytes of the string being read; returns how many it took. */
static size_t feed_str(ar_parser *p, const uint8_t *data, size_t len)
{
    size_t n = len < p->str_left ? len : (size_t)p->str_left;
    if (p->str_keep) memcpy(p->str + p->str_len, data, n);
    size_t room = sizeof p->str_head - p->str_head_len;
    size_t h = n < room ? n : room;
    memcpy(p->str_head + p->str_head_len, data, h);
    p->str_head_len += h;
    p->str_len += n;
    p->pos += n;
    p->str_left -= n;
    if (p->str_left == 0) p->in_str = false;
    return n;
}

/* Up to the rest of a fixed-size field. */
static size_t feed_fixed(ar_parser *p, const uint8_t *data, size_t len)
{
    size_t n = (size_t)(p->need - p->have);
    if (n > len) n = len;
    memcpy(p->tmp + p->have, data, n);
    p->have += (int)n;
    p->pos += n;
    return n;
}

int ar_parser_feed(ar_parser *p, const uint8_t *data, size_t len)
{
    if (p->failed) return -1;
    if (p->phase == AR_PH_DONE) return 0;
    while (len > 0) {
        if (p->pause_at_blocks && p->phase == AR_PH_BLOCKS) return 0;
        size_t n;
        int rc = 0;
        if (p->state == D_CHUNK) {
            n = len < p->chunk_left ? len : (size_t)p->chunk_left;
            rc = ar_feed_chunk(p, data, n);
        } else if (p->in_str) {
            n = feed_str(p, data, len);
            if (!p->in_str) rc = str_done(p);
        } else {
            n = feed_fixed(p, data, len);
            if (p->have == p->need) rc = field_done(p);
        }
        if (rc < 0) return -1;
        data += n;
        len -= n;
    }
    return 0;
}

/* The input ended after the last block: check nothing is missing. */
static int finish_blocks(ar_parser *p)
{
    ar_toc *t = p->toc;
    bool mid_field = p->state != B_TYPE || p->have != 0;
    if (mid_field && p->end_limit)
        return ar_fail_at(p, false, p->pos, cur_entry(p),
                          "the data block runs into byte %llu, where the TOC places the next block",
                          (unsigned long long)p->end_limit);
    if (mid_field)
        return ar_fail_at(p, true, p->pos, cur_entry(p), "the input ends inside %s",
                          ar_fields[p->state].what);
    if (p->next_data <= p->last_data) {
        const ar_entry *e = &t->entries[t->data_idx[p->next_data]];
        int more = p->last_data - p->next_data;
        if (p->end_limit)
            return ar_fail_at(p, false, p->pos, e,
                              "the previous data block ends where this entry's block should "
                              "start, but the TOC places it elsewhere");
        return ar_fail_at(p, true, p->pos, e, "the data block is missing%s",
                          more ? " (and those of the entries after it)" : "");
    }
    p->phase = AR_PH_DONE;
    return 0;
}

int ar_parser_finish(ar_parser *p)
{
    if (p->failed) return -1;
    if (p->phase == AR_PH_HEADER) {
        if (p->pos == 0) return ar_fail_at(p, true, 0, NULL, "the input is empty");
        return ar_fail_at(p, true, p->pos, NULL, "the input ends inside %s",
                          ar_fields[p->state].what);
    }
    if (p->phase == AR_PH_TOC)
        return ar_fail_at(p, true, p->pos, cur_entry(p), "the input ends inside %s",
                          ar_fields[p->state].what);
    return finish_blocks(p);
}
