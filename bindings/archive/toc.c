/*
 * toc.c: the header and the table of contents of a custom-format archive.
 * ar_fields is the file's layout as one table: each field in stored order
 * with its encoding, the archive versions 1.since..1.until that have it,
 * the values it may take and what to do with it. The parser's driver
 * reads each field and calls its handler; a field outside this archive's
 * version is skipped, so a version's layout is the table, not a chain of
 * "what comes next" decisions.
 */
#include "parser.h"

#include <stdlib.h>
#include <string.h>

#define ANY 0, 0          /* no range to check */
#define BYTE 0, 255       /* any byte */
#define ALWAYS 0, 255     /* in every archive version */
#define SINCE(v) (v), 255 /* from 1.v on */

/* ------------------------------------------------------------------ */
/* Header                                                              */
/* ------------------------------------------------------------------ */

static int on_magic(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e, (void)v;
    if (memcmp(p->tmp, "PGDMP", 5) != 0)
        return ar_fail(p, "no PGDMP magic string: this is not a pg_dump custom-format archive");
    return AR_NEXT;
}

/* The header's one-byte numbers. */
static int on_header_byte(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    ar_toc *t = p->toc;
    int *to = p->state == H_VMAJ      ? &t->vmaj
              : p->state == H_VMIN    ? &t->vmin
              : p->state == H_INTSIZE ? &t->int_size
              : p->state == H_OFFSIZE ? &t->off_size
                                      : &t->algo;
    *to = (int)v;
    return AR_NEXT;
}

static int on_vrev(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    ar_toc *t = p->toc;
    t->vrev = (int)v;
    if (t->vmaj != 1 || t->vmin < 12 || t->vmin > 16)
        return ar_fail(p, "unsupported archive version %d.%d (pgvault reads 1.12 to 1.16)", t->vmaj,
                       t->vmin);
    return AR_NEXT;
}

static int on_format(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    p->toc->format = (int)v;
    if (v != 1)
        return ar_fail(p, "format %d is not the custom format (1)%s", (int)v,
                       v == 5 ? "; this is a directory-format toc.dat" : "");
    return AR_NEXT;
}

/* 1.12-1.14 store zlib's level: -1 (default) or 1-9 is zlib, 0 none. */
static int on_level(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    p->toc->level = (int)v;
    p->toc->algo = v == 0 ? AR_ALGO_NONE : AR_ALGO_GZIP;
    return AR_NEXT;
}

static int on_time(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    p->toc->tm[p->state - H_SEC] = (int)v;
    return AR_NEXT;
}

static int on_header_str(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e, (void)v;
    ar_toc *t = p->toc;
    char **to = p->state == H_DBNAME   ? &t->dbname
                : p->state == H_SRVVER ? &t->server_version
                                       : &t->dump_version;
    *to = ar_take_str(p);
    return AR_NEXT;
}

static int on_toc_count(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e;
    p->toc->toc_count = (int32_t)v;
    return ar_start_toc(p);
}

/* ------------------------------------------------------------------ */
/* TOC entries                                                         */
/* ------------------------------------------------------------------ */

static bool is_decimal(const char *s, bool allow_minus)
{
    if (!s || !*s) return false;
    if (allow_minus && *s == '-') s++;
    if (!*s || strlen(s) > 10) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* The entry's numbers, already checked against their ranges. */
static int on_entry_int(ar_parser *p, ar_entry *e, int64_t v)
{
    switch (p->state) {
    case E_DUMPID:
        e->dump_id = (int32_t)v;
        break;
    case E_HADDUMPER:
        e->had_dumper = v == 1;
        break;
    case E_SECTION:
        e->section = (int32_t)v;
        break;
    default:
        e->relkind = (int32_t)v;
        break;
    }
    return AR_NEXT;
}

/* The table OID and the OID are decimal text ("%u"). */
static int on_oid(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)v;
    char *s = ar_take_str(p);
    bool ok = is_decimal(s, false) && strtoull(s, NULL, 10) <= 0xffffffffULL;
    uint32_t oid = ok ? (uint32_t)strtoul(s, NULL, 10) : 0;
    free(s);
    if (!ok) return ar_fail(p, "%s is not a decimal OID", ar_fields[p->state].what);
    if (p->state == E_TABLEOID)
        e->tableoid = oid;
    else
        e->oid = oid;
    return AR_NEXT;
}

/* The entry's kept strings but the OIDs. */
static int on_entry_str(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)v;
    char **to = p->state == E_TAG    ? &e->tag
                : p->state == E_DESC ? &e->desc
                : p->state == E_NS   ? &e->ns
                                     : &e->owner;
    *to = ar_take_str(p);
    return AR_NEXT;
}

/* A definition counts as schema unless it only says where a partition's
 * data loads (pg_restore's _tocEntryRequired). */
static int on_defn(ar_parser *p, ar_entry *e, int64_t len)
{
    static const char root[] = "-- load via partition root ";
    size_t n = sizeof root - 1;
    e->defn_schema = len > 0 && !(p->str_head_len >= n && memcmp(p->str_head, root, n) == 0);
    if (p->str) { /* kept for a restorer (a crafted entry may have both) */
        free(e->sql);
        e->sql = ar_take_str(p);
    }
    return AR_NEXT;
}

static int on_copy(ar_parser *p, ar_entry *e, int64_t len)
{
    e->has_copy = len > 0;
    if (p->str) { /* kept for a restorer (a crafted entry may have both) */
        free(e->sql);
        e->sql = ar_take_str(p);
    }
    return AR_NEXT;
}

static int on_with_oids(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)e, (void)v;
    char *s = ar_take_str(p);
    bool ok = s && (strcmp(s, "true") == 0 || strcmp(s, "false") == 0);
    free(s);
    if (!ok) return ar_fail(p, "the WITH OIDS flag is neither \"true\" nor \"false\"");
    return AR_NEXT;
}

static int keep_deps(ar_parser *p, ar_entry *e)
{
    if (p->dep_n == 0) return AR_NEXT;
    size_t sz = (size_t)p->dep_n * sizeof(int32_t);
    if (!ar_account(p, sz)) return ar_fail(p, "the TOC needs more memory than allowed");
    e->deps = malloc(sz);
    if (!e->deps) return ar_fail(p, "out of memory reading the TOC");
    memcpy(e->deps, p->dep_buf, sz);
    e->ndeps = p->dep_n;
    return AR_NEXT;
}

/* Dependencies: decimal dump ids, as many as there are, then a NULL. */
static int on_dep(ar_parser *p, ar_entry *e, int64_t len)
{
    if (len < 0) return keep_deps(p, e);
    char *s = ar_take_str(p);
    bool ok = is_decimal(s, true);
    long long v = ok ? strtoll(s, NULL, 10) : 0;
    free(s);
    if (!ok || v <= 0 || v > INT32_MAX) return ar_fail(p, "a dependency is not a dump id");
    if (p->dep_n >= AR_MAX_DEPS) return ar_fail(p, "more than %d dependencies", AR_MAX_DEPS);
    if (p->dep_n == p->dep_cap) {
        int cap = p->dep_cap ? p->dep_cap * 2 : 16;
        int32_t *n = realloc(p->dep_buf, (size_t)cap * sizeof(int32_t));
        if (!n) return ar_fail(p, "out of memory reading the TOC");
        p->dep_buf = n;
        p->dep_cap = cap;
    }
    p->dep_buf[p->dep_n++] = (int32_t)v;
    ar_expect(p, E_DEP);
    return AR_CHOSEN;
}

static int next_entry(ar_parser *p);

/* A lean parser lets go of an entry without data once it is read: its
 * strings are freed, its slot is reused, and only its dump id is kept. */
static int drop_entry(ar_parser *p, ar_entry *e)
{
    ar_toc *t = p->toc;
    int32_t id = e->dump_id;
    ar_entry_free(e);
    t->nentries--;
    t->memory = p->entry_mark;
    if (t->ndropped == t->dropped_cap) {
        int cap = t->dropped_cap ? t->dropped_cap * 2 : 1024;
        if (cap > AR_MAX_ENTRIES) cap = AR_MAX_ENTRIES;
        if (!ar_account(p, (size_t)(cap - t->dropped_cap) * sizeof(int32_t)))
            return ar_fail(p, "the TOC needs more memory than allowed");
        int32_t *n = realloc(t->dropped_ids, (size_t)cap * sizeof(int32_t));
        if (!n) return ar_fail(p, "out of memory reading the TOC");
        t->dropped_ids = n;
        t->dropped_cap = cap;
    }
    t->dropped_ids[t->ndropped++] = id;
    return 0;
}

static int on_offset(ar_parser *p, ar_entry *e, int64_t v)
{
    (void)v;
    int flag = p->tmp[0];
    uint64_t pos = 0;
    for (int i = p->toc->off_size; i >= 1; i--)
        pos = (pos << 8) | p->tmp[i];
    if (flag < AR_OFF_NOT_SET || flag > AR_OFF_NO_DATA)
        return ar_fail(p, "unexpected data offset flag %d", flag);
    if ((flag == AR_OFF_NO_DATA) != !e->had_dumper)
        return ar_fail(p, "data offset flag %d disagrees with the data flag %d", flag,
                       (int)e->had_dumper);
    if (flag != AR_OFF_SET && pos != 0)
        return ar_fail(p, "data offset flag %d comes with a position", flag);
    e->off_flag = flag;
    e->off_pos = pos;
    e->off_field_pos = p->field_pos;
    p->cur++;
    if (p->list && ar_list_entry(p, e) < 0) return -1;
    if (p->lean && !e->had_dumper && drop_entry(p, e) < 0) return -1;
    return next_entry(p);
}

/* ------------------------------------------------------------------ */
/* The layout                                                          */
/* ------------------------------------------------------------------ */

const ar_field ar_fields[AR_NFIELDS] = {
    [H_MAGIC] = {"the magic string", K_MAGIC, ALWAYS, 0, ANY, on_magic},
    [H_VMAJ] = {"the major version", K_BYTE, ALWAYS, 0, BYTE, on_header_byte},
    [H_VMIN] = {"the minor version", K_BYTE, ALWAYS, 0, BYTE, on_header_byte},
    [H_VREV] = {"the revision", K_BYTE, ALWAYS, 0, BYTE, on_vrev},
    [H_INTSIZE] = {"the integer size", K_BYTE, ALWAYS, 0, 1, 8, on_header_byte},
    [H_OFFSIZE] = {"the offset size", K_BYTE, ALWAYS, 0, 1, 8, on_header_byte},
    [H_FORMAT] = {"the format", K_BYTE, ALWAYS, 0, BYTE, on_format},
    [H_LEVEL] = {"the compression level", K_INT, 0, 14, 0, -1, 9, on_level},
    [H_ALGO] = {"the compression algorithm", K_BYTE, SINCE(15), 0, 0, AR_ALGO_ZSTD, on_header_byte},
    [H_SEC] = {"the creation time's seconds", K_INT, ALWAYS, 0, 0, 61, on_time},
    [H_MIN] = {"the creation time's minutes", K_INT, ALWAYS, 0, 0, 59, on_time},
    [H_HOUR] = {"the creation time's hour", K_INT, ALWAYS, 0, 0, 23, on_time},
    [H_MDAY] = {"the creation time's day", K_INT, ALWAYS, 0, 1, 31, on_time},
    [H_MON] = {"the creation time's month", K_INT, ALWAYS, 0, 0, 11, on_time},
    [H_YEAR] = {"the creation time's year", K_INT, ALWAYS, 0, 0, 8099, on_time},
    [H_ISDST] = {"the creation time's DST flag", K_INT, ALWAYS, 0, -1, 1, on_time},
    [H_DBNAME] = {"the database name", K_STR, ALWAYS, F_KEEP, ANY, on_header_str},
    [H_SRVVER] = {"the server version", K_STR, ALWAYS, F_KEEP, ANY, on_header_str},
    [H_DUMPVER] = {"the pg_dump version", K_STR, ALWAYS, F_KEEP, ANY, on_header_str},
    [H_TOCCOUNT] = {"the TOC entry count", K_INT, ALWAYS, 0, 0, AR_MAX_ENTRIES, on_toc_count},
    [E_DUMPID] = {"the dump id", K_INT, ALWAYS, 0, 1, INT32_MAX, on_entry_int},
    [E_HADDUMPER] = {"the data flag", K_INT, ALWAYS, 0, 0, 1, on_entry_int},
    [E_TABLEOID] = {"the table OID", K_STR, ALWAYS, F_KEEP, ANY, on_oid},
    [E_OID] = {"the OID", K_STR, ALWAYS, F_KEEP, ANY, on_oid},
    [E_TAG] = {"the tag", K_STR, ALWAYS, F_KEEP | F_NOT_NULL, ANY, on_entry_str},
    [E_DESC] = {"the type", K_STR, ALWAYS, F_KEEP | F_NOT_NULL, ANY, on_entry_str},
    [E_SECTION] = {"the section", K_INT, ALWAYS, 0, 1, 4, on_entry_int},
    [E_DEFN] = {"the definition", K_STR, ALWAYS, 0, ANY, on_defn},
    [E_DROP] = {"the drop statement", K_STR, ALWAYS, 0, ANY, NULL},
    [E_COPY] = {"the COPY statement", K_STR, ALWAYS, 0, ANY, on_copy},
    [E_NS] = {"the schema", K_STR, ALWAYS, F_KEEP, ANY, on_entry_str},
    [E_TABLESPACE] = {"the tablespace", K_STR, ALWAYS, 0, ANY, NULL},
    [E_TABLEAM] = {"the table access method", K_STR, SINCE(14), 0, ANY, NULL},
    [E_RELKIND] = {"the relkind", K_INT, SINCE(16), 0, 0, 127, on_entry_int},
    [E_OWNER] = {"the owner", K_STR, ALWAYS, F_KEEP, ANY, on_entry_str},
    [E_WITHOIDS] = {"the WITH OIDS flag", K_STR, ALWAYS, F_KEEP, ANY, on_with_oids},
    [E_DEP] = {"a dependency", K_STR, ALWAYS, F_KEEP, ANY, on_dep},
    [E_OFFSET] = {"the data offset", K_OFF, ALWAYS, 0, ANY, on_offset},
    [B_TYPE] = {"a data block header", K_BYTE, ALWAYS, 0, BYTE, ar_on_block_type},
    [B_DUMPID] = {"a data block's dump id", K_INT, ALWAYS, 0, ANY, ar_on_block_id},
    [D_CHUNKLEN] = {"a chunk length", K_INT, ALWAYS, 0, ANY, ar_on_chunk_len},
    [D_CHUNK] = {"a chunk of data", K_PAYLOAD, ALWAYS, 0, ANY, NULL},
    [L_OID] = {"a large object's OID", K_INT, ALWAYS, 0, ANY, ar_on_lo_oid},
};

/* ------------------------------------------------------------------ */
/* From the TOC count to the first data block                          */
/* ------------------------------------------------------------------ */

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Dump ids must be unique: sorted (id, index) pairs show a repeat. The
 * ids a lean parser let go of follow the kept entries' (index nentries +
 * j); a repeat is told with a kept entry of the pair where there is one. */
static int check_unique_ids(ar_parser *p)
{
    ar_toc *t = p->toc;
    size_t n = (size_t)t->nentries + (size_t)t->ndropped;
    int64_t *ids = malloc((n + 1) * sizeof(int64_t));
    if (!ids) return ar_fail(p, "out of memory checking the TOC");
    for (int i = 0; i < t->nentries; i++)
        ids[i] = ((int64_t)t->entries[i].dump_id << 32) | (uint32_t)i;
    for (int j = 0; j < t->ndropped; j++)
        ids[t->nentries + j] = ((int64_t)t->dropped_ids[j] << 32) | (uint32_t)(t->nentries + j);
    qsort(ids, n, sizeof *ids, cmp_id);
    for (size_t i = 1; i < n; i++) {
        if ((ids[i] >> 32) == (ids[i - 1] >> 32)) {
            uint32_t a = (uint32_t)ids[i], b = (uint32_t)ids[i - 1];
            uint32_t k = a < (uint32_t)t->nentries ? a : b;
            const ar_entry *e = k < (uint32_t)t->nentries ? &t->entries[k] : NULL;
            int32_t id = (int32_t)(ids[i] >> 32);
            free(ids);
            return ar_fail_at(p, false, e ? e->off_field_pos : t->toc_end, e,
                              "dump id %d appears twice in the TOC", (int)id);
        }
    }
    free(ids);
    return 0;
}

static int end_toc(ar_parser *p)
{
    ar_toc *t = p->toc;
    t->toc_end = p->pos;
    t->data_idx = malloc(((size_t)t->nentries + 1) * sizeof(int));
    if (!t->data_idx) return ar_fail(p, "out of memory checking the TOC");
    t->ndata = 0;
    t->all_offsets = true;
    for (int i = 0; i < t->nentries; i++) {
        if (!t->entries[i].had_dumper) continue;
        t->data_idx[t->ndata++] = i;
        if (t->entries[i].off_flag != AR_OFF_SET) t->all_offsets = false;
    }
    if (t->ndata == 0) t->all_offsets = false;
    p->phase = AR_PH_BLOCKS;
    if (check_unique_ids(p) < 0) return -1;
    p->next_data = 0;
    p->last_data = t->ndata - 1;
    ar_expect(p, B_TYPE);
    if (p->hooks && p->hooks->toc_done && p->hooks->toc_done(p->hooks->ctx, t) < 0)
        return ar_hook_failed(p);
    return AR_CHOSEN;
}

static int next_entry(ar_parser *p)
{
    ar_toc *t = p->toc;
    if (p->cur >= t->toc_count) return end_toc(p);
    if (t->nentries == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        if (cap > AR_MAX_ENTRIES) cap = AR_MAX_ENTRIES;
        size_t grow = (size_t)(cap - t->cap) * sizeof(ar_entry);
        if (!ar_account(p, grow)) return ar_fail(p, "the TOC needs more memory than allowed");
        ar_entry *n = realloc(t->entries, (size_t)cap * sizeof(ar_entry));
        if (!n) return ar_fail(p, "out of memory reading the TOC");
        t->entries = n;
        t->cap = cap;
    }
    memset(&t->entries[t->nentries], 0, sizeof(ar_entry));
    t->nentries++;
    p->entry_mark = t->memory;
    p->dep_n = 0;
    ar_expect(p, E_DUMPID);
    return AR_CHOSEN;
}

int ar_start_toc(ar_parser *p)
{
    p->phase = AR_PH_TOC;
    p->cur = 0;
    return next_entry(p);
}
