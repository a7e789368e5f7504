/*
 * lock.c: fs.lock, an advisory lock on a file (flock(2)) that the kernel
 * releases when its holder dies, even by SIGKILL. The holder writes a line
 * about itself into the file, so that whoever finds the lock taken can say
 * who holds it. A handle as liolib's: created closed, one idempotent close
 * for __gc, __close and :close().
 */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCK_MT "pgvault.lock"

typedef struct {
    int fd; /* -1 once released */
    char path[4096];
} lock_handle;

static lock_handle *check_lock(lua_State *L)
{
    return luaL_checkudata(L, 1, LOCK_MT);
}

static void release(lock_handle *lk)
{
    if (lk->fd < 0) return;
    flock(lk->fd, LOCK_UN);
    close(lk->fd);
    lk->fd = -1;
}

static int lock_close(lua_State *L)
{
    release(check_lock(L));
    return 0;
}

static int lock_tostring(lua_State *L)
{
    lock_handle *lk = check_lock(L);
    lua_pushfstring(L, "pgvault lock %s (%s)", lk->path, lk->fd >= 0 ? "held" : "released");
    return 1;
}

static int lock_held(lua_State *L)
{
    lua_pushboolean(L, check_lock(L)->fd >= 0);
    return 1;
}

/* Pushes what the holder wrote into the lock file. */
static void push_holder(lua_State *L, int fd)
{
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0'))
        n--;
    lua_pushlstring(L, buf, n > 0 ? (size_t)n : 0);
}

/* Takes the lock (waiting when asked); 0, 1 when taken by someone else,
 * -1 with errno set. A signal stops the wait. */
static int take(int fd, bool wait)
{
    for (;;) {
        if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == 0) return 0;
        if (errno == EWOULDBLOCK && !wait) return 1;
        if (errno != EINTR || pv_interrupted()) return -1;
    }
}

/* fs.lock(path, {wait = false, info = "..."}) -> handle, or nil, holder */
int pv_fs_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int opts = lua_isnoneornil(L, 2) ? 0 : 2;
    static const char *const known[] = {"wait", "info", NULL};
    pv_opt_only(L, opts, known);
    bool wait = pv_opt_bool(L, opts, "wait", false);
    const char *info = pv_opt_str(L, opts, "info", "");
    if (strlen(path) >= sizeof(((lock_handle *)0)->path))
        return luaL_argerror(L, 1, "path too long");
    lock_handle *lk = lua_newuserdatauv(L, sizeof *lk, 0);
    lk->fd = -1;
    snprintf(lk->path, sizeof lk->path, "%s", path);
    luaL_setmetatable(L, LOCK_MT);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return pv_raise_errno(L, errno, "cannot open the lock file", path);
    lk->fd = fd; /* from here the handle releases it, whatever happens */
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
        return pv_raise(L, "io", "cannot lock %s: not a regular file", path);
    int rc = take(fd, wait);
    if (rc < 0 && pv_interrupted())
        return pv_raise(L, "interrupted", "interrupted waiting for %s", path);
    if (rc < 0) return pv_raise_errno(L, errno, "cannot lock", path);
    if (rc == 1) {
        lua_pushnil(L);
        push_holder(L, fd);
        release(lk);
        return 2;
    }
    if (ftruncate(fd, 0) < 0 || pv_write_all(fd, info, strlen(info)) < 0 ||
        pv_write_all(fd, "\n", 1) < 0)
        return pv_raise_errno(L, errno, "cannot write the lock file", path);
    return 1;
}

void pv_fs_lock_open(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__gc", lock_close}, {"__close", lock_close}, {"__tostring", lock_tostring}, {NULL, NULL}};
    static const luaL_Reg methods[] = {{"close", lock_close}, {"held", lock_held}, {NULL, NULL}};
    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
