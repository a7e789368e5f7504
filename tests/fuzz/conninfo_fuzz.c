/*
 * conninfo_fuzz.c: libFuzzer target for bindings/pg/conninfo.c, which reads
 * connection strings from users, configuration files and SaaS APIs (Neon's
 * connection_uri). Input: the connection string. Checks: parsing never
 * crashes or leaks; a parsed string written back without its secrets names
 * no secret keyword; written back with them it parses to the same
 * settings (the quoting round-trips); masking a message that quotes the
 * text and its pieces always fits; Neon's switch keeps every other setting.
 */
#include "../../bindings/pg/conninfo.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_settings(const pg_conninfo *a, const pg_conninfo *b)
{
    if (a->n != b->n) abort();
    for (int i = 0; i < a->n; i++) {
        const char *v = pg_conninfo_get(b, a->keys[i]);
        if (!v || strcmp(v, a->vals[i]) != 0) abort();
    }
}

static void check_parsed(pg_conninfo *ci)
{
    char *plain = pg_conninfo_string(ci, false);
    if (plain) {
        pg_conninfo back;
        pv_err err;
        pv_err_clear(&err);
        if (pg_conninfo_parse(plain, &back, &err) == 0) {
            for (int i = 0; i < back.n; i++)
                if (pg_conninfo_is_secret(back.keys[i])) abort();
            pg_conninfo_free(&back);
        }
        pg_conninfo_free_string(plain);
    }
    char *full = pg_conninfo_string(ci, true);
    if (full) {
        pg_conninfo back;
        pv_err err;
        pv_err_clear(&err);
        /* An empty string is "no settings", which the text form cannot say
         * when it is not empty itself. */
        if (ci->n > 0) {
            if (pg_conninfo_parse(full, &back, &err) != 0) abort();
            same_settings(ci, &back);
            pg_conninfo_free(&back);
        }
        pg_conninfo_free_string(full);
    }
    char from[256], to[256];
    int before = ci->n;
    if (pg_conninfo_neon_direct(ci, from, sizeof from, to, sizeof to) > 0 && ci->n != before) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    pg_conninfo ci;
    pv_err err;
    pv_err_clear(&err);
    if (pg_conninfo_parse(text, &ci, &err) == 0) {
        check_parsed(&ci);
        /* A message quoting the whole text and a piece of it, as libpq's do. */
        size_t half = strlen(text) / 2;
        char *msg = malloc(2 * strlen(text) + 32);
        if (msg) {
            sprintf(msg, "bad \"%s\" near \"%.*s\"", text, (int)half, text + half / 2);
            size_t outsz = size % 5 == 0 ? 8 : 2 * size + 64;
            char *out = malloc(outsz);
            if (out) {
                pg_conninfo_mask(&ci, msg, out, outsz);
                if (strlen(out) >= outsz) abort();
                free(out);
            }
            free(msg);
        }
        pg_conninfo_free(&ci);
    } else if (strlen(err.message) >= sizeof err.message) {
        abort();
    }
    free(text);
    return 0;
}
