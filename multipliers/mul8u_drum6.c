// DESIGN = DRUM dynamic-range unbiased multiplier (after Hashemi et al.): each operand is cut to the 6 bits starting at its leading one, the lowest kept bit set to 1, then a 6x6 exact product is shifted back
// FAMILY = drum
// PARAMS = k=6
// SIGNED = no
// PP_BITS = 36

#include <stdint.h>

uint16_t mul8u_drum6(uint8_t a, uint8_t b)
{
    uint32_t x = a, y = b;
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
    return (uint16_t)((x * y) << (sx + sy));
}
