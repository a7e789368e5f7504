/*
 * stages.h: constructors of the pgvault.stream stages that live in
 * bindings/stream/ (one file per kind of stage), registered by
 * luaopen_pgvault_stream in stream.c.
 */
#ifndef PGVAULT_STREAM_STAGES_H
#define PGVAULT_STREAM_STAGES_H

#include "pgvault.h"

/* stream.zstd{level=3, threads=0, checksum=true}: compress filter. */
int pv_stream_zstd(lua_State *L);
/* stream.unzstd{}: decompress filter (concatenated frames allowed). */
int pv_stream_unzstd(lua_State *L);
/* stream.progress{label=..., tty=?, interval=?}: meter tap on stderr. */
int pv_stream_progress(lua_State *L);

/* stream.block_digests{block_size=}: tap, SHA-256 of each block (blocks.c). */
int pv_stream_block_digests(lua_State *L);
/* stream.verify_blocks{block_size=, blocks=}: filter releasing checked blocks only. */
int pv_stream_verify_blocks(lua_State *L);

#endif
