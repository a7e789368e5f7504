/*
 * rows.c: counts a table's rows as its decoded data streams past.
 *
 * COPY text has one row per line (newlines inside values are escaped) and
 * ends with the line "\." (pg_dump adds two empty lines), which must be
 * there: without it rows are missing.
 *
 * pg_dump --inserts writes INSERT statements instead (dumpTableData_insert):
 * "INSERT INTO t [(cols)] [OVERRIDING SYSTEM VALUE] VALUES (...), (...)
 * [ON CONFLICT DO NOTHING];", one row per statement or several with
 * --rows-per-insert, or "INSERT INTO t DEFAULT VALUES;" per row of a table
 * without columns. The rows are the row constructors at the statement's
 * top level after VALUES. A small lexer keeps track of what is not code:
 * literals ('' doubles a quote) and quoted names ("" doubles a quote), so
 * a ';', "),(" or a newline inside a value or a table's name is not
 * mistaken for structure. pg_dump's literals are plain '' ones whatever
 * standard_conforming_strings says: when it is off, pg_dump doubles each
 * backslash as well as each quote, so reading backslashes as ordinary
 * bytes finds the same ends (and a multibyte character of SJIS or BIG5
 * whose second byte is 0x5c cannot be mistaken for an escape). Only an
 * E'' literal takes backslash escapes. Data that is not INSERT statements
 * is not counted; data that ends inside a statement is damage, as a COPY
 * without its end line is.
 */
#include "archive.h"

#include <stdio.h>
#include <string.h>

enum { LEX_CODE, LEX_STR, LEX_STR_END, LEX_ESC, LEX_NAME, LEX_NAME_END };

void ar_rows_begin(ar_rows *r, int mode)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    r->want_insert = true;
}

/* ------------------------------------------------------------------ */
/* COPY                                                                */
/* ------------------------------------------------------------------ */

static void count_copy(ar_rows *c, ar_entry *e, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        if (c->done) {
            for (; p < end; p++)
                if (*p != '\n') c->garbage = true;
            return;
        }
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;
        size_t seg = (size_t)(stop - p), i = 0;
        for (; i < seg && c->line_len < 2; i++, c->line_len++) {
            if (c->line_len == 0)
                c->c0 = p[i];
            else
                c->c1 = p[i];
        }
        c->line_len += seg - i;
        if (!nl) return;
        if (c->line_len == 2 && c->c0 == '\\' && c->c1 == '.')
            c->done = true;
        else
            e->rows++;
        c->line_len = 0;
        p = nl + 1;
    }
}

/* ------------------------------------------------------------------ */
/* INSERT statements                                                   */
/* ------------------------------------------------------------------ */

/* ASCII only, whatever the locale. */
static bool is_word(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

static bool word_is(const ar_rows *r, const char *w)
{
    return r->wlen == strlen(w) && memcmp(r->word, w, r->wlen) == 0;
}

static void end_word(ar_rows *r)
{
    if (r->wlen == 0) return;
    if (r->want_insert) {
        r->want_insert = false;
        if (!word_is(r, "INSERT")) r->unknown = true;
    } else if (r->depth == 0) {
        if (word_is(r, "VALUES")) {
            if (r->values) r->unknown = true;
            r->values = true;
            r->default_values = r->after_default;
        }
        r->after_default = word_is(r, "DEFAULT");
    }
    r->wlen = 0;
}

static void end_statement(ar_rows *r, ar_entry *e)
{
    if (!r->values || (r->default_values && r->tuples > 0)) {
        r->unknown = true;
        return;
    }
    e->rows += r->default_values ? 1 : r->tuples;
    r->values = r->default_values = r->after_default = false;
    r->tuples = 0;
    r->want_insert = true;
}

static void code_byte(ar_rows *r, ar_entry *e, uint8_t c)
{
    if (is_word(c)) {
        if (r->wlen < sizeof r->word) r->word[r->wlen] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
        if (r->wlen < 255) r->wlen++;
        return;
    }
    bool e_prefix = word_is(r, "E");
    end_word(r);
    if (c == ' ' || (c >= '\t' && c <= '\r')) return;
    if (r->want_insert) { /* a statement that does not start with a word */
        r->unknown = true;
        return;
    }
    switch (c) {
    case '\'':
        r->lex = LEX_STR;
        r->escapes = e_prefix;
        break;
    case '"':
        r->lex = LEX_NAME;
        break;
    case '(':
        if (r->depth == 0 && r->values) r->tuples++;
        r->depth++;
        break;
    case ')':
        if (r->depth == 0) r->unknown = true;
        r->depth--;
        break;
    case ';':
        if (r->depth == 0) end_statement(r, e);
        break;
    default:
        break;
    }
}

/* Inside a literal: returns where the literal's closing quote (or an
 * escape) leaves off, or `end`. */
static const uint8_t *in_literal(ar_rows *r, const uint8_t *p, const uint8_t *end)
{
    if (!r->escapes) {
        const uint8_t *q = memchr(p, '\'', (size_t)(end - p));
        if (!q) return end;
        r->lex = LEX_STR_END;
        return q + 1;
    }
    for (; p < end; p++) {
        if (*p == '\'') {
            r->lex = LEX_STR_END;
            return p + 1;
        }
        if (*p == '\\') {
            r->lex = LEX_ESC;
            return p + 1;
        }
    }
    return end;
}

static void count_inserts(ar_rows *r, ar_entry *e, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end && !r->unknown) {
        switch (r->lex) {
        case LEX_STR:
            p = in_literal(r, p, end);
            break;
        case LEX_STR_END: /* '' is a quote inside the literal */
        case LEX_NAME_END:
            if (*p == (r->lex == LEX_STR_END ? '\'' : '"')) {
                r->lex = r->lex == LEX_STR_END ? LEX_STR : LEX_NAME;
                p++;
            } else {
                r->lex = LEX_CODE;
            }
            break;
        case LEX_ESC: /* the escaped byte */
            r->lex = LEX_STR;
            p++;
            break;
        case LEX_NAME: {
            const uint8_t *q = memchr(p, '"', (size_t)(end - p));
            if (!q) return;
            r->lex = LEX_NAME_END;
            p = q + 1;
            break;
        }
        default:
            code_byte(r, e, *p++);
            break;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Both                                                                */
/* ------------------------------------------------------------------ */

void ar_rows_feed(ar_rows *r, ar_entry *e, const uint8_t *data, size_t n)
{
    if (r->mode == AR_ROWS_COPY) count_copy(r, e, data, n);
    if (r->mode == AR_ROWS_INSERT) count_inserts(r, e, data, n);
}

static int end_inserts(ar_rows *r, ar_entry *e, char *msg, size_t msgsz)
{
    if (r->lex == LEX_CODE || r->lex == LEX_STR_END || r->lex == LEX_NAME_END) end_word(r);
    if (r->unknown) return 0;
    bool in_value = r->lex != LEX_CODE && r->lex != LEX_STR_END && r->lex != LEX_NAME_END;
    if (in_value || !r->want_insert || r->depth != 0) {
        snprintf(msg, msgsz, "the INSERT data ends inside %s: rows are missing",
                 in_value ? "a quoted value" : "a statement");
        return -1;
    }
    e->rows_known = true;
    return 0;
}

int ar_rows_end(ar_rows *r, ar_entry *e, char *msg, size_t msgsz)
{
    if (r->mode == AR_ROWS_INSERT) return end_inserts(r, e, msg, msgsz);
    if (r->mode != AR_ROWS_COPY) return 0;
    if (!r->done) {
        snprintf(msg, msgsz,
                 "the COPY data ends without its end-of-data line (\\.): rows are missing");
        return -1;
    }
    if (r->garbage) {
        snprintf(msg, msgsz, "the COPY data continues after its end-of-data line (\\.)");
        return -1;
    }
    e->copy_done = true;
    e->rows_known = true;
    return 0;
}
