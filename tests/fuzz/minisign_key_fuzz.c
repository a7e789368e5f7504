/*
 * minisign_key_fuzz.c: libFuzzer target for minisign key files
 * (bindings/crypto/minisign.c). The first byte chooses the parser: odd, a
 * secret key (password "password", scrypt capped low so that each run stays
 * fast); even, a public key (a file or the one-line form). Anything but
 * success or a "crypto" error aborts; a key that parses must encode and
 * parse back to itself. Seeds (tests/fuzz/minisign_key_corpus): pgvault's
 * keys (unencrypted, encrypted), minisign's -W key and public key file.
 */
#include "../../bindings/crypto/minisign.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect_crypto(const pv_err *err)
{
    if (!err->set || strcmp(err->kind, "crypto") != 0) abort();
}

static void public_key(const char *text, size_t len)
{
    ms_public_key pk, again;
    pv_err err;
    pv_err_clear(&err);
    if (ms_public_parse(&pk, text, len, &err) < 0) return expect_crypto(&err);
    char line[MS_PUBLIC_B64 + 1];
    ms_public_encode(&pk, line);
    if (ms_public_parse(&again, line, strlen(line), &err) < 0 || memcmp(&pk, &again, sizeof pk))
        abort();
}

static void secret_key(const char *text, size_t len)
{
    static const ms_kdf limit = {65536, 16 << 20};
    pv_err err;
    pv_err_clear(&err);
    ms_secret_key *sk = ms_secret_new(&err), *again = ms_secret_new(&err);
    if (!sk || !again) abort();
    if (ms_secret_parse(sk, text, len, (const uint8_t *)"password", 8, limit, &err) < 0) {
        expect_crypto(&err);
    } else {
        char *out = ms_secret_encode(sk, "again", NULL, 0, limit, &err);
        if (!out || ms_secret_parse(again, out, strlen(out), NULL, 0, limit, &err) < 0 ||
            sodium_memcmp(sk, again, sizeof *sk) != 0)
            abort();
        sodium_free(out);
    }
    ms_secret_free(sk);
    ms_secret_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        if (sodium_init() < 0) abort();
        ready = true;
    }
    if (size == 0) return 0;
    if (data[0] & 1)
        secret_key((const char *)data + 1, size - 1);
    else
        public_key((const char *)data + 1, size - 1);
    return 0;
}
