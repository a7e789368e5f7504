/*
 * pg.c: module pgvault.pg, PostgreSQL connections on libpq: connect (URL or
 * conninfo, libpq's environment, .pgpass and service files honoured),
 * parameterised queries with typed values, commands and scripts, notices
 * collected and forwarded to the log (the collation WARNING that arrives
 * during start-up included), cancel on interrupt, SQLSTATE on errors.
 * Connection strings and the handshake live in pg/conninfo.c and
 * pg/connect.c (shared with pgvault.dump), result and notice conversion in
 * pg/result.c.
 */
#include "pg/conninfo.h"
#include "pg/message.h"
#include "pg/pg_internal.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOX_MT "pgvault.pg.results"
#define NULL_MT "pgvault.pg.null"

/* Upvalue 1 of every function of the module: the pg.null sentinel. */
#define NULL_SENTINEL lua_upvalueindex(1)

/* After a cancel request, how long the server gets to stop the query
 * before the connection is dropped instead. */
#define CANCEL_GRACE_SECONDS 5.0

/* ------------------------------------------------------------------ */
/* The connection handle                                               */
/* ------------------------------------------------------------------ */

static pg_conn *check_conn(lua_State *L)
{
    pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
    if (!c->conn) luaL_argerror(L, 1, "the connection is closed");
    return c;
}

static void conn_release(pg_conn *c)
{
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    pg_notices_free(c);
}

static int conn_close(lua_State *L)
{
    conn_release(luaL_checkudata(L, 1, PG_CONN_MT));
    return 0;
}

static int conn_tostring(lua_State *L)
{
    pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
    lua_pushfstring(L, "pgvault.pg connection %s (%s)", c->desc[0] ? c->desc : "-",
                    c->conn ? "open" : "closed");
    return 1;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* "user@host:port/db", for messages and __tostring: never a password. */
static void describe(pg_conn *c)
{
    PGconn *pc = c->conn;
    snprintf(c->desc, sizeof c->desc, "%s@%s:%s/%s", or_empty(PQuser(pc)), or_empty(PQhost(pc)),
             or_empty(PQport(pc)), or_empty(PQdb(pc)));
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */
/* ------------------------------------------------------------------ */

/* pg.connect([url_or_conninfo [, {log_notices = true}]]) -> connection */
static int pg_connect(lua_State *L)
{
    const char *info = luaL_optstring(L, 1, "");
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const options[] = {"log_notices", NULL};
    if (!lua_isnoneornil(L, 2)) pv_opt_only(L, 2, options);
    bool quiet = !pv_opt_bool(L, 2, "log_notices", true);
    pg_conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->quiet = quiet;
    luaL_setmetatable(L, PG_CONN_MT);
    pg_conninfo ci;
    pv_err err;
    pv_err_clear(&err);
    if (pg_conninfo_parse(info, &ci, &err) < 0) return pv_err_raise(L, &err);
    c->conn = pg_conninfo_start(&ci, &err);
    /* Before the handshake: the server sends start-up warnings (the
     * collation version mismatch) before it is ready for queries. */
    if (c->conn) PQsetNoticeReceiver(c->conn, pg_notice_receiver, c);
    if (c->conn) pg_conninfo_wait(&ci, c->conn, &err);
    pg_conninfo_free(&ci);
    if (err.set) {
        conn_release(c);
        return pv_err_raise(L, &err);
    }
    describe(c);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Running statements                                                  */
/* ------------------------------------------------------------------ */

/* Results held while a statement runs: a userdata, so that a Lua error
 * (out of memory while converting) cannot leak them. */
typedef struct {
    PGresult *last;    /* the last successful result */
    PGresult *err;     /* the first error */
    bool copy_refused; /* the statement started a COPY TO STDOUT */
} res_box;

static void box_clear_now(res_box *b)
{
    PQclear(b->last);
    PQclear(b->err);
    b->last = b->err = NULL;
}

static int box_gc(lua_State *L)
{
    box_clear_now(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

static res_box *new_box(lua_State *L)
{
    res_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* Asks the server to cancel the running statement (a separate
 * connection: libpq's PQcancel). */
static void send_cancel(pg_conn *c)
{
    PGcancel *cn = PQgetCancel(c->conn);
    if (!cn) return;
    char why[256];
    if (!PQcancel(cn, why, sizeof why)) pv_log(PV_LOG_WARN, "cannot cancel the query: %s", why);
    PQfreeCancel(cn);
}

enum { RUN_DONE, RUN_CANCELLED, RUN_ABANDONED };

/* Drains COPY data the caller did not ask for, so the connection stays
 * usable. */
static void refuse_copy(pg_conn *c, PGresult *r, res_box *b)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN) {
        PQputCopyEnd(c->conn, "COPY FROM STDIN is not supported by pgvault.pg");
    } else if (st == PGRES_COPY_OUT) {
        char *buf;
        int n;
        while ((n = PQgetCopyData(c->conn, &buf, 0)) > 0)
            PQfreemem(buf);
        b->copy_refused = true;
    }
}

/* Waits for every result of the statement just sent, watching for
 * interruption: on a signal the statement is cancelled (and the
 * connection dropped if the server does not stop it in time). */
static int collect(pg_conn *c, res_box *b)
{
    bool cancelled = false;
    double give_up = 0;
    for (;;) {
        while (PQisBusy(c->conn)) {
            struct pollfd p = {PQsocket(c->conn), POLLIN, 0};
            int r = poll(&p, 1, 100);
            if (pv_interrupted() && !cancelled) {
                send_cancel(c);
                cancelled = true;
                give_up = pv_now() + CANCEL_GRACE_SECONDS;
            }
            if (cancelled && pv_now() > give_up) return RUN_ABANDONED;
            if (r < 0 && errno != EINTR) break;
            /* A lost connection: PQgetResult reports it as an error. */
            if (r > 0 && !PQconsumeInput(c->conn)) break;
        }
        PGresult *r = PQgetResult(c->conn);
        if (!r) break;
        switch (PQresultStatus(r)) {
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            refuse_copy(c, r, b);
            PQclear(r);
            break;
        case PGRES_FATAL_ERROR:
        case PGRES_BAD_RESPONSE:
        case PGRES_NONFATAL_ERROR:
            if (!b->err) {
                b->err = r;
            } else {
                PQclear(r);
            }
            break;
        default:
            PQclear(b->last);
            b->last = r;
        }
        if (PQstatus(c->conn) == CONNECTION_BAD) break;
    }
    return cancelled ? RUN_CANCELLED : RUN_DONE;
}

/* Text of each parameter at index first..top: nil and pg.null are SQL
 * NULL; strings stay owned by the stack. */
static const char **params_from_lua(lua_State *L, int first, int *nout)
{
    int top = lua_gettop(L);
    int n = top >= first ? top - first + 1 : 0;
    if (n > 65535) luaL_error(L, "too many query parameters (%d)", n);
    *nout = n;
    const char **vals = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *vals, 0);
    luaL_checkstack(L, n + 4, "too many query parameters");
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            vals[i] = NULL;
            break;
        case LUA_TBOOLEAN:
            vals[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                vals[i] = lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
            } else {
                double d = lua_tonumber(L, idx);
                char num[64];
                if (isnan(d)) {
                    snprintf(num, sizeof num, "NaN");
                } else if (isinf(d)) {
                    snprintf(num, sizeof num, "%sInfinity", d < 0 ? "-" : "");
                } else {
                    snprintf(num, sizeof num, "%.17g", d);
                }
                vals[i] = lua_pushstring(L, num);
            }
            break;
        case LUA_TSTRING: {
            size_t len;
            vals[i] = lua_tolstring(L, idx, &len);
            if (strlen(vals[i]) != len)
                luaL_argerror(L, idx, "a query parameter cannot contain a zero byte");
            break;
        }
        default:
            if (lua_rawequal(L, idx, NULL_SENTINEL)) {
                vals[i] = NULL;
                break;
            }
            luaL_argerror(L, idx,
                          lua_pushfstring(L, "cannot pass a %s as a query parameter (use a string)",
                                          luaL_typename(L, idx)));
        }
    }
    return vals;
}

/* Sends the statement (parameters from stack index 3 on), collects its
 * results into a new box (left on the stack) and raises on failure. */
static res_box *run_statement(lua_State *L, pg_conn *c, bool extended)
{
    const char *sql = luaL_checkstring(L, 2);
    int nparams;
    const char **vals = params_from_lua(L, 3, &nparams);
    res_box *b = new_box(L);
    int sent = extended || nparams > 0
                   ? PQsendQueryParams(c->conn, sql, nparams, NULL, vals, NULL, NULL, 0)
                   : PQsendQuery(c->conn, sql);
    pv_err err;
    pv_err_clear(&err);
    if (!sent) {
        char msg[800];
        pg_one_line(PQerrorMessage(c->conn), msg, sizeof msg);
        pv_err_set(&err, "pg", "cannot send the query to %s: %s", c->desc, msg);
        pv_err_bool(&err, "connection_lost", PQstatus(c->conn) == CONNECTION_BAD);
        return pv_err_raise(L, &err), NULL;
    }
    int rc = collect(c, b);
    if (rc != RUN_DONE) {
        if (rc == RUN_ABANDONED) {
            PQfinish(c->conn);
            c->conn = NULL;
        }
        box_clear_now(b);
        pv_raise(L, "interrupted", "interrupted: the query on %s was cancelled%s", c->desc,
                 rc == RUN_ABANDONED ? " and the connection closed" : "");
    }
    if (b->err || !b->last || b->copy_refused) {
        if (b->err || !b->copy_refused) {
            pg_result_err(&err, b->err, c);
        } else {
            pv_err_set(&err, "pg",
                       "COPY ... TO STDOUT is not supported by pgvault.pg on %s: "
                       "use pgvault.dump.psql or COPY to a server file",
                       c->desc);
        }
        box_clear_now(b);
        pv_err_raise(L, &err);
    }
    return b;
}

/* conn:query(sql, ...) -> rows, columns */
static int conn_query(lua_State *L)
{
    pg_conn *c = check_conn(L);
    res_box *b = run_statement(L, c, true);
    pg_push_rows(L, b->last, NULL_SENTINEL);
    box_clear_now(b);
    return 2;
}

/* conn:exec(sql [, ...]) -> command tag, rows affected (or nil). Without
 * parameters the text may hold several statements. */
static int conn_exec(lua_State *L)
{
    pg_conn *c = check_conn(L);
    res_box *b = run_statement(L, c, false);
    lua_pushstring(L, PQcmdStatus(b->last));
    const char *n = PQcmdTuples(b->last);
    if (n && n[0]) {
        lua_pushinteger(L, strtoll(n, NULL, 10));
    } else {
        lua_pushnil(L);
    }
    box_clear_now(b);
    return 2;
}

/* ------------------------------------------------------------------ */
/* Other methods                                                       */
/* ------------------------------------------------------------------ */

static int conn_server_version(lua_State *L)
{
    lua_pushinteger(L, PQserverVersion(check_conn(L)->conn));
    return 1;
}

static int conn_db(lua_State *L)
{
    lua_pushstring(L, PQdb(check_conn(L)->conn));
    return 1;
}

/* conn:info() -> {host, port, db, user, server_version, backend_pid, ssl} */
static int conn_info(lua_State *L)
{
    PGconn *pc = check_conn(L)->conn;
    lua_createtable(L, 0, 7);
    pv_set_str(L, "host", or_empty(PQhost(pc)));
    pv_set_str(L, "port", or_empty(PQport(pc)));
    pv_set_str(L, "db", or_empty(PQdb(pc)));
    pv_set_str(L, "user", or_empty(PQuser(pc)));
    pv_set_int(L, "server_version", PQserverVersion(pc));
    pv_set_int(L, "backend_pid", PQbackendPID(pc));
    pv_set_bool(L, "ssl", PQsslInUse(pc));
    return 1;
}

static int conn_notices(lua_State *L)
{
    pg_push_notices(L, luaL_checkudata(L, 1, PG_CONN_MT));
    return 1;
}

static int conn_clear_notices(lua_State *L)
{
    pg_notices_free(luaL_checkudata(L, 1, PG_CONN_MT));
    return 0;
}

static int conn_quote(lua_State *L, bool ident)
{
    pg_conn *c = check_conn(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char *q = ident ? PQescapeIdentifier(c->conn, s, len) : PQescapeLiteral(c->conn, s, len);
    if (!q) {
        char msg[512];
        pg_one_line(PQerrorMessage(c->conn), msg, sizeof msg);
        return luaL_argerror(L, 2, lua_pushfstring(L, "cannot quote: %s", msg));
    }
    lua_pushstring(L, q);
    PQfreemem(q);
    return 1;
}

static int conn_quote_ident(lua_State *L)
{
    return conn_quote(L, true);
}

static int conn_quote_literal(lua_State *L)
{
    return conn_quote(L, false);
}

/* ------------------------------------------------------------------ */
/* Module functions                                                    */
/* ------------------------------------------------------------------ */

/* Quoting without a connection, for UTF-8 text (what pgvault speaks):
 * the same rules as libpq's PQescapeIdentifier / PQescapeLiteral. */
static int pg_quote(lua_State *L, bool ident)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (strlen(s) != len) return luaL_argerror(L, 1, "cannot quote a string with a zero byte");
    char q = ident ? '"' : '\'';
    bool backslash = !ident && memchr(s, '\\', len) != NULL;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (backslash) luaL_addstring(&b, " E");
    luaL_addchar(&b, q);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == q || (backslash && s[i] == '\\')) luaL_addchar(&b, s[i]);
        luaL_addchar(&b, s[i]);
    }
    luaL_addchar(&b, q);
    luaL_pushresult(&b);
    return 1;
}

static int pg_quote_ident(lua_State *L)
{
    return pg_quote(L, true);
}

static int pg_quote_literal(lua_State *L)
{
    return pg_quote(L, false);
}

/* pg.parse_conninfo(s) -> {keyword = value} for the settings s names
 * (libpq's parser: URLs and key=value strings; no defaults applied). */
static int pg_parse_conninfo(lua_State *L)
{
    pg_conninfo ci;
    pv_err err;
    pv_err_clear(&err);
    if (pg_conninfo_parse(luaL_checkstring(L, 1), &ci, &err) < 0) return pv_err_raise(L, &err);
    lua_createtable(L, 0, ci.n);
    for (int i = 0; i < ci.n; i++) {
        lua_pushstring(L, ci.vals[i]);
        lua_setfield(L, -2, ci.keys[i]);
    }
    pg_conninfo_free(&ci);
    return 1;
}

/* pg.direct_url(url) -> url, pooled_host, direct_host: a Neon pooled host
 * (ep-...-pooler.REGION.aws.neon.tech) replaced by the endpoint's direct
 * host, everything else kept as written; (url, nil) when there is none. */
static int pg_direct_url(lua_State *L)
{
    const char *text = luaL_checkstring(L, 1);
    pg_conninfo ci;
    pv_err err;
    pv_err_clear(&err);
    if (pg_conninfo_parse(text, &ci, &err) < 0) return pv_err_raise(L, &err);
    const char *hosts = pg_conninfo_get(&ci, "host");
    char from[256] = "", to[256] = "";
    lua_pushvalue(L, 1);
    for (const char *h = hosts; h && *h;) {
        size_t n = strcspn(h, ",");
        char one[256], direct[256];
        if (n < sizeof one) {
            snprintf(one, sizeof one, "%.*s", (int)n, h);
            if (pg_neon_direct_host(one, direct, sizeof direct)) {
                if (!from[0]) {
                    snprintf(from, sizeof from, "%s", one);
                    snprintf(to, sizeof to, "%s", direct);
                }
                luaL_gsub(L, lua_tostring(L, -1), one, direct);
                lua_remove(L, -2);
            }
        }
        h += n + (h[n] ? 1 : 0);
    }
    pg_conninfo_free(&ci);
    if (!from[0]) return 1;
    lua_pushstring(L, from);
    lua_pushstring(L, to);
    return 3;
}

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "pg.null");
    return 1;
}

/* Builds a metatable whose functions see the null sentinel as upvalue. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, meta, 1);
    if (methods) {
        lua_createtable(L, 0, 16);
        lua_pushvalue(L, -3);
        luaL_setfuncs(L, methods, 1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

int luaopen_pgvault_pg(lua_State *L)
{
    /* The NULL sentinel: an empty userdata, equal only to itself. */
    lua_newuserdatauv(L, 0, 0);
    luaL_newmetatable(L, NULL_MT);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "pg.null");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);

    static const luaL_Reg conn_meta[] = {
        {"__gc", conn_close}, {"__close", conn_close}, {"__tostring", conn_tostring}, {NULL, NULL}};
    static const luaL_Reg conn_methods[] = {{"query", conn_query},
                                            {"exec", conn_exec},
                                            {"notices", conn_notices},
                                            {"clear_notices", conn_clear_notices},
                                            {"server_version", conn_server_version},
                                            {"db", conn_db},
                                            {"info", conn_info},
                                            {"quote_ident", conn_quote_ident},
                                            {"quote_literal", conn_quote_literal},
                                            {"close", conn_close},
                                            {NULL, NULL}};
    new_class(L, PG_CONN_MT, conn_meta, conn_methods);
    static const luaL_Reg box_meta[] = {{"__gc", box_gc}, {NULL, NULL}};
    new_class(L, BOX_MT, box_meta, NULL);

    static const luaL_Reg funcs[] = {{"connect", pg_connect},
                                     {"quote_ident", pg_quote_ident},
                                     {"quote_literal", pg_quote_literal},
                                     {"parse_conninfo", pg_parse_conninfo},
                                     {"direct_url", pg_direct_url},
                                     {NULL, NULL}};
    lua_createtable(L, 0, 8);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, funcs, 1);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "null");
    lua_pushinteger(L, PQlibVersion());
    lua_setfield(L, -2, "libpq_version");
    lua_remove(L, -2);
    return 1;
}
