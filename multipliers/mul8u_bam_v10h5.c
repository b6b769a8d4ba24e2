// DESIGN = broken-array multiplier (after Mahdiani et al.): the carry-save array is broken vertically at column 10 (cells with i + j < 10 removed) and horizontally at row 5 (the rows of weight bits b_0..b_4 removed)
// FAMILY = bam
// PARAMS = vbl=10, hbl=5
// SIGNED = no
// PP_BITS = 12

#include <stdint.h>

uint16_t mul8u_bam_v10h5(uint8_t a, uint8_t b)
{
    /* Rows j < 5 (the horizontal break) are not built at all; in the remaining rows the
       cells of the columns below 10 (i + j < 10, the vertical break) are omitted. */
    const uint32_t keep = ~((1u << 10) - 1u);
    uint32_t acc = 0;
    for (int j = 5; j < 8; j++)
        if ((b >> j) & 1u)
            acc += ((uint32_t)a << j) & keep;
    return (uint16_t)acc;
}
