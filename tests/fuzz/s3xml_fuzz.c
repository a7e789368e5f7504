/*
 * s3xml_fuzz.c: libFuzzer target for the S3 XML reader (expat into a
 * tree), which parses whatever an S3 endpoint answers: listings, upload
 * ids, errors. Walks the tree and looks up the names pgvault reads.
 */
#include "../../bindings/s3/s3int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const s3_xml *x, int depth)
{
    size_t n = 0;
    for (; x; x = x->next) {
        if (!x->name || !x->text) abort();
        n += strlen(x->name) + strlen(x->text);
        if (depth > 64) abort();
        n += walk(x->child, depth + 1);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pv_err err;
    pv_err_clear(&err);
    s3_xml *x = s3_xml_parse((const char *)data, size, &err);
    if (!x && !err.set) abort();
    if (x) {
        walk(x, 0);
        (void)s3_xml_text(x, "Code");
        (void)s3_xml_child(x, "Contents");
        s3_xml_free(x);
    }
    return 0;
}
