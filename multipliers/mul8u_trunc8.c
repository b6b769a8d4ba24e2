// DESIGN = truncated partial-product array: the partial-product bits a_i*b_j of the 8 least-significant columns (i + j < 8) are removed, no compensation
// FAMILY = trunc
// PARAMS = k=8
// SIGNED = no
// PP_BITS = 28

#include <stdint.h>

uint16_t mul8u_trunc8(uint8_t a, uint8_t b)
{
    /* Row j of the array is a * b_j placed at column j; the cells of columns below 8 are
       not built, so each row is masked before it enters the adder tree. */
    const uint32_t keep = ~((1u << 8) - 1u);
    uint32_t acc = 0;
    for (int j = 0; j < 8; j++)
        if ((b >> j) & 1u)
            acc += ((uint32_t)a << j) & keep;
    return (uint16_t)acc;
}
