// DESIGN = truncated signed Baugh-Wooley array: the cells a_i*b_j of the 6 least-significant columns (i + j < 6, all of positive weight) are removed, no compensation
// FAMILY = trunc
// PARAMS = k=6
// SIGNED = two's complement (Baugh-Wooley)
// PP_BITS = 43

#include <stdint.h>

int16_t mul8s_trunc6(int8_t a, int8_t b)
{
    /* Baugh-Wooley array on the two's-complement bits: cells pairing one sign bit (bit 7)
       with one magnitude bit have negative weight. Columns below 6 hold only positive
       cells of the magnitude bits and are not built. */
    uint32_t ua = (uint8_t)a, ub = (uint8_t)b;
    int32_t acc = 0;
    for (int j = 0; j < 8; j++) {
        for (int i = 0; i < 8; i++) {
            if (i + j < 6)
                continue;
            int32_t cell = (int32_t)(((ua >> i) & (ub >> j)) & 1u) << (i + j);
            acc += ((i == 7) != (j == 7)) ? -cell : cell;
        }
    }
    return (int16_t)acc;
}
