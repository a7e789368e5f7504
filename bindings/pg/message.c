/*
 * message.c: libpq's and the server's messages as one line (message.h).
 */
#include "message.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void pg_one_line(const char *in, char *out, size_t outsz)
{
    if (outsz == 0) return;
    size_t o = 0;
    bool space = false;
    for (const char *p = in; *p && o + 2 < outsz; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            space = true;
            continue;
        }
        if (space && o > 0 && out[o - 1] != ' ') out[o++] = ' ';
        space = false;
        out[o++] = *p;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

static bool ends_sentence(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && strchr(".!?:", s[n - 1]);
}

void pg_sentences(char *out, size_t outsz, const char *primary, const char *detail,
                  const char *hint)
{
    if (outsz == 0) return;
    bool has_detail = detail && *detail, has_hint = hint && *hint;
    snprintf(out, outsz, "%s%s%s%s%s%s", primary,
             (has_detail || has_hint) && !ends_sentence(primary) ? "." : "", has_detail ? " " : "",
             has_detail ? detail : "", has_hint ? " Hint: " : "", has_hint ? hint : "");
}
