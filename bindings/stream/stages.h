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
/* stream.handoff{buffers=4, size=1 MiB}: what follows runs on a thread of
 * its own, fed through a bounded ring of buffers (handoff.c, perf team). */
int pv_stream_handoff(lua_State *L);

#endif
