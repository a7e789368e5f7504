/*
 * lock.h: fs.lock (bindings/fs/lock.c), registered by luaopen_pgvault_fs.
 */
#ifndef PGVAULT_FS_LOCK_H
#define PGVAULT_FS_LOCK_H

#include "pgvault.h"

/* fs.lock(path, {wait=, info=}) -> handle, or nil and what the holder wrote */
int pv_fs_lock(lua_State *L);
/* Creates the lock handle's metatable. */
void pv_fs_lock_open(lua_State *L);

#endif
