/* Portable C micro-kernels: the scalar 16-bit path, the generic int32-table path and the
 * expanded-table build and kernel of the scalar path. Compiled for the baseline ISA, so they
 * run on any CPU (the compiler may vectorize the expanded kernel for it: SSE2 on x86-64). */
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

/* ------------------------------------------------------------ expanded tables */

/* Four positions at a time: each column's 4 consecutive entries are read once and land in 4
 * rows of R. */
void axs_xbuild_scalar(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                       uint16_t *R, const uint16_t *mask)
{
    (void)mask;   /* every row built */
    for (int kk = 0; kk < kb; kk++) {
        uint16_t *Rk = R + (size_t)kk * AXS_XSTEP(AXS_XNB);
        for (int g = 0; g < AXS_XNB; g += 4) {
            const uint16_t *src[4];
            for (int e = 0; e < 4; e++) {
                int j = AXS_XCOL(g + e);
                src[e] = tab16 + ((size_t)(j < nf ? F[j * ldF + kk] : 0) << 8);
            }
            for (int v = 0; v < 256; v++) {
                uint16_t *d = Rk + (size_t)v * AXS_XNB + g;
                d[0] = src[0][v]; d[1] = src[1][v]; d[2] = src[2][v]; d[3] = src[3][v];
            }
        }
    }
}

/* One row at a time with its 16 sums in a local array; the column loops have constant
 * bounds, which lets the compiler keep the sums in vector registers of the baseline ISA
 * (SSE2 on x86-64). */
void axs_xkern_scalar(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                      int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                      int last, uint32_t init)
{
    (void)last; /* the sums are kept in their final form between blocks */
    for (int i = 0; i < ms; i++) {
        const uint8_t *p = S + roff[i];
        uint32_t *a = acc + i * lda;
        uint32_t c[AXS_XNB];
        for (int j = 0; j < AXS_XNB; j++)
            c[j] = first ? init : a[j];
        for (int kk = 0; kk < kb; kk++) {
            const uint16_t *row = R + (size_t)kk * AXS_XSTEP(AXS_XNB) + (size_t)p[koff[kk]] * AXS_XNB;
            for (int t = 0; t < 8; t++) {
                c[t] += row[2 * t];
                c[8 + t] += row[2 * t + 1];
            }
        }
        for (int j = 0; j < AXS_XNB; j++)
            a[j] = c[j];
    }
}

/* Factored tables (factored.c): one row at a time, its 16 sums in a local array (constant
 * bounds, kept in vector registers of the baseline ISA). Products of int16 values fit
 * int32; the sums wrap modulo 2^32 as uint32. */
void axs_fkern_scalar(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                      int ntap, int L, const int16_t *Bp, uint32_t *acc, ptrdiff_t lda)
{
    for (int i = 0; i < ms; i++) {
        uint32_t c[16];
        for (int j = 0; j < 16; j++)
            c[j] = 0;
        for (int t = 0; t < ntap; t++) {
            const int16_t *x = S + roff[i] + toff[t];
            const int16_t *b = Bp + (ptrdiff_t)t * L * 16;
            for (int q = 0; q < L; q += 2, b += 32) {
                const int32_t x0 = x[q], x1 = x[q + 1];
                for (int j = 0; j < 16; j++)
                    c[j] += (uint32_t)(x0 * (int32_t)b[2 * j]) +
                            (uint32_t)(x1 * (int32_t)b[2 * j + 1]);
            }
        }
        for (int j = 0; j < 16; j++)
            acc[i * lda + j] = c[j];
    }
}

void axs_fdwkern_scalar(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                        int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                        ptrdiff_t lda)
{
    for (int i = 0; i < ms; i++)
        for (int64_t c = c0; c < C; c++) {
            uint32_t sum = 0;
            for (int t = 0; t < ntap; t++) {
                const int16_t *x = S + roff[i] + toff[t] + 2 * c;
                const int16_t *v = Wv + (t * C + c) * 2;
                sum += (uint32_t)((int32_t)x[0] * (int32_t)v[0]) +
                       (uint32_t)((int32_t)x[1] * (int32_t)v[1]);
            }
            acc[i * lda + c] = sum;
        }
}

void axs_fdwplane_scalar(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH, int64_t OW,
                         const ptrdiff_t *toff, int ntap, const uint32_t *wp, uint32_t *out)
{
    for (int64_t oy = 0; oy < OH; oy++)
        for (int64_t ox = 0; ox < OW; ox++) {
            const uint32_t *x = P + oy * sh * Wp + ox;
            uint32_t sum = 0;
            for (int t = 0; t < ntap; t++) {
                const uint32_t a = x[toff[t]], b = wp[t];
                sum += (uint32_t)((int32_t)(int16_t)(a & 0xffff) *
                                  (int32_t)(int16_t)(b & 0xffff)) +
                       (uint32_t)((int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16));
            }
            out[oy * OW + ox] = sum;
        }
}

void axs_fpairs_scalar(const int16_t *v, int64_t n, ptrdiff_t s, uint32_t *d)
{
    for (int64_t i = 0; i < n; i++)
        d[i] = (uint32_t)(uint16_t)v[i] | (uint32_t)(uint16_t)v[i + s] << 16;
}

/* Depthwise planes (depthwise.c): the lanes of the shift register as four scalars; KH is a
 * constant in the inlined copies below. */
#if defined(__GNUC__) || defined(__clang__)
#define AXS_INLINE static inline __attribute__((always_inline))
#else
#define AXS_INLINE static inline
#endif
AXS_INLINE void dwplane_scalar(const uint8_t *s, ptrdiff_t ys, ptrdiff_t ks,
                               const int KH, int KW, int sw, int64_t OH, int64_t OW,
                               const uint32_t *E, uint32_t *sums, ptrdiff_t os)
{
    const int64_t np = (OW - 1) * sw + KW;
    for (int64_t y = 0; y < OH; y++) {
        const uint8_t *sy = s + y * ys;
        uint32_t *out = sums + y * OW * os;
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int64_t next = KW - 1, o = 0;
        for (int64_t p = 0; p < np; p++) {
            const uint8_t *q = sy + p;
            const uint32_t *e = E + ((size_t)q[0] << 2);
            uint32_t v0 = e[0], v1 = e[1], v2 = e[2], v3 = e[3];
            for (int ky = 1; ky < KH; ky++) {
                e = E + (size_t)ky * 1024 + ((size_t)q[ky * ks] << 2);
                v0 += e[0]; v1 += e[1]; v2 += e[2]; v3 += e[3];
            }
            a0 = a1 + v0; a1 = a2 + v1; a2 = a3 + v2; a3 = v3;
            if (p == next) {
                out[os * o++] = a0;
                next += sw;
            }
        }
    }
}

void axs_dwplanes_scalar(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os)
{
    for (int c = 0; c < nc; c++) {
        const uint8_t *sc = s + c * cs;
        const uint32_t *Ec = E + c * es;
        uint32_t *oc = sums + c;
        switch (KH) {
        case 1: dwplane_scalar(sc, ys, ks, 1, KW, sw, OH, OW, Ec, oc, os); break;
        case 3: dwplane_scalar(sc, ys, ks, 3, KW, sw, OH, OW, Ec, oc, os); break;
        case 5: dwplane_scalar(sc, ys, ks, 5, KW, sw, OH, OW, Ec, oc, os); break;
        default: dwplane_scalar(sc, ys, ks, KH, KW, sw, OH, OW, Ec, oc, os); break;
        }
    }
}
