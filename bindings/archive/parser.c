/*
 * parser.c: the push parser of pg_dump's custom format (archive versions
 * 1.12 to 1.16). It takes the archive in pieces of any size, so the same
 * code reads a file, a pipe, or bytes passing through a pipeline tap: the
 * header, every TOC entry with its dependencies and data offset, then each
 * data and large-object block, every stream decoded to its codec's end.
 *
 * Every field is read into a small fixed buffer, or streamed (strings that
 * are not kept, compressed chunks), so no length in the input decides how
 * much memory is allocated beyond the bounded kept strings and TOC.
 */
#include "archive.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    H_MAGIC,
    H_VMAJ,
    H_VMIN,
    H_VREV,
    H_INTSIZE,
    H_OFFSIZE,
    H_FORMAT,
    H_COMPRESS,
    H_TIME,
    H_DBNAME,
    H_SRVVER,
    H_DUMPVER,
    H_TOCCOUNT,
    E_DUMPID,
    E_HADDUMPER,
    E_TABLEOID,
    E_OID,
    E_TAG,
    E_DESC,
    E_SECTION,
    E_DEFN,
    E_DROP,
    E_COPY,
    E_NS,
    E_TABLESPACE,
    E_TABLEAM,
    E_RELKIND,
    E_OWNER,
    E_WITHOIDS,
    E_DEP,
    E_OFFSET,
    B_TYPE,
    B_DUMPID,
    D_CHUNKLEN,
    D_CHUNK,
    L_OID,
};

enum { K_BYTE, K_MAGIC, K_INT, K_STR, K_OFF, K_PAYLOAD };

static int kind_of(ar_parser *p, int state)
{
    switch (state) {
    case H_MAGIC:
        return K_MAGIC;
    case H_VMAJ:
    case H_VMIN:
    case H_VREV:
    case H_INTSIZE:
    case H_OFFSIZE:
    case H_FORMAT:
    case B_TYPE:
        return K_BYTE;
    case H_COMPRESS:
        return p->toc->vmin >= 15 ? K_BYTE : K_INT;
    case H_DBNAME:
    case H_SRVVER:
    case H_DUMPVER:
    case E_TABLEOID:
    case E_OID:
    case E_TAG:
    case E_DESC:
    case E_DEFN:
    case E_DROP:
    case E_COPY:
    case E_NS:
    case E_TABLESPACE:
    case E_TABLEAM:
    case E_OWNER:
    case E_WITHOIDS:
    case E_DEP:
        return K_STR;
    case E_OFFSET:
        return K_OFF;
    case D_CHUNK:
        return K_PAYLOAD;
    default:
        return K_INT;
    }
}

static const char *state_what(int state)
{
    static const char *const names[] = {"the magic string",
                                        "the major version",
                                        "the minor version",
                                        "the revision",
                                        "the integer size",
                                        "the offset size",
                                        "the format",
                                        "the compression field",
                                        "the creation time",
                                        "the database name",
                                        "the server version",
                                        "the pg_dump version",
                                        "the TOC entry count",
                                        "the dump id",
                                        "the data flag",
                                        "the table OID",
                                        "the OID",
                                        "the tag",
                                        "the type",
                                        "the section",
                                        "the definition",
                                        "the drop statement",
                                        "the COPY statement",
                                        "the schema",
                                        "the tablespace",
                                        "the table access method",
                                        "the relkind",
                                        "the owner",
                                        "the WITH OIDS flag",
                                        "a dependency",
                                        "the data offset",
                                        "a data block header",
                                        "a data block's dump id",
                                        "a chunk length",
                                        "a chunk of data",
                                        "a large object's OID"};
    return state >= 0 && state <= L_OID ? names[state] : "?";
}

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

/* Records the failure: "<what> at byte N, entry X (TYPE schema.name): msg". */
static int fail_at(ar_parser *p, bool truncated, uint64_t at, const ar_entry *e, const char *fmt,
                   ...)
{
    char msg[600], who[400] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (e && p->phase == AR_PH_TOC) {
        char name[280];
        ar_entry_name(e, name, sizeof name);
        snprintf(who, sizeof who, ", TOC entry %d of %d, %s", p->cur + 1, (int)p->toc->toc_count,
                 name);
    } else if (e) {
        char name[280];
        ar_entry_name(e, name, sizeof name);
        snprintf(who, sizeof who, ", %s", name);
    } else if (p->phase == AR_PH_TOC) {
        snprintf(who, sizeof who, ", TOC entry %d of %d", p->cur + 1, (int)p->toc->toc_count);
    } else if (p->phase == AR_PH_HEADER) {
        snprintf(who, sizeof who, ", header");
    }
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
    if (p->phase == AR_PH_TOC && p->cur < p->toc->nentries) return &p->toc->entries[p->cur];
    if (p->phase == AR_PH_BLOCKS && p->block_entry >= 0) return &p->toc->entries[p->block_entry];
    /* inside a block header: the block that should be starting */
    if (p->phase == AR_PH_BLOCKS && (p->state == B_DUMPID || p->have > 0) &&
        p->next_data <= p->last_data)
        return &p->toc->entries[p->toc->data_idx[p->next_data]];
    return NULL;
}

static int fail(ar_parser *p, const char *fmt, ...) PV_PRINTF(2, 3);
static int fail(ar_parser *p, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail_at(p, false, p->field_pos, cur_entry(p), "%s", msg);
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */
/* ------------------------------------------------------------------ */

static void expect(ar_parser *p, int state)
{
    p->state = state;
    p->field_pos = p->pos;
    p->have = 0;
    p->in_str = false;
    switch (kind_of(p, state)) {
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
    default:
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
    expect(p, H_MAGIC);
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
    expect(p, B_TYPE);
}

void ar_toc_free(ar_toc *toc)
{
    if (!toc) return;
    for (int i = 0; i < toc->nentries; i++) {
        ar_entry *e = &toc->entries[i];
        free(e->tag);
        free(e->desc);
        free(e->ns);
        free(e->owner);
        free(e->deps);
    }
    free(toc->entries);
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

static bool account(ar_parser *p, size_t n)
{
    if (p->toc->memory + n > AR_MAX_TOC_MEMORY) return false;
    p->toc->memory += n;
    return true;
}

/* ------------------------------------------------------------------ */
/* Primitive decoding                                                  */
/* ------------------------------------------------------------------ */

/* Sign-magnitude Int. pg_dump writes sign 0 or 1 and magnitudes that fit a
 * C int (an OID >= 2^31 is stored negated), so anything else is damage. */
static int decode_int(ar_parser *p, int64_t *out)
{
    if (p->tmp[0] > 1) return fail(p, "bad sign byte %u in an integer", p->tmp[0]);
    uint64_t mag = 0;
    for (int i = p->toc->int_size; i >= 1; i--)
        mag = (mag << 8) | p->tmp[i];
    if (mag > ((uint64_t)1 << 31) || (p->tmp[0] == 0 && mag == ((uint64_t)1 << 31)))
        return fail(p, "integer %s%llu is out of range", p->tmp[0] ? "-" : "",
                    (unsigned long long)mag);
    *out = p->tmp[0] ? -(int64_t)mag : (int64_t)mag;
    return 0;
}

static char *take_str(ar_parser *p)
{
    char *s = p->str;
    p->str = NULL;
    return s;
}

static bool is_decimal(const char *s, bool allow_minus)
{
    if (!s || !*s) return false;
    if (allow_minus && *s == '-') s++;
    if (!*s || strlen(s) > 10) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* Header and TOC fields                                               */
/* ------------------------------------------------------------------ */

static int start_toc(ar_parser *p);
static int end_toc(ar_parser *p);
static int start_block(ar_parser *p, int64_t dump_id);
static int end_stream(ar_parser *p);

static int next_entry(ar_parser *p)
{
    ar_toc *t = p->toc;
    if (p->cur >= t->toc_count) return end_toc(p);
    if (t->nentries == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        if (cap > AR_MAX_ENTRIES) cap = AR_MAX_ENTRIES;
        size_t grow = (size_t)(cap - t->cap) * sizeof(ar_entry);
        if (!account(p, grow)) return fail(p, "the TOC needs more memory than allowed");
        ar_entry *n = realloc(t->entries, (size_t)cap * sizeof(ar_entry));
        if (!n) return fail(p, "out of memory reading the TOC");
        t->entries = n;
        t->cap = cap;
    }
    memset(&t->entries[t->nentries], 0, sizeof(ar_entry));
    t->nentries++;
    p->dep_n = 0;
    expect(p, E_DUMPID);
    return 0;
}

static int on_header_byte(ar_parser *p, uint8_t b)
{
    ar_toc *t = p->toc;
    switch (p->state) {
    case H_MAGIC:
        if (memcmp(p->tmp, "PGDMP", 5) != 0)
            return fail(p, "no PGDMP magic string: this is not a pg_dump custom-format archive");
        expect(p, H_VMAJ);
        return 0;
    case H_VMAJ:
        t->vmaj = b;
        expect(p, H_VMIN);
        return 0;
    case H_VMIN:
        t->vmin = b;
        expect(p, H_VREV);
        return 0;
    case H_VREV:
        t->vrev = b;
        if (t->vmaj != 1 || t->vmin < 12 || t->vmin > 16)
            return fail(p, "unsupported archive version %d.%d (pgvault reads 1.12 to 1.16)",
                        t->vmaj, t->vmin);
        expect(p, H_INTSIZE);
        return 0;
    case H_INTSIZE:
        if (b < 1 || b > 8) return fail(p, "unsupported integer size %u", b);
        t->int_size = b;
        expect(p, H_OFFSIZE);
        return 0;
    case H_OFFSIZE:
        if (b < 1 || b > 8) return fail(p, "unsupported offset size %u", b);
        t->off_size = b;
        expect(p, H_FORMAT);
        return 0;
    case H_FORMAT:
        t->format = b;
        if (b != 1)
            return fail(p, "format %u is not the custom format (1)%s", b,
                        b == 5 ? "; this is a directory-format toc.dat" : "");
        expect(p, H_COMPRESS);
        return 0;
    case H_COMPRESS: /* 1.15+: the algorithm byte */
        if (b > AR_ALGO_ZSTD) return fail(p, "unknown compression algorithm %u", b);
        t->algo = b;
        p->time_i = 0;
        expect(p, H_TIME);
        return 0;
    default:
        return fail(p, "internal: unexpected byte field");
    }
}

static int on_int(ar_parser *p, int64_t v)
{
    ar_toc *t = p->toc;
    ar_entry *e = p->phase == AR_PH_TOC ? &t->entries[p->cur] : NULL;
    static const int lo[7] = {0, 0, 0, 1, 0, 0, -1}, hi[7] = {61, 59, 23, 31, 11, 8099, 1};
    switch (p->state) {
    case H_COMPRESS:
        if (v < -1 || v > 9) return fail(p, "invalid compression level %lld", (long long)v);
        t->level = (int)v;
        t->algo = v == 0 ? AR_ALGO_NONE : AR_ALGO_GZIP;
        p->time_i = 0;
        expect(p, H_TIME);
        return 0;
    case H_TIME:
        if (v < lo[p->time_i] || v > hi[p->time_i])
            return fail(p, "creation time field %d has the impossible value %lld", p->time_i,
                        (long long)v);
        t->tm[p->time_i++] = (int)v;
        expect(p, p->time_i < 7 ? H_TIME : H_DBNAME);
        return 0;
    case H_TOCCOUNT:
        if (v < 0 || v > AR_MAX_ENTRIES)
            return fail(p, "TOC entry count %lld is out of range", (long long)v);
        t->toc_count = (int32_t)v;
        return start_toc(p);
    case E_DUMPID:
        if (v <= 0) return fail(p, "dump id %lld is out of range", (long long)v);
        e->dump_id = (int32_t)v;
        expect(p, E_HADDUMPER);
        return 0;
    case E_HADDUMPER:
        if (v != 0 && v != 1) return fail(p, "data flag %lld is neither 0 nor 1", (long long)v);
        e->had_dumper = v == 1;
        expect(p, E_TABLEOID);
        return 0;
    case E_SECTION:
        if (v < 1 || v > 4) return fail(p, "section %lld is not 1 to 4", (long long)v);
        e->section = (int32_t)v;
        expect(p, E_DEFN);
        return 0;
    case E_RELKIND:
        if (v < 0 || v > 127) return fail(p, "relkind %lld is not a character", (long long)v);
        e->relkind = (int32_t)v;
        expect(p, E_OWNER);
        return 0;
    case B_DUMPID:
        return start_block(p, v);
    case D_CHUNKLEN:
        if (v < 0) return fail(p, "negative chunk length %lld", (long long)v);
        if (v == 0) return end_stream(p);
        p->toc->entries[p->block_entry].comp_bytes += (uint64_t)v;
        p->chunk_left = (uint64_t)v;
        expect(p, D_CHUNK);
        return 0;
    case L_OID: {
        ar_entry *be = &p->toc->entries[p->block_entry];
        if (v == 0) {
            be->seen = true;
            be->block_end = p->pos;
            p->next_data++;
            p->block_entry = -1;
            expect(p, B_TYPE);
            return 0;
        }
        p->lo_oid = (uint32_t)v;
        char msg[200];
        if (ar_dec_begin(&p->dec, t->algo, msg, sizeof msg) < 0) return fail(p, "%s", msg);
        p->lo_active = true;
        expect(p, D_CHUNKLEN);
        return 0;
    }
    default:
        return fail(p, "internal: unexpected integer field");
    }
}

/* A string has been read; p->str holds it when kept (NULL for a NULL). */
static int on_str(ar_parser *p)
{
    ar_toc *t = p->toc;
    ar_entry *e = p->phase == AR_PH_TOC ? &t->entries[p->cur] : NULL;
    switch (p->state) {
    case H_DBNAME:
        t->dbname = take_str(p);
        expect(p, H_SRVVER);
        return 0;
    case H_SRVVER:
        t->server_version = take_str(p);
        expect(p, H_DUMPVER);
        return 0;
    case H_DUMPVER:
        t->dump_version = take_str(p);
        expect(p, H_TOCCOUNT);
        return 0;
    case E_TABLEOID:
    case E_OID: {
        char *s = take_str(p);
        bool ok = is_decimal(s, false) && strtoull(s, NULL, 10) <= 0xffffffffULL;
        uint32_t v = ok ? (uint32_t)strtoul(s, NULL, 10) : 0;
        free(s);
        if (!ok) return fail(p, "%s is not a decimal OID", state_what(p->state));
        if (p->state == E_TABLEOID) {
            e->tableoid = v;
            expect(p, E_OID);
        } else {
            e->oid = v;
            expect(p, E_TAG);
        }
        return 0;
    }
    case E_TAG:
        if (p->str_null) return fail(p, "the tag is NULL");
        e->tag = take_str(p);
        expect(p, E_DESC);
        return 0;
    case E_DESC:
        if (p->str_null) return fail(p, "the type is NULL");
        e->desc = take_str(p);
        expect(p, E_SECTION);
        return 0;
    case E_DEFN:
        e->defn_schema =
            !p->str_null && p->str_len > 0 &&
            !(p->str_head_len >= 27 && memcmp(p->str_head, "-- load via partition root ", 27) == 0);
        expect(p, E_DROP);
        return 0;
    case E_DROP:
        expect(p, E_COPY);
        return 0;
    case E_COPY:
        e->has_copy = !p->str_null && p->str_len > 0;
        expect(p, E_NS);
        return 0;
    case E_NS:
        e->ns = take_str(p);
        expect(p, E_TABLESPACE);
        return 0;
    case E_TABLESPACE:
        expect(p, t->vmin >= 14 ? E_TABLEAM : E_OWNER);
        return 0;
    case E_TABLEAM:
        expect(p, t->vmin >= 16 ? E_RELKIND : E_OWNER);
        return 0;
    case E_OWNER:
        e->owner = take_str(p);
        expect(p, E_WITHOIDS);
        return 0;
    case E_WITHOIDS: {
        char *s = take_str(p);
        bool ok = s && (strcmp(s, "true") == 0 || strcmp(s, "false") == 0);
        free(s);
        if (!ok) return fail(p, "the WITH OIDS flag is neither \"true\" nor \"false\"");
        expect(p, E_DEP);
        return 0;
    }
    case E_DEP: {
        if (p->str_null) {
            if (p->dep_n > 0) {
                size_t sz = (size_t)p->dep_n * sizeof(int32_t);
                if (!account(p, sz)) return fail(p, "the TOC needs more memory than allowed");
                e->deps = malloc(sz);
                if (!e->deps) return fail(p, "out of memory reading the TOC");
                memcpy(e->deps, p->dep_buf, sz);
                e->ndeps = p->dep_n;
            }
            expect(p, E_OFFSET);
            return 0;
        }
        char *s = take_str(p);
        bool ok = is_decimal(s, true);
        long long v = ok ? strtoll(s, NULL, 10) : 0;
        free(s);
        if (!ok || v <= 0 || v > INT32_MAX) return fail(p, "a dependency is not a dump id");
        if (p->dep_n >= AR_MAX_DEPS) return fail(p, "more than %d dependencies", AR_MAX_DEPS);
        if (p->dep_n == p->dep_cap) {
            int cap = p->dep_cap ? p->dep_cap * 2 : 16;
            int32_t *n = realloc(p->dep_buf, (size_t)cap * sizeof(int32_t));
            if (!n) return fail(p, "out of memory reading the TOC");
            p->dep_buf = n;
            p->dep_cap = cap;
        }
        p->dep_buf[p->dep_n++] = (int32_t)v;
        expect(p, E_DEP);
        return 0;
    }
    default:
        return fail(p, "internal: unexpected string field");
    }
}

static bool keeps(int state)
{
    return state == H_DBNAME || state == H_SRVVER || state == H_DUMPVER || state == E_TABLEOID ||
           state == E_OID || state == E_TAG || state == E_DESC || state == E_NS ||
           state == E_OWNER || state == E_WITHOIDS || state == E_DEP;
}

static int on_str_len(ar_parser *p, int64_t len)
{
    p->str_null = len < 0;
    p->str_len = 0;
    p->str_head_len = 0;
    if (len < -1) return fail(p, "string length %lld is negative", (long long)len);
    p->str_keep = keeps(p->state);
    if (len <= 0) {
        if (len == 0 && p->str_keep) {
            if (!account(p, 1)) return fail(p, "the TOC needs more memory than allowed");
            p->str = calloc(1, 1);
            if (!p->str) return fail(p, "out of memory");
        }
        return on_str(p);
    }
    if (p->str_keep) {
        if (len > AR_MAX_KEPT_STR)
            return fail(p, "%s is %lld bytes long, more than the %d allowed", state_what(p->state),
                        (long long)len, AR_MAX_KEPT_STR);
        if (!account(p, (size_t)len + 1)) return fail(p, "the TOC needs more memory than allowed");
        p->str = malloc((size_t)len + 1);
        if (!p->str) return fail(p, "out of memory");
    }
    p->in_str = true;
    p->str_left = (uint64_t)len;
    return 0;
}

static int on_offset(ar_parser *p)
{
    ar_entry *e = &p->toc->entries[p->cur];
    int flag = p->tmp[0];
    uint64_t pos = 0;
    for (int i = p->toc->off_size; i >= 1; i--)
        pos = (pos << 8) | p->tmp[i];
    if (flag < AR_OFF_NOT_SET || flag > AR_OFF_NO_DATA)
        return fail(p, "unexpected data offset flag %d", flag);
    if ((flag == AR_OFF_NO_DATA) != !e->had_dumper)
        return fail(p, "data offset flag %d disagrees with the data flag %d", flag,
                    (int)e->had_dumper);
    if (flag != AR_OFF_SET && pos != 0)
        return fail(p, "data offset flag %d comes with a position", flag);
    e->off_flag = flag;
    e->off_pos = pos;
    e->off_field_pos = p->field_pos;
    p->cur++;
    return next_entry(p);
}

static int start_toc(ar_parser *p)
{
    p->phase = AR_PH_TOC;
    p->cur = 0;
    return next_entry(p);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int end_toc(ar_parser *p)
{
    ar_toc *t = p->toc;
    t->toc_end = p->pos;
    int64_t *ids = malloc(((size_t)t->nentries + 1) * sizeof(int64_t));
    t->data_idx = malloc(((size_t)t->nentries + 1) * sizeof(int));
    if (!ids || !t->data_idx) {
        free(ids);
        return fail(p, "out of memory checking the TOC");
    }
    t->ndata = 0;
    t->all_offsets = true;
    for (int i = 0; i < t->nentries; i++) {
        ids[i] = ((int64_t)t->entries[i].dump_id << 32) | (uint32_t)i;
        if (t->entries[i].had_dumper) {
            t->data_idx[t->ndata++] = i;
            if (t->entries[i].off_flag != AR_OFF_SET) t->all_offsets = false;
        }
    }
    if (t->ndata == 0) t->all_offsets = false;
    qsort(ids, (size_t)t->nentries, sizeof *ids, cmp_id);
    for (int i = 1; i < t->nentries; i++) {
        if ((ids[i] >> 32) == (ids[i - 1] >> 32)) {
            const ar_entry *e = &t->entries[(uint32_t)ids[i]];
            free(ids);
            p->phase = AR_PH_BLOCKS;
            return fail_at(p, false, e->off_field_pos, e, "dump id %d appears twice in the TOC",
                           (int)e->dump_id);
        }
    }
    free(ids);
    p->phase = AR_PH_BLOCKS;
    p->next_data = 0;
    p->last_data = t->ndata - 1;
    expect(p, B_TYPE);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Data blocks                                                         */
/* ------------------------------------------------------------------ */

static int entry_by_id(const ar_toc *t, int64_t id)
{
    for (int i = 0; i < t->nentries; i++)
        if (t->entries[i].dump_id == id) return i;
    return -1;
}

static int on_block_type(ar_parser *p, uint8_t b)
{
    if (p->next_data > p->last_data) {
        if (p->end_limit && p->last_data + 1 < p->toc->ndata) {
            const ar_entry *e = &p->toc->entries[p->toc->data_idx[p->last_data + 1]];
            return fail_at(p, false, p->field_pos, e,
                           "the previous data block ends at byte %llu, but the TOC places this "
                           "entry's block at byte %llu",
                           (unsigned long long)p->field_pos, (unsigned long long)e->off_pos);
        }
        return fail(p, "unexpected data after the last data block");
    }
    if (b != AR_BLK_DATA && b != AR_BLK_BLOBS) {
        const ar_entry *e = &p->toc->entries[p->toc->data_idx[p->next_data]];
        return fail_at(p, false, p->field_pos, e,
                       "unknown data block type %u where this entry's data block should start", b);
    }
    p->block_type = b;
    uint64_t start = p->field_pos;
    expect(p, B_DUMPID);
    p->field_pos = start;
    return 0;
}

static int start_block(ar_parser *p, int64_t id)
{
    ar_toc *t = p->toc;
    int want = t->data_idx[p->next_data];
    ar_entry *e = &t->entries[want];
    uint64_t start = p->field_pos;
    if (id != e->dump_id) {
        int other = entry_by_id(t, id);
        if (other < 0 || !t->entries[other].had_dumper)
            return fail_at(p, false, start, e,
                           "the data block here belongs to dump id %lld, which has no data in the "
                           "TOC; this entry's block is missing or damaged",
                           (long long)id);
        if (t->entries[other].seen)
            return fail_at(p, false, start, &t->entries[other],
                           "a second data block for this entry");
        return fail_at(p, false, start, e,
                       "the data block of dump id %lld comes first: blocks are out of TOC order or "
                       "this one is missing",
                       (long long)id);
    }
    bool blobs = strcmp(e->desc, "BLOBS") == 0;
    if (blobs != (p->block_type == AR_BLK_BLOBS))
        return fail_at(p, false, start, e, "data block type %d does not fit an entry of type %s",
                       p->block_type, e->desc);
    if (e->off_flag == AR_OFF_SET && e->off_pos != start)
        return fail_at(p, false, start, e,
                       "the TOC puts this entry's data at byte %llu, but it starts at byte %llu",
                       (unsigned long long)e->off_pos, (unsigned long long)start);
    p->block_entry = want;
    e->block_pos = start;
    if (blobs) {
        p->lo_active = false;
        expect(p, L_OID);
        return 0;
    }
    char msg[200];
    if (ar_dec_begin(&p->dec, t->algo, msg, sizeof msg) < 0) return fail(p, "%s", msg);
    memset(&p->copy, 0, sizeof p->copy);
    expect(p, D_CHUNKLEN);
    return 0;
}

static int end_stream(ar_parser *p)
{
    ar_entry *e = &p->toc->entries[p->block_entry];
    char msg[200];
    if (ar_dec_end(&p->dec, msg, sizeof msg) < 0) {
        if (p->lo_active) return fail(p, "large object %u: %s", p->lo_oid, msg);
        return fail(p, "%s", msg);
    }
    if (p->lo_active) {
        e->lo_count++;
        p->lo_active = false;
        expect(p, L_OID);
        return 0;
    }
    if (e->has_copy && !p->copy.done)
        return fail(p, "the COPY data ends without its end-of-data line (\\.): rows are missing");
    if (e->has_copy && p->copy.garbage)
        return fail(p, "the COPY data continues after its end-of-data line (\\.)");
    e->seen = true;
    e->copy_done = p->copy.done;
    e->block_end = p->pos;
    p->next_data++;
    p->block_entry = -1;
    expect(p, B_TYPE);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The driver                                                          */
/* ------------------------------------------------------------------ */

static int field_done(ar_parser *p)
{
    int kind = kind_of(p, p->state);
    int64_t v;
    switch (kind) {
    case K_MAGIC:
        return on_header_byte(p, 0);
    case K_BYTE:
        if (p->state == B_TYPE) return on_block_type(p, p->tmp[0]);
        return on_header_byte(p, p->tmp[0]);
    case K_OFF:
        return on_offset(p);
    case K_STR:
        if (decode_int(p, &v) < 0) return -1;
        return on_str_len(p, v);
    default:
        if (decode_int(p, &v) < 0) return -1;
        return on_int(p, v);
    }
}

int ar_parser_feed(ar_parser *p, const uint8_t *data, size_t len)
{
    if (p->failed) return -1;
    if (p->phase == AR_PH_DONE) return 0;
    while (len > 0) {
        if (p->pause_at_blocks && p->phase == AR_PH_BLOCKS) return 0;
        if (p->state == D_CHUNK) {
            size_t n = len < p->chunk_left ? len : (size_t)p->chunk_left;
            char msg[300];
            ar_entry *e = &p->toc->entries[p->block_entry];
            bool counting = !p->lo_active && e->has_copy;
            if (ar_dec_feed(&p->dec, data, n, e, counting ? &p->copy : NULL, msg, sizeof msg) < 0) {
                if (p->lo_active) return fail(p, "large object %u: %s", p->lo_oid, msg);
                return fail(p, "%s", msg);
            }
            data += n;
            len -= n;
            p->pos += n;
            p->chunk_left -= n;
            if (p->chunk_left == 0) expect(p, D_CHUNKLEN);
            continue;
        }
        if (p->in_str) {
            size_t n = len < p->str_left ? len : (size_t)p->str_left;
            if (p->str_keep) memcpy(p->str + p->str_len, data, n);
            size_t room = sizeof p->str_head - p->str_head_len;
            size_t h = n < room ? n : room;
            memcpy(p->str_head + p->str_head_len, data, h);
            p->str_head_len += h;
            p->str_len += n;
            data += n;
            len -= n;
            p->pos += n;
            p->str_left -= n;
            if (p->str_left == 0) {
                p->in_str = false;
                if (p->str_keep) {
                    p->str[p->str_len] = '\0';
                    /* pg_restore sees a C string: it ends at the first NUL */
                }
                if (on_str(p) < 0) return -1;
            }
            continue;
        }
        size_t n = (size_t)(p->need - p->have);
        if (n > len) n = len;
        memcpy(p->tmp + p->have, data, n);
        p->have += (int)n;
        data += n;
        len -= n;
        p->pos += n;
        if (p->have == p->need && field_done(p) < 0) return -1;
    }
    return 0;
}

int ar_parser_finish(ar_parser *p)
{
    if (p->failed) return -1;
    ar_toc *t = p->toc;
    if (p->phase == AR_PH_HEADER) {
        if (p->pos == 0) return fail_at(p, true, 0, NULL, "the input is empty");
        return fail_at(p, true, p->pos, NULL, "the input ends inside %s", state_what(p->state));
    }
    if (p->phase == AR_PH_TOC)
        return fail_at(p, true, p->pos, cur_entry(p), "the input ends inside %s",
                       state_what(p->state));
    if ((p->state != B_TYPE || p->have != 0) && p->end_limit)
        return fail_at(p, false, p->pos, cur_entry(p),
                       "the data block runs into byte %llu, where the TOC places the next block",
                       (unsigned long long)p->end_limit);
    if (p->state != B_TYPE || p->have != 0)
        return fail_at(p, true, p->pos, cur_entry(p), "the input ends inside %s",
                       state_what(p->state));
    if (p->next_data <= p->last_data) {
        const ar_entry *e = &t->entries[t->data_idx[p->next_data]];
        int more = p->last_data - p->next_data;
        if (p->end_limit)
            return fail_at(p, false, p->pos, e,
                           "the previous data block ends where this entry's block should start, "
                           "but the TOC places it elsewhere");
        return fail_at(p, true, p->pos, e, "the data block is missing%s",
                       more ? " (and those of the entries after it)" : "");
    }
    p->phase = AR_PH_DONE;
    return 0;
}
