/* Portable C micro-kernels: the scalar 16-bit path and the generic int32-table path.
 * Compiled for the baseline ISA, so they run on any CPU. */
#include <string.h>

#include "axsimd.h"
/* Reduction steps per block: the block's table columns (512 bytes each) and streamed codes
 * (AXS_MB bytes per step) must stay in a 32 KiB L1 together while all rows of the tile pass
 * by; 64 steps overflowed it and ran at two thirds of the speed. */
#define AXS_SKB 32


void axs_kern16_scalar(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C)
{
    const uint16_t *tab = t->tab16;
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF;
        uint32_t *c = C + (ptrdiff_t)j * AXS_MB;
        memset(c, 0, (size_t)ms * sizeof(uint32_t));
        for (int k0 = 0; k0 < K; k0 += AXS_SKB) {
            int k1 = K - k0 < AXS_SKB ? K : k0 + AXS_SKB;
            int i = 0;
            /* 8 rows per step in registers: a byte load, a table load and an add each */
            for (; i + 8 <= ms; i += 8) {
                uint32_t a0 = c[i], a1 = c[i + 1], a2 = c[i + 2], a3 = c[i + 3];
                uint32_t a4 = c[i + 4], a5 = c[i + 5], a6 = c[i + 6], a7 = c[i + 7];
                const uint8_t *si = S + i;
                for (int k = k0; k < k1; k++) {
                    const uint16_t *col = tab + ((size_t)f[k] << 8);
                    const uint8_t *s = si + soff[k];
                    a0 += col[s[0]]; a1 += col[s[1]]; a2 += col[s[2]]; a3 += col[s[3]];
                    a4 += col[s[4]]; a5 += col[s[5]]; a6 += col[s[6]]; a7 += col[s[7]];
                }
                c[i] = a0; c[i + 1] = a1; c[i + 2] = a2; c[i + 3] = a3;
                c[i + 4] = a4; c[i + 5] = a5; c[i + 6] = a6; c[i + 7] = a7;
            }
            for (; i < ms; i++) {
                uint32_t a = c[i];
                for (int k = k0; k < k1; k++)
                    a += tab[((size_t)f[k] << 8) + S[soff[k] + i]];
                c[i] = a;
            }
        }
    }
}

void axs_kern_generic(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                      ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, int64_t *C)
{
    const int32_t *tab = t->tab32;
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF;
        int64_t *c = C + (ptrdiff_t)j * AXS_MB;
        memset(c, 0, (size_t)ms * sizeof(int64_t));
        /* int32 columns are 1 KiB: half the steps per block of the 16-bit kernel */
        for (int k0 = 0; k0 < K; k0 += AXS_SKB / 2) {
            int k1 = K - k0 < AXS_SKB / 2 ? K : k0 + AXS_SKB / 2;
            int i = 0;
            for (; i + 4 <= ms; i += 4) {
                int64_t a0 = c[i], a1 = c[i + 1], a2 = c[i + 2], a3 = c[i + 3];
                const uint8_t *si = S + i;
                for (int k = k0; k < k1; k++) {
                    const int32_t *col = tab + ((size_t)f[k] << 8);
                    const uint8_t *s = si + soff[k];
                    a0 += col[s[0]];
                    a1 += col[s[1]];
                    a2 += col[s[2]];
                    a3 += col[s[3]];
                }
                c[i] = a0; c[i + 1] = a1; c[i + 2] = a2; c[i + 3] = a3;
            }
            for (; i < ms; i++) {
                int64_t a = c[i];
                for (int k = k0; k < k1; k++)
                    a += tab[((size_t)f[k] << 8) + S[soff[k] + i]];
                c[i] = a;
            }
        }
    }
}
