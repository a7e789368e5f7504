/*
 * url.c: percent-encoding, and the masked form of a URL that messages and
 * log lines show: no user information, secret-looking query values
 * replaced by ***, and on request the secret part of the path (a
 * healthchecks.io ping URL is its own credential) replaced too.
 */
#include "http.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void http_escape(http_bytes *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            http_bytes_add(out, &s[i], 1);
        } else {
            char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
            http_bytes_add(out, enc, 3);
        }
    }
}

static bool secret_param(const char *name, size_t n)
{
    static const char *const extra[] = {"sig", "pass", "pwd", "code", NULL};
    char low[64];
    if (n >= sizeof low) return true;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[n] = '\0';
    if (http_secret_header(low)) return true;
    for (int i = 0; extra[i]; i++)
        if (strstr(low, extra[i])) return true;
    return false;
}

static void add_str(http_bytes *b, const char *s)
{
    http_bytes_add(b, s, strlen(s));
}

static void mask_query(http_bytes *out, const char *q, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && q[end] != '&')
            end++;
        const char *eq = memchr(q + i, '=', end - i);
        if (eq && secret_param(q + i, (size_t)(eq - (q + i)))) {
            http_bytes_add(out, q + i, (size_t)(eq - (q + i)) + 1);
            add_str(out, "***");
        } else {
            http_bytes_add(out, q + i, end - i);
        }
        if (end < len) http_bytes_add(out, "&", 1);
        i = end + 1;
    }
}

/* Where the pieces of a URL are: [scheme://][user[:password]@]host[/path][?query][#frag] */
typedef struct url_parts {
    const char *auth;     /* after "scheme://" */
    const char *password; /* NULL when none */
    size_t password_len;
    const char *host; /* after the user information */
    const char *path;
    size_t path_len;
    const char *query; /* after '?', NULL when none */
    size_t query_len;
} url_parts;

static void split_url(const char *url, url_parts *u)
{
    memset(u, 0, sizeof *u);
    const char *scheme_end = strstr(url, "://");
    u->auth = scheme_end ? scheme_end + 3 : url;
    size_t auth_len = strcspn(u->auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (u->auth[i] == '@') at = u->auth + i;
    u->host = at ? at + 1 : u->auth;
    if (at) {
        const char *colon = memchr(u->auth, ':', (size_t)(at - u->auth));
        if (colon) {
            u->password = colon + 1;
            u->password_len = (size_t)(at - u->password);
        }
    }
    u->path = u->auth + auth_len;
    u->path_len = strcspn(u->path, "?#");
    if (u->path[u->path_len] == '?') {
        u->query = u->path + u->path_len + 1;
        u->query_len = strcspn(u->query, "#");
    }
}

char *http_mask_url(const char *url, size_t secret_path_end)
{
    http_bytes out = {0};
    url_parts u;
    split_url(url, &u);
    http_bytes_add(&out, url, (size_t)(u.auth - url));
    http_bytes_add(&out, u.host, (size_t)(u.path - u.host));
    size_t path_off = (size_t)(u.path - url);
    if (secret_path_end > path_off && secret_path_end <= path_off + u.path_len) {
        add_str(&out, "/***");
        const char *rest = url + secret_path_end;
        http_bytes_add(&out, rest, u.path_len - (size_t)(rest - u.path));
    } else {
        http_bytes_add(&out, u.path, u.path_len);
    }
    if (u.query) {
        http_bytes_add(&out, "?", 1);
        mask_query(&out, u.query, u.query_len);
    }
    if (!out.p) http_bytes_add(&out, "", 0);
    return out.p;
}

static void add_secret(const char *s, size_t n)
{
    char *copy = strndup(s, n);
    if (!copy) abort();
    pv_log_add_secret(copy);
    explicit_bzero(copy, n);
    free(copy);
}

void http_register_url_secrets(const char *url, size_t secret_path_end)
{
    url_parts u;
    split_url(url, &u);
    if (u.password && u.password_len) add_secret(u.password, u.password_len);
    size_t path_off = (size_t)(u.path - url);
    if (secret_path_end > path_off && secret_path_end <= path_off + u.path_len)
        add_secret(u.path, secret_path_end - path_off);
    for (size_t i = 0; u.query && i < u.query_len;) {
        const char *q = u.query + i;
        size_t n = strcspn(q, "&#");
        if (i + n > u.query_len) n = u.query_len - i;
        const char *eq = memchr(q, '=', n);
        if (eq && secret_param(q, (size_t)(eq - q))) add_secret(eq + 1, n - (size_t)(eq + 1 - q));
        i += n + 1;
    }
}
