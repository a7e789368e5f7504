/*
 * archive.h: the PGDMP custom-format reader shared by bindings/archive.c and
 * its helpers: a push parser (parser.c driving, toc.c for the header and
 * TOC, blocks.c for the data blocks; parser.h is theirs) that takes the
 * archive in pieces of any size, the stream decoders (decode.c), the row
 * counter (rows.c), the pg_restore --list printer and the summary
 * (listing.c) and the whole-file reader that inflates data blocks on
 * several threads when the TOC has offsets (file.c).
 *
 * Memory is bounded whatever the input: strings that matter (names, types)
 * are kept up to AR_MAX_KEPT_STR bytes, definitions are skipped as they
 * stream past, the TOC grows only as entries actually arrive and stops at
 * AR_MAX_ENTRIES / AR_MAX_TOC_MEMORY, and each decoder owns a fixed buffer.
 * A lean parser (the verifier, archive.read) keeps only the entries that
 * have data, and of the others just their dump ids (4 bytes each, for the
 * uniqueness check): 100,000 large objects are 100,000 BLOB entries that
 * cost ~250 bytes each when kept. A listing is written as the entries
 * are read (~45 bytes a large object), so it keeps no entry either.
 */
#ifndef PGVAULT_ARCHIVE_H
#define PGVAULT_ARCHIVE_H

#include "pgvault.h"

#include <isa-l/igzip_lib.h>
#include <lz4frame.h>
#include <zstd.h>

#define AR_MAX_ENTRIES 4000000
#define AR_MAX_TOC_MEMORY ((size_t)512 << 20)
#define AR_MAX_KEPT_STR (1 << 20)
#define AR_MAX_DEPS 100000
#define AR_DEC_OUT (64 * 1024)

enum { AR_ALGO_NONE = 0, AR_ALGO_GZIP = 1, AR_ALGO_LZ4 = 2, AR_ALGO_ZSTD = 3 };
enum { AR_OFF_NOT_SET = 1, AR_OFF_SET = 2, AR_OFF_NO_DATA = 3 };
enum { AR_BLK_DATA = 1, AR_BLK_BLOBS = 3 };

/* One TOC entry: what the listing, the summary and the data walk need. */
typedef struct ar_entry {
    int32_t dump_id;
    bool had_dumper;
    bool has_copy;    /* copyStmt present: the data is COPY text */
    bool defn_schema; /* defn non-empty and not "-- load via partition root " */
    bool rows_known;  /* the data's rows were counted (COPY, or INSERT statements) */
    uint32_t tableoid, oid;
    int32_t section;
    int32_t relkind;
    char *tag, *desc, *ns, *owner; /* NULL when the archive stores NULL */
    char *sql;                     /* with keep_sql: the COPY statement of table data, the SQL of
                                      the ENCODING, STDSTRINGS and SEARCHPATH entries */
    int32_t *deps;
    int ndeps;
    int off_flag;
    uint64_t off_pos;       /* data position stored in the TOC */
    uint64_t off_field_pos; /* where the offset field itself sits in the file */
    /* what the data walk found */
    bool seen;
    bool copy_done; /* the COPY end-of-data line "\." was seen */
    uint64_t block_pos, block_end;
    uint64_t comp_bytes, raw_bytes;
    int64_t rows;
    int64_t lo_count;
} ar_entry;

/* How the data blocks were read: "parallel" (ranges of blocks on several
 * threads), "sequential" (with the reason it was not parallel) or
 * "stream" (a tap sees the bytes once, in order). */
typedef struct ar_read_mode {
    const char *mode;
    int threads; /* threads that inflated data at the same time */
    int ranges;  /* pieces the data area was cut into */
    const char *reason;
} ar_read_mode;

/* A growing text: pg_restore --list's lines, written as entries are read. */
typedef struct ar_text {
    char *s;
    size_t len, cap;
} ar_text;

/* What a reader lists: nothing, pg_restore --list's entries, or every
 * entry with its dependencies (verbose). */
enum { AR_LIST_NONE, AR_LIST, AR_LIST_VERBOSE };

/* The header and TOC, shared read-only by the data readers once complete. */
typedef struct ar_toc {
    int vmaj, vmin, vrev;
    int int_size, off_size, format;
    int algo;
    int level; /* 1.12-1.14: stored level; else -2 (not stored) */
    int tm[7]; /* sec, min, hour, mday, mon, year, isdst */
    char *dbname, *server_version, *dump_version;
    int32_t toc_count;
    ar_entry *entries;
    int nentries, cap;
    int *data_idx; /* indices of entries with data, in TOC order */
    int ndata;
    uint64_t toc_end;     /* byte offset just past the TOC */
    size_t memory;        /* bytes allocated for the TOC, bounded */
    int32_t *dropped_ids; /* a lean parser: dump ids of the entries without data it let go */
    int ndropped, dropped_cap;
    ar_text listing;     /* a parser with `list`: the listing's lines so far */
    int listing_section; /* the section of the entries listed so far */
    bool all_offsets;    /* every data entry has a position (flag 2) */
    ar_read_mode read;
} ar_toc;

/* Where decoded data goes besides the counters: a restorer's hook (-1
 * stops the stream, the hook having recorded why). */
typedef int (*ar_data_fn)(void *ctx, const uint8_t *data, size_t len);

typedef struct ar_decoder {
    int algo;
    bool active, ended;
    ar_data_fn data;
    void *data_ctx;
    struct inflate_state *isal; /* zlib streams: ISA-L's inflate, 2-3x zlib's speed */
    LZ4F_dctx *lz4;
    ZSTD_DCtx *zstd;
    uint8_t *out;
} ar_decoder;

/* Counting a table's rows as its data streams past: COPY text lines up
 * to the end-of-data line "\.", or the rows of pg_dump --inserts' INSERT
 * statements (a small SQL lexer: literals, quoted names, parentheses). */
enum { AR_ROWS_NONE, AR_ROWS_COPY, AR_ROWS_INSERT };

typedef struct ar_rows {
    int mode; /* AR_ROWS_* */
    /* COPY text */
    uint64_t line_len;
    uint8_t c0, c1;
    bool done;
    bool garbage; /* something other than newlines after "\." */
    /* INSERT statements */
    uint8_t lex;         /* where the lexer is: code, a literal, a quoted name */
    bool escapes;        /* the literal being read is an E'' one */
    char word[8];        /* the bare word being read, upper case */
    uint8_t wlen;        /* its length (> 7: a longer word) */
    bool want_insert;    /* between statements: the next word must be INSERT */
    bool values;         /* VALUES seen in this statement */
    bool default_values; /* ... as DEFAULT VALUES: one row */
    bool after_default;  /* the last word was DEFAULT */
    bool unknown;        /* not pg_dump's INSERT statements: rows not counted */
    int depth;           /* parentheses open */
    int64_t tuples;      /* row constructors of this statement */
} ar_rows;

/* What a consumer of the archive (archive.restorer) is told as it passes,
 * on the parser's thread; each returns 0, or -1 having recorded an error
 * (which stops the stream). The data of a block reaches `data` decoded:
 * COPY text or INSERT statements, or a large object's bytes between
 * lo_begin and lo_end. */
typedef struct ar_hooks {
    void *ctx;
    int (*toc_done)(void *ctx, ar_toc *toc);
    int (*block_begin)(void *ctx, ar_entry *e);
    int (*lo_begin)(void *ctx, ar_entry *e, uint32_t oid);
    ar_data_fn data;
    int (*lo_end)(void *ctx, ar_entry *e);
    int (*block_end)(void *ctx, ar_entry *e);
} ar_hooks;

typedef struct ar_parser {
    ar_toc *toc;
    const ar_hooks *hooks; /* NULL: a verifier, nothing to tell */
    bool keep_sql;         /* keep entry->sql (a restorer needs it) */
    bool lean;             /* keep only the entries with data */
    int list;              /* AR_LIST_*: list each entry as it is read */
    size_t entry_mark;     /* toc->memory when the entry being read began */
    bool owns_toc;
    int phase;          /* AR_PH_* */
    int state;          /* field being read */
    uint64_t pos;       /* absolute offset of the next byte */
    uint64_t field_pos; /* where the field being read started */
    uint64_t base;      /* pos at which this parser started */
    /* fixed-size primitive being accumulated */
    uint8_t tmp[40];
    int need, have;
    /* string body being read */
    bool in_str;
    uint64_t str_left;
    char *str;
    size_t str_len;
    bool str_keep;
    uint8_t str_head[28];
    size_t str_head_len;
    bool str_null;
    int64_t ival;
    /* TOC entry being read */
    int cur;
    int time_i;
    int32_t *dep_buf;
    int dep_n, dep_cap;
    /* data walk */
    int next_data, last_data; /* range of toc->data_idx this parser covers */
    int block_entry;          /* entry index of the current block, -1 */
    int block_type;
    uint64_t chunk_left;
    ar_decoder dec;
    ar_rows rows;
    bool lo_active;
    uint32_t lo_oid;
    uint64_t end_limit;   /* blocks mode: stop expecting blocks here (0: none) */
    bool pause_at_blocks; /* stop consuming once the TOC is complete */
    pv_err *err;
    bool failed;
} ar_parser;

enum { AR_PH_HEADER, AR_PH_TOC, AR_PH_BLOCKS, AR_PH_DONE };

/* parser.c */
void ar_parser_init(ar_parser *p, pv_err *err);
/* A parser for the data blocks of toc->data_idx[first..last], which start at
 * byte `start`; it shares `toc` without owning it. */
void ar_parser_init_blocks(ar_parser *p, ar_toc *toc, int first, int last, uint64_t start,
                           pv_err *err);
int ar_parser_feed(ar_parser *p, const uint8_t *data, size_t len);
/* End of input: checks that the archive (or the block range) is whole. */
int ar_parser_finish(ar_parser *p);
void ar_parser_free(ar_parser *p);
void ar_toc_free(ar_toc *toc);
/* Frees an entry's strings and dependencies and zeroes it. */
void ar_entry_free(ar_entry *e);
/* "entry 3357 (TABLE DATA public.t1)" */
void ar_entry_name(const ar_entry *e, char *out, size_t outsz);
const char *ar_algo_name(int algo);

/* decode.c */
int ar_dec_begin(ar_decoder *d, int algo, char *msg, size_t msgsz);
/* Feeds compressed bytes; decoded output is counted into e (raw bytes) and
 * `rows` (NULL: a large object's bytes, not rows). */
int ar_dec_feed(ar_decoder *d, const uint8_t *in, size_t len, ar_entry *e, ar_rows *rows, char *msg,
                size_t msgsz);
/* The stream's chunks are over: the codec must have seen its end. */
int ar_dec_end(ar_decoder *d, char *msg, size_t msgsz);
void ar_dec_free(ar_decoder *d);

/* rows.c */
void ar_rows_begin(ar_rows *r, int mode);
void ar_rows_feed(ar_rows *r, ar_entry *e, const uint8_t *data, size_t n);
/* The table's data is over: it must have ended where its format ends. */
int ar_rows_end(ar_rows *r, ar_entry *e, char *msg, size_t msgsz);

/* listing.c: pushes pg_restore --list's text for the TOC: the lines
 * written as entries were read (ar_parser.list), else made from the kept
 * entries. */
void ar_list(lua_State *L, const ar_toc *toc, bool verbose);
/* Pushes the summary table (header, per-table sizes and rows, totals). */
void ar_push_summary(lua_State *L, const ar_toc *toc, uint64_t bytes, bool complete);

/* file.c: whole-file verification, data blocks inflated on `threads`
 * threads when the TOC has offsets; a lean parser listing as `list`
 * (AR_LIST_*) says. Returns 0 or -1 with err set; on
 * success (and on failure after the TOC) *out holds the TOC. */
int ar_read_file(const char *path, int threads, bool fill_offsets, int list, ar_toc **out,
                 uint64_t *bytes, pv_err *err);

/* Writes "position set" and `pos[i]` into the offset field at `field[i]`
 * of the archive file at path, after checking each field holds an unset
 * (or the same) position. Makes a pipe-written archive seekable. */
int ar_fill_positions(const char *path, int off_size, int n, const uint64_t *field,
                      const uint64_t *pos, pv_err *err);

/* restorer.c: archive.restorer{...}, the constructor. */
int ar_restorer_new(lua_State *L);

#endif
