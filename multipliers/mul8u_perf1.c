// DESIGN = partial-product perforation (after Zervakis et al.): the partial-product rows of weight bits b_0 are not generated
// FAMILY = perf
// PARAMS = rows=0..0
// SIGNED = no
// PP_BITS = 56

#include <stdint.h>

uint16_t mul8u_perf1(uint8_t a, uint8_t b)
{
    /* Perforated rows contribute nothing: the weight bits that select them are ignored. */
    const uint32_t perforated = 0x01u;
    uint32_t acc = 0;
    for (int j = 0; j < 8; j++)
        if ((((uint32_t)b & ~perforated) >> j) & 1u)
            acc += (uint32_t)a << j;
    return (uint16_t)acc;
}
