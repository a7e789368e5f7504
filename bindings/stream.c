/*
 * stream.c: module pgvault.stream: the pipeline engine (stream.run, in
 * host/pipeline.c) and the stages of bindings/stream/, one file per kind:
 * memory.c (string, buffer, discard), files.c (file_reader, file_writer,
 * stdin, stdout), taps.c (sha256, counter), zstd.c, progress.c.
 */
#include "pgvault.h"
#include "stream/stages.h"

static int stream_is_stage(lua_State *L)
{
    lua_pushboolean(L, pv_stage_test(L, 1) != NULL);
    return 1;
}

int luaopen_pgvault_stream(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"run", pv_pipeline_run},
                                     {"string", pv_stream_string},
                                     {"buffer", pv_stream_buffer},
                                     {"file_reader", pv_stream_file_reader},
                                     {"file_writer", pv_stream_file_writer},
                                     {"stdin", pv_stream_stdin},
                                     {"stdout", pv_stream_stdout},
                                     {"discard", pv_stream_discard},
                                     {"sha256", pv_stream_sha256},
                                     {"counter", pv_stream_counter},
                                     {"zstd", pv_stream_zstd},
                                     {"unzstd", pv_stream_unzstd},
                                     {"progress", pv_stream_progress},
                                     {"handoff", pv_stream_handoff},
                                     {"block_digests", pv_stream_block_digests},
                                     {"verify_blocks", pv_stream_verify_blocks},
                                     {"is_stage", stream_is_stage},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
