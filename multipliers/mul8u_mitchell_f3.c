// DESIGN = Mitchell logarithmic multiplier: log2 approximated by the leading-one position plus the remaining bits as a linear fraction, the two logarithms added, the antilogarithm approximated the same way, result truncated; each operand's fraction truncated to 3 bits
// FAMILY = mitchell
// PARAMS = fraction_bits=3
// SIGNED = no
// PP_BITS = 0
// NOTE = no partial-product array: two leading-one detectors, shifters and one adder

#include <stdint.h>

uint16_t mul8u_mitchell_f3(uint8_t a, uint8_t b)
{
    uint32_t x = a, y = b;
    if (x == 0u || y == 0u)
        return 0;
    /* Leading-one positions are the characteristics, the bits below them (aligned to 7
       fraction bits) the mantissas of log2(x) ~ k + m. */
    int kx = 7, ky = 7;
    while (!((x >> kx) & 1u))
        kx--;
    while (!((y >> ky) & 1u))
        ky--;
    uint32_t mx = ((x - (1u << kx)) << (7 - kx)) & 0x70u;
    uint32_t my = ((y - (1u << ky)) << (7 - ky)) & 0x70u;
    uint32_t m = mx + my;
    int k = kx + ky;
    /* Antilogarithm: 2^k (1 + m) while m < 1, else 2^(k+1) m; truncated to an integer. */
    uint32_t p = (m < 128u) ? (((128u + m) << k) >> 7) : ((m << (k + 1)) >> 7);
    return (uint16_t)p;
}
