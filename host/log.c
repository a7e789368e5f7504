/*
 * log.c: leveled logging to stderr for C and Lua (the `log` table), every
 * line redacted (redact.c) before it is written; optionally the last N
 * lines written are kept (log.capture / log.tail) for a failure report.
 */
#include "runtime.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_level = PV_LOG_INFO;

/* The last `tail_cap` lines written (redacted), oldest at tail_first. */
static char **tail_lines;
static size_t tail_cap, tail_count, tail_first;

int pv_log_level(void)
{
    return log_level;
}

void pv_log_set_level(int level)
{
    log_level = level;
}

static void tail_free(void)
{
    for (size_t i = 0; i < tail_count; i++)
        free(tail_lines[(tail_first + i) % tail_cap]);
    free(tail_lines);
    tail_lines = NULL;
    tail_cap = tail_count = tail_first = 0;
}

/* Called with log_lock held. */
static void tail_add(const char *line, size_t len)
{
    if (tail_cap == 0) return;
    char *copy = strndup(line, len);
    if (!copy) return;
    if (tail_count == tail_cap) {
        free(tail_lines[tail_first]);
        tail_lines[tail_first] = copy;
        tail_first = (tail_first + 1) % tail_cap;
    } else {
        tail_lines[(tail_first + tail_count++) % tail_cap] = copy;
    }
}

void pv_log_capture(size_t n)
{
    pthread_mutex_lock(&log_lock);
    tail_free();
    if (n > 0 && (tail_lines = calloc(n, sizeof *tail_lines)) != NULL) tail_cap = n;
    pthread_mutex_unlock(&log_lock);
}

static const char *level_name(int level)
{
    switch (level) {
    case PV_LOG_DEBUG:
        return "debug";
    case PV_LOG_INFO:
        return "info";
    case PV_LOG_WARN:
        return "warning";
    default:
        return "error";
    }
}

void pv_logv(int level, const char *fmt, va_list ap)
{
    if (level < log_level) return;
    char raw[4096], clean[4096 + 64];
    vsnprintf(raw, sizeof raw, fmt, ap);
    pv_redact(raw, clean, sizeof clean);
    size_t len = strlen(clean);
    while (len > 0 && clean[len - 1] == '\n')
        clean[--len] = '\0';
    char line[sizeof clean + 32];
    int n = snprintf(line, sizeof line, "pgvault: %s: %s\n", level_name(level), clean);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
    pthread_mutex_lock(&log_lock);
    pv_write_all(STDERR_FILENO, line, (size_t)n);
    tail_add(line, (size_t)n - 1);
    pthread_mutex_unlock(&log_lock);
}

void pv_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pv_logv(level, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Lua: the log table and pgvault.redact                               */
/* ------------------------------------------------------------------ */

static int base_redact(lua_State *L)
{
    const char *in = luaL_checkstring(L, 1);
    size_t n = strlen(in) + 256;
    char *out = malloc(n);
    if (!out) return luaL_error(L, "out of memory");
    pv_redact(in, out, n);
    lua_pushstring(L, out);
    free(out);
    return 1;
}

static int lua_log_at(lua_State *L, int level)
{
    if (level < pv_log_level()) return 0;
    int n = lua_gettop(L);
    if (n == 0) return 0;
    if (n > 1) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_insert(L, 1);
        lua_pop(L, 1);
        lua_call(L, n, 1);
    } else {
        luaL_tolstring(L, 1, NULL);
    }
    pv_log(level, "%s", lua_tostring(L, -1));
    return 0;
}

static int lua_log_debug(lua_State *L)
{
    return lua_log_at(L, PV_LOG_DEBUG);
}
static int lua_log_info(lua_State *L)
{
    return lua_log_at(L, PV_LOG_INFO);
}
static int lua_log_warn(lua_State *L)
{
    return lua_log_at(L, PV_LOG_WARN);
}
static int lua_log_error(lua_State *L)
{
    return lua_log_at(L, PV_LOG_ERROR);
}

static int lua_log_secret(lua_State *L)
{
    if (lua_isstring(L, 1)) pv_log_add_secret(lua_tostring(L, 1));
    return 0;
}

static int lua_log_level(lua_State *L)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off", NULL};
    lua_pushstring(L, names[pv_log_level()]);
    if (!lua_isnoneornil(L, 1)) pv_log_set_level(luaL_checkoption(L, 1, NULL, names));
    return 1;
}

/* log.capture(n): keep the last n lines written from now on (0 stops). */
static int lua_log_capture(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 100000, 1, "between 0 and 100000 lines");
    pv_log_capture((size_t)n);
    return 0;
}

/* log.tail() -> { "pgvault: info: ...", ... }, oldest first. */
static int lua_log_tail(lua_State *L)
{
    lua_newtable(L);
    pthread_mutex_lock(&log_lock);
    size_t n = tail_count;
    char **copy = n ? calloc(n, sizeof *copy) : NULL;
    for (size_t i = 0; copy && i < n; i++)
        copy[i] = strdup(tail_lines[(tail_first + i) % tail_cap]);
    pthread_mutex_unlock(&log_lock);
    for (size_t i = 0; copy && i < n; i++) {
        if (copy[i]) {
            lua_pushstring(L, copy[i]);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        }
    }
    for (size_t i = 0; copy && i < n; i++)
        free(copy[i]);
    free(copy);
    return 1;
}

void pv_log_push_table(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"debug", lua_log_debug},     {"info", lua_log_info},     {"warn", lua_log_warn},
        {"error", lua_log_error},     {"secret", lua_log_secret}, {"level", lua_log_level},
        {"capture", lua_log_capture}, {"tail", lua_log_tail},     {NULL, NULL}};
    luaL_newlib(L, funcs);
}

void pv_log_funcs(lua_State *L)
{
    lua_pushcfunction(L, base_redact);
    lua_setfield(L, -2, "redact");
}
