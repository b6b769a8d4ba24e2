// DESIGN = DRUM dynamic-range unbiased multiplier (after Hashemi et al.): each operand is cut to the 4 bits starting at its leading one, the lowest kept bit set to 1, then a 4x4 exact product is shifted back
// FAMILY = drum
// PARAMS = k=4
// SIGNED = no
// PP_BITS = 16

#include <stdint.h>

uint16_t mul8u_drum4(uint8_t a, uint8_t b)
{
    uint32_t x = a, y = b;
    /* An operand with its leading one at position t >= 4 keeps the 4 bits t..t-3; the
       lowest kept bit is forced to 1 to make the truncation unbiased, and the dropped
       low part is replaced by the shift. Shorter operands pass unchanged. */
    int sx = 0, sy = 0;
    if (x >> 4) {
        int t = 7;
        while (!((x >> t) & 1u))
            t--;
        sx = t - 3;
        x = (x >> sx) | 1u;
    }
    if (y >> 4) {
        int t = 7;
        while (!((y >> t) & 1u))
            t--;
        sy = t - 3;
        y = (y >> sy) | 1u;
    }
    return (uint16_t)((x * y) << (sx + sy));
}
