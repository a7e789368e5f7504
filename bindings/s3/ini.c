/*
 * ini.c: the aws CLI's shared files (~/.aws/credentials, ~/.aws/config):
 * "[section]" headers, "key = value" lines, comments after '#' or ';' at
 * the start of a line, and nested blocks ("s3 =" followed by indented
 * "key = value" lines, read as "s3.key"). The files are the user's, but a
 * profile may come from anywhere: every line is parsed within bounds.
 */
#include "s3int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE (4 * 1024 * 1024)

/* The line [*pos, end) without its white space at both ends. */
static void trimmed(const char **b, const char **e)
{
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

static void copy_span(char *dst, size_t dstsz, const char *b, const char *e)
{
    size_t n = (size_t)(e - b);
    if (n >= dstsz) n = dstsz - 1;
    memcpy(dst, b, n);
    dst[n] = '\0';
}

static void add_entry(s3_ini_section *out, int *cap, const char *parent, const char *key,
                      const char *value)
{
    if (out->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        s3_ini_entry *nv = realloc(out->v, (size_t)*cap * sizeof *nv);
        if (!nv) abort();
        out->v = nv;
    }
    s3_ini_entry *e = &out->v[out->n++];
    if (parent[0])
        snprintf(e->key, sizeof e->key, "%.30s.%.32s", parent, key);
    else
        snprintf(e->key, sizeof e->key, "%.63s", key);
    snprintf(e->value, sizeof e->value, "%.2047s", value);
}

/* One "key = value" line of the wanted section. */
static void parse_pair(s3_ini_section *out, int *cap, char *parent, size_t parentsz, bool indented,
                       const char *b, const char *e)
{
    const char *eq = memchr(b, '=', (size_t)(e - b));
    if (!eq) return;
    const char *kb = b, *ke = eq, *vb = eq + 1, *ve = e;
    trimmed(&kb, &ke);
    trimmed(&vb, &ve);
    char key[64], value[2048];
    copy_span(key, sizeof key, kb, ke);
    copy_span(value, sizeof value, vb, ve);
    if (!indented) parent[0] = '\0';
    if (!indented && !value[0]) {
        snprintf(parent, parentsz, "%s", key); /* "s3 =" opens a nested block */
        return;
    }
    add_entry(out, cap, indented ? parent : "", key, value);
}

void s3_ini_parse(const char *text, size_t len, const char *want, s3_ini_section *out)
{
    memset(out, 0, sizeof *out);
    char parent[64] = "";
    bool in = false;
    int cap = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *b = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        if (memchr(b, '\0', (size_t)(e - b))) continue; /* not text */
        bool indented = b < e && (*b == ' ' || *b == '\t');
        trimmed(&b, &e);
        if (b == e || *b == '#' || *b == ';') continue;
        if (*b == '[') {
            const char *close = memchr(b, ']', (size_t)(e - b));
            const char *nb = b + 1, *ne = close ? close : e;
            trimmed(&nb, &ne);
            in = strlen(want) == (size_t)(ne - nb) && memcmp(nb, want, (size_t)(ne - nb)) == 0;
            if (in) out->found = true;
            parent[0] = '\0';
            continue;
        }
        if (in) parse_pair(out, &cap, parent, sizeof parent, indented, b, e);
    }
}

void s3_ini_read(const char *path, const char *want, s3_ini_section *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return;
    s3_buf text = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && text.len < MAX_FILE)
        s3_buf_add(&text, chunk, n);
    fclose(f);
    s3_ini_parse(text.p ? text.p : "", text.len, want, out);
    if (text.p) memset(text.p, 0, text.len); /* it may hold secrets */
    s3_buf_free(&text);
}

const char *s3_ini_get(const s3_ini_section *s, const char *key)
{
    for (int i = s->n - 1; i >= 0; i--)
        if (strcmp(s->v[i].key, key) == 0) return s->v[i].value;
    return NULL;
}

void s3_ini_free(s3_ini_section *s)
{
    if (s->v) memset(s->v, 0, (size_t)s->n * sizeof *s->v);
    free(s->v);
    memset(s, 0, sizeof *s);
}
