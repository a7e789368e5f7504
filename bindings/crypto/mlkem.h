/*
 * mlkem.h: ML-KEM-768 (FIPS 203) for age's hybrid recipient type.
 */
#ifndef PGVAULT_MLKEM_H
#define PGVAULT_MLKEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MLKEM768_EK 1184
#define MLKEM768_DK 2400
#define MLKEM768_CT 1088

/* KeyGen_internal(d, z) with seed = d || z. */
int mlkem768_keygen(const uint8_t seed[64], uint8_t ek[MLKEM768_EK], uint8_t dk[MLKEM768_DK]);
/* Encaps with the 32 random bytes m. */
int mlkem768_encaps(const uint8_t ek[MLKEM768_EK], const uint8_t m[32], uint8_t c[MLKEM768_CT],
                    uint8_t ss[32]);
int mlkem768_decaps(const uint8_t dk[MLKEM768_DK], const uint8_t c[MLKEM768_CT], uint8_t ss[32]);

#endif
