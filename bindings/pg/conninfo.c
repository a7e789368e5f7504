/*
 * conninfo.c: connection strings (see conninfo.h). libpq parses them
 * (PQconninfoParse), so pgvault reads a string exactly as pg_dump and psql
 * do. What libpq cannot do is keep a password out of its messages when
 * the string is malformed: a password holding '@' or '/' is cut there
 * and its tail becomes a host name or port that libpq then quotes
 * ("could not translate host name "S3cret@host""). So before parsing,
 * the spans of the text that hold a password, as a person meant it, are
 * located; they are registered as log secrets, a URL that libpq would cut
 * differently is refused with advice, and every quoted piece of a libpq
 * message that falls in such a span is masked.
 */
#include "conninfo.h"
#include "message.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MASK "***"
#define MAX_SPANS 16

/* ------------------------------------------------------------------ */
/* Keywords                                                            */
/* ------------------------------------------------------------------ */

/* libpq's keywords with their display flags ('*': a secret), parsed once
 * from an empty string: no defaults, no environment. */
static PQconninfoOption *catalog(void)
{
    static PQconninfoOption *all;
    if (!all) all = PQconninfoParse("", NULL);
    return all;
}

bool pg_conninfo_is_secret(const char *key)
{
    /* Secrets of newer libpq versions too, whatever this one knows. */
    static const char *const named[] = {"password", "sslpassword", "oauth_client_secret", NULL};
    for (int i = 0; named[i]; i++)
        if (strcmp(key, named[i]) == 0) return true;
    const PQconninfoOption *o = catalog();
    for (; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0) return o->dispchar && strchr(o->dispchar, '*');
    return false;
}

/* The length of the libpq keyword that starts at s and is followed by
 * optional spaces and '=' (0 when none does). */
static size_t keyword_at(const char *s, bool secret_only)
{
    const PQconninfoOption *o = catalog();
    for (; o && o->keyword; o++) {
        size_t n = strlen(o->keyword);
        if (strncmp(s, o->keyword, n) != 0) continue;
        size_t j = n;
        while (s[j] == ' ' || s[j] == '\t')
            j++;
        if (s[j] != '=') continue;
        if (!secret_only || pg_conninfo_is_secret(o->keyword)) return n;
    }
    if (secret_only && strncmp(s, "oauth_client_secret=", 20) == 0) return 19;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Where the secrets are in the text                                   */
/* ------------------------------------------------------------------ */

typedef struct {
    size_t start, end;
} span;

static size_t url_prefix(const char *s)
{
    if (strncmp(s, "postgresql://", 13) == 0) return 13;
    if (strncmp(s, "postgres://", 11) == 0) return 11;
    return 0;
}

static const char *find_in(const char *from, const char *to, int c)
{
    for (const char *p = from; p < to; p++)
        if (*p == c) return p;
    return NULL;
}

/* The password of user:password@ as a person wrote it: up to the last
 * '@' before the host's path. libpq ends the credentials at the first '@'
 * instead, and finds none when a '/' comes first; when the two readings
 * differ, *cut says so. Returns 1 with the span, 0 when there is none. */
static int url_password(const char *s, span *sp, bool *cut)
{
    size_t a = url_prefix(s);
    if (!a) return 0;
    const char *start = s + a, *end = s + strlen(s);
    const char *first_at = find_in(start, end, '@');
    if (!first_at) return 0;
    /* An '@' in the query (?user=me@corp) is no password's. */
    const char *q = find_in(start, first_at, '?');
    if (q && find_in(start, q, '/')) return 0;
    const char *path = find_in(first_at, end, '/');
    if (!path) path = end;
    const char *last_at = first_at;
    for (const char *p = first_at; p < path; p++)
        if (*p == '@') last_at = p;
    const char *colon = find_in(start, first_at, ':');
    if (!colon) colon = find_in(start, last_at, ':');
    if (!colon) return 0;
    sp->start = (size_t)(colon + 1 - s);
    sp->end = (size_t)(last_at - s);
    *cut = last_at != first_at || find_in(start, first_at, '/') != NULL;
    return sp->end > sp->start;
}

/* The value of password=... (and every other secret keyword) in a query
 * string or key=value text: up to the next setting libpq knows, so that a
 * value cut by an unquoted '&' or space is covered whole. */
static int keyword_values(const char *s, bool url, span *out, int max)
{
    int n = 0;
    const char *query = url ? strchr(s, '?') : NULL;
    if (url && !query) return 0;
    for (const char *p = url ? query + 1 : s; *p && n < max; p++) {
        bool boundary = p == s || p[-1] == '?' || p[-1] == '&' || isspace((unsigned char)p[-1]);
        size_t k = boundary ? keyword_at(p, true) : 0;
        if (!k) continue;
        const char *v = strchr(p + k, '=') + 1;
        while (!url && (*v == ' ' || *v == '\t'))
            v++;
        const char *e = v;
        if (!url && *e == '\'') {
            for (e++; *e && *e != '\''; e++)
                if (*e == '\\' && e[1]) e++;
            if (*e) e++;
        } else {
            for (; *e; e++) {
                if (url && *e == '&' && keyword_at(e + 1, false)) break;
                if (!url && isspace((unsigned char)*e)) {
                    const char *w = e;
                    while (isspace((unsigned char)*w))
                        w++;
                    if (keyword_at(w, false)) break;
                }
            }
        }
        if (e > v) out[n++] = (span){(size_t)(v - s), (size_t)(e - s)};
        p = e > p ? e - 1 : p;
    }
    return n;
}

static int secret_spans(const char *s, span *out, int max, bool *cut)
{
    int n = 0;
    *cut = false;
    if (url_password(s, &out[0], cut)) n++;
    return n + keyword_values(s, url_prefix(s) > 0, out + n, max - n);
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Registers the text of each span, and its percent-decoded form, as a log
 * secret. */
static void register_spans(const char *s, const span *sp, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = sp[i].end - sp[i].start;
        char *raw = malloc(len + 1), *dec = malloc(len + 1);
        if (raw && dec) {
            memcpy(raw, s + sp[i].start, len);
            raw[len] = '\0';
            size_t o = 0;
            for (size_t j = 0; j < len; j++) {
                int hi = j + 2 < len + 1 && raw[j] == '%' ? hex_value(raw[j + 1]) : -1;
                int lo = hi >= 0 ? hex_value(raw[j + 2]) : -1;
                if (lo >= 0) {
                    dec[o++] = (char)(hi * 16 + lo);
                    j += 2;
                } else {
                    dec[o++] = raw[j];
                }
            }
            dec[o] = '\0';
            pv_log_add_secret(raw);
            pv_log_add_secret(dec);
            explicit_bzero(raw, len);
            explicit_bzero(dec, o);
        }
        free(raw);
        free(dec);
    }
}

/* ------------------------------------------------------------------ */
/* Masking libpq's messages                                            */
/* ------------------------------------------------------------------ */

static bool in_spans(size_t pos, const span *sp, int n)
{
    for (int i = 0; i < n; i++)
        if (pos >= sp[i].start && pos < sp[i].end) return true;
    return false;
}

/* True when frag occurs at text+at with a character inside a span. */
static bool overlaps(const span *sp, int n, size_t at, size_t len)
{
    for (size_t j = 0; j < len; j++)
        if (in_spans(at + j, sp, n)) return true;
    return false;
}

/* Writes the quoted piece frag[0..len) of a message about `text`. A piece
 * that stands somewhere in the text outside every secret span is public
 * (a keyword, the host); else the characters of its first occurrence that
 * fall in a span are masked. A piece found nowhere (libpq decoded it) is
 * masked whole when the text holds a secret at all; one punctuation
 * character ("=", "]") is libpq's own wording. */
static void put_fragment(FILE *o, const char *text, const span *sp, int n, const char *frag,
                         size_t len)
{
    if (n == 0 || len == 0 || (len == 1 && ispunct((unsigned char)frag[0]))) {
        fwrite(frag, 1, len, o);
        return;
    }
    const char *hit = NULL;
    for (const char *p = text; *p; p++) {
        if (strncmp(p, frag, len) != 0) continue;
        if (!overlaps(sp, n, (size_t)(p - text), len)) {
            fwrite(frag, 1, len, o);
            return;
        }
        if (!hit) hit = p;
    }
    if (!hit) {
        fputs(MASK, o);
        return;
    }
    size_t at = (size_t)(hit - text);
    for (size_t j = 0; j < len;) {
        if (!in_spans(at + j, sp, n)) {
            fputc(frag[j++], o);
            continue;
        }
        fputs(MASK, o);
        while (j < len && in_spans(at + j, sp, n))
            j++;
    }
}

static void mask_text(const char *text, const char *msg, char *out, size_t outsz)
{
    if (outsz == 0) return;
    out[0] = '\0';
    char *buf = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    if (!o) return;
    span sp[MAX_SPANS];
    bool cut;
    int n = text ? secret_spans(text, sp, MAX_SPANS, &cut) : 0;
    for (const char *p = msg; *p;) {
        const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!close) {
            fputc(*p++, o);
            continue;
        }
        fputc('"', o);
        put_fragment(o, text, sp, n, p + 1, (size_t)(close - p - 1));
        fputc('"', o);
        p = close + 1;
    }
    if (fclose(o) == 0) snprintf(out, outsz, "%s", buf);
    free(buf);
}

void pg_conninfo_mask(const pg_conninfo *ci, const char *msg, char *out, size_t outsz)
{
    mask_text(ci ? ci->text : NULL, msg, out, outsz);
}

/* ------------------------------------------------------------------ */
/* Parsing                                                             */
/* ------------------------------------------------------------------ */

void pg_conninfo_free(pg_conninfo *ci)
{
    for (int i = 0; i < ci->n; i++) {
        if (pg_conninfo_is_secret(ci->keys[i])) explicit_bzero(ci->vals[i], strlen(ci->vals[i]));
        free(ci->keys[i]);
        free(ci->vals[i]);
    }
    free(ci->keys);
    free(ci->vals);
    if (ci->text) {
        explicit_bzero(ci->text, strlen(ci->text));
        free(ci->text);
    }
    memset(ci, 0, sizeof *ci);
}

const char *pg_conninfo_get(const pg_conninfo *ci, const char *key)
{
    for (int i = 0; i < ci->n; i++)
        if (strcmp(ci->keys[i], key) == 0) return ci->vals[i];
    return NULL;
}

/* Room for one more setting and the arrays' NULL terminators. */
static int reserve(pg_conninfo *ci)
{
    if (ci->n + 2 <= ci->cap) return 0;
    int cap = ci->cap ? ci->cap * 2 : 16;
    char **k = realloc(ci->keys, sizeof *k * (size_t)cap);
    if (!k) return -1;
    ci->keys = k;
    char **v = realloc(ci->vals, sizeof *v * (size_t)cap);
    if (!v) return -1;
    ci->vals = v;
    ci->cap = cap;
    ci->keys[ci->n] = ci->vals[ci->n] = NULL;
    return 0;
}

int pg_conninfo_set(pg_conninfo *ci, const char *key, const char *val)
{
    for (int i = 0; i < ci->n; i++) {
        if (strcmp(ci->keys[i], key) != 0) continue;
        char *v = val ? strdup(val) : NULL;
        if (val && !v) return -1;
        if (pg_conninfo_is_secret(key)) explicit_bzero(ci->vals[i], strlen(ci->vals[i]));
        free(ci->vals[i]);
        if (v) {
            ci->vals[i] = v;
            return 0;
        }
        free(ci->keys[i]);
        ci->n--;
        memmove(ci->keys + i, ci->keys + i + 1, sizeof *ci->keys * (size_t)(ci->n - i + 1));
        memmove(ci->vals + i, ci->vals + i + 1, sizeof *ci->vals * (size_t)(ci->n - i + 1));
        return 0;
    }
    if (!val) return 0;
    if (reserve(ci) < 0) return -1;
    char *k = strdup(key), *v = strdup(val);
    if (!k || !v) {
        free(k);
        free(v);
        return -1;
    }
    ci->keys[ci->n] = k;
    ci->vals[ci->n] = v;
    ci->n++;
    ci->keys[ci->n] = ci->vals[ci->n] = NULL;
    return 0;
}

static int oom(pv_err *err)
{
    pv_err_set(err, "internal", "out of memory reading a connection string");
    return -1;
}

int pg_conninfo_parse(const char *text, pg_conninfo *ci, pv_err *err)
{
    memset(ci, 0, sizeof *ci);
    span sp[MAX_SPANS];
    bool cut;
    int n = secret_spans(text, sp, MAX_SPANS, &cut);
    register_spans(text, sp, n);
    if (cut) {
        pv_err_set(
            err, "usage",
            "invalid connection URL: its password holds an '@' or '/', which ends a password in "
            "a URL; percent-encode them (@ as %%40, / as %%2F) or use PGPASSWORD or ~/.pgpass");
        return -1;
    }
    /* A bare word is a database name, as libpq's dbname expansion has it
     * (psql -d NAME). */
    if (!url_prefix(text) && !strchr(text, '=')) {
        if (reserve(ci) < 0 || (text[0] && pg_conninfo_set(ci, "dbname", text) < 0) ||
            !(ci->text = strdup(text))) {
            pg_conninfo_free(ci);
            return oom(err);
        }
        return 0;
    }
    char *why = NULL;
    PQconninfoOption *opts = PQconninfoParse(text, &why);
    if (!opts) {
        char flat[600], msg[700];
        pg_one_line(why ? why : "out of memory", flat, sizeof flat);
        PQfreemem(why);
        mask_text(text, flat, msg, sizeof msg);
        pv_err_set(err, "usage", "invalid connection string: %s%s", msg,
                   n > 0 && url_prefix(text) ? " (in a URL's password, percent-encode @ / % & "
                                               "as %40 %2F %25 %26)"
                                             : "");
        return -1;
    }
    int rc = reserve(ci);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val) continue;
        if (pg_conninfo_is_secret(o->keyword)) pv_log_add_secret(o->val);
        if (rc == 0) rc = pg_conninfo_set(ci, o->keyword, o->val);
        if (pg_conninfo_is_secret(o->keyword)) explicit_bzero(o->val, strlen(o->val));
    }
    PQconninfoFree(opts);
    if (rc == 0 && !(ci->text = strdup(text))) rc = -1;
    if (rc != 0) {
        pg_conninfo_free(ci);
        return oom(err);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Writing it back                                                     */
/* ------------------------------------------------------------------ */

char *pg_conninfo_string(const pg_conninfo *ci, bool with_secrets)
{
    size_t cap = 1;
    for (int i = 0; i < ci->n; i++)
        cap += strlen(ci->keys[i]) + 2 * strlen(ci->vals[i]) + 4;
    char *s = malloc(cap), *o = s;
    if (!s) return NULL;
    for (int i = 0; i < ci->n; i++) {
        if (!with_secrets && pg_conninfo_is_secret(ci->keys[i])) continue;
        if (o > s) *o++ = ' ';
        o += sprintf(o, "%s='", ci->keys[i]);
        for (const char *v = ci->vals[i]; *v; v++) {
            if (*v == '\'' || *v == '\\') *o++ = '\\';
            *o++ = *v;
        }
        *o++ = '\'';
    }
    *o = '\0';
    return s;
}

void pg_conninfo_free_string(char *s)
{
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ------------------------------------------------------------------ */
/* Neon's pooled hosts                                                 */
/* ------------------------------------------------------------------ */

static bool ends_with_ci(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

bool pg_neon_direct_host(const char *host, char *out, size_t outsz)
{
    static const char pooler[] = "-pooler";
    size_t plen = sizeof pooler - 1;
    const char *dot = strchr(host, '.');
    if (!dot) return false;
    size_t label = (size_t)(dot - host), len = strlen(host);
    if (len && host[len - 1] == '.') len--; /* a fully qualified name */
    if (strncasecmp(host, "ep-", 3) != 0 || label <= 3 + plen ||
        strncasecmp(dot - plen, pooler, plen) != 0 || !ends_with_ci(host, len, ".neon.tech"))
        return false;
    int w = snprintf(out, outsz, "%.*s%s", (int)(label - plen), host, dot);
    return w > 0 && (size_t)w < outsz;
}

int pg_conninfo_neon_direct(pg_conninfo *ci, char *from, size_t fromsz, char *to, size_t tosz)
{
    const char *hosts = pg_conninfo_get(ci, "host");
    if (!hosts) return 0;
    size_t cap = strlen(hosts) + 1;
    char *out = malloc(cap), *o = out;
    if (!out) return -1;
    int changed = 0;
    for (const char *h = hosts;;) {
        size_t n = strcspn(h, ",");
        char one[256], direct[256];
        bool pooled = n < sizeof one && snprintf(one, sizeof one, "%.*s", (int)n, h) >= 0 &&
                      pg_neon_direct_host(one, direct, sizeof direct);
        if (pooled && changed++ == 0) {
            snprintf(from, fromsz, "%s", one);
            snprintf(to, tosz, "%s", direct);
        }
        o += sprintf(o, "%s%.*s", o > out ? "," : "", (int)(pooled ? strlen(direct) : n),
                     pooled ? direct : h);
        if (!h[n]) break;
        h += n + 1;
    }
    int rc = changed ? pg_conninfo_set(ci, "host", out) : 0;
    free(out);
    return rc < 0 ? -1 : changed;
}
