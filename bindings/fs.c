/*
 * fs.c: module pgvault.fs, the file-system operations scripts need:
 * stat, directories, atomic small-file writes, temporary directories,
 * renames that never replace anything but a regular file, and locks
 * (fs/lock.c).
 */
#include "fs/lock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static const char *type_of(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "link";
    if (S_ISFIFO(m)) return "fifo";
    if (S_ISCHR(m)) return "chardev";
    if (S_ISBLK(m)) return "blockdev";
    if (S_ISSOCK(m)) return "socket";
    return "other";
}

/* fs.stat(path [, nofollow]) -> {type, size, mode, mtime, uid} or nil, message */
static int fs_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat sb;
    int rc = lua_toboolean(L, 2) ? lstat(path, &sb) : stat(path, &sb);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_createtable(L, 0, 5);
    pv_set_str(L, "type", type_of(sb.st_mode));
    pv_set_int(L, "size", (lua_Integer)sb.st_size);
    pv_set_int(L, "mode", sb.st_mode & 07777);
    pv_set_int(L, "mtime", (lua_Integer)sb.st_mtime);
    pv_set_int(L, "uid", sb.st_uid);
    return 1;
}

static int fs_exists(lua_State *L)
{
    struct stat sb;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &sb) == 0);
    return 1;
}

static int fs_mkdir_p(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) return luaL_argerror(L, 1, "path too long");
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return pv_raise_errno(L, errno, "cannot create directory", buf);
            struct stat sb;
            if (stat(buf, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
                return pv_raise(L, "io", "cannot create directory %s: a file of that name exists",
                                buf);
            }
            *p = saved;
            if (saved == '\0') break;
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* fs.listdir(path) -> sorted array of names (no . and ..) */
static int fs_listdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) return pv_raise_errno(L, errno, "cannot list directory", path);
    size_t n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *de;
    bool oom = names == NULL;
    while (!oom && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (n == cap) {
            char **p = realloc(names, (cap *= 2) * sizeof *names);
            if (!p) {
                oom = true;
                break;
            }
            names = p;
        }
        names[n] = strdup(de->d_name);
        if (!names[n])
            oom = true;
        else
            n++;
    }
    closedir(d);
    if (!oom) qsort(names, n, sizeof *names, cmp_str);
    if (!oom) {
        /* Build the table only when nothing can fail but Lua's allocator. */
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            lua_pushstring(L, names[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (oom) return pv_raise(L, "io", "out of memory listing %s", path);
    return 1;
}

static int fs_remove(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (remove(path) < 0 && errno != ENOENT) return pv_raise_errno(L, errno, "cannot remove", path);
    return 0;
}

static int remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char child[PATH_MAX];
        if (snprintf(child, sizeof child, "%s/%s", path, de->d_name) >= (int)sizeof child) {
            rc = -1;
            continue;
        }
        if (remove_tree(child) < 0) rc = -1;
    }
    closedir(d);
    if (rmdir(path) < 0) rc = -1;
    return rc;
}

static int fs_remove_tree(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (strcmp(path, "/") == 0 || path[0] == '\0')
        return luaL_argerror(L, 1, "refusing to remove /");
    if (remove_tree(path) < 0) return pv_raise_errno(L, errno, "cannot remove", path);
    return 0;
}

/* Renames over a regular file or nothing; never over a device or directory. */
static int fs_rename(lua_State *L)
{
    const char *from = luaL_checkstring(L, 1);
    const char *to = luaL_checkstring(L, 2);
    struct stat sb;
    if (lstat(to, &sb) == 0 && !S_ISREG(sb.st_mode))
        return pv_raise(L, "io", "refusing to replace %s: it is not a regular file", to);
    if (rename(from, to) < 0) return pv_raise_errno(L, errno, "cannot rename to", to);
    return 0;
}

static int fs_read_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pv_raise_errno(L, errno, "cannot open", path);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffsize(&b, 65536);
        ssize_t n = pv_read_some(fd, p, 65536);
        if (n < 0) {
            int e = errno;
            close(fd);
            return pv_raise_errno(L, e, "cannot read", path);
        }
        if (n == 0) break;
        luaL_addsize(&b, (size_t)n);
    }
    close(fd);
    luaL_pushresult(&b);
    return 1;
}

/* fs.write_file(path, data [, {mode=0644, no_clobber=false}]): a pv_file. */
static int fs_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int opts = lua_isnoneornil(L, 3) ? 0 : 3;
    static const char *const known[] = {"mode", "no_clobber", NULL};
    pv_opt_only(L, opts, known);
    mode_t mode = (mode_t)pv_opt_int(L, opts, "mode", 0644);
    bool no_clobber = pv_opt_bool(L, opts, "no_clobber", false);
    pv_file f;
    pv_err err;
    pv_err_clear(&err);
    if (pv_file_open(&f, path, mode, no_clobber, &err) < 0 ||
        pv_file_write(&f, data, len, &err) < 0 || pv_file_commit(&f, &err) < 0) {
        pv_file_abort(&f);
        return pv_err_raise(L, &err);
    }
    return 0;
}

static int fs_tmpdir(lua_State *L)
{
    const char *prefix = luaL_optstring(L, 1, "pgvault");
    const char *base = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/%s.XXXXXX", base && *base ? base : "/tmp", prefix);
    if (!mkdtemp(tmpl))
        return pv_raise_errno(L, errno, "cannot create a temporary directory in",
                              base ? base : "/tmp");
    lua_pushstring(L, tmpl);
    return 1;
}

static int fs_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (chmod(path, (mode_t)luaL_checkinteger(L, 2)) < 0)
        return pv_raise_errno(L, errno, "cannot chmod", path);
    return 0;
}

static int fs_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char out[PATH_MAX];
    if (!realpath(path, out)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushstring(L, out);
    return 1;
}

static int fs_getcwd(lua_State *L)
{
    char out[PATH_MAX];
    if (!getcwd(out, sizeof out))
        return pv_raise_errno(L, errno, "cannot get", "the current directory");
    lua_pushstring(L, out);
    return 1;
}

/* fs.free_space(path) -> bytes available to us */
static int fs_free_space(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct statvfs sv;
    if (statvfs(path, &sv) < 0) return pv_raise_errno(L, errno, "cannot inspect", path);
    lua_pushinteger(L, (lua_Integer)sv.f_bavail * (lua_Integer)sv.f_frsize);
    return 1;
}

static int fs_writable(lua_State *L)
{
    lua_pushboolean(L, access(luaL_checkstring(L, 1), W_OK) == 0);
    return 1;
}

int luaopen_pgvault_fs(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"stat", fs_stat},
                                     {"exists", fs_exists},
                                     {"mkdir_p", fs_mkdir_p},
                                     {"listdir", fs_listdir},
                                     {"remove", fs_remove},
                                     {"remove_tree", fs_remove_tree},
                                     {"rename", fs_rename},
                                     {"read_file", fs_read_file},
                                     {"write_file", fs_write_file},
                                     {"tmpdir", fs_tmpdir},
                                     {"chmod", fs_chmod},
                                     {"realpath", fs_realpath},
                                     {"getcwd", fs_getcwd},
                                     {"free_space", fs_free_space},
                                     {"writable", fs_writable},
                                     {"lock", pv_fs_lock},
                                     {NULL, NULL}};
    pv_fs_lock_open(L);
    luaL_newlib(L, funcs);
    return 1;
}
