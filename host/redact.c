/*
 * redact.c: what every log line, error message, history line and our own
 * command line passes through before anyone sees it. Masks, as "***":
 * every literal secret registered at run time; the password of a URL
 * (scheme://user:***@host); age identities in any case and form
 * (AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…, AGE-PLUGIN-…-1…); the value
 * of an Authorization, Cookie or security-token header; Bearer, Basic,
 * FlyV1 and AWS4-HMAC-SHA256 credentials; tokens with a known prefix
 * (Neon napi_, Fly fm2_, GitHub ghp_); and the value of key=value,
 * key: value and "key": "value" pairs whose key names a secret (quoted,
 * or up to unescaped white space), as well as SQL's PASSWORD 'literal'.
 */
#include "pgvault.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MASK "***"
#define MAX_SECRETS 64

static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[MAX_SECRETS];
static int nsecrets;

void pv_log_add_secret(const char *secret)
{
    /* Very short strings would mask ordinary words. */
    if (!secret || strlen(secret) < 4) return;
    pthread_mutex_lock(&secrets_lock);
    bool known = false;
    for (int i = 0; i < nsecrets; i++)
        if (strcmp(secrets[i], secret) == 0) known = true;
    if (!known && nsecrets < MAX_SECRETS) {
        char *copy = strdup(secret);
        if (copy) secrets[nsecrets++] = copy;
    }
    pthread_mutex_unlock(&secrets_lock);
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

static void put_mask(outbuf *o)
{
    put(o, MASK, strlen(MASK));
}

/* Whether s[0..n) is exactly what this redactor writes for a value: then
 * redacting again changes nothing. */
static bool masked(const char *s, size_t n)
{
    return n == strlen(MASK) && strncmp(s, MASK, n) == 0;
}

static bool is_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* At a word's start: nothing alphanumeric just before it. */
static bool word_start(const char *in, size_t i)
{
    return i == 0 || !isalnum((unsigned char)in[i - 1]);
}

static bool starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Where a token that may hold a secret ends: white space, a quote, <>. */
static size_t token_end(const char *s, size_t j)
{
    while (s[j] && !isspace((unsigned char)s[j]) && !strchr("\"'<>`", s[j]))
        j++;
    return j;
}

/* ------------------------------------------------------------------ */
/* The rules: each looks at position i of `in`; when it matches it      */
/* writes the redacted text and returns the bytes it consumed, else 0.  */
/* ------------------------------------------------------------------ */

/* scheme://user:password@host: the password is what lies between the
 * first ':' after "://" and the last '@' of the token (passwords are
 * often pasted with an unescaped '@' or '/'), unless that ':' starts a
 * port ("host:8080/path@x"). */
static size_t rule_url(const char *in, size_t i, outbuf *o)
{
    const char *s = in + i;
    if (strncmp(s, "://", 3) != 0) return 0;
    size_t end = token_end(s, 3);
    size_t at = 0, colon = 0;
    for (size_t j = 3; j < end; j++)
        if (s[j] == '@') at = j;
    for (size_t j = 3; j < at && !colon; j++)
        if (s[j] == ':') colon = j;
    if (!at || !colon) return 0;
    size_t d = colon + 1;
    while (d < at && isdigit((unsigned char)s[d]))
        d++;
    if (d > colon + 1 && (s[d] == '/' || s[d] == '?' || s[d] == '#')) return 0; /* a port */
    put(o, s, colon + 1);
    put_mask(o);
    put(o, "@", 1);
    return at + 1;
}

/* AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…, AGE-PLUGIN-NAME-1…, any case:
 * the human-readable part up to the bech32 separator '1' stays. */
static size_t rule_age(const char *in, size_t i, outbuf *o)
{
    const char *s = in + i;
    static const char *const prefixes[] = {"AGE-SECRET-KEY-", "AGE-PLUGIN-", NULL};
    size_t plen = 0;
    for (int k = 0; prefixes[k] && !plen; k++)
        if (starts_with_ci(s, prefixes[k])) plen = strlen(prefixes[k]);
    if (!plen || !word_start(in, i)) return 0;
    size_t end = plen;
    while (is_key_char(s[end])) /* the whole word: nothing of it is left to read as a key */
        end++;
    size_t keep = plen;
    while (keep < end && (isalpha((unsigned char)s[keep]) || s[keep] == '-'))
        keep++;
    if (keep < end && s[keep] == '1')
        keep++;
    else
        keep = plen;
    put(o, s, keep);
    if (end > keep) put_mask(o);
    return end;
}

static bool secret_key(const char *k, size_t n, char sep);

/* Whether w starts a secret assignment ("password = x"): then it is not
 * the value of what came before it. Only '=': a value may end in ':'
 * ("password=secret-in: No such file"). */
static bool starts_assignment(const char *w)
{
    size_t k = 0;
    while (is_key_char(w[k]))
        k++;
    size_t j = k;
    while (is_blank(w[j]))
        j++;
    return k > 0 && w[j] == '=' && secret_key(w, k, '=');
}

static const char *const schemes[] = {"Bearer", "Basic",  "FlyV1",     "AWS4-HMAC-SHA256",
                                      "Token",  "Digest", "Negotiate", NULL};

/* Length of a known authorization scheme at s followed by blanks, or 0. */
static size_t scheme_len(const char *s)
{
    for (int k = 0; schemes[k]; k++) {
        size_t n = strlen(schemes[k]);
        if (strncasecmp(s, schemes[k], n) == 0 && is_blank(s[n])) {
            while (is_blank(s[n]))
                n++;
            return n;
        }
    }
    return 0;
}

/* The value of a quoted string at s (quote included), or up to the end
 * of the line: headers carry secrets with spaces and commas in them. */
static size_t quoted_or_line(const char *s)
{
    if (*s == '"' || *s == '\'') {
        size_t j = 1;
        while (s[j] && s[j] != *s) {
            if (s[j] == '\\' && s[j + 1]) j++;
            j++;
        }
        return s[j] ? j + 1 : j;
    }
    size_t j = 0;
    while (s[j] && s[j] != '\n' && s[j] != '\r')
        j++;
    return j;
}

/* Authorization: <scheme> ***, Cookie: ***, X-Amz-Security-Token: ***
 * (also as "name": "value" in JSON). */
static size_t rule_header(const char *in, size_t i, outbuf *o)
{
    static const char *const names[] = {"Authorization", "Proxy-Authorization",  "Cookie",
                                        "Set-Cookie",    "X-Amz-Security-Token", NULL};
    const char *s = in + i;
    if (!word_start(in, i) || (i > 0 && is_key_char(in[i - 1]))) return 0;
    size_t n = 0;
    for (int k = 0; names[k] && !n; k++)
        if (starts_with_ci(s, names[k]) && !is_key_char(s[strlen(names[k])])) n = strlen(names[k]);
    if (!n) return 0;
    size_t j = n;
    if (s[j] == '"') j++;
    while (is_blank(s[j]))
        j++;
    if (s[j] != ':' && s[j] != '=') return 0;
    j++;
    while (is_blank(s[j]))
        j++;
    bool quoted = s[j] == '"' || s[j] == '\'';
    size_t v = quoted_or_line(s + j);
    if (v == 0) return 0;
    size_t keep = j + (quoted ? 1 : 0);
    keep += scheme_len(s + keep);
    bool closed = quoted && v > 1 && s[j + v - 1] == s[j];
    if (masked(s + keep, j + v - keep - (closed ? 1 : 0))) {
        put(o, s, j + v);
        return j + v;
    }
    put(o, s, keep);
    put_mask(o);
    if (closed) put(o, s + j + v - 1, 1);
    return j + v;
}

/* Bearer ***, Basic ***, FlyV1 *** (a Fly token is several comma-separated
 * macaroons), AWS4-HMAC-SHA256 *** (Credential=…, Signature=…). */
static size_t rule_scheme(const char *in, size_t i, outbuf *o)
{
    const char *s = in + i;
    if (!word_start(in, i) || (i > 0 && in[i - 1] == '-')) return 0;
    size_t n = scheme_len(s);
    if (!n || starts_with_ci(s, "Token") || starts_with_ci(s, "Digest") ||
        starts_with_ci(s, "Negotiate"))
        return 0; /* these words are prose far more often than credentials */
    size_t end = starts_with_ci(s, "AWS4-") ? n + quoted_or_line(s + n) : token_end(s, n);
    if (end - n < 8) return 0; /* "Bearer auth failed" is prose, a credential is longer */
    if (starts_assignment(s + n)) return 0; /* "Bearer password = x": the key's rule */
    put(o, s, n);
    put_mask(o);
    return end;
}

/* Tokens whose prefix says what they are: Neon API keys, Fly.io
 * macaroons, GitHub tokens. */
static size_t rule_token(const char *in, size_t i, outbuf *o)
{
    static const char *const prefixes[] = {"napi_", "fm1_", "fm2_", "fo1_",        "ghp_",
                                           "gho_",  "ghs_", "ghu_", "github_pat_", NULL};
    const char *s = in + i;
    if (!word_start(in, i) || (i > 0 && (in[i - 1] == '_' || in[i - 1] == '-'))) return 0;
    for (int k = 0; prefixes[k]; k++) {
        size_t n = strlen(prefixes[k]);
        if (strncmp(s, prefixes[k], n) != 0) continue;
        size_t end = n;
        while (isalnum((unsigned char)s[end]) || (s[end] && strchr("_+/=.-", s[end]) != NULL))
            end++;
        if (end - n < 16) return 0;
        put(o, s, n);
        put_mask(o);
        return end;
    }
    return 0;
}

/* Key names whose value is a secret: a component (split at _ and -) that
 * names one, or a name ending in one ("PGPASSWORD"). With '=' only,
 * "signature" too (X-Amz-Signature=…); "signature: good" is prose. */
static bool secret_key(const char *k, size_t n, char sep)
{
    static const char *const words[] = {"password",   "passwd", "pwd",        "secret",
                                        "token",      "apikey", "passphrase", "credentials",
                                        "privatekey", NULL};
    char low[64];
    if (n == 0 || n >= sizeof low) return false;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    low[n] = '\0';
    if (strstr(low, "api_key") || strstr(low, "api-key") || strstr(low, "private_key")) return true;
    if (n >= 8 && strcmp(low + n - 8, "password") == 0) return true;
    if (sep == '=' && n >= 9 && strcmp(low + n - 9, "signature") == 0) return true;
    char *save = NULL;
    for (char *part = strtok_r(low, "_-", &save); part; part = strtok_r(NULL, "_-", &save))
        for (int i = 0; words[i]; i++)
            if (strcmp(part, words[i]) == 0) return true;
    return false;
}

/* Punctuation that ends a clause or a bracket: "token=x; use ...",
 * "{password=x}". Inside a value ("a,b") it does not end it. */
static bool closes(const char *s)
{
    return s[0] && strchr(";,)]}", s[0]) &&
           (!s[1] || isspace((unsigned char)s[1]) || strchr(";,)]}", s[1]));
}

/* A value: quoted (backslash escapes honoured), or up to white space that
 * is not escaped by a backslash ("a\ b"), an '&' (a query string), or
 * punctuation that closes a clause. */
static size_t value_len(const char *s)
{
    if (*s == '\'' || *s == '"') return quoted_or_line(s);
    size_t i = 0;
    while (s[i] && !isspace((unsigned char)s[i]) && s[i] != '&') {
        if (closes(s + i)) break;
        if (s[i] == '\\' && s[i + 1]) i++;
        i++;
    }
    return i;
}

/* Writes s[0..j) and the masked value at s+j (length v), keeping a quoted
 * value's quotes ("key": "***" stays JSON); an empty or already masked
 * value is copied as it is (so that redacting twice changes nothing). */
static size_t mask_value(const char *s, size_t j, size_t v, outbuf *o)
{
    char q = s[j] == '"' || s[j] == '\'' ? s[j] : 0;
    if (v == 0) return 0;
    bool closed = q && v >= 2 && s[j + v - 1] == q;
    if ((q && v <= 2) || masked(s + j + (q ? 1 : 0), v - (q ? 1 : 0) - (closed ? 1 : 0))) {
        put(o, s, j + v);
        return j + v;
    }
    put(o, s, j);
    if (q) put(o, &q, 1);
    put_mask(o);
    if (q) put(o, &q, 1);
    return j + v;
}

/* key=value, key = value, key:value, "key": "value", and SQL's
 * PASSWORD 'literal', where the key names a secret. */
static size_t rule_key_value(const char *in, size_t i, outbuf *o)
{
    const char *s = in + i;
    if (!is_key_char(s[0]) || (i > 0 && is_key_char(s[-1]))) return 0;
    size_t k = 0;
    while (is_key_char(s[k]))
        k++;
    size_t j = k;
    if (s[j] == '"') j++;
    while (is_blank(s[j]))
        j++;
    char sep = s[j];
    if (sep == '\'' && k == 8 && strncasecmp(s, "password", 8) == 0)
        return mask_value(s, j, value_len(s + j), o); /* ALTER ROLE … PASSWORD 'x' */
    if (sep != '=' && sep != ':') return 0;
    if (sep == ':' && s[j + 1] == '/') return 0; /* a URL scheme */
    if (!secret_key(s, k, sep)) return 0;
    j++;
    while (is_blank(s[j]))
        j++;
    j += scheme_len(s + j); /* token = Bearer *** */
    size_t v = value_len(s + j);
    if (s[j] != '"' && s[j] != '\'' && starts_assignment(s + j)) return 0;
    return mask_value(s, j, v, o);
}

static size_t redact_at(const char *in, size_t i, outbuf *o)
{
    static size_t (*const rules[])(const char *, size_t, outbuf *) = {
        rule_url, rule_age, rule_header, rule_scheme, rule_token, rule_key_value};
    for (size_t r = 0; r < sizeof rules / sizeof *rules; r++) {
        size_t used = rules[r](in, i, o);
        if (used) return used;
    }
    return 0;
}

/* Replaces every registered literal secret in `work` (in place: the mask
 * is never longer than a secret). */
static void mask_literals(char *work)
{
    pthread_mutex_lock(&secrets_lock);
    for (int k = 0; k < nsecrets; k++) {
        size_t sl = strlen(secrets[k]);
        char *from = work, *hit;
        while ((hit = strstr(from, secrets[k])) != NULL) {
            memcpy(hit, MASK, strlen(MASK));
            memmove(hit + strlen(MASK), hit + sl, strlen(hit + sl) + 1);
            from = hit + strlen(MASK);
        }
    }
    pthread_mutex_unlock(&secrets_lock);
}

void pv_redact(const char *in, char *out, size_t outsz)
{
    if (outsz == 0) return;
    outbuf o = {out, 0, outsz};
    out[0] = '\0';
    size_t n = strlen(in);
    char *work = malloc(n + 1);
    if (!work) {
        snprintf(out, outsz, "(message withheld: out of memory)");
        return;
    }
    memcpy(work, in, n + 1);
    mask_literals(work);
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

bool pv_redacts(const char *in)
{
    size_t n = strlen(in) + 256;
    char *out = malloc(n);
    if (!out) return true; /* cannot tell: assume it holds a secret */
    pv_redact(in, out, n);
    bool changed = strcmp(in, out) != 0;
    free(out);
    return changed;
}
