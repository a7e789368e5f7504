/*
 * parser.h: what the push parser's three files share, private to them.
 * parser.c is the driver (it accumulates each field's bytes and calls the
 * field's handler); toc.c holds the table of fields, in file order, with
 * the archive versions that have them, and the header and TOC handlers;
 * blocks.c the handlers of the data-block walk.
 */
#ifndef PGVAULT_ARCHIVE_PARSER_H
#define PGVAULT_ARCHIVE_PARSER_H

#include "archive.h"

/* Every field of the file, in the order it is stored. */
enum {
    H_MAGIC,
    H_VMAJ,
    H_VMIN,
    H_VREV,
    H_INTSIZE,
    H_OFFSIZE,
    H_FORMAT,
    H_LEVEL,
    H_ALGO,
    H_SEC,
    H_MIN,
    H_HOUR,
    H_MDAY,
    H_MON,
    H_YEAR,
    H_ISDST,
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
    AR_NFIELDS
};

/* How a field is stored. */
enum { K_BYTE, K_MAGIC, K_INT, K_STR, K_OFF, K_PAYLOAD };

/* Field flags: a string kept in memory (others are only measured as they
 * stream past), a string that must not be NULL. */
enum { F_KEEP = 1, F_NOT_NULL = 2 };

/* A handler's verdict: go on with the next field of the table present in
 * this archive version, or the handler has chosen the next field itself. */
enum { AR_NEXT = 0, AR_CHOSEN = 1 };

/* Called once a field is read: v is the byte or the integer (checked
 * against lo..hi), or a string's length (-1: NULL) with p->str holding a
 * kept string. Returns AR_NEXT, AR_CHOSEN or -1 with the failure recorded. */
typedef int (*ar_on_field)(ar_parser *p, ar_entry *e, int64_t v);

typedef struct ar_field {
    const char *what; /* "the tag": for messages */
    uint8_t kind;     /* K_* */
    uint8_t since;    /* the first archive version 1.x that has the field */
    uint8_t until;    /* the last one (255: still there) */
    uint8_t flags;    /* F_* */
    int64_t lo, hi;   /* the values an integer or byte may take */
    ar_on_field done; /* NULL: nothing to do but go on */
} ar_field;

extern const ar_field ar_fields[AR_NFIELDS];

/* parser.c */
void ar_expect(ar_parser *p, int state);
int ar_fail(ar_parser *p, const char *fmt, ...) PV_PRINTF(2, 3);
int ar_fail_at(ar_parser *p, bool truncated, uint64_t at, const ar_entry *e, const char *fmt, ...)
    PV_PRINTF(5, 6);
/* Counts n bytes against the TOC's memory bound; false when over it. */
bool ar_account(ar_parser *p, size_t n);
/* Takes the kept string from the parser (the caller frees it). */
char *ar_take_str(ar_parser *p);
/* A hook returned -1: the parser stops with the error the hook recorded. */
int ar_hook_failed(ar_parser *p);

/* listing.c: appends the entry's lines to toc->listing (p->list says
 * which); 0 or -1 with the failure recorded. */
int ar_list_entry(ar_parser *p, const ar_entry *e);

/* toc.c: entered from H_TOCCOUNT and E_OFFSET. */
int ar_start_toc(ar_parser *p);

/* blocks.c: the handlers of B_TYPE, B_DUMPID, D_CHUNKLEN and L_OID, and the
 * payload of a chunk. */
int ar_on_block_type(ar_parser *p, ar_entry *e, int64_t type);
int ar_on_block_id(ar_parser *p, ar_entry *e, int64_t id);
int ar_on_chunk_len(ar_parser *p, ar_entry *e, int64_t len);
int ar_on_lo_oid(ar_parser *p, ar_entry *e, int64_t oid);
int ar_feed_chunk(ar_parser *p, const uint8_t *data, size_t n);

#endif
