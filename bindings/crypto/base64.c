/*
 * base64.c: the two base64 flavours age uses, both strict: unpadded in the
 * header (canonical, no '='), padded in the ASCII armor.
 */
#include "age.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value_of(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool age_b64_char(int c)
{
    return value_of(c) >= 0;
}

static size_t encode(const uint8_t *in, size_t n, char *out, bool pad)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        out[o++] = ALPHABET[(v >> 6) & 63];
        out[o++] = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        if (pad) out[o++] = '=', out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = ALPHABET[v >> 18];
        out[o++] = ALPHABET[(v >> 12) & 63];
        out[o++] = ALPHABET[(v >> 6) & 63];
        if (pad) out[o++] = '=';
    }
    return o;
}

size_t age_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = encode(in, n, out, false);
    out[o] = '\0';
    return o;
}

size_t age_b64_encode_padded(const uint8_t *in, size_t n, char *out)
{
    return encode(in, n, out, true);
}

/* Decodes n characters of the alphabet (no padding); a trailing group of
 * 2 or 3 characters must leave its unused bits zero (canonical). */
static long decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
    if (n % 4 == 1) return -1;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > outcap) return -1;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        int a = value_of((unsigned char)in[i]), b = value_of((unsigned char)in[i + 1]);
        int c = value_of((unsigned char)in[i + 2]), d = value_of((unsigned char)in[i + 3]);
        if ((a | b | c | d) < 0) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    size_t rest = n - i;
    if (rest >= 2) {
        int a = value_of((unsigned char)in[i]), b = value_of((unsigned char)in[i + 1]);
        int c = rest == 3 ? value_of((unsigned char)in[i + 2]) : 0;
        if ((a | b | c) < 0) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        if (rest == 2 && (v & 0xFFFF) != 0) return -1;
        if (rest == 3 && (v & 0xFF) != 0) return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (rest == 3) out[o++] = (uint8_t)(v >> 8);
    }
    return (long)o;
}

long age_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
    return decode(in, n, out, outcap);
}

long age_b64_decode_padded(const char *in, size_t n, uint8_t *out, size_t outcap)
{
    if (n % 4 != 0) return -1;
    size_t pad = 0;
    if (n >= 1 && in[n - 1] == '=') pad++;
    if (n >= 2 && in[n - 2] == '=') pad++;
    return decode(in, n - pad, out, outcap);
}
