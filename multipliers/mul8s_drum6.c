// DESIGN = signed DRUM, sign-magnitude wrapper: |a| and |b| (0..128) go through the unsigned DRUM k=6 datapath, the sign is XOR of the operand signs
// FAMILY = drum
// PARAMS = k=6
// SIGNED = two's complement (sign-magnitude wrapper)
// PP_BITS = 36

#include <stdint.h>

int16_t mul8s_drum6(int8_t a, int8_t b)
{
    /* Magnitudes up to 128 (for -128) still have their leading one at bit 7 at most. */
    uint32_t x = (uint32_t)(a < 0 ? -(int32_t)a : a);
    uint32_t y = (uint32_t)(b < 0 ? -(int32_t)b : b);
    /* An operand with its leading one at position t >= 6 keeps the 6 bits t..t-5; the
       lowest kept bit is forced to 1 to make the truncation unbiased, and the dropped
       low part is replaced by the shift. Shorter operands pass unchanged. */
    int sx = 0, sy = 0;
    if (x >> 6) {
        int t = 7;
        while (!((x >> t) & 1u))
            t--;
        sx = t - 5;
        x = (x >> sx) | 1u;
    }
    if (y >> 6) {
        int t = 7;
        while (!((y >> t) & 1u))
            t--;
        sy = t - 5;
        y = (y >> sy) | 1u;
    }
    int32_t p = (int32_t)((x * y) << (sx + sy));
    return (int16_t)(((a < 0) != (b < 0)) ? -p : p);
}
