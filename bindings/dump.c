/*
 * dump.c: module pgvault.dump, PostgreSQL's client programs in pipelines:
 * dump.pg_dump (a source), dump.pg_restore and dump.psql (sinks), the
 * choice of client binaries by server version (dump.find_bin), and
 * connection strings without their password (dump.conninfo). Passwords
 * reach children through PGPASSWORD, never their command line.
 */
#include "dump/dump.h"

#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 120

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static const char *opt_pg_bin(lua_State *L, int t)
{
    const char *dir = pv_opt_str(L, t, "pg_bin", NULL);
    return dir && *dir ? dir : NULL;
}

/* The server's major version: from server_version= if given, else by
 * connecting. Raises on failure. */
static int server_major(lua_State *L, int t, const char *url)
{
    lua_Integer v = pv_opt_int(L, t, "server_version", 0);
    if (v <= 0) {
        pv_err err;
        pv_err_clear(&err);
        v = dump_server_version(url, &err);
        if (v < 0) pv_err_raise(L, &err);
    }
    return v >= 100000 ? (int)(v / 10000) : (int)(v / 100); /* 9.6 -> 96 is never chosen */
}

static void find_or_raise(lua_State *L, const char *program, const char *pg_bin, int min_major,
                          dump_bin *bin)
{
    pv_err err;
    pv_err_clear(&err);
    if (dump_find_bin(program, pg_bin, min_major, bin, &err) < 0) pv_err_raise(L, &err);
}

/* argv[0] is a placeholder; the stage puts the binary's path there. */
typedef struct {
    const char *v[MAX_ARGS + 8];
    int n;
} argv_list;

static void push_arg(lua_State *L, argv_list *a, const char *s)
{
    if (a->n >= MAX_ARGS) luaL_error(L, "too many arguments for a client program");
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

/* Appends the strings of t.args (kept alive by the options table). */
static void push_user_args(lua_State *L, int t, argv_list *a)
{
    lua_getfield(L, t, "args");
    if (lua_istable(L, -1)) {
        int n = (int)luaL_len(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_geti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "args[%d] must be a string", i);
            const char *s = lua_tostring(L, -1);
            if (strstr(s, "password=") || strstr(s, "PASSWORD="))
                luaL_error(L, "args[%d]: passwords never go on a command line", i);
            push_arg(L, a, s);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_argerror(L, 1, "args must be a list of strings");
    }
    lua_pop(L, 1);
}

/* Parses t.db; pushes the password-free conninfo string and the password
 * (or nil), both owned by Lua so that a later raise cannot leak them, and
 * returns the conninfo. *password points into the pushed string. */
static const char *push_conn(lua_State *L, int t, const char **password)
{
    const char *url = pv_opt_str(L, t, "db", NULL);
    if (!url) luaL_argerror(L, 1, "db (a connection URL or conninfo string) is required");
    dump_conn c;
    pv_err err;
    pv_err_clear(&err);
    if (dump_conn_parse(url, pv_opt_str(L, t, "dbname", NULL), &c, &err) < 0) pv_err_raise(L, &err);
    lua_pushstring(L, c.conninfo);
    if (c.password)
        lua_pushstring(L, c.password);
    else
        lua_pushnil(L);
    dump_conn_free(&c);
    *password = lua_tostring(L, -1);
    return lua_tostring(L, -2);
}

/* ------------------------------------------------------------------ */
/* stages                                                              */
/* ------------------------------------------------------------------ */

/* dump.pg_dump{db=, compress=0|"gzip:6"|"none", format="custom"|"plain"|"tar",
 *              args={...}, pg_bin=DIR, server_version=?, label=?} */
static int dump_pg_dump(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    static const char *const formats[] = {"custom", "plain", "tar", NULL};
    static const char *const fflags[] = {"-Fc", "-Fp", "-Ft"};
    lua_getfield(L, 1, "format");
    int format = luaL_checkoption(L, -1, "custom", formats);
    lua_pop(L, 1);
    const char *url = pv_opt_str(L, 1, "db", NULL);
    if (!url) return luaL_argerror(L, 1, "db (a connection URL or conninfo string) is required");
    const char *pg_bin = opt_pg_bin(L, 1);

    /* Compression as pg_dump spells it: -Z N up to 15, -Z method:N from 16. */
    char zbuf[64] = "";
    lua_getfield(L, 1, "compress");
    int ztype = lua_type(L, -1);
    long zlevel = -1;
    const char *zmethod = NULL;
    if (ztype == LUA_TNUMBER) {
        zlevel = (long)luaL_checkinteger(L, -1);
        if (zlevel < 0 || zlevel > 9) return luaL_argerror(L, 1, "compress level must be 0..9");
        zmethod = zlevel == 0 ? "none" : "gzip";
    } else if (ztype == LUA_TSTRING) {
        const char *z = lua_tostring(L, -1);
        static char method[16];
        const char *colon = strchr(z, ':');
        size_t ml = colon ? (size_t)(colon - z) : strlen(z);
        if (ml >= sizeof method) return luaL_argerror(L, 1, "unknown compression method");
        memcpy(method, z, ml);
        method[ml] = '\0';
        zmethod = method;
        zlevel = colon ? atol(colon + 1) : -1;
        if (strcmp(method, "none") && strcmp(method, "gzip") && strcmp(method, "lz4") &&
            strcmp(method, "zstd"))
            return luaL_argerror(L, 1,
                                 "compress must be a level, none, gzip[:N], lz4[:N], zstd[:N]");
    } else if (ztype != LUA_TNIL) {
        return luaL_argerror(L, 1, "compress must be a level or a string like \"gzip:6\"");
    }
    lua_pop(L, 1);

    int need = server_major(L, 1, url);
    dump_bin bin;
    find_or_raise(L, "pg_dump", pg_bin, need, &bin);
    if (zmethod) {
        if (bin.major >= 16 && zlevel >= 0)
            snprintf(zbuf, sizeof zbuf, "-Z%s:%ld", zmethod, zlevel);
        else if (bin.major >= 16)
            snprintf(zbuf, sizeof zbuf, "-Z%s", zmethod);
        else if (strcmp(zmethod, "none") == 0)
            snprintf(zbuf, sizeof zbuf, "-Z0");
        else if (strcmp(zmethod, "gzip") == 0)
            snprintf(zbuf, sizeof zbuf, "-Z%ld", zlevel >= 0 ? zlevel : 6);
        else
            return pv_raise(L, "config", "pg_dump %s cannot compress with %s (PostgreSQL 16+ can)",
                            bin.version, zmethod);
    }

    const char *password = NULL;
    const char *conninfo = push_conn(L, 1, &password);
    argv_list a = {.n = 0};
    push_arg(L, &a, "pg_dump");
    push_arg(L, &a, fflags[format]);
    if (zbuf[0]) push_arg(L, &a, zbuf);
    push_user_args(L, 1, &a);
    push_arg(L, &a, "-d");
    push_arg(L, &a, conninfo);
    dump_stage_push(L, 1, "pg_dump", &bin, a.v, password, DUMP_SOURCE);
    return 1;
}

/* dump.pg_restore{db=, args={...}, pg_bin=DIR, file=?, jobs=?, label=?}: a
 * sink reading the archive on stdin; with file=PATH a source (with no
 * output) that reads the file, which parallel restores (jobs > 1) need.
 * The newest pg_restore is chosen: it reads every older archive, and
 * restores into servers newer than itself. */
static int dump_pg_restore(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    dump_bin bin;
    find_or_raise(L, "pg_restore", opt_pg_bin(L, 1), (int)pv_opt_int(L, 1, "min_major", 0), &bin);
    const char *password = NULL;
    const char *conninfo = push_conn(L, 1, &password);
    argv_list a = {.n = 0};
    push_arg(L, &a, "pg_restore");
    const char *file = pv_opt_str(L, 1, "file", NULL);
    lua_Integer jobs = pv_opt_int(L, 1, "jobs", 1);
    if (jobs < 1 || jobs > 64) return luaL_argerror(L, 1, "jobs must be 1..64");
    if (jobs > 1 && !file)
        return luaL_argerror(L, 1, "jobs > 1 needs file= (pg_restore -j cannot read stdin)");
    char jobs_arg[32];
    snprintf(jobs_arg, sizeof jobs_arg, "--jobs=%d", (int)jobs);
    if (jobs > 1) push_arg(L, &a, jobs_arg);
    push_user_args(L, 1, &a);
    push_arg(L, &a, "-d");
    push_arg(L, &a, conninfo);
    if (file) push_arg(L, &a, file);
    dump_stage_push(L, 1, "pg_restore", &bin, a.v, password, file ? DUMP_SOURCE : DUMP_SINK);
    return 1;
}

/* dump.psql{db=, args={...}, pg_bin=DIR, label=?}: runs the SQL script fed
 * on stdin, stopping at the first error. */
static int dump_psql(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    dump_bin bin;
    find_or_raise(L, "psql", opt_pg_bin(L, 1), (int)pv_opt_int(L, 1, "min_major", 0), &bin);
    const char *password = NULL;
    const char *conninfo = push_conn(L, 1, &password);
    argv_list a = {.n = 0};
    push_arg(L, &a, "psql");
    push_arg(L, &a, "-X");
    push_arg(L, &a, "-q");
    push_arg(L, &a, "-v");
    push_arg(L, &a, "ON_ERROR_STOP=1");
    push_user_args(L, 1, &a);
    push_arg(L, &a, "-f");
    push_arg(L, &a, "-");
    push_arg(L, &a, "-d");
    push_arg(L, &a, conninfo);
    dump_stage_push(L, 1, "psql", &bin, a.v, password, DUMP_SINK);
    return 1;
}

/* ------------------------------------------------------------------ */
/* lookups                                                             */
/* ------------------------------------------------------------------ */

/* dump.find_bin{program="pg_dump", server_version=? | db=?, min_major=?,
 * pg_bin=?} -> {path=, version=, major=} */
static int dump_find(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const programs[] = {"pg_dump", "pg_restore", "psql", NULL};
    lua_getfield(L, 1, "program");
    const char *program = programs[luaL_checkoption(L, -1, "pg_dump", programs)];
    lua_pop(L, 1);
    int min_major = (int)pv_opt_int(L, 1, "min_major", 0);
    const char *url = pv_opt_str(L, 1, "db", NULL);
    if (pv_opt_int(L, 1, "server_version", 0) > 0 || url) min_major = server_major(L, 1, url);
    dump_bin bin;
    find_or_raise(L, program, opt_pg_bin(L, 1), min_major, &bin);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, bin.path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, bin.version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, bin.major);
    lua_setfield(L, -2, "major");
    return 1;
}

/* dump.server_version(url) -> 150018 */
static int dump_server_version_l(lua_State *L)
{
    pv_err err;
    pv_err_clear(&err);
    int v = dump_server_version(luaL_checkstring(L, 1), &err);
    if (v < 0) return pv_err_raise(L, &err);
    lua_pushinteger(L, v);
    return 1;
}

/* dump.conninfo(url [, {dbname=?, password=true}]) -> conninfo, dbname
 * A libpq conninfo string equivalent to url (database replaced when asked),
 * with the password only when password=true. */
static int dump_conninfo(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 2) ? 2 : 0;
    const char *dbname = pv_opt_str(L, opts, "dbname", NULL);
    bool with_password = pv_opt_bool(L, opts, "password", false);
    dump_conn c;
    pv_err err;
    pv_err_clear(&err);
    if (dump_conn_parse(url, dbname, &c, &err) < 0) return pv_err_raise(L, &err);
    char *s = dump_conn_string(&c, with_password);
    if (!s) {
        dump_conn_free(&c);
        return luaL_error(L, "out of memory");
    }
    lua_pushstring(L, s);
    explicit_bzero(s, strlen(s));
    free(s);
    if (c.dbname)
        lua_pushstring(L, c.dbname);
    else
        lua_pushnil(L);
    lua_pushboolean(L, c.password != NULL);
    dump_conn_free(&c);
    return 3;
}

int luaopen_pgvault_dump(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"pg_dump", dump_pg_dump},
                                     {"pg_restore", dump_pg_restore},
                                     {"psql", dump_psql},
                                     {"find_bin", dump_find},
                                     {"server_version", dump_server_version_l},
                                     {"conninfo", dump_conninfo},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
