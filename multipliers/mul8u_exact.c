// DESIGN = exact unsigned 8x8 array multiplier
// FAMILY = exact
// PARAMS = none
// SIGNED = no
// PP_BITS = 64

#include <stdint.h>

uint16_t mul8u_exact(uint8_t a, uint8_t b)
{
    /* Sum of the eight partial-product rows a * b_j * 2^j. */
    uint32_t acc = 0;
    for (int j = 0; j < 8; j++)
        if ((b >> j) & 1u)
            acc += (uint32_t)a << j;
    return (uint16_t)acc;
}
