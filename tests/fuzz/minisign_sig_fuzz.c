/*
 * minisign_sig_fuzz.c: libFuzzer target for minisign signature files
 * (bindings/crypto/minisign.c): the parser, then verification against the
 * fixture key and message that signed the seed corpus
 * (tests/fuzz/minisign_sig_corpus: pgvault's and minisign's signatures, ED
 * and legacy Ed). Anything but success or a "trust" error aborts, as does a
 * signature that verifies with a trusted comment it does not carry.
 */
#include "../../bindings/crypto/minisign.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char PUBLIC[] = "RWQhhU/k5p0Hbh/4X57JuzABU+BjO5UbP6B310FyaK2NU6hZE21EaLEV";
static const char MESSAGE[] = "pgvault fuzz message\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ms_public_key pk;
    static bool ready;
    pv_err err;
    pv_err_clear(&err);
    if (!ready) {
        if (sodium_init() < 0 || ms_public_parse(&pk, PUBLIC, strlen(PUBLIC), &err) < 0) abort();
        ready = true;
    }
    ms_signature *sig = malloc(sizeof *sig);
    if (!sig) return 0;
    if (ms_signature_parse(sig, (const char *)data, size, &err) < 0) {
        if (!err.set || strcmp(err.kind, "trust") != 0) abort();
        free(sig);
        return 0;
    }
    if (strlen(sig->trusted) != sig->trusted_len || sig->trusted_len > MS_TRUSTED_MAX) abort();
    if (!memmem(data, size, sig->trusted, sig->trusted_len)) abort();
    int which = -1;
    int rc = ms_verify(sig, &pk, 1, (const uint8_t *)MESSAGE, strlen(MESSAGE), true, &which, &err);
    if (rc < 0 && (!err.set || strcmp(err.kind, "trust") != 0)) abort();
    if (rc == 0 && which != 0) abort();
    free(sig);
    return 0;
}
