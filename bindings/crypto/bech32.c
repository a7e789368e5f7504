/*
 * bech32.c: Bech32 (BIP 173) without the 90-character limit, as age uses it
 * for recipients (age1...) and identities (AGE-SECRET-KEY-1...).
 */
#include "age.h"

#include <ctype.h>
#include <string.h>

static const char CHARSET[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

static uint32_t polymod_step(uint32_t chk, uint8_t v)
{
    static const uint32_t GEN[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
    uint8_t top = (uint8_t)(chk >> 25);
    chk = (chk & 0x1ffffff) << 5 ^ v;
    for (int i = 0; i < 5; i++)
        if ((top >> i) & 1) chk ^= GEN[i];
    return chk;
}

static uint32_t hrp_checksum_start(const char *hrp, size_t n)
{
    uint32_t chk = 1;
    for (size_t i = 0; i < n; i++)
        chk = polymod_step(chk, (uint8_t)(tolower((unsigned char)hrp[i]) >> 5));
    chk = polymod_step(chk, 0);
    for (size_t i = 0; i < n; i++)
        chk = polymod_step(chk, (uint8_t)(tolower((unsigned char)hrp[i]) & 31));
    return chk;
}

long age_bech32_encode(const char *hrp, const uint8_t *data, size_t n, bool upper, char *out,
                       size_t outcap)
{
    size_t hl = strlen(hrp);
    size_t ngroups = (n * 8 + 4) / 5;
    if (hl + 1 + ngroups + 6 + 1 > outcap) return -1;
    uint8_t *groups = (uint8_t *)out + hl + 1; /* written as values, then mapped */
    size_t g = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | data[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            groups[g++] = (uint8_t)((acc >> bits) & 31);
        }
    }
    if (bits > 0) groups[g++] = (uint8_t)((acc << (5 - bits)) & 31);
    uint32_t chk = hrp_checksum_start(hrp, hl);
    for (size_t i = 0; i < g; i++)
        chk = polymod_step(chk, groups[i]);
    for (int i = 0; i < 6; i++)
        chk = polymod_step(chk, 0);
    chk ^= 1;
    for (int i = 0; i < 6; i++)
        groups[g++] = (uint8_t)((chk >> (5 * (5 - i))) & 31);
    for (size_t i = 0; i < hl; i++)
        out[i] = (char)(upper ? toupper((unsigned char)hrp[i]) : tolower((unsigned char)hrp[i]));
    out[hl] = '1';
    for (size_t i = 0; i < g; i++) {
        char c = CHARSET[groups[i]];
        out[hl + 1 + i] = (char)(upper ? toupper((unsigned char)c) : c);
    }
    out[hl + 1 + g] = '\0';
    return (long)(hl + 1 + g);
}

long age_bech32_decode(const char *s, size_t len, char *hrp, size_t hrpcap, uint8_t *out,
                       size_t outcap, const char **why)
{
    bool lower = false, upperc = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 33 || c > 126) {
            *why = "invalid character";
            return -1;
        }
        if (islower(c)) lower = true;
        if (isupper(c)) upperc = true;
    }
    if (lower && upperc) {
        *why = "mixed case";
        return -1;
    }
    const char *sep = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == '1') {
            sep = s + i - 1;
            break;
        }
    if (!sep || sep == s || (size_t)(s + len - sep - 1) < 6) {
        *why = "no separator or too short";
        return -1;
    }
    size_t hl = (size_t)(sep - s);
    if (hl + 1 > hrpcap) {
        *why = "prefix too long";
        return -1;
    }
    for (size_t i = 0; i < hl; i++)
        hrp[i] = (char)tolower((unsigned char)s[i]);
    hrp[hl] = '\0';
    uint32_t chk = hrp_checksum_start(hrp, hl);
    size_t ndata = len - hl - 1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < ndata; i++) {
        const char *p = strchr(CHARSET, tolower((unsigned char)sep[1 + i]));
        if (!p || !*p) {
            *why = "invalid character";
            return -1;
        }
        uint8_t v = (uint8_t)(p - CHARSET);
        chk = polymod_step(chk, v);
        if (i >= ndata - 6) continue;
        acc = acc << 5 | v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            if (o >= outcap) {
                *why = "too long";
                return -1;
            }
            out[o++] = (uint8_t)((acc >> bits) & 0xff);
        }
    }
    if (chk != 1) {
        *why = "bad checksum";
        return -1;
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0) {
        *why = "non-zero padding";
        return -1;
    }
    return (long)o;
}
