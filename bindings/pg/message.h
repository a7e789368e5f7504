/*
 * message.h: what libpq and the server say, made into one line of text:
 * libpq's multi-line messages flattened, and a server message's primary
 * text, detail and hint joined as the sentences they are. pg.c logs
 * notices with it, pgvault.dump what client programs print.
 */
#ifndef PGVAULT_PG_MESSAGE_H
#define PGVAULT_PG_MESSAGE_H

#include <stddef.h>

/* libpq's multi-line message as one line: newlines and tabs become single
 * spaces, trailing space dropped. */
void pg_one_line(const char *in, char *out, size_t outsz);

/* "primary. Detail. Hint: hint": a server message's primary text has no
 * final period, its detail and hint are sentences. detail and hint may be
 * NULL or empty. */
void pg_sentences(char *out, size_t outsz, const char *primary, const char *detail,
                  const char *hint);

#endif
