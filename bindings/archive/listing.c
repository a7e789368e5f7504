/*
 * listing.c: what the reader tells Lua: pg_restore --list's text for the
 * TOC (PrintTOCSummary's header and its entry selection with no options),
 * and the summary table with per-table sizes and COPY row counts.
 *
 * The Compression line follows the pg_restore that can read the file:
 * archives up to 1.14 print the stored level as pg_restore 11-15 does;
 * 1.15 and 1.16 (readable by pg_restore 16/17 only) print the algorithm.
 */
#include "parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REQ_SCHEMA = 1, REQ_DATA = 2 };

static bool is(const char *s, const char *lit)
{
    return s && strcmp(s, lit) == 0;
}

static bool starts(const char *s, const char *prefix, size_t n)
{
    return s && strncmp(s, prefix, n) == 0;
}

/* _tocEntryRequired with no selection options. */
static bool listed(const ar_toc *t, const ar_entry *e, int cur)
{
    const char *d = e->desc;
    if (is(d, "ENCODING") || is(d, "STDSTRINGS") || is(d, "SEARCHPATH")) return false;
    if (is(d, "DATABASE") || is(d, "DATABASE PROPERTIES")) return false;
    if (cur < 2 || cur > 4) return false;
    bool dependent = is(d, "ACL") || is(d, "COMMENT") || is(d, "SECURITY LABEL");
    if (dependent && starts(e->tag, "DATABASE ", 9)) return false;
    int res = REQ_SCHEMA | REQ_DATA;
    if (!e->had_dumper) {
        size_t lo_len = t->vmin >= 16 ? 12 : 13;
        if (is(d, "SEQUENCE SET") || is(d, "BLOB") || (t->vmin >= 16 && is(d, "BLOB METADATA")) ||
            (dependent && starts(e->tag, "LARGE OBJECT ", lo_len)))
            res &= REQ_DATA;
        else
            res &= ~REQ_DATA;
    }
    if (!e->defn_schema) res &= ~REQ_SCHEMA;
    if (is(d, "<Init>") && is(e->tag, "Max OID")) return false;
    return res != 0;
}

/* A growing text (the listing's lines); false when out of memory. */
static bool text_add(ar_text *x, const char *s, size_t n)
{
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < x->len + n + 1)
            cap *= 2;
        char *b = realloc(x->s, cap);
        if (!b) return false;
        x->s = b;
        x->cap = cap;
    }
    memcpy(x->s + x->len, s, n);
    x->len += n;
    x->s[x->len] = '\0';
    return true;
}

/* sanitize_line: NULL becomes "-" or "", CR and LF become spaces. */
static bool text_clean(ar_text *x, const char *s, bool hyphen)
{
    if (!s) return !hyphen || text_add(x, "-", 1);
    size_t at = x->len;
    if (!text_add(x, s, strlen(s))) return false;
    for (size_t i = at; i < x->len; i++)
        if (x->s[i] == '\n' || x->s[i] == '\r') x->s[i] = ' ';
    return true;
}

/* One entry's line of the listing (and, verbose, its dependencies);
 * *section is the section of the entries so far (pg_restore's curSection). */
static bool text_entry(ar_text *x, const ar_toc *t, const ar_entry *e, int *section, bool verbose)
{
    char line[64];
    if (e->section != 1) *section = e->section;
    if (verbose || listed(t, e, *section)) {
        int n = snprintf(line, sizeof line, "%d; %u %u ", (int)e->dump_id, e->tableoid, e->oid);
        if (!text_add(x, line, (size_t)n) || !text_add(x, e->desc, strlen(e->desc)) ||
            !text_add(x, " ", 1) || !text_clean(x, e->ns, true) || !text_add(x, " ", 1) ||
            !text_clean(x, e->tag, false) || !text_add(x, " ", 1) ||
            !text_clean(x, e->owner, false) || !text_add(x, "\n", 1))
            return false;
    }
    if (verbose && e->ndeps > 0) {
        if (!text_add(x, ";\tdepends on:", 13)) return false;
        for (int j = 0; j < e->ndeps; j++) {
            int n = snprintf(line, sizeof line, " %d", (int)e->deps[j]);
            if (!text_add(x, line, (size_t)n)) return false;
        }
        if (!text_add(x, "\n", 1)) return false;
    }
    return true;
}

int ar_list_entry(ar_parser *p, const ar_entry *e)
{
    ar_toc *t = p->toc;
    size_t cap = t->listing.cap;
    if (!t->listing.s && !text_add(&t->listing, "", 0)) return ar_fail(p, "out of memory");
    if (t->listing_section == 0) t->listing_section = 2;
    if (!text_entry(&t->listing, t, e, &t->listing_section, p->list == AR_LIST_VERBOSE))
        return ar_fail(p, "out of memory listing the TOC");
    if (!ar_account(p, t->listing.cap - cap))
        return ar_fail(p, "the TOC's listing needs more memory than allowed");
    return 0;
}

static void stamp(const ar_toc *t, char *out, size_t outsz)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_sec = t->tm[0];
    tm.tm_min = t->tm[1];
    tm.tm_hour = t->tm[2];
    tm.tm_mday = t->tm[3];
    tm.tm_mon = t->tm[4];
    tm.tm_year = t->tm[5];
    tm.tm_isdst = t->tm[6];
    time_t when = mktime(&tm);
    if (when == (time_t)-1) {
        tm.tm_isdst = -1;
        when = mktime(&tm);
    }
    struct tm local;
    if (!localtime_r(&when, &local) || strftime(out, outsz, "%Y-%m-%d %H:%M:%S %Z", &local) == 0)
        snprintf(out, outsz, "[unknown]");
}

void ar_list(lua_State *L, const ar_toc *t, bool verbose)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char line[512];
    stamp(t, line, sizeof line);
    lua_pushfstring(L, ";\n; Archive created at %s\n;     dbname: ", line);
    luaL_addvalue(&b);
    if (t->dbname) {
        ar_text name = {0};
        if (!text_clean(&name, t->dbname, false)) luaL_error(L, "out of memory");
        luaL_addlstring(&b, name.s, name.len);
        free(name.s);
    }
    if (t->vmin >= 15)
        snprintf(line, sizeof line, "\n;     TOC Entries: %d\n;     Compression: %s\n",
                 (int)t->toc_count, ar_algo_name(t->algo));
    else
        snprintf(line, sizeof line, "\n;     TOC Entries: %d\n;     Compression: %d\n",
                 (int)t->toc_count, t->level);
    luaL_addstring(&b, line);
    snprintf(line, sizeof line,
             ";     Dump Version: %d.%d-%d\n;     Format: CUSTOM\n;     Integer: %d bytes\n"
             ";     Offset: %d bytes\n",
             t->vmaj, t->vmin, t->vrev, t->int_size, t->off_size);
    luaL_addstring(&b, line);
    if (t->server_version) {
        luaL_addstring(&b, ";     Dumped from database version: ");
        luaL_addstring(&b, t->server_version);
        luaL_addchar(&b, '\n');
    }
    if (t->dump_version) {
        luaL_addstring(&b, ";     Dumped by pg_dump version: ");
        luaL_addstring(&b, t->dump_version);
        luaL_addchar(&b, '\n');
    }
    luaL_addstring(&b, ";\n;\n; Selected TOC Entries:\n;\n");
    luaL_pushresult(&b);
    /* the lines written as the entries were read, else made from them */
    ar_text x = {0};
    const ar_text *body = &t->listing;
    if (!t->listing.s) {
        int section = 2;
        for (int i = 0; i < t->nentries; i++) {
            if (!text_entry(&x, t, &t->entries[i], &section, verbose)) {
                free(x.s);
                luaL_error(L, "out of memory listing the TOC");
            }
        }
        body = &x;
    }
    /* one string of the final size: no doubling buffer beside the text */
    size_t hlen;
    const char *head = lua_tolstring(L, -1, &hlen);
    luaL_Buffer all;
    char *dst = luaL_buffinitsize(L, &all, hlen + body->len);
    memcpy(dst, head, hlen);
    if (body->len) memcpy(dst + hlen, body->s, body->len);
    free(x.s);
    luaL_pushresultsize(&all, hlen + body->len);
    lua_remove(L, -2);
}

/* The header's fields and what the reader saw of the file as a whole. */
static void set_header(lua_State *L, const ar_toc *t, uint64_t bytes, bool complete)
{
    char s[64];
    snprintf(s, sizeof s, "%d.%d", t->vmaj, t->vmin);
    pv_set_str(L, "version", s);
    pv_set_str(L, "format", "custom");
    pv_set_str(L, "compression", ar_algo_name(t->algo));
    if (t->vmin < 15) pv_set_int(L, "compression_level", (lua_Integer)t->level);
    pv_set_str(L, "dbname", t->dbname);
    pv_set_str(L, "server_version", t->server_version);
    pv_set_str(L, "dump_version", t->dump_version);
    snprintf(s, sizeof s, "%04d-%02d-%02d %02d:%02d:%02d", t->tm[5] + 1900, t->tm[4] + 1, t->tm[3],
             t->tm[2], t->tm[1], t->tm[0]);
    pv_set_str(L, "created", s);
    pv_set_int(L, "int_size", (lua_Integer)t->int_size);
    pv_set_int(L, "offset_size", (lua_Integer)t->off_size);
    pv_set_int(L, "toc_entries", (lua_Integer)t->toc_count);
    pv_set_int(L, "toc_bytes", (lua_Integer)(long long)t->toc_end);
    pv_set_int(L, "bytes", (lua_Integer)(long long)bytes);
    pv_set_bool(L, "offsets", t->all_offsets);
    pv_set_bool(L, "complete", complete);
    if (t->read.mode) {
        lua_createtable(L, 0, 5);
        pv_set_str(L, "mode", t->read.mode);
        pv_set_int(L, "toc_memory", (lua_Integer)t->memory);
        pv_set_int(L, "threads", (lua_Integer)t->read.threads);
        pv_set_int(L, "ranges", (lua_Integer)t->read.ranges);
        pv_set_str(L, "reason", t->read.reason);
        lua_setfield(L, -2, "read");
    }
}

static void push_table(lua_State *L, const ar_entry *e)
{
    lua_createtable(L, 0, 8);
    pv_set_int(L, "dump_id", (lua_Integer)e->dump_id);
    pv_set_str(L, "kind", e->desc);
    pv_set_str(L, "schema", e->ns);
    pv_set_str(L, "name", e->tag);
    pv_set_int(L, "compressed", (lua_Integer)(long long)e->comp_bytes);
    pv_set_int(L, "uncompressed", (lua_Integer)(long long)e->raw_bytes);
    if (e->seen) {
        pv_set_int(L, "offset", (lua_Integer)(long long)e->block_pos);
        pv_set_int(L, "block_bytes", (lua_Integer)(long long)(e->block_end - e->block_pos));
    }
    if (e->rows_known) pv_set_int(L, "rows", (lua_Integer)e->rows);
    pv_set_bool(L, "verified", e->seen);
}

/* Per-table sizes and rows (large objects are summed instead), then the
 * totals. */
static void set_tables(lua_State *L, const ar_toc *t)
{
    long long rows = 0, comp = 0, raw = 0, lo_n = 0, lo_comp = 0, lo_raw = 0;
    int ntables = 0, nblobs = 0;
    lua_createtable(L, t->ndata, 0);
    for (int i = 0; i < t->ndata; i++) {
        const ar_entry *e = &t->entries[t->data_idx[i]];
        comp += (long long)e->comp_bytes;
        raw += (long long)e->raw_bytes;
        if (is(e->desc, "BLOBS")) {
            nblobs++;
            lo_n += e->lo_count;
            lo_comp += (long long)e->comp_bytes;
            lo_raw += (long long)e->raw_bytes;
            continue;
        }
        push_table(L, e);
        lua_rawseti(L, -2, ++ntables);
        if (e->rows_known) rows += e->rows;
    }
    lua_setfield(L, -2, "tables");
    lua_createtable(L, 0, 4);
    pv_set_int(L, "count", (lua_Integer)lo_n);
    pv_set_int(L, "blocks", (lua_Integer)nblobs);
    pv_set_int(L, "compressed", (lua_Integer)lo_comp);
    pv_set_int(L, "uncompressed", (lua_Integer)lo_raw);
    lua_setfield(L, -2, "large_objects");
    lua_createtable(L, 0, 5);
    pv_set_int(L, "data_entries", (lua_Integer)t->ndata);
    pv_set_int(L, "tables", (lua_Integer)ntables);
    pv_set_int(L, "rows", (lua_Integer)rows);
    pv_set_int(L, "compressed", (lua_Integer)comp);
    pv_set_int(L, "uncompressed", (lua_Integer)raw);
    lua_setfield(L, -2, "totals");
}

/* Where each data block starts and where its TOC offset field sits: what
 * archive.fill_offsets needs to make the file seekable. */
static void set_blocks(lua_State *L, const ar_toc *t)
{
    lua_createtable(L, t->ndata, 0);
    int nb = 0;
    for (int i = 0; i < t->ndata; i++) {
        const ar_entry *e = &t->entries[t->data_idx[i]];
        if (!e->seen) continue;
        lua_createtable(L, 0, 4);
        pv_set_int(L, "dump_id", (lua_Integer)e->dump_id);
        pv_set_int(L, "offset", (lua_Integer)(long long)e->block_pos);
        pv_set_int(L, "field", (lua_Integer)(long long)e->off_field_pos);
        pv_set_int(L, "flag", (lua_Integer)e->off_flag);
        lua_rawseti(L, -2, ++nb);
    }
    lua_setfield(L, -2, "blocks");
}

void ar_push_summary(lua_State *L, const ar_toc *t, uint64_t bytes, bool complete)
{
    lua_createtable(L, 0, 20);
    set_header(L, t, bytes, complete);
    set_tables(L, t);
    set_blocks(L, t);
}
