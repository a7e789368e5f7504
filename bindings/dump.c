/*
 * dump.c: module pgvault.dump, PostgreSQL's client programs in pipelines:
 * dump.pg_dump and dump.pg_dumpall (sources), dump.pg_restore and
 * dump.psql (sinks), the choice of client binaries by server version
 * (dump.find_bin), and connection strings (dump.conninfo). Secrets reach
 * children in private files, never their command line (pg/child_conn.c).
 */
#include "dump/dump.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

#define STAGE_OPTIONS "db", "dbname", "args", "pg_bin", "label", "log_warnings"

static const char *opt_pg_bin(lua_State *L, int t)
{
    const char *dir = pv_opt_str(L, t, "pg_bin", NULL);
    return dir && *dir ? dir : NULL;
}

/* The server's major version: from server_version= if given, else by
 * connecting with ci. Raises on failure. */
static int server_major(lua_State *L, int t, const pg_conninfo *ci)
{
    lua_Integer v = pv_opt_int(L, t, "server_version", 0);
    if (v <= 0) {
        pv_err err;
        pv_err_clear(&err);
        v = dump_server_version(ci, &err);
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

/* Appends the strings of t.args (kept alive by the options table). */
static void push_user_args(lua_State *L, int t, dump_stage *d)
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
            dump_stage_arg(L, d, s);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_argerror(L, 1, "args must be a list of strings");
    }
    lua_pop(L, 1);
}

/* The connection of t.db (t.dbname replacing its database), boxed on the
 * stack, for `program`. */
static pg_conninfo *opt_conn(lua_State *L, int t, const char *program)
{
    const char *url = pv_opt_str(L, t, "db", NULL);
    if (!url) luaL_argerror(L, 1, "db (a connection URL or conninfo string) is required");
    return dump_conn_push(L, url, pv_opt_str(L, t, "dbname", NULL), program);
}

/* ------------------------------------------------------------------ */
/* stages                                                              */
/* ------------------------------------------------------------------ */

/* t.compress as a method ("" when not given) and a level (-1: the
 * method's default): 0..9 (gzip, 0 is none), or "none", "gzip[:N]",
 * "lz4[:N]", "zstd[:N]". */
static void opt_compress(lua_State *L, int t, char *method, size_t msz, long *level)
{
    method[0] = '\0';
    *level = -1;
    lua_getfield(L, t, "compress");
    int type = lua_type(L, -1);
    if (type == LUA_TNUMBER) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 9)
            luaL_argerror(L, 1, "compress level must be an integer 0..9");
        *level = (long)lua_tointeger(L, -1);
        snprintf(method, msz, "%s", *level == 0 ? "none" : "gzip");
    } else if (type == LUA_TSTRING) {
        const char *z = lua_tostring(L, -1);
        size_t ml = strcspn(z, ":");
        static const char *const methods[] = {"none", "gzip", "lz4", "zstd", NULL};
        bool known = false;
        for (int i = 0; methods[i] && !known; i++)
            known = strlen(methods[i]) == ml && strncmp(z, methods[i], ml) == 0;
        char *end = NULL;
        if (z[ml] == ':') *level = strtol(z + ml + 1, &end, 10);
        if (!known || (end && (end == z + ml + 1 || *end || *level < 0)))
            luaL_argerror(L, 1,
                          "compress must be a level 0..9, none, gzip[:N], lz4[:N] or zstd[:N]");
        snprintf(method, msz, "%.*s", (int)ml, z);
    } else if (type != LUA_TNIL) {
        luaL_argerror(L, 1, "compress must be a level or a string like \"gzip:6\"");
    }
    lua_pop(L, 1);
}

/* pg_dump's -Z as this binary spells it: -Z N up to 15, -Z method:N from
 * 16. Raises when this pg_dump cannot compress that way. */
static void compress_flag(lua_State *L, const dump_bin *bin, const char *method, long level,
                          char *out, size_t outsz)
{
    if (bin->major >= 16 && level >= 0)
        snprintf(out, outsz, "-Z%s:%ld", method, level);
    else if (bin->major >= 16)
        snprintf(out, outsz, "-Z%s", method);
    else if (strcmp(method, "none") == 0)
        snprintf(out, outsz, "-Z0");
    else if (strcmp(method, "gzip") == 0)
        snprintf(out, outsz, "-Z%ld", level >= 0 ? level : 6);
    else
        pv_raise(L, "config", "pg_dump %s cannot compress with %s (PostgreSQL 16+ can)",
                 bin->version, method);
}

/* pg_dump or pg_dumpall as a source: a client at least as new as the
 * server; pg_dump's own options (format, compression) when `dump_options`. */
static int dump_source(lua_State *L, const char *program, bool dump_options)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    static const char *const formats[] = {"custom", "plain", "tar", NULL};
    static const char *const fflags[] = {"-Fc", "-Fp", "-Ft"};
    static const char *const pg_dump_options[] = {STAGE_OPTIONS, "server_version", "compress",
                                                  "format", NULL};
    static const char *const pg_dumpall_options[] = {STAGE_OPTIONS, "server_version", NULL};
    pv_opt_only(L, 1, dump_options ? pg_dump_options : pg_dumpall_options);
    int format = 0;
    char method[8] = "";
    long level = -1;
    if (dump_options) {
        lua_getfield(L, 1, "format");
        format = luaL_checkoption(L, -1, "custom", formats);
        lua_pop(L, 1);
        opt_compress(L, 1, method, sizeof method, &level);
    }
    const pg_conninfo *ci = opt_conn(L, 1, program);
    dump_bin bin;
    find_or_raise(L, program, opt_pg_bin(L, 1), server_major(L, 1, ci), &bin);
    char zflag[64] = "";
    if (method[0]) compress_flag(L, &bin, method, level, zflag, sizeof zflag);

    dump_stage *d = dump_stage_push(L, 1, program, &bin, DUMP_SOURCE);
    if (dump_options) dump_stage_arg(L, d, fflags[format]);
    if (zflag[0]) dump_stage_arg(L, d, zflag);
    push_user_args(L, 1, d);
    dump_stage_connect(L, d, ci);
    return 1;
}

/* dump.pg_dump{db=, compress=0|"gzip:6"|"none", format="custom"|"plain"|"tar",
 *              args={...}, pg_bin=DIR, server_version=?, label=?} */
static int dump_pg_dump(lua_State *L)
{
    return dump_source(L, "pg_dump", true);
}

/* dump.pg_dumpall{db=, args={...}, pg_bin=DIR, server_version=?, label=?}:
 * pg_dumpall's plain SQL (roles, tablespaces, with args such as
 * --globals-only) as a source. */
static int dump_pg_dumpall(lua_State *L)
{
    return dump_source(L, "pg_dumpall", false);
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
    static const char *const options[] = {STAGE_OPTIONS, "file", "jobs", "min_major", NULL};
    pv_opt_only(L, 1, options);
    const char *file = pv_opt_str(L, 1, "file", NULL);
    lua_Integer jobs = pv_opt_int(L, 1, "jobs", 1);
    if (jobs < 1 || jobs > 64) return luaL_argerror(L, 1, "jobs must be 1..64");
    if (jobs > 1 && !file)
        return luaL_argerror(L, 1, "jobs > 1 needs file= (pg_restore -j cannot read stdin)");
    const pg_conninfo *ci = opt_conn(L, 1, "pg_restore");
    dump_bin bin;
    find_or_raise(L, "pg_restore", opt_pg_bin(L, 1), (int)pv_opt_int(L, 1, "min_major", 0), &bin);

    dump_stage *d = dump_stage_push(L, 1, "pg_restore", &bin, file ? DUMP_SOURCE : DUMP_SINK);
    char jobs_arg[32];
    snprintf(jobs_arg, sizeof jobs_arg, "--jobs=%d", (int)jobs);
    if (jobs > 1) dump_stage_arg(L, d, jobs_arg);
    push_user_args(L, 1, d);
    dump_stage_connect(L, d, ci);
    if (file) dump_stage_arg(L, d, file);
    return 1;
}

/* dump.psql{db=, args={...}, pg_bin=DIR, label=?}: runs the SQL script fed
 * on stdin, stopping at the first error. */
static int dump_psql(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    static const char *const options[] = {STAGE_OPTIONS, "min_major", NULL};
    pv_opt_only(L, 1, options);
    const pg_conninfo *ci = opt_conn(L, 1, "psql");
    dump_bin bin;
    find_or_raise(L, "psql", opt_pg_bin(L, 1), (int)pv_opt_int(L, 1, "min_major", 0), &bin);

    dump_stage *d = dump_stage_push(L, 1, "psql", &bin, DUMP_SINK);
    static const char *const fixed[] = {"-X", "-q", "-v", "ON_ERROR_STOP=1", NULL};
    for (int i = 0; fixed[i]; i++)
        dump_stage_arg(L, d, fixed[i]);
    push_user_args(L, 1, d);
    dump_stage_arg(L, d, "-f");
    dump_stage_arg(L, d, "-");
    dump_stage_connect(L, d, ci);
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
    lua_settop(L, 1);
    static const char *const options[] = {"program",   "server_version", "db",
                                          "min_major", "pg_bin",         NULL};
    pv_opt_only(L, 1, options);
    static const char *const programs[] = {"pg_dump", "pg_dumpall", "pg_restore", "psql", NULL};
    lua_getfield(L, 1, "program");
    const char *program = programs[luaL_checkoption(L, -1, "pg_dump", programs)];
    lua_pop(L, 1);
    int min_major = (int)pv_opt_int(L, 1, "min_major", 0);
    const char *url = pv_opt_str(L, 1, "db", NULL);
    if (pv_opt_int(L, 1, "server_version", 0) > 0 || url)
        min_major = server_major(L, 1, url ? dump_conn_push(L, url, NULL, program) : NULL);
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
    const pg_conninfo *ci = dump_conn_push(L, luaL_checkstring(L, 1), NULL, "pg_dump");
    pv_err err;
    pv_err_clear(&err);
    int v = dump_server_version(ci, &err);
    if (v < 0) return pv_err_raise(L, &err);
    lua_pushinteger(L, v);
    return 1;
}

/* dump.conninfo(url [, {dbname=?, password=true}]) -> conninfo, dbname,
 * has_password: a libpq conninfo string equivalent to url (database
 * replaced when asked), with its secrets (password, sslpassword) only when
 * password=true. */
static int dump_conninfo(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    int opts = lua_istable(L, 2) ? 2 : 0;
    static const char *const options[] = {"dbname", "password", NULL};
    if (opts) pv_opt_only(L, opts, options);
    if (!opts && !lua_isnoneornil(L, 2)) luaL_typeerror(L, 2, "table");
    const char *dbname = pv_opt_str(L, opts, "dbname", NULL);
    bool with_password = pv_opt_bool(L, opts, "password", false);
    const pg_conninfo *ci = dump_conn_push(L, url, dbname, NULL);
    char *s = pg_conninfo_string(ci, with_password);
    if (!s) return luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    pg_conninfo_free_string(s);
    const char *db = pg_conninfo_get(ci, "dbname");
    if (db)
        lua_pushstring(L, db);
    else
        lua_pushnil(L);
    lua_pushboolean(L, pg_conninfo_get(ci, "password") != NULL);
    return 3;
}

int luaopen_pgvault_dump(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"pg_dump", dump_pg_dump},       {"pg_dumpall", dump_pg_dumpall},
        {"pg_restore", dump_pg_restore}, {"psql", dump_psql},
        {"find_bin", dump_find},         {"server_version", dump_server_version_l},
        {"conninfo", dump_conninfo},     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
