/*
 * stages.h: constructors of the pgvault.stream stages that live in
 * bindings/stream/ (one file per kind of stage), registered by
 * luaopen_pgvault_stream in stream.c.
 */
#ifndef PGVAULT_STREAM_STAGES_H
#define PGVAULT_STREAM_STAGES_H

#include "pgvault.h"

/* Bytes a source hands downstream at a time. */
#define PV_STREAM_CHUNK (256 * 1024)

/* memory.c: stream.string(s), stream.buffer{max=}, stream.discard() */
int pv_stream_string(lua_State *L);
int pv_stream_buffer(lua_State *L);
int pv_stream_discard(lua_State *L);
/* files.c: stream.file_reader(path, {prefix=}), stream.stdin{prefix=} (the
 * prefix, bytes already read from it, is emitted first), stream.stdout(),
 * stream.file_writer(path, {mode=, no_clobber=}) */
int pv_stream_file_reader(lua_State *L);
int pv_stream_stdin(lua_State *L);
int pv_stream_stdout(lua_State *L);
int pv_stream_file_writer(lua_State *L);
/* taps.c: stream.sha256(), stream.counter() */
int pv_stream_sha256(lua_State *L);
int pv_stream_counter(lua_State *L);
/* stream.zstd{level=3, threads=0, checksum=true, job_size=2 MiB,
 * frame_size=4 jobs per worker, at least 4 MiB (0: one frame)}: compress
 * filter; its report says how many frames it wrote. */
int pv_stream_zstd(lua_State *L);
/* stream.unzstd{threads = 0}: decompress filter (concatenated frames
 * allowed); 0: the CPUs, at most 4; 1: on the caller's thread. */
int pv_stream_unzstd(lua_State *L);
/* The same on several threads, independent frames in parallel
 * (unzstd_mt.c, perf team). */
int pv_stream_unzstd_mt(lua_State *L, int opts, int threads);
/* stream.progress{label=..., tty=?, interval=?}: meter tap on stderr. */
int pv_stream_progress(lua_State *L);
/* stream.handoff{buffers=4, size=1 MiB}: what follows runs on a thread of
 * its own, fed through a bounded ring of buffers (handoff.c, perf team). */
int pv_stream_handoff(lua_State *L);

/* stream.block_digests{block_size=}: tap, SHA-256 of each block (blocks.c). */
int pv_stream_block_digests(lua_State *L);
/* stream.verify_blocks{block_size=, blocks=}: filter releasing checked blocks only. */
int pv_stream_verify_blocks(lua_State *L);

#endif
