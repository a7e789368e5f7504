/*
 * redact_fuzz.c: libFuzzer target for pv_redact, which sees every log line
 * and error message, including text that came from servers and children.
 * Checks that the output always fits and is NUL-terminated, that redacting
 * twice changes nothing more, and that a secret placed after the input in
 * each of the forms the redactor knows never survives, whatever came before.
 */
#include "pgvault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "Zq9SECRETVALUEq9Z"

static const char *const forms[] = {
    " password=" SECRET " ",
    " password\t=\t" SECRET "\n",
    " pgpassword = '" SECRET "' ",
    " postgresql://user:" SECRET "@host/db ",
    " AGE-SECRET-KEY-1QYQSZ" SECRET " ",
    " age-secret-key-pq-1qyqsz" SECRET " ",
    "\nAuthorization: AWS4-HMAC-SHA256 Credential=A/B, Signature=" SECRET "\n",
    " Bearer " SECRET " ",
    " FlyV1 fm2_" SECRET ",fm2_x ",
};

static char *redacted(const char *in, size_t outsz)
{
    char *out = malloc(outsz);
    if (!out) return NULL;
    pv_redact(in, out, outsz);
    if (strlen(out) >= outsz) abort();
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    size_t len = strlen(in);
    free(redacted(in, size % 7 == 0 ? 16 : size + 64)); /* a small buffer truncates */
    char *once = redacted(in, 2 * len + 1024);
    char *twice = once ? redacted(once, 2 * len + 1024) : NULL;
    if (once && twice && strcmp(once, twice) != 0) abort();
    free(once);
    free(twice);
    /* The input must not mention the secret itself, nor leave a quote or a
     * backslash open that would make the form part of something else. */
    if (!strstr(in, "Zq9") && !strpbrk(in, "\"'\\`")) {
        const char *form = forms[size % (sizeof forms / sizeof *forms)];
        size_t n = len + strlen(form) + 1;
        char *joined = malloc(n);
        if (joined) {
            snprintf(joined, n, "%s%s", in, form);
            char *out = redacted(joined, 2 * n + 1024);
            if (out && strstr(out, SECRET)) abort();
            free(out);
            free(joined);
        }
    }
    free(in);
    return 0;
}
