// DESIGN = exact signed 8x8 Baugh-Wooley array multiplier
// FAMILY = exact
// PARAMS = none
// SIGNED = two's complement
// PP_BITS = 64

#include <stdint.h>

int16_t mul8s_exact(int8_t a, int8_t b)
{
    /* Baugh-Wooley form of the two's-complement product: the 49 cells a_i b_j (i, j < 7) and
       a_7 b_7 carry positive weight, the 14 cells that pair a sign bit with a magnitude bit
       carry negative weight. */
    uint32_t ua = (uint8_t)a, ub = (uint8_t)b;
    int32_t acc = 0;
    for (int j = 0; j < 8; j++) {
        for (int i = 0; i < 8; i++) {
            int32_t cell = (int32_t)(((ua >> i) & (ub >> j)) & 1u) << (i + j);
            acc += ((i == 7) != (j == 7)) ? -cell : cell;
        }
    }
    return (int16_t)acc;
}
