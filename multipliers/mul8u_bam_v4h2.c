// DESIGN = broken-array multiplier (after Mahdiani et al.): the carry-save array is broken vertically at column 4 (cells with i + j < 4 removed) and horizontally at row 2 (the rows of weight bits b_0..b_1 removed)
// FAMILY = bam
// PARAMS = vbl=4, hbl=2
// SIGNED = no
// PP_BITS = 45

#include <stdint.h>

uint16_t mul8u_bam_v4h2(uint8_t a, uint8_t b)
{
    /* Rows j < 2 (the horizontal break) are not built at all; in the remaining rows the
       cells of the columns below 4 (i + j < 4, the vertical break) are omitted. */
    const uint32_t keep = ~((1u << 4) - 1u);
    uint32_t acc = 0;
    for (int j = 2; j < 8; j++)
        if ((b >> j) & 1u)
            acc += ((uint32_t)a << j) & keep;
    return (uint16_t)acc;
}
