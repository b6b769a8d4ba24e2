// DESIGN = broken-array multiplier (after Mahdiani et al.): the carry-save array is broken vertically at column 8 (cells with i + j < 8 removed) and horizontally at row 4 (the rows of weight bits b_0..b_3 removed)
// FAMILY = bam
// PARAMS = vbl=8, hbl=4
// SIGNED = no
// PP_BITS = 22

#include <stdint.h>

uint16_t mul8u_bam_v8h4(uint8_t a, uint8_t b)
{
    /* Rows j < 4 (the horizontal break) are not built at all; in the remaining rows the
       cells of the columns below 8 (i + j < 8, the vertical break) are omitted. */
    const uint32_t keep = ~((1u << 8) - 1u);
    uint32_t acc = 0;
    for (int j = 4; j < 8; j++)
        if ((b >> j) & 1u)
            acc += ((uint32_t)a << j) & keep;
    return (uint16_t)acc;
}
