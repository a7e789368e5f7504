/*
 * blocks.c: the data-block walk of the push parser. After the TOC come the
 * blocks of the entries that have data, in TOC order: a type byte and a
 * dump id, then for table data one stream of chunks, and for large objects
 * an (OID, stream) pair per object ended by OID 0. Each block must start
 * where the TOC says, belong to the entry expected next, and each stream
 * must decode to its codec's end; COPY rows and INSERT rows are counted.
 */
#include "parser.h"

#include <stdio.h>
#include <string.h>

static int entry_by_id(const ar_toc *t, int64_t id)
{
    for (int i = 0; i < t->nentries; i++)
        if (t->entries[i].dump_id == id) return i;
    return -1;
}

int ar_on_block_type(ar_parser *p, ar_entry *e, int64_t b)
{
    (void)e;
    if (p->next_data > p->last_data) {
        if (p->end_limit && p->last_data + 1 < p->toc->ndata) {
            const ar_entry *n = &p->toc->entries[p->toc->data_idx[p->last_data + 1]];
            return ar_fail_at(p, false, p->field_pos, n,
                              "the previous data block ends at byte %llu, but the TOC places this "
                              "entry's block at byte %llu",
                              (unsigned long long)p->field_pos, (unsigned long long)n->off_pos);
        }
        return ar_fail(p, "unexpected data after the last data block");
    }
    if (b != AR_BLK_DATA && b != AR_BLK_BLOBS) {
        const ar_entry *n = &p->toc->entries[p->toc->data_idx[p->next_data]];
        return ar_fail_at(p, false, p->field_pos, n,
                          "unknown data block type %u where this entry's data block should start",
                          (unsigned)b);
    }
    p->block_type = (int)b;
    uint64_t start = p->field_pos;
    ar_expect(p, B_DUMPID);
    p->field_pos = start; /* the block starts at its type byte */
    return AR_CHOSEN;
}

/* The block's dump id is not the one expected next: say why. */
static int wrong_block(ar_parser *p, ar_entry *want, int64_t id, uint64_t start)
{
    ar_toc *t = p->toc;
    int other = entry_by_id(t, id);
    if (other < 0 || !t->entries[other].had_dumper)
        return ar_fail_at(p, false, start, want,
                          "the data block here belongs to dump id %lld, which has no data in the "
                          "TOC; this entry's block is missing or damaged",
                          (long long)id);
    if (t->entries[other].seen)
        return ar_fail_at(p, false, start, &t->entries[other],
                          "a second data block for this entry");
    return ar_fail_at(p, false, start, want,
                      "the data block of dump id %lld comes first: blocks are out of TOC order or "
                      "this one is missing",
                      (long long)id);
}

static int begin_stream(ar_parser *p)
{
    char msg[200];
    if (ar_dec_begin(&p->dec, p->toc->algo, msg, sizeof msg) < 0) return ar_fail(p, "%s", msg);
    p->dec.data = p->hooks ? p->hooks->data : NULL;
    p->dec.data_ctx = p->hooks ? p->hooks->ctx : NULL;
    ar_expect(p, D_CHUNKLEN);
    return AR_CHOSEN;
}

int ar_on_block_id(ar_parser *p, ar_entry *unused, int64_t id)
{
    (void)unused;
    ar_toc *t = p->toc;
    int want = t->data_idx[p->next_data];
    ar_entry *e = &t->entries[want];
    uint64_t start = p->field_pos;
    if (id != e->dump_id) return wrong_block(p, e, id, start);
    bool blobs = strcmp(e->desc, "BLOBS") == 0;
    if (blobs != (p->block_type == AR_BLK_BLOBS))
        return ar_fail_at(p, false, start, e, "data block type %d does not fit an entry of type %s",
                          p->block_type, e->desc);
    if (e->off_flag == AR_OFF_SET && e->off_pos != start)
        return ar_fail_at(p, false, start, e,
                          "the TOC puts this entry's data at byte %llu, but it starts at byte %llu",
                          (unsigned long long)e->off_pos, (unsigned long long)start);
    p->block_entry = want;
    e->block_pos = start;
    if (p->hooks && p->hooks->block_begin && p->hooks->block_begin(p->hooks->ctx, e) < 0)
        return ar_hook_failed(p);
    if (blobs) {
        p->lo_active = false;
        ar_expect(p, L_OID);
        return AR_CHOSEN;
    }
    int rows = e->has_copy                          ? AR_ROWS_COPY
               : strcmp(e->desc, "TABLE DATA") == 0 ? AR_ROWS_INSERT
                                                    : AR_ROWS_NONE;
    ar_rows_begin(&p->rows, rows);
    return begin_stream(p);
}

static int end_block(ar_parser *p, ar_entry *e)
{
    if (p->hooks && p->hooks->block_end && p->hooks->block_end(p->hooks->ctx, e) < 0)
        return ar_hook_failed(p);
    e->seen = true;
    e->block_end = p->pos;
    p->next_data++;
    p->block_entry = -1;
    ar_expect(p, B_TYPE);
    return AR_CHOSEN;
}

static int end_stream(ar_parser *p, ar_entry *e)
{
    char msg[300];
    if (ar_dec_end(&p->dec, msg, sizeof msg) < 0) {
        if (p->lo_active) return ar_fail(p, "large object %u: %s", p->lo_oid, msg);
        return ar_fail(p, "%s", msg);
    }
    if (p->lo_active) {
        e->lo_count++;
        p->lo_active = false;
        if (p->hooks && p->hooks->lo_end && p->hooks->lo_end(p->hooks->ctx, e) < 0)
            return ar_hook_failed(p);
        ar_expect(p, L_OID);
        return AR_CHOSEN;
    }
    if (ar_rows_end(&p->rows, e, msg, sizeof msg) < 0) return ar_fail(p, "%s", msg);
    return end_block(p, e);
}

int ar_on_chunk_len(ar_parser *p, ar_entry *unused, int64_t len)
{
    (void)unused;
    ar_entry *e = &p->toc->entries[p->block_entry];
    if (len < 0) return ar_fail(p, "negative chunk length %lld", (long long)len);
    if (len == 0) return end_stream(p, e);
    e->comp_bytes += (uint64_t)len;
    p->chunk_left = (uint64_t)len;
    ar_expect(p, D_CHUNK);
    return AR_CHOSEN;
}

int ar_on_lo_oid(ar_parser *p, ar_entry *unused, int64_t oid)
{
    (void)unused;
    ar_entry *e = &p->toc->entries[p->block_entry];
    if (oid == 0) return end_block(p, e);
    p->lo_oid = (uint32_t)oid;
    p->lo_active = true;
    if (p->hooks && p->hooks->lo_begin && p->hooks->lo_begin(p->hooks->ctx, e, p->lo_oid) < 0)
        return ar_hook_failed(p);
    return begin_stream(p);
}

int ar_feed_chunk(ar_parser *p, const uint8_t *data, size_t n)
{
    char msg[300];
    ar_entry *e = &p->toc->entries[p->block_entry];
    ar_rows *rows = p->lo_active ? NULL : &p->rows;
    if (ar_dec_feed(&p->dec, data, n, e, rows, msg, sizeof msg) < 0) {
        if (p->lo_active) return ar_fail(p, "large object %u: %s", p->lo_oid, msg);
        return ar_fail(p, "%s", msg);
    }
    p->pos += n;
    p->chunk_left -= n;
    if (p->chunk_left == 0) ar_expect(p, D_CHUNKLEN);
    return 0;
}
