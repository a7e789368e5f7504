/*
 * age.h: what the pieces of pgvault.crypto share: the age v1 file format
 * (C2SP age) on libsodium, with the bulk STREAM on OpenSSL's EVP AEAD.
 * Internal to module pgvault.crypto (crypto.c and the files beside this one).
 */
#ifndef PGVAULT_AGE_H
#define PGVAULT_AGE_H

#include "pgvault.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGE_FILE_KEY_LEN 16
#define AGE_KEY_LEN 32
#define AGE_TAG_LEN 16
#define AGE_CHUNK 65536
#define AGE_ENC_CHUNK (AGE_CHUNK + AGE_TAG_LEN)
#define AGE_NONCE_LEN 16
#define AGE_HEADER_MAX (1 << 20)
#define AGE_DEFAULT_WORK_FACTOR 18
#define AGE_MAX_WORK_FACTOR 22
#define AGE_PASSPHRASE_MAX 4096

#define AGE_ARMOR_BEGIN "-----BEGIN AGE ENCRYPTED FILE-----"
#define AGE_ARMOR_END "-----END AGE ENCRYPTED FILE-----"

/* Failure classes, as the C2SP test vectors name them. */
#define AGE_FAIL_ARMOR "armor failure"
#define AGE_FAIL_HEADER "header failure"
#define AGE_FAIL_NO_MATCH "no match"
#define AGE_FAIL_HMAC "HMAC failure"
#define AGE_FAIL_PAYLOAD "payload failure"

/* Records a crypto error with its failure class in field "failure". */
void age_fail(pv_err *err, const char *failure, const char *fmt, ...) PV_PRINTF(3, 4);

/* ---- base64 (bindings/crypto/base64.c) ---- */

/* Unpadded standard base64 (the header): out must hold 4*ceil(n/3)+1. */
size_t age_b64_encode(const uint8_t *in, size_t n, char *out);
/* Strict unpadded decode: rejects padding, bad characters and
 * non-canonical trailing bits. Returns bytes written or -1. */
long age_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap);
/* Padded standard base64 (the armor): out must hold 4*ceil(n/3). */
size_t age_b64_encode_padded(const uint8_t *in, size_t n, char *out);
/* Strict padded decode of a multiple of 4 characters. -1 on error. */
long age_b64_decode_padded(const char *in, size_t n, uint8_t *out, size_t outcap);
bool age_b64_char(int c);

/* ---- Bech32 (bindings/crypto/bech32.c) ---- */

/* Encodes data under hrp; upper-case output when `upper`. Returns the
 * length written (out needs hrp+1+ceil(8n/5)+6+1 bytes) or -1. */
long age_bech32_encode(const char *hrp, const uint8_t *data, size_t n, bool upper, char *out,
                       size_t outcap);
/* Decodes s (all lower or all upper case). hrp gets the human-readable
 * part in lower case. Returns the data length or -1 with *why set. */
long age_bech32_decode(const char *s, size_t len, char *hrp, size_t hrpcap, uint8_t *out,
                       size_t outcap, const char **why);

/* ---- keys (bindings/crypto/keys.c) ---- */

/* An identity: an X25519 secret, a hybrid (ML-KEM-768 + X25519) seed or a
 * passphrase, in sodium_malloc'd memory. */
enum { AGE_ID_X25519 = 1, AGE_ID_PASSPHRASE = 2, AGE_ID_HYBRID = 3 };
#define AGE_HYBRID_EK 1216
typedef struct age_identity {
    int type;
    uint8_t *secret; /* sodium_malloc: 32 bytes, or the passphrase */
    size_t len;
    uint8_t pub[AGE_KEY_LEN]; /* X25519 only */
    uint8_t *hybrid_ek;       /* hybrid only: the public key (malloc) */
} age_identity;

/* Parses "AGE-SECRET-KEY-1..." into id (secret in sodium memory). */
int age_identity_parse(age_identity *id, const char *s, size_t len, pv_err *err);
int age_identity_generate(age_identity *id, pv_err *err);
int age_identity_passphrase(age_identity *id, const char *pass, size_t len, pv_err *err);
int age_identity_copy(age_identity *dst, const age_identity *src, pv_err *err);
void age_identity_free(age_identity *id);
/* "age1..." (out: 64 bytes at least). */
void age_recipient_encode(const uint8_t pub[AGE_KEY_LEN], char *out, size_t outcap);
/* "AGE-SECRET-KEY-1..." into sodium memory the caller frees with sodium_free. */
char *age_identity_encode(const age_identity *id);
/* Whether input meant as a public key is (or names) a secret key. */
bool age_looks_secret(const char *s, size_t len);
/* Parses "age1..." into pub. */
int age_recipient_parse(const char *s, size_t len, uint8_t pub[AGE_KEY_LEN], pv_err *err);

/* HKDF-SHA-256 with 32 bytes of output. */
void age_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
              const char *info, uint8_t out[AGE_KEY_LEN]);

/* ---- hybrid post-quantum identities (bindings/crypto/hybrid.c) ---- */

int age_hybrid_public(const uint8_t seed[32], uint8_t ek[AGE_HYBRID_EK]);
/* 1 unwrapped, 0 not for this identity, -1 malformed (err set). */
int age_hybrid_unwrap(const char *enc_b64, const uint8_t *body, size_t bodylen,
                      const uint8_t seed[32], uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err);
/* "age1pq1..." into malloc'd memory. */
char *age_hybrid_recipient_encode(const uint8_t ek[AGE_HYBRID_EK]);
int age_hybrid_recipient_parse(const char *s, size_t len, uint8_t ek[AGE_HYBRID_EK], pv_err *err);
int age_hybrid_generate(age_identity *id, pv_err *err);

/* ---- header (bindings/crypto/header.c) ---- */

typedef struct age_stanza {
    char **args; /* args[0] is the type */
    int nargs;
    uint8_t *body;
    size_t bodylen;
} age_stanza;

typedef struct age_header_parser {
    char *buf; /* raw header bytes, for the MAC */
    size_t len, cap;
    size_t line_start;
    int state; /* see header.c */
    age_stanza *stanzas;
    int nstanzas, capstanzas;
    size_t mac_at; /* offset of the "---" line */
    uint8_t mac[32];
    bool done;
} age_header_parser;

/* Feeds bytes; returns how many were consumed (the header may end inside
 * the input), or -1 with err set. Sets p->done once the MAC line is read. */
long age_header_feed(age_header_parser *p, const uint8_t *data, size_t len, pv_err *err);
void age_header_free(age_header_parser *p);

/* Unwraps the file key with the identities; 0 on success. */
int age_header_unwrap(age_header_parser *p, const age_identity *ids, int nids, int max_work_factor,
                      uint8_t file_key[AGE_FILE_KEY_LEN], const char **matched, pv_err *err);
/* HMAC-SHA-256 of header bytes keyed by HKDF(file key, "header"). */
void age_header_mac(const uint8_t file_key[AGE_FILE_KEY_LEN], const uint8_t *hdr, size_t len,
                    uint8_t mac[32]);

/* Stanza producers for the encryptor: append text to *out (malloc'd). */
typedef struct age_text {
    char *p;
    size_t len, cap;
} age_text;
int age_text_add(age_text *t, const char *s, size_t n);
int age_wrap_x25519(age_text *t, const uint8_t pub[AGE_KEY_LEN],
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err);
int age_wrap_scrypt(age_text *t, const uint8_t *pass, size_t passlen, int work_factor,
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err);
int age_wrap_hybrid(age_text *t, const uint8_t ek[AGE_HYBRID_EK],
                    const uint8_t file_key[AGE_FILE_KEY_LEN], pv_err *err);

/* ---- STREAM (bindings/crypto/stream_aead.c) ---- */

enum { AGE_AEAD_OPENSSL = 0, AGE_AEAD_SODIUM = 1 };

typedef struct age_stream {
    int engine;
    uint8_t *key; /* sodium_malloc'd payload key */
    uint64_t counter;
    EVP_CIPHER_CTX *ctx;
} age_stream;

int age_stream_init(age_stream *s, int engine, const uint8_t file_key[AGE_FILE_KEY_LEN],
                    const uint8_t nonce[AGE_NONCE_LEN], bool encrypt, pv_err *err);
/* Seals n <= 64 KiB bytes into out (n + 16 bytes); advances the counter. */
int age_stream_seal(age_stream *s, const uint8_t *in, size_t n, bool last, uint8_t *out);
/* Opens n (16 .. 64 KiB + 16) bytes into out; 0 when authentic, -1 when
 * not. The counter advances only on success. */
int age_stream_open(age_stream *s, const uint8_t *in, size_t n, bool last, uint8_t *out);
void age_stream_free(age_stream *s);

/* ---- armor (bindings/crypto/armor.c) ---- */

typedef struct age_armor_writer {
    uint8_t carry[48];
    size_t ncarry;
    bool begun;
} age_armor_writer;

typedef int (*age_sink_fn)(void *ctx, const uint8_t *data, size_t len, pv_err *err);

int age_armor_write(age_armor_writer *w, const uint8_t *data, size_t len, age_sink_fn sink,
                    void *ctx, pv_err *err);
int age_armor_close(age_armor_writer *w, age_sink_fn sink, void *ctx, pv_err *err);

typedef struct age_armor_reader {
    int state;
    char line[80];
    size_t nline;
    bool too_long;
    bool final_seen; /* a short (or padded) line was read: END must follow */
    int nlines;
    uint64_t lineno;
} age_armor_reader;

int age_armor_read(age_armor_reader *r, const uint8_t *data, size_t len, age_sink_fn sink,
                   void *ctx, pv_err *err);
int age_armor_finish(age_armor_reader *r, pv_err *err);

/* ---- the pipeline stages (bindings/crypto/encrypt.c, decrypt.c) ---- */

int age_push_encryptor(lua_State *L);
int age_push_decryptor(lua_State *L);
age_identity *age_check_identity(lua_State *L, int idx);
/* The identities an options table names (identities = {handles or
 * strings}, passphrase = a handle or string) into a calloc'd *ids; *n
 * counts those filled, so the caller's userdata, which owns both, frees
 * them even when this raises (misuse, an identity that does not parse). */
void age_collect_identities(lua_State *L, int opts, age_identity **ids, int *n);

/* ---- key files (bindings/crypto/keyfile.c) ---- */

/* A whole file (standard input for "-") in sodium_malloc'd memory,
 * NUL-terminated; raises on failure. Warns when `secret` and the file is
 * readable by group or others. */
char *age_read_secure(lua_State *L, const char *path, bool secret, size_t *len);
/* The next meaningful line of a key file: comments and blank lines
 * skipped, surrounding blanks and a CR trimmed. */
const char *age_next_line(const char *buf, size_t len, size_t *pos, size_t *n, int *lineno);
/* Creates `path` (0600) holding data, never over an existing file (kind
 * "exists"): a temporary file beside it, fsynced, linked into place. "-"
 * writes to standard output. 0, or -1 with err set. */
int age_write_new_file(const char *path, const char *data, size_t len, pv_err *err);
#define AGE_IDENTITY_MT "pgvault.crypto.identity"
/* Adds the minisign functions (bindings/crypto/signing.c) to the module
 * table on top of the stack. */
void age_open_signing(lua_State *L);

#endif
