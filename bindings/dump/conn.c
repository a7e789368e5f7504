/*
 * conn.c: the connection string of a pgvault.dump call, read by the one
 * parser (pg/conninfo.c) into a box that a raise cannot leak; Neon's
 * pooled host switched to the direct one for the client programs, which
 * need a session of their own; the quick server probe that picks client
 * binaries by version.
 */
#include "dump.h"

#include <string.h>

#define CONN_BOX_MT "pgvault.dump.conninfo"

static int box_gc(lua_State *L)
{
    pg_conninfo_free(luaL_checkudata(L, 1, CONN_BOX_MT));
    return 0;
}

/* Hosts already warned about: one warning per host and run. */
static void warn_direct(const char *program, const char *from, const char *to)
{
    static char warned[8][256];
    static int nwarned;
    for (int i = 0; i < nwarned; i++)
        if (strcmp(warned[i], from) == 0) return;
    if (nwarned < 8) snprintf(warned[nwarned++], sizeof warned[0], "%s", from);
    pv_log(PV_LOG_WARN,
           "%s connects to Neon's direct host %s instead of the pooled %s: pg_dump, pg_restore and "
           "psql need a session of their own, which PgBouncer's transaction mode does not give; "
           "put the direct host in the URL to silence this",
           program, to, from);
}

pg_conninfo *dump_conn_push(lua_State *L, const char *url, const char *dbname, const char *program)
{
    pg_conninfo *ci = lua_newuserdatauv(L, sizeof *ci, 0);
    memset(ci, 0, sizeof *ci);
    if (luaL_newmetatable(L, CONN_BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    pv_err err;
    pv_err_clear(&err);
    if (pg_conninfo_parse(url, ci, &err) < 0) pv_err_raise(L, &err);
    if (dbname && pg_conninfo_set(ci, "dbname", dbname) < 0) luaL_error(L, "out of memory");
    if (program) {
        char from[256], to[256];
        int changed = pg_conninfo_neon_direct(ci, from, sizeof from, to, sizeof to);
        if (changed < 0) luaL_error(L, "out of memory");
        if (changed > 0) warn_direct(program, from, to);
    }
    return ci;
}

/* Start-up notices of the probe are of no interest: the client program
 * that runs next sees them again. */
static void quiet_notices(void *arg, const PGresult *res)
{
    (void)arg;
    const char *msg = PQresultErrorMessage(res);
    if (msg && *msg) pv_log(PV_LOG_DEBUG, "server notice while probing: %s", msg);
}

int dump_server_version(const pg_conninfo *ci, pv_err *err)
{
    PGconn *c = pg_conninfo_start(ci, err);
    if (!c) return -1;
    PQsetNoticeReceiver(c, quiet_notices, NULL);
    int v = pg_conninfo_wait(ci, c, err) == 0 ? PQserverVersion(c) : -1;
    PQfinish(c);
    return v;
}
