/*
 * redact_fuzz.c: libFuzzer target for pv_redact, which sees every log line
 * and error message, including text that came from servers and children.
 * Checks that the output always fits and is NUL-terminated.
 */
#include "pgvault.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    size_t outsz = size % 7 == 0 ? 16 : size + 64;
    char *out = malloc(outsz);
    if (out) {
        pv_redact(in, out, outsz);
        if (strlen(out) >= outsz) abort();
        free(out);
    }
    free(in);
    return 0;
}
