// DESIGN = signed Mitchell logarithmic multiplier, sign-magnitude wrapper: |a| and |b| (0..128) go through the unsigned Mitchell datapath, the sign is XOR of the operand signs
// FAMILY = mitchell
// PARAMS = fraction_bits=7
// SIGNED = two's complement (sign-magnitude wrapper)
// PP_BITS = 0
// NOTE = no partial-product array: two leading-one detectors, shifters and one adder

#include <stdint.h>

int16_t mul8s_mitchell(int8_t a, int8_t b)
{
    uint32_t x = (uint32_t)(a < 0 ? -(int32_t)a : a);
    uint32_t y = (uint32_t)(b < 0 ? -(int32_t)b : b);
    if (x == 0u || y == 0u)
        return 0;
    /* Leading-one positions are the characteristics, the bits below them (aligned to 7
       fraction bits) the mantissas of log2(x) ~ k + m. */
    int kx = 7, ky = 7;
    while (!((x >> kx) & 1u))
        kx--;
    while (!((y >> ky) & 1u))
        ky--;
    uint32_t mx = (x - (1u << kx)) << (7 - kx);
    uint32_t my = (y - (1u << ky)) << (7 - ky);
    uint32_t m = mx + my;
    int k = kx + ky;
    /* Antilogarithm: 2^k (1 + m) while m < 1, else 2^(k+1) m; truncated to an integer. */
    uint32_t p = (m < 128u) ? (((128u + m) << k) >> 7) : ((m << (k + 1)) >> 7);
    return (int16_t)(((a < 0) != (b < 0)) ? -(int32_t)p : (int32_t)p);
}
