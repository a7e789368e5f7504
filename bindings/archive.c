/*
 * archive.c: module pgvault.archive, an independent reader of pg_dump's
 * custom format (PGDMP, archive versions 1.12 to 1.16) that checks every
 * byte: the header, the TOC, and every data and large-object block decoded
 * to its end. The reader itself lives in bindings/archive/.
 *
 *   archive.read(path, {threads=, list=, verbose=, fill_offsets=}) -> summary
 *   archive.verifier{label="archive", list=, verbose=}  pipeline tap
 *   archive.fill_offsets(path, summary)  data positions into a laid-down file
 *
 * The summary has the header fields, per-table compressed and uncompressed
 * sizes and COPY row counts, large objects and totals, and with list=true
 * the TOC exactly as `pg_restore --list` prints it. The reader keeps only
 * the TOC entries that have data (archive.h: lean), and the listing as
 * text, so 100,000 large objects cost it 4 bytes each (+ their lines with
 * list=true), not a kept entry each; read.toc_memory says how many bytes
 * it held for the TOC.
 */
#include "archive/archive.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void push_summary(lua_State *L, const ar_toc *toc, uint64_t bytes, bool complete, bool list,
                         bool verbose)
{
    ar_push_summary(L, toc, bytes, complete);
    if (list) {
        ar_list(L, toc, verbose);
        lua_setfield(L, -2, "list");
    }
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 8) n = 8;
    return (int)n;
}

static int archive_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 2) ? 2 : 0;
    lua_Integer threads = pv_opt_int(L, opts, "threads", default_threads());
    bool list = pv_opt_bool(L, opts, "list", false);
    bool verbose = pv_opt_bool(L, opts, "verbose", false);
    bool fill = pv_opt_bool(L, opts, "fill_offsets", false);
    if (threads < 1 || threads > 64) return luaL_argerror(L, 2, "threads must be 1 to 64");
    pv_err err;
    pv_err_clear(&err);
    ar_toc *toc = NULL;
    uint64_t bytes = 0;
    int mode = !list ? AR_LIST_NONE : verbose ? AR_LIST_VERBOSE : AR_LIST;
    int rc = ar_read_file(path, (int)threads, fill, mode, &toc, &bytes, &err);
    if (rc == 0) {
        push_summary(L, toc, bytes, true, list, verbose);
        ar_toc_free(toc);
        return 1;
    }
    pv_err_str(&err, "path", path);
    if (strcmp(err.kind, "interrupted") == 0) pv_interrupt_delivered();
    pv_err_push(L, &err);
    if (toc) {
        /* what was read before the failure, for --list and diagnosis */
        push_summary(L, toc, bytes, false, list, verbose);
        lua_setfield(L, -2, "summary");
        ar_toc_free(toc);
    }
    return lua_error(L);
}

/* archive.fill_offsets(path, summary): writes the block positions that a
 * verifier tap saw into the TOC of the same archive laid down as a file. */
static int archive_fill_offsets(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer off_size = pv_opt_int(L, 2, "offset_size", 0);
    if (lua_getfield(L, 2, "blocks") != LUA_TTABLE)
        return luaL_argerror(L, 2, "a summary with blocks (from archive.read or the verifier)");
    lua_Integer n = luaL_len(L, -1);
    if (n < 0 || n > AR_MAX_ENTRIES) return luaL_argerror(L, 2, "too many blocks");
    uint64_t *field = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(uint64_t), 0);
    uint64_t *pos = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(uint64_t), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, -3, i + 1);
        if (!lua_istable(L, -1)) return luaL_argerror(L, 2, "blocks must be tables");
        lua_Integer f = pv_opt_int(L, -1, "field", -1), o = pv_opt_int(L, -1, "offset", -1);
        if (f < 0 || o < 0) return luaL_argerror(L, 2, "a block without field or offset");
        field[i] = (uint64_t)f;
        pos[i] = (uint64_t)o;
        lua_pop(L, 1);
    }
    pv_err err;
    pv_err_clear(&err);
    if (ar_fill_positions(path, (int)off_size, (int)n, field, pos, &err) < 0)
        return pv_err_raise(L, &err);
    lua_pushinteger(L, n);
    return 1;
}

/* ------------------------------------------------------------------ */
/* The verifier tap                                                    */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_stage base;
    ar_parser p;
    bool ready;
    bool complete;
    bool list, verbose;
} verifier_stage;

static int verifier_start(pv_stage *s, pv_err *err)
{
    verifier_stage *v = (verifier_stage *)s;
    ar_parser_init(&v->p, err);
    v->ready = true;
    if (v->p.failed) return -1;
    v->p.lean = true;
    v->p.list = !v->list ? AR_LIST_NONE : v->verbose ? AR_LIST_VERBOSE : AR_LIST;
    v->p.toc->read = (ar_read_mode){"stream", 1, 1, NULL};
    return 0;
}

static int verifier_write(pv_stage *s, const uint8_t *d, size_t n, pv_err *err)
{
    verifier_stage *v = (verifier_stage *)s;
    v->p.err = err;
    if (ar_parser_feed(&v->p, d, n) < 0) return -1;
    return pv_emit(s, d, n, err);
}

static int verifier_finish(pv_stage *s, pv_err *err)
{
    verifier_stage *v = (verifier_stage *)s;
    v->p.err = err;
    if (ar_parser_finish(&v->p) < 0) return -1;
    v->complete = true;
    return 0;
}

static int verifier_report(pv_stage *s, lua_State *L)
{
    verifier_stage *v = (verifier_stage *)s;
    if (v->ready && v->p.toc && v->p.phase >= AR_PH_BLOCKS) {
        push_summary(L, v->p.toc, s->bytes_in, v->complete, v->list, v->verbose);
        return 1;
    }
    lua_createtable(L, 0, 2);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    pv_set_bool(L, "complete", false);
    return 1;
}

static void verifier_release(pv_stage *s)
{
    verifier_stage *v = (verifier_stage *)s;
    if (v->ready) ar_parser_free(&v->p);
    v->ready = false;
}

static const pv_stage_ops verifier_ops = {.name = "archive",
                                          .start = verifier_start,
                                          .write = verifier_write,
                                          .finish = verifier_finish,
                                          .report = verifier_report,
                                          .release = verifier_release};

static int archive_verifier(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    bool list = pv_opt_bool(L, opts, "list", false);
    bool verbose = pv_opt_bool(L, opts, "verbose", false);
    verifier_stage *v = pv_stage_new(L, &verifier_ops, sizeof *v, opts);
    v->list = list;
    v->verbose = verbose;
    return 1;
}

int luaopen_pgvault_archive(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"read", archive_read},
                                     {"verifier", archive_verifier},
                                     {"fill_offsets", archive_fill_offsets},
                                     {"restorer", ar_restorer_new},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
