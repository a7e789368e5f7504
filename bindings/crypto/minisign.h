/*
 * minisign.h: Ed25519 signatures in minisign's formats (public key, secret
 * key with its optional scrypt encryption and BLAKE2b checksum, legacy and
 * prehashed signatures with a trusted comment and a global signature), on
 * libsodium. Internal to module pgvault.crypto: minisign.c holds the
 * formats, signing.c the Lua side.
 *
 * A secret key lives in sodium_malloc'd memory only; whatever the parsers
 * reject is never echoed in an error (a pasted secret key must not end up
 * in a log).
 */
#ifndef PGVAULT_MINISIGN_H
#define PGVAULT_MINISIGN_H

#include "pgvault.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_KEYID_LEN 8
#define MS_PK_LEN 32
#define MS_SK_LEN 64
#define MS_SIG_LEN 64
/* What minisign reads: a line of 1,024 bytes with its newline. */
#define MS_UNTRUSTED_MAX 1000
/* minisign reads the trusted comment line into 8,192 bytes. */
#define MS_TRUSTED_MAX 8173
#define MS_PASSWORD_MAX 1022
#define MS_KEYID_HEX 17
/* "RW" + 54 more: base64 of "Ed", the key id and the public key. */
#define MS_PUBLIC_B64 56

typedef struct ms_public_key {
    uint8_t key_id[MS_KEYID_LEN];
    uint8_t pk[MS_PK_LEN];
} ms_public_key;

/* Always in sodium_malloc'd memory (ms_secret_new). */
typedef struct ms_secret_key {
    uint8_t key_id[MS_KEYID_LEN];
    uint8_t sk[MS_SK_LEN]; /* libsodium's layout: seed, then the public key */
} ms_secret_key;

typedef struct ms_signature {
    bool prehashed; /* "ED": the signature is over BLAKE2b-512 of the message */
    uint8_t key_id[MS_KEYID_LEN];
    uint8_t sig[MS_SIG_LEN];
    uint8_t global_sig[MS_SIG_LEN]; /* over sig || trusted comment */
    char trusted[MS_TRUSTED_MAX + 1];
    size_t trusted_len;
} ms_signature;

/* scrypt cost of an encrypted secret key; minisign's defaults are
 * libsodium's "sensitive" limits (1 GiB). */
typedef struct ms_kdf {
    uint64_t opslimit, memlimit;
} ms_kdf;
extern const ms_kdf MS_KDF_SENSITIVE, MS_KDF_INTERACTIVE;

/* The key id as minisign prints it: upper-case hex of the little-endian
 * number, without leading zeros. */
void ms_key_id_hex(const uint8_t key_id[MS_KEYID_LEN], char out[MS_KEYID_HEX]);

/* A public key: the one-line form ("RW..."), or a file's text (an
 * "untrusted comment:" line, then that line). */
int ms_public_parse(ms_public_key *pk, const char *text, size_t len, pv_err *err);
/* The one-line form into out (MS_PUBLIC_B64 + 1 bytes). */
void ms_public_encode(const ms_public_key *pk, char out[MS_PUBLIC_B64 + 1]);

ms_secret_key *ms_secret_new(pv_err *err);
void ms_secret_free(ms_secret_key *sk);
int ms_secret_generate(ms_secret_key *sk);
/* Parses a secret key file's text; an encrypted one needs the password
 * (NULL when none was given) and may ask for no more scrypt work than
 * `limit`. */
int ms_secret_parse(ms_secret_key *sk, const char *text, size_t len, const uint8_t *password,
                    size_t pwlen, ms_kdf limit, pv_err *err);
/* The key file's text in sodium_malloc'd memory (NUL-terminated; the
 * caller sodium_frees it), encrypted when a password is given. */
char *ms_secret_encode(const ms_secret_key *sk, const char *comment, const uint8_t *password,
                       size_t pwlen, ms_kdf kdf, pv_err *err);
void ms_secret_public(const ms_secret_key *sk, ms_public_key *pk);

/* A signature file's text (four lines) into malloc'd memory, prehashed
 * ("ED") unless `legacy`. The comments must be single lines. */
char *ms_sign(const ms_secret_key *sk, const uint8_t *msg, size_t len, const char *untrusted,
              const char *trusted, bool legacy, pv_err *err);
int ms_signature_parse(ms_signature *sig, const char *text, size_t len, pv_err *err);
/* Checks sig over msg with whichever of `keys` has the signature's key id;
 * *which gets its index. Errors are kind "trust" with field "reason":
 * "untrusted key", "legacy", "bad signature" or "bad trusted comment". */
int ms_verify(const ms_signature *sig, const ms_public_key *keys, int nkeys, const uint8_t *msg,
              size_t len, bool allow_legacy, int *which, pv_err *err);

#endif
