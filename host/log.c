/*
 * log.c: leveled logging to stderr for C and Lua, and the redaction every
 * log line and error message passes through: passwords in URLs and
 * conninfo strings, key=value secrets, age secret keys, authorization
 * headers and every literal secret registered at run time.
 */
#include "runtime.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MASK "***"
#define MAX_SECRETS 64

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_level = PV_LOG_INFO;
static char *secrets[MAX_SECRETS];
static int nsecrets;

int pv_log_level(void)
{
    return log_level;
}

void pv_log_set_level(int level)
{
    log_level = level;
}

void pv_log_add_secret(const char *secret)
{
    /* Very short strings would mask ordinary words. */
    if (!secret || strlen(secret) < 4) return;
    pthread_mutex_lock(&log_lock);
    bool known = false;
    for (int i = 0; i < nsecrets; i++)
        if (strcmp(secrets[i], secret) == 0) known = true;
    if (!known && nsecrets < MAX_SECRETS) {
        char *copy = strdup(secret);
        if (copy) secrets[nsecrets++] = copy;
    }
    pthread_mutex_unlock(&log_lock);
}

/* An output buffer that silently truncates. */
typedef struct {
    char *p;
    size_t len, cap;
} outbuf;

static void put(outbuf *o, const char *s, size_t n)
{
    while (n-- > 0 && o->len + 1 < o->cap)
        o->p[o->len++] = *s++;
    o->p[o->len] = '\0';
}

static bool is_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* Key names whose value is a secret in key=value, key: value and JSON:
 * a component (split at _ and -) that names one, or a name ending in one
 * ("PGPASSWORD"). Prose such as "secrets: ..." is left alone. */
static bool secret_key(const char *k, size_t n)
{
    static const char *const words[] = {"password", "passwd",     "pwd",         "secret", "token",
                                        "apikey",   "passphrase", "credentials", NULL};
    char low[64];
    if (n == 0 || n >= sizeof low) return false;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    low[n] = '\0';
    if (strstr(low, "api_key") || strstr(low, "api-key")) return true;
    size_t len = n;
    if (len >= 8 && strcmp(low + len - 8, "password") == 0) return true;
    char *save = NULL;
    for (char *part = strtok_r(low, "_-", &save); part; part = strtok_r(NULL, "_-", &save))
        for (int i = 0; words[i]; i++)
            if (strcmp(part, words[i]) == 0) return true;
    return false;
}

/* Length of a value starting at s: quoted or up to whitespace / , ; & */
static size_t value_len(const char *s)
{
    if (*s == '\'' || *s == '"') {
        char q = *s;
        size_t i = 1;
        while (s[i] && s[i] != q) {
            if (s[i] == '\\' && s[i + 1]) i++;
            i++;
        }
        return s[i] ? i + 1 : i;
    }
    size_t i = 0;
    while (s[i] && !isspace((unsigned char)s[i]) && s[i] != ',' && s[i] != ';' && s[i] != '&' &&
           s[i] != '}')
        i++;
    return i;
}

/* Tries the structural rules at position i; returns bytes consumed or 0. */
static size_t redact_at(const char *in, size_t i, outbuf *o)
{
    const char *s = in + i;

    /* scheme://user:password@host */
    if (s[0] == ':' && s[1] == '/' && s[2] == '/') {
        size_t j = 3;
        size_t colon = 0;
        while (s[j] && s[j] != '@' && s[j] != '/' && !isspace((unsigned char)s[j])) {
            if (s[j] == ':' && !colon) colon = j;
            j++;
        }
        if (s[j] == '@' && colon) {
            put(o, s, colon + 1);
            put(o, MASK, strlen(MASK));
            put(o, "@", 1);
            return j + 1;
        }
        return 0;
    }

    /* AGE-SECRET-KEY-1... */
    if (strncmp(s, "AGE-SECRET-KEY-1", 16) == 0) {
        size_t j = 16;
        while (isalnum((unsigned char)s[j]))
            j++;
        put(o, s, 16);
        put(o, MASK, strlen(MASK));
        return j;
    }

    /* Authorization headers and bearer-style tokens. */
    static const char *const schemes[] = {"Bearer ", "FlyV1 ", "Basic ", NULL};
    for (int k = 0; schemes[k]; k++) {
        size_t n = strlen(schemes[k]);
        if (strncasecmp(s, schemes[k], n) == 0 && (i == 0 || !isalnum((unsigned char)s[-1]))) {
            size_t j = n;
            while (s[j] && !isspace((unsigned char)s[j]) && s[j] != '"' && s[j] != '\'')
                j++;
            if (j == n) return 0;
            put(o, s, n);
            put(o, MASK, strlen(MASK));
            return j;
        }
    }

    /* key=value, key: value, "key":"value" where key names a secret. */
    if (is_key_char(s[0]) && (i == 0 || !is_key_char(s[-1]))) {
        size_t k = 0;
        while (is_key_char(s[k]))
            k++;
        size_t j = k;
        if (s[j] == '"') j++;
        while (s[j] == ' ')
            j++;
        if (s[j] != '=' && s[j] != ':') return 0;
        if (s[j] == ':' && s[j + 1] == '/') return 0; /* a URL scheme */
        j++;
        while (s[j] == ' ')
            j++;
        if (!secret_key(s, k)) return 0;
        size_t v = value_len(s + j);
        if (v == 0) return 0;
        put(o, s, j);
        put(o, MASK, strlen(MASK));
        return j + v;
    }
    return 0;
}

void pv_redact(const char *in, char *out, size_t outsz)
{
    if (outsz == 0) return;
    outbuf o = {out, 0, outsz};
    out[0] = '\0';
    size_t n = strlen(in);
    /* Literal secrets first, into a scratch copy. */
    char *work = malloc(n + 1);
    if (!work) {
        snprintf(out, outsz, "(message withheld: out of memory)");
        return;
    }
    memcpy(work, in, n + 1);
    pthread_mutex_lock(&log_lock);
    for (int k = 0; k < nsecrets; k++) {
        size_t sl = strlen(secrets[k]);
        char *from = work, *hit;
        while ((hit = strstr(from, secrets[k])) != NULL) {
            /* Replace in place: the mask is never longer than a secret. */
            memcpy(hit, MASK, strlen(MASK));
            memmove(hit + strlen(MASK), hit + sl, strlen(hit + sl) + 1);
            from = hit + strlen(MASK);
        }
    }
    pthread_mutex_unlock(&log_lock);
    for (size_t i = 0; work[i];) {
        size_t used = redact_at(work, i, &o);
        if (used) {
            i += used;
        } else {
            put(&o, work + i, 1);
            i++;
        }
    }
    free(work);
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

void pv_log_push_table(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"debug", lua_log_debug},
                                     {"info", lua_log_info},
                                     {"warn", lua_log_warn},
                                     {"error", lua_log_error},
                                     {"secret", lua_log_secret},
                                     {"level", lua_log_level},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
}

void pv_log_funcs(lua_State *L)
{
    lua_pushcfunction(L, base_redact);
    lua_setfield(L, -2, "redact");
}
