/*
 * awsconfig_fuzz.c: libFuzzer target for the reader of the aws CLI's
 * shared files (~/.aws/credentials, ~/.aws/config), which may hold
 * anything a profile was given. The first line of the input names the
 * section to read; every entry must come out NUL-terminated and bounded.
 */
#include "../../bindings/s3/s3int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const s3_ini_section *s)
{
    for (int i = 0; i < s->n; i++) {
        if (strnlen(s->v[i].key, sizeof s->v[i].key) >= sizeof s->v[i].key) abort();
        if (strnlen(s->v[i].value, sizeof s->v[i].value) >= sizeof s->v[i].value) abort();
    }
    if (s->n > 0 && !s->found) abort();
    (void)s3_ini_get(s, "aws_access_key_id");
    (void)s3_ini_get(s, "s3.endpoint_url");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t first = nl ? (size_t)(nl - text) : size;
    char want[128];
    size_t n = first < sizeof want - 1 ? first : sizeof want - 1;
    memcpy(want, text, n);
    want[n] = '\0';
    s3_ini_section s;
    s3_ini_parse(text, size, want, &s);
    check(&s);
    s3_ini_free(&s);
    s3_ini_parse(text, size, "default", &s);
    check(&s);
    s3_ini_free(&s);
    return 0;
}
