/* AVX2 kernels: the direct micro-kernel (256-entry byte lookups with vpshufb, below) and the
 * expanded-table build and kernel (further down; see expand.c).
 *
 * vpshufb looks up 16-byte tables and returns 0 where the index has bit 7 set. For the
 * entries 0..127 of a plane (low or high bytes of the biased uint16 column of a fixed code),
 * split into 8 chunks T_0..T_7 of 16 entries, store D_0 = T_0 and D_h = T_h ^ T_(h-1).
 * With x_h = (idx & 127) - 16 h (8-bit wrap), x_h is negative exactly when h > idx >> 4, and
 * its low nibble is idx & 15, so XOR over h of pshufb(D_h, x_h) telescopes to
 * T_(idx >> 4)[idx & 15]. Entries 128..255 the same way; a blend on index bit 7 picks the
 * half. 32 lookups cost 32 vpshufb and 28 vpxor for both planes. The planes are summed in
 * 16-bit lanes as in the AVX-512 kernel (raw lanes plus odd bytes; exact for up to 257
 * steps, flushed every AXS_FLUSH) and widened into the uint32 tile.
 *
 * Compiled with a function-level target so that one build runs on every x86-64 CPU; it is
 * only called after __builtin_cpu_supports("avx2") said yes. */
#include <stdlib.h>
#include <string.h>

#include "axs_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AXS_AVX2 __attribute__((target("avx2")))

/* xtab layout per fixed code: [plane][half][h] of 32 bytes (the 16-byte D_h twice, one per
 * 128-bit lane), 1 KiB. */
#define XT(p, hb, h) (((p) * 16 + (hb) * 8 + (h)) * 32)

AXS_AVX2 void axs_kern16_avx2(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                              ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t,
                              uint32_t *C)
{
    const uint16_t *tab = t->tab16;
    const __m256i low7 = _mm256_set1_epi8(0x7f), sixteen = _mm256_set1_epi8(16);
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF;
        uint32_t *c = C + (ptrdiff_t)j * AXS_MB;
        memset(c, 0, (size_t)ms * sizeof(uint32_t));
        for (int k0 = 0; k0 < K; k0 += AXS_FLUSH) {
            int k1 = K - k0 < AXS_FLUSH ? K : k0 + AXS_FLUSH;
            int i = 0;
            for (; i + 32 <= ms; i += 32) {
                __m256i rl = _mm256_setzero_si256(), ol = rl, rh = rl, oh = rl;
                for (int k = k0; k < k1; k++) {
                    const uint8_t *d = t->xtab + ((size_t)f[k] << 10);
                    __m256i v = _mm256_loadu_si256((const __m256i *)(S + soff[k] + i));
                    __m256i x = _mm256_and_si256(v, low7);
#define LD(p, hb, h) _mm256_load_si256((const __m256i *)(d + XT(p, hb, h)))
                    __m256i l0 = _mm256_shuffle_epi8(LD(0, 0, 0), x);
                    __m256i l1 = _mm256_shuffle_epi8(LD(0, 1, 0), x);
                    __m256i h0 = _mm256_shuffle_epi8(LD(1, 0, 0), x);
                    __m256i h1 = _mm256_shuffle_epi8(LD(1, 1, 0), x);
#pragma GCC unroll 7
                    for (int h = 1; h < 8; h++) {
                        x = _mm256_sub_epi8(x, sixteen);
                        l0 = _mm256_xor_si256(l0, _mm256_shuffle_epi8(LD(0, 0, h), x));
                        l1 = _mm256_xor_si256(l1, _mm256_shuffle_epi8(LD(0, 1, h), x));
                        h0 = _mm256_xor_si256(h0, _mm256_shuffle_epi8(LD(1, 0, h), x));
                        h1 = _mm256_xor_si256(h1, _mm256_shuffle_epi8(LD(1, 1, h), x));
                        /* keep the XOR chains as chains: GCC otherwise hoists all 32
                         * lookups and spills them (16 ymm registers only) */
                        __asm__("" : "+x"(l0), "+x"(l1), "+x"(h0), "+x"(h1), "+x"(x));
                    }
#undef LD
                    __m256i lo = _mm256_blendv_epi8(l0, l1, v); /* index bit 7: upper half */
                    __m256i hi = _mm256_blendv_epi8(h0, h1, v);
                    rl = _mm256_add_epi16(rl, lo);
                    ol = _mm256_add_epi16(ol, _mm256_srli_epi16(lo, 8));
                    rh = _mm256_add_epi16(rh, hi);
                    oh = _mm256_add_epi16(oh, _mm256_srli_epi16(hi, 8));
                }
                /* lane t: even row 2t = raw - (odd << 8), odd row 2t + 1 = odd sums */
                uint16_t el[16], eo[16], hl[16], ho[16];
                _mm256_storeu_si256((__m256i *)el,
                                    _mm256_sub_epi16(rl, _mm256_slli_epi16(ol, 8)));
                _mm256_storeu_si256((__m256i *)eo, ol);
                _mm256_storeu_si256((__m256i *)hl,
                                    _mm256_sub_epi16(rh, _mm256_slli_epi16(oh, 8)));
                _mm256_storeu_si256((__m256i *)ho, oh);
                for (int q = 0; q < 16; q++) {
                    c[i + 2 * q] += (uint32_t)el[q] + ((uint32_t)hl[q] << 8);
                    c[i + 2 * q + 1] += (uint32_t)eo[q] + ((uint32_t)ho[q] << 8);
                }
            }
            /* fewer than 32 rows left: portable loop (a full load would leave the rows) */
            for (; i < ms; i++) {
                uint32_t a = c[i];
                for (int k = k0; k < k1; k++)
                    a += tab[((size_t)f[k] << 8) + S[soff[k] + i]];
                c[i] = a;
            }
        }
    }
}

/* ------------------------------------------------------------ expanded tables */

/* The 8 x 8 uint16 transposes of 8 table columns' entries v0 .. v0 + 15, one per 128-bit
 * lane: o[i] holds entry v0 + i of the 8 columns in its low lane, v0 + 8 + i in its high. */
static inline __attribute__((always_inline)) AXS_AVX2 void
xcols8_avx2(const uint16_t *const *src, int v0, __m256i o[8])
{
#define LDC(e) _mm256_loadu_si256((const __m256i *)(src[e] + v0))
    __m256i r0 = LDC(0), r1 = LDC(1), r2 = LDC(2), r3 = LDC(3);
    __m256i r4 = LDC(4), r5 = LDC(5), r6 = LDC(6), r7 = LDC(7);
#undef LDC
    /* a: (v, v) pairs of 2 columns; b: 2 entries x 4 columns; o: 1 entry x 8 */
    __m256i a0 = _mm256_unpacklo_epi16(r0, r1), a1 = _mm256_unpackhi_epi16(r0, r1);
    __m256i a2 = _mm256_unpacklo_epi16(r2, r3), a3 = _mm256_unpackhi_epi16(r2, r3);
    __m256i a4 = _mm256_unpacklo_epi16(r4, r5), a5 = _mm256_unpackhi_epi16(r4, r5);
    __m256i a6 = _mm256_unpacklo_epi16(r6, r7), a7 = _mm256_unpackhi_epi16(r6, r7);
    __m256i b0 = _mm256_unpacklo_epi32(a0, a2), b1 = _mm256_unpackhi_epi32(a0, a2);
    __m256i b2 = _mm256_unpacklo_epi32(a1, a3), b3 = _mm256_unpackhi_epi32(a1, a3);
    __m256i b4 = _mm256_unpacklo_epi32(a4, a6), b5 = _mm256_unpackhi_epi32(a4, a6);
    __m256i b6 = _mm256_unpacklo_epi32(a5, a7), b7 = _mm256_unpackhi_epi32(a5, a7);
    o[0] = _mm256_unpacklo_epi64(b0, b4), o[1] = _mm256_unpackhi_epi64(b0, b4);
    o[2] = _mm256_unpacklo_epi64(b1, b5), o[3] = _mm256_unpackhi_epi64(b1, b5);
    o[4] = _mm256_unpacklo_epi64(b2, b6), o[5] = _mm256_unpackhi_epi64(b2, b6);
    o[6] = _mm256_unpacklo_epi64(b3, b7), o[7] = _mm256_unpackhi_epi64(b3, b7);
}

/* R for NB positions: 8 table columns at a time transposed in registers (xcols8_avx2).
 * Rows of 16 entries or more are written 32 bytes at a time, two groups' 128-bit halves
 * joined by a lane permute: half the stores of writing each group's 16 bytes alone. Paired
 * on Zen 4, swapped 256 x 1024 x 1024 and 64 x 768 x 768 GEMMs, where building R is a
 * fifth of the call: 1.02 - 1.06 times as fast with 16-wide rows (AVX2), 1.07 - 1.08 with
 * 32-wide ones (the AVX-512 path, a table without the residual form); convolutions 1.00 -
 * 1.01. */
static inline __attribute__((always_inline)) AXS_AVX2 void
xbuild_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
            uint16_t *R, const uint16_t *mask, const int NB)
{
    for (int kk = 0; kk < kb; kk++) {
        uint16_t *Rk = R + (size_t)kk * AXS_XSTEP(NB);
        const uint16_t *src[AXS_XNB32];
        for (int p = 0; p < NB; p++) {
            int j = NB == AXS_XNB32 ? AXS_XCOL32(p) : NB == AXS_XNB ? AXS_XCOL(p) : AXS_XCOL8(p);
            src[p] = tab16 + ((size_t)(j < nf ? F[j * ldF + kk] : 0) << 8);
        }
        for (int v0 = 0; v0 < 256; v0 += 16) {
            if (mask && !((mask[kk] >> (v0 >> 4)) & 1))
                continue;
            if (NB == AXS_XNB8) {
                __m256i o[8];
                xcols8_avx2(src, v0, o);
                for (int i = 0; i < 8; i++) {
                    _mm_storeu_si128((__m128i *)(Rk + (size_t)(v0 + i) * NB),
                                     _mm256_castsi256_si128(o[i]));
                    _mm_storeu_si128((__m128i *)(Rk + (size_t)(v0 + 8 + i) * NB),
                                     _mm256_extracti128_si256(o[i], 1));
                }
                continue;
            }
            for (int g = 0; g < NB; g += 16) {
                __m256i lo[8], hi[8];
                xcols8_avx2(src + g, v0, lo);
                xcols8_avx2(src + g + 8, v0, hi);
                for (int i = 0; i < 8; i++) {
                    _mm256_storeu_si256((__m256i *)(Rk + (size_t)(v0 + i) * NB + g),
                                        _mm256_permute2x128_si256(lo[i], hi[i], 0x20));
                    _mm256_storeu_si256((__m256i *)(Rk + (size_t)(v0 + 8 + i) * NB + g),
                                        _mm256_permute2x128_si256(lo[i], hi[i], 0x31));
                }
            }
        }
    }
}

AXS_AVX2 void axs_xbuild_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                              int kb, uint16_t *R, const uint16_t *mask)
{
    xbuild_avx2(tab16, F, ldF, nf, kb, R, mask, AXS_XNB);
}

AXS_AVX2 void axs_xbuild32_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                                int kb, uint16_t *R, const uint16_t *mask)
{
    xbuild_avx2(tab16, F, ldF, nf, kb, R, mask, AXS_XNB32);
}

AXS_AVX2 void axs_xbuild8_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                               int kb, uint16_t *R, const uint16_t *mask)
{
    xbuild_avx2(tab16, F, ldF, nf, kb, R, mask, AXS_XNB8);
}

/* ROWS rows at a time. A 32-bit lane of R holds the entries of columns t (low half) and
 * 8 + t (high half); instead of splitting it, the kernel adds the whole lane to a "raw" sum
 * and its high half to the high sum: modulo 2^32, raw = low sum + (high sum << 16), so
 * low sum = raw - (high << 16), recovered once at the last block. That is a load, an add, a
 * shift and an add per 16 entries (a vpmaddwd reading the high half from memory saved the
 * load instruction but ran slower). 7 rows keep 14 sums in registers without spills; 4 rows
 * ran 3 to 17% slower, 8 (one sum spilled) the same as 7. The inlined copies below are
 * specialised on the constant ROWS. */
#define AXS_XROWS 7
static inline __attribute__((always_inline)) AXS_AVX2 void
xrows_avx2(const uint8_t *S, const ptrdiff_t *roff, const ptrdiff_t *koff, int kb,
           const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init,
           const int ROWS)
{
    __m256i raw[AXS_XROWS], high[AXS_XROWS];
    const uint8_t *p[AXS_XROWS];
    for (int r = 0; r < ROWS; r++) {
        p[r] = S + roff[r];
        uint32_t *a = acc + r * lda;
        raw[r] = first ? _mm256_set1_epi32((int)(init + (init << 16)))
                       : _mm256_loadu_si256((const __m256i *)a);
        high[r] = first ? _mm256_set1_epi32((int)init)
                        : _mm256_loadu_si256((const __m256i *)(a + 8));
    }
    const char *Rk = (const char *)R;
    for (int kk = 0; kk < kb; kk++, Rk += 2 * AXS_XSTEP(AXS_XNB)) {
        const ptrdiff_t o = koff[kk];
        for (int r = 0; r < ROWS; r++) {
            __m256i x = _mm256_load_si256((const __m256i *)(Rk + ((size_t)p[r][o] << 5)));
            raw[r] = _mm256_add_epi32(raw[r], x);
            high[r] = _mm256_add_epi32(high[r], _mm256_srli_epi32(x, 16));
        }
    }
    for (int r = 0; r < ROWS; r++) {
        uint32_t *a = acc + r * lda;
        __m256i lo = last ? _mm256_sub_epi32(raw[r], _mm256_slli_epi32(high[r], 16)) : raw[r];
        _mm256_storeu_si256((__m256i *)a, lo);
        _mm256_storeu_si256((__m256i *)(a + 8), high[r]);
    }
}

/* One row over a block whose steps read consecutive codes p[0 .. kb) (within a tap of an
 * NHWC convolution, rows of a GEMM): no offsets to load, and the row's sums stay in
 * registers, the even and odd steps in two pairs so that the adds overlap. In C drivers of
 * both loops (16-step blocks, one thread, Zen 3, two variants alternating, median of 41
 * rounds) this ran 1.2 - 1.35 times as fast as xrows_avx2 with uniform codes and 1.4 - 1.6
 * with codes below 32; loading the codes 8 at a time and shifting them out of a register
 * ran the same, two rows at a time 0.85 - 0.9 of one. */
static inline __attribute__((always_inline)) AXS_AVX2 void
xcrow_avx2(const uint8_t *p, const int kb, const uint16_t *R, uint32_t *a, int first, int last,
           uint32_t init)
{
    const ptrdiff_t step = 2 * AXS_XSTEP(AXS_XNB);
    __m256i raw0 = first ? _mm256_set1_epi32((int)(init + (init << 16)))
                         : _mm256_loadu_si256((const __m256i *)a);
    __m256i high0 = first ? _mm256_set1_epi32((int)init)
                          : _mm256_loadu_si256((const __m256i *)(a + 8));
    __m256i raw1 = _mm256_setzero_si256(), high1 = _mm256_setzero_si256();
    const char *Rk = (const char *)R;
    int kk = 0;
    for (; kk + 2 <= kb; kk += 2, Rk += 2 * step) {
        __m256i x = _mm256_load_si256((const __m256i *)(Rk + ((size_t)p[kk] << 5)));
        __m256i y = _mm256_load_si256((const __m256i *)(Rk + step + ((size_t)p[kk + 1] << 5)));
        raw0 = _mm256_add_epi32(raw0, x);
        high0 = _mm256_add_epi32(high0, _mm256_srli_epi32(x, 16));
        raw1 = _mm256_add_epi32(raw1, y);
        high1 = _mm256_add_epi32(high1, _mm256_srli_epi32(y, 16));
        /* keeps the four sums in registers: unrolled, GCC reassociated the adds into trees
         * whose operands spilled to the stack (0.82 - 0.93 of the 7-row kernel in calls) */
        __asm__("" : "+x"(raw0), "+x"(high0), "+x"(raw1), "+x"(high1));
    }
    if (kk < kb) {
        __m256i x = _mm256_load_si256((const __m256i *)(Rk + ((size_t)p[kk] << 5)));
        raw0 = _mm256_add_epi32(raw0, x);
        high0 = _mm256_add_epi32(high0, _mm256_srli_epi32(x, 16));
    }
    raw0 = _mm256_add_epi32(raw0, raw1);
    high0 = _mm256_add_epi32(high0, high1);
    __m256i lo = last ? _mm256_sub_epi32(raw0, _mm256_slli_epi32(high0, 16)) : raw0;
    _mm256_storeu_si256((__m256i *)a, lo);
    _mm256_storeu_si256((__m256i *)(a + 8), high0);
}

/* The rows of a block of consecutive codes; kept out of line, so that the 7-row loop below
 * compiles as before (inlined into one function with it, it spilled its sums). */
static __attribute__((noinline)) AXS_AVX2 void
xcrows_avx2(const uint8_t *S0, const ptrdiff_t *roff, int ms, int kb, const uint16_t *R,
            uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init)
{
    if (kb == AXS_XSTEPW / AXS_XNB)   /* whole blocks: unrolled */
        for (int i = 0; i < ms; i++)
            xcrow_avx2(S0 + roff[i], AXS_XSTEPW / AXS_XNB, R, acc + i * lda, first, last, init);
    else
        for (int i = 0; i < ms; i++)
            xcrow_avx2(S0 + roff[i], kb, R, acc + i * lda, first, last, init);
}

/* Any offsets: AXS_XROWS rows at a time (out of line for the reason above). */
static __attribute__((noinline)) AXS_AVX2 void
xorows_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff, int kb,
            const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init)
{
    int i = 0;
    for (; i + AXS_XROWS <= ms; i += AXS_XROWS)
        xrows_avx2(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, AXS_XROWS);
    for (; i < ms; i++)
        xrows_avx2(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, 1);
}

AXS_AVX2 void axs_xkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms,
                             const ptrdiff_t *koff, int kb, const uint16_t *R, uint32_t *acc,
                             ptrdiff_t lda, int first, int last, uint32_t init)
{
    if (axs_xconsecutive(koff, kb))
        xcrows_avx2(S + koff[0], roff, ms, kb, R, acc, lda, first, last, init);
    else
        xorows_avx2(S, roff, ms, koff, kb, R, acc, lda, first, last, init);
}

/* The 8-wide blocks: the same with 128-bit lanes (a 256-bit operation costs two on some
 * CPUs, so 8 columns in a 16-wide block cost as much as 16: 0.82 against 1.33 ns per row
 * and step measured on a first-generation EPYC core). */
static inline __attribute__((always_inline)) AXS_AVX2 void
xrows8_avx2(const uint8_t *S, const ptrdiff_t *roff, const ptrdiff_t *koff, int kb,
            const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init,
            const int ROWS)
{
    __m128i raw[AXS_XROWS], high[AXS_XROWS];
    const uint8_t *p[AXS_XROWS];
    for (int r = 0; r < ROWS; r++) {
        p[r] = S + roff[r];
        uint32_t *a = acc + r * lda;
        raw[r] = first ? _mm_set1_epi32((int)(init + (init << 16)))
                       : _mm_loadu_si128((const __m128i *)a);
        high[r] = first ? _mm_set1_epi32((int)init) : _mm_loadu_si128((const __m128i *)(a + 4));
    }
    const char *Rk = (const char *)R;
    for (int kk = 0; kk < kb; kk++, Rk += 2 * AXS_XSTEP(AXS_XNB8)) {
        const ptrdiff_t o = koff[kk];
        for (int r = 0; r < ROWS; r++) {
            __m128i x = _mm_load_si128((const __m128i *)(Rk + ((size_t)p[r][o] << 4)));
            raw[r] = _mm_add_epi32(raw[r], x);
            high[r] = _mm_add_epi32(high[r], _mm_srli_epi32(x, 16));
        }
    }
    for (int r = 0; r < ROWS; r++) {
        uint32_t *a = acc + r * lda;
        __m128i lo = last ? _mm_sub_epi32(raw[r], _mm_slli_epi32(high[r], 16)) : raw[r];
        _mm_storeu_si128((__m128i *)a, lo);
        _mm_storeu_si128((__m128i *)(a + 4), high[r]);
    }
}

AXS_AVX2 void axs_xkern8_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms,
                              const ptrdiff_t *koff, int kb, const uint16_t *R, uint32_t *acc,
                              ptrdiff_t lda, int first, int last, uint32_t init)
{
    int i = 0;
    for (; i + AXS_XROWS <= ms; i += AXS_XROWS)
        xrows8_avx2(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, AXS_XROWS);
    for (; i < ms; i++)
        xrows8_avx2(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, 1);
}

/* ------------------------------------------------------------ byte residuals */

/* In-lane 16 x 16 byte transposes of both 128-bit lanes of a[0..15] at once: lane h of
 * a[i] ends up holding byte i of the 16 rows' lane h. */
static inline __attribute__((always_inline)) AXS_AVX2 void tr16x16x2_avx2(__m256i a[16])
{
    AXS_TR16X16(__m256i, _mm256, a);
}

/* R: each step's 32 residual columns (a fixed code's 256 residuals are contiguous in
 * res8d) transposed 16 codes at a time, positions 0 - 15 in the low lanes and 16 - 31 in the
 * high ones, one 32-byte row per code; W: the exact part's int16 pairs. */
AXS_AVX2 void axs_rbuild_avx2(const uint8_t *res8d, const uint8_t *F, ptrdiff_t ldF, int nf,
                              int kb, int rsigned, int32_t rz, uint8_t *R, int16_t *W,
                              const uint16_t *mask)
{
    memset(W, 0, AXS_R2W * sizeof(int16_t));
    for (int j = 0; j < nf; j++)
        for (int kk = 0; kk < kb; kk++) {
            const int f = F[j * ldF + kk];
            /* |rz| <= 259 in the 16-bit class, so v(f) - rz fits an int16 */
            W[((kk >> 1) * 4 + (j >> 3)) * 16 + 2 * (j & 7) + (kk & 1)] =
                (int16_t)((rsigned ? (int8_t)f : f) - rz);
        }
    for (int kk = 0; kk < kb; kk++) {
        const uint8_t *src[AXS_R2NB];
        for (int p = 0; p < AXS_R2NB; p++) {
            const int j = AXS_R2COL(p);
            src[p] = res8d + ((size_t)(j < nf ? F[j * ldF + kk] : 0) << 8);
        }
        uint8_t *Rk = R + (size_t)kk * AXS_R2STEP;
        for (int v0 = 0; v0 < 256; v0 += 16) {
            if (mask && !((mask[kk] >> (v0 >> 4)) & 1))
                continue;
            __m256i a[16];
            for (int r = 0; r < 16; r++)
                a[r] = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(src[r] + v0))),
                    _mm_loadu_si128((const __m128i *)(src[16 + r] + v0)), 1);
            tr16x16x2_avx2(a);
            for (int r = 0; r < 16; r++)
                _mm256_store_si256((__m256i *)(Rk + (size_t)(v0 + r) * AXS_R2NB), a[r]);
        }
    }
}

/* Steps 2g and 2g + 1 of one half block (kbh steps, codes ph, rows Rh, pairs Wh) of a row:
 * the exact part of both by vpmaddwd (the pair of the row's values broadcast from x0 / x1,
 * the int16 pairs of the block's 32 columns from Wh), the residual rows summed in 16-bit
 * lanes as the AVX-512 rows are (raw lane and high bytes). The empty asm keeps the sums in
 * registers (without it GCC reassociated the adds into trees that spilled). */
#define AXS_R2PAIR(g)                                                                       \
    if (2 * (g) < kbh) {                                                                    \
        const __m256i b = _mm256_shuffle_epi32((g) < 4 ? x0 : x1, ((g) & 3) * 0x55);        \
        const __m256i *w = (const __m256i *)(Wh + (g) * 64);                                \
        e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(b, _mm256_load_si256(w)));              \
        e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(b, _mm256_load_si256(w + 1)));          \
        e2 = _mm256_add_epi32(e2, _mm256_madd_epi16(b, _mm256_load_si256(w + 2)));          \
        e3 = _mm256_add_epi32(e3, _mm256_madd_epi16(b, _mm256_load_si256(w + 3)));          \
        const uint8_t *Rk = Rh + (size_t)(2 * (g)) * AXS_R2STEP;                            \
        const __m256i x = _mm256_load_si256((const __m256i *)(Rk + ((size_t)ph[2 * (g)] << 5))); \
        raw0 = _mm256_add_epi16(raw0, x);                                                   \
        high0 = _mm256_add_epi16(high0, _mm256_srli_epi16(x, 8));                           \
        if (2 * (g) + 1 < kbh) {                                                            \
            const __m256i y = _mm256_load_si256(                                            \
                (const __m256i *)(Rk + AXS_R2STEP + ((size_t)ph[2 * (g) + 1] << 5)));       \
            raw1 = _mm256_add_epi16(raw1, y);                                               \
            high1 = _mm256_add_epi16(high1, _mm256_srli_epi16(y, 8));                       \
        }                                                                                   \
        __asm__("" : "+x"(e0), "+x"(e1), "+x"(e2), "+x"(e3), "+x"(raw0), "+x"(high0),       \
                "+x"(raw1), "+x"(high1));                                                   \
    }

/* Half a block (kbh <= AXS_RSTEPS steps) of one row: codes ph (consecutive), rows Rh, pairs
 * Wh; the sums by pointer (kept in registers once inlined). */
static inline __attribute__((always_inline)) AXS_AVX2 void
r2half_avx2(const uint8_t *ph, const int kbh, const uint8_t *Rh, const int16_t *Wh,
            const int sgn, __m256i e[4], __m256i s[4])
{
    __m256i e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3];
    __m256i raw0 = s[0], high0 = s[1], raw1 = s[2], high1 = s[3];
    /* the values as int16, steps 0 - 7 in x0 and 8 - 15 in x1, in both lanes (codes past
     * kbh read as 0: they meet 0 in W) */
    __m128i c;
    if (kbh == AXS_RSTEPS) {
        c = _mm_loadu_si128((const __m128i *)ph);
    } else {
        uint8_t buf[AXS_RSTEPS] = {0};
        memcpy(buf, ph, (size_t)kbh);
        c = _mm_loadu_si128((const __m128i *)buf);
    }
    const __m128i c1 = _mm_srli_si128(c, 8);
    const __m256i x0 = _mm256_broadcastsi128_si256(sgn ? _mm_cvtepi8_epi16(c)
                                                       : _mm_cvtepu8_epi16(c));
    const __m256i x1 = _mm256_broadcastsi128_si256(sgn ? _mm_cvtepi8_epi16(c1)
                                                       : _mm_cvtepu8_epi16(c1));
    AXS_R2PAIR(0) AXS_R2PAIR(1) AXS_R2PAIR(2) AXS_R2PAIR(3)
    AXS_R2PAIR(4) AXS_R2PAIR(5) AXS_R2PAIR(6) AXS_R2PAIR(7)
    e[0] = e0, e[1] = e1, e[2] = e2, e[3] = e3;
    s[0] = raw0, s[1] = high0, s[2] = raw1, s[3] = high1;
}

/* One row over a block of kb <= AXS_R2STEPS steps: halves of AXS_RSTEPS steps, each one's
 * codes consecutive (p0, p1). */
static inline __attribute__((always_inline)) AXS_AVX2 void
r2row_avx2(const uint8_t *p0, const uint8_t *p1, const int kb, const uint8_t *R,
           const int16_t *W, uint32_t *a, const uint32_t *init, const int sgn)
{
    const uint32_t *src = init ? init : a;
    __m256i e[4], s[4];
    for (int q = 0; q < 4; q++) {
        e[q] = _mm256_loadu_si256((const __m256i *)(src + 8 * q));
        s[q] = _mm256_setzero_si256();
    }
    r2half_avx2(p0, kb < AXS_RSTEPS ? kb : AXS_RSTEPS, R, W, sgn, e, s);
    if (kb > AXS_RSTEPS)
        r2half_avx2(p1, kb - AXS_RSTEPS, R + (size_t)AXS_RSTEPS * AXS_R2STEP,
                    W + AXS_RSTEPS * AXS_R2NB, sgn, e, s);
    /* low = raw - (high << 8): exact for up to 257 steps */
    const __m256i raw = _mm256_add_epi16(s[0], s[2]), high = _mm256_add_epi16(s[1], s[3]);
    const __m256i low = _mm256_sub_epi16(raw, _mm256_slli_epi16(high, 8));
    e[0] = _mm256_add_epi32(e[0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(low)));
    e[1] = _mm256_add_epi32(e[1], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(low, 1)));
    e[2] = _mm256_add_epi32(e[2], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(high)));
    e[3] = _mm256_add_epi32(e[3], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(high, 1)));
    for (int q = 0; q < 4; q++)
        _mm256_storeu_si256((__m256i *)(a + 8 * q), e[q]);
}
#undef AXS_R2PAIR

#define AXS_R2ROWS(KB, SGN)                                                                 \
    for (int i = 0; i < ms; i++)                                                            \
        r2row_avx2(S + roff[i] + koff[0],                                                   \
                   S + roff[i] + koff[(KB) > AXS_RSTEPS ? AXS_RSTEPS : 0], KB, R, W,        \
                   acc + i * lda, init, SGN);

AXS_AVX2 void axs_rkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms,
                             const ptrdiff_t *koff, int kb, const uint8_t *R, const int16_t *W,
                             uint32_t *acc, ptrdiff_t lda, const uint32_t *init, int rsigned)
{
    /* whole blocks unrolled, each sign compiled on its own */
    if (kb == AXS_R2STEPS) {
        if (rsigned)
            AXS_R2ROWS(AXS_R2STEPS, 1)
        else
            AXS_R2ROWS(AXS_R2STEPS, 0)
    } else {
        if (rsigned)
            AXS_R2ROWS(kb, 1)
        else
            AXS_R2ROWS(kb, 0)
    }
}
#undef AXS_R2ROWS

/* ------------------------------------------------------------ factored tables */

#define AXS_FROWS 6

/* ROWS streamed rows by 16 columns: per pair of steps, the block's two vectors of factor
 * pairs (columns 0-7 and 8-15) and one broadcast pair of values per row; vpmaddwd multiplies
 * and adds each pair into int32 lanes (modulo 2^32, as the sums are kept). 6 rows: 12
 * accumulators, 2 factor vectors and a broadcast fill the 16 ymm registers. */
static inline __attribute__((always_inline)) AXS_AVX2 void
frows_avx2(const int16_t *S, const ptrdiff_t *roff, const ptrdiff_t *toff, int ntap, int L,
           const int16_t *Bp, uint32_t *acc, ptrdiff_t lda, const int ROWS)
{
    __m256i c0[AXS_FROWS], c1[AXS_FROWS];
    for (int r = 0; r < ROWS; r++) {
        c0[r] = _mm256_setzero_si256();
        c1[r] = _mm256_setzero_si256();
    }
    const int16_t *b = Bp;
    for (int t = 0; t < ntap; t++) {
        const int16_t *x[AXS_FROWS];
        for (int r = 0; r < ROWS; r++)
            x[r] = S + roff[r] + toff[t];
        for (int q = 0; q < L; q += 2, b += 32) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 16));
            for (int r = 0; r < ROWS; r++) {
                int32_t pair;
                memcpy(&pair, x[r] + q, sizeof(pair));
                const __m256i a = _mm256_set1_epi32(pair);
                c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(a, b0));
                c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(a, b1));
            }
        }
    }
    for (int r = 0; r < ROWS; r++) {
        _mm256_storeu_si256((__m256i *)(acc + r * lda), c0[r]);
        _mm256_storeu_si256((__m256i *)(acc + r * lda + 8), c1[r]);
    }
}

AXS_AVX2 void axs_fkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms,
                             const ptrdiff_t *toff, int ntap, int L, const int16_t *Bp,
                             uint32_t *acc, ptrdiff_t lda)
{
    int i = 0;
    for (; i + AXS_FROWS <= ms; i += AXS_FROWS)
        frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, AXS_FROWS);
    switch (ms - i) {
    case 5: frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, 5); break;
    case 4: frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, 4); break;
    case 3: frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, 3); break;
    case 2: frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, 2); break;
    case 1: frows_avx2(S, roff + i, toff, ntap, L, Bp, acc + i * lda, lda, 1); break;
    default: break;
    }
}

/* Depthwise filters of factored tables: 8 channels per ymm, one int32 lane per channel
 * holding its pair of values, so that one vpmaddwd per tap (with the load) gives 8 channels'
 * products. 4 pixels at a time; the taps' weights in registers for 3 x 3 filters (9 taps of
 * r = 2, or 6 of r = 1 with its columns paired), else loaded at each use. */
static inline __attribute__((always_inline)) AXS_AVX2 void
fdwblock_avx2(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
              int ntap, const int16_t *wv, ptrdiff_t wstep, uint32_t *acc, ptrdiff_t lda,
              const int NT)
{
    const int nt = NT ? NT : ntap;
#define AXS_FDW_W(t) _mm256_loadu_si256((const __m256i *)(wv + (t) * wstep))
#define AXS_FDW_X(p) _mm256_loadu_si256((const __m256i *)(p))
    __m256i w[9];
    if (NT)
        for (int t = 0; t < NT; t++)
            w[t] = AXS_FDW_W(t);
    int i = 0;
    for (; i + 4 <= ms; i += 4) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < nt; t++) {
            const __m256i wt = NT ? w[t] : AXS_FDW_W(t);
            const int16_t *x = S + toff[t];
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(AXS_FDW_X(x + roff[i]), wt));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(AXS_FDW_X(x + roff[i + 1]), wt));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(AXS_FDW_X(x + roff[i + 2]), wt));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(AXS_FDW_X(x + roff[i + 3]), wt));
            __asm__("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));   /* no add trees (spills) */
        }
        _mm256_storeu_si256((__m256i *)(acc + i * lda), a0);
        _mm256_storeu_si256((__m256i *)(acc + (i + 1) * lda), a1);
        _mm256_storeu_si256((__m256i *)(acc + (i + 2) * lda), a2);
        _mm256_storeu_si256((__m256i *)(acc + (i + 3) * lda), a3);
    }
    for (; i < ms; i++) {
        __m256i a0 = _mm256_setzero_si256();
        for (int t = 0; t < nt; t++)
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(AXS_FDW_X(S + toff[t] + roff[i]),
                                                        NT ? w[t] : AXS_FDW_W(t)));
        _mm256_storeu_si256((__m256i *)(acc + i * lda), a0);
    }
#undef AXS_FDW_W
#undef AXS_FDW_X
}

AXS_AVX2 void axs_fdwkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms,
                               const ptrdiff_t *toff, int ntap, int64_t C, int64_t c0,
                               const int16_t *Wv, uint32_t *acc, ptrdiff_t lda)
{
    const ptrdiff_t ws = (ptrdiff_t)(2 * C);   /* int16 between a channel's taps' pairs */
    for (; c0 + 8 <= C; c0 += 8) {
        const int16_t *Sc = S + 2 * c0, *wv = Wv + 2 * c0;
        switch (ntap) {
        case 6: fdwblock_avx2(Sc, roff, ms, toff, 6, wv, ws, acc + c0, lda, 6); break;
        case 9: fdwblock_avx2(Sc, roff, ms, toff, 9, wv, ws, acc + c0, lda, 9); break;
        default: fdwblock_avx2(Sc, roff, ms, toff, ntap, wv, ws, acc + c0, lda, 0); break;
        }
    }
    if (c0 < C)   /* the last channels */
        axs_fdwkern_scalar(S, roff, ms, toff, ntap, C, c0, Wv, acc, lda);
}

/* 8 outputs of a row per ymm: the taps' pairs broadcast, each tap a vpmaddwd with the 8
 * pixels' pairs it meets; NV vectors of a row at a time, so that each tap's offset is
 * loaded once for them (per vector, the offsets' loads and adds were half the
 * instructions). A row's last partial vector is computed whole (its extra pixels read on
 * into the plane) and stored in part. */
static inline __attribute__((always_inline)) AXS_AVX2 void
fdwvecs_avx2(const uint32_t *row, int64_t ox, int64_t OW, const ptrdiff_t *toff, int nt,
             const uint32_t *wp, uint32_t *o, const int NV)
{
    __m256i a[4];
    for (int j = 0; j < NV; j++)
        a[j] = _mm256_setzero_si256();
    for (int t = 0; t < nt; t++) {
        const uint32_t *p = row + ox + toff[t];
        const __m256i w = _mm256_set1_epi32((int)wp[t]);   /* a broadcast load */
        for (int j = 0; j < NV; j++)
            a[j] = _mm256_add_epi32(
                a[j], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p + 8 * j)), w));
    }
    for (int j = 0; j < NV; j++) {
        if (ox + 8 * j + 8 <= OW) {
            _mm256_storeu_si256((__m256i *)(o + ox + 8 * j), a[j]);
        } else {
            uint32_t tmp[8];
            _mm256_storeu_si256((__m256i *)tmp, a[j]);
            memcpy(o + ox + 8 * j, tmp, (size_t)(OW - ox - 8 * j) * sizeof(uint32_t));
        }
    }
}

AXS_AVX2 void axs_fdwplane_avx2(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH,
                                int64_t OW, const ptrdiff_t *toff, int ntap,
                                const uint32_t *wp, uint32_t *out)
{
    for (int64_t oy = 0; oy < OH; oy++) {
        const uint32_t *row = P + oy * sh * Wp;
        uint32_t *o = out + oy * OW;
        int64_t ox = 0;
        for (; ox + 32 <= OW; ox += 32)
            fdwvecs_avx2(row, ox, OW, toff, ntap, wp, o, 4);
        switch ((OW - ox + 7) / 8) {   /* the rest: 0 - 4 vectors, the last maybe partial */
        case 4: fdwvecs_avx2(row, ox, OW, toff, ntap, wp, o, 4); break;
        case 3: fdwvecs_avx2(row, ox, OW, toff, ntap, wp, o, 3); break;
        case 2: fdwvecs_avx2(row, ox, OW, toff, ntap, wp, o, 2); break;
        case 1: fdwvecs_avx2(row, ox, OW, toff, ntap, wp, o, 1); break;
        default: break;
        }
    }
}

/* Two vectors of 16 int16 (a, b) as 16 pairs a_i, b_i in order at d (32 int16): the unpacks
 * pair 0-3 | 8-11 and 4-7 | 12-15 (per 128-bit lane), the permutes restore the order. */
static inline __attribute__((always_inline)) AXS_AVX2 void
fstore_pairs16_avx2(__m256i a, __m256i b, int16_t *d)
{
    const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
    _mm256_storeu_si256((__m256i *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}

AXS_AVX2 void axs_fpairs_avx2(const int16_t *v, int64_t n, ptrdiff_t s, uint32_t *d)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        fstore_pairs16_avx2(_mm256_loadu_si256((const __m256i *)(v + i)),
                            _mm256_loadu_si256((const __m256i *)(v + i + s)), (int16_t *)(d + i));
    axs_fpairs_scalar(v + i, n - i, s, d + i);
}

/* The streamed values of n codes with r = 2 factors each (factored.c): U32[code] holds both
 * (the first in the low half), so a gather of 8 codes gives 16 values in order. */
AXS_AVX2 void axs_fvalues2_avx2(const uint8_t *codes, int64_t n, const int32_t *U32,
                                int16_t *d)
{
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        int64_t b8;
        memcpy(&b8, codes + c, 8);
        __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b8));
        _mm256_storeu_si256((__m256i *)(d + 2 * c),
                            _mm256_i32gather_epi32((const int *)U32, idx, 4));
    }
    for (; c < n; c++)
        memcpy(d + 2 * c, &U32[codes[c]], 4);
}

/* The byte of one plane for each of 32 codes x (l = x & 127) from its 16 XOR-chained chunks
 * T[h] (codes 0..127) and T[8 + h] (128..255), as in axs_fvalues_shuf_avx2. */
static inline __attribute__((always_inline)) AXS_AVX2 __m256i
xchain32_avx2(const __m256i *T, __m256i x, __m256i l)
{
    __m256i r0 = _mm256_setzero_si256(), r1 = r0;
    for (int h = 0; h < 8; h++) {
        const __m256i xh = _mm256_sub_epi8(l, _mm256_set1_epi8((char)(16 * h)));
        r0 = _mm256_xor_si256(r0, _mm256_shuffle_epi8(T[h], xh));
        r1 = _mm256_xor_si256(r1, _mm256_shuffle_epi8(T[8 + h], xh));
    }
    return _mm256_blendv_epi8(r0, r1, x);
}

/* The byte of a classed plane (axs_bclass) for each of 32 codes x: the row's class and base
 * byte by the code's high nibble, then nc - 1 chained shuffles (the index less 16 per
 * chunk). */
static inline __attribute__((always_inline)) AXS_AVX2 __m256i
xclass32_avx2(const axs_bclass *B, __m256i x)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), s16 = _mm256_set1_epi8(16);
    const __m256i h = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
    __m256i l = _mm256_add_epi8(
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)B->cls), h),
        _mm256_and_si256(x, m4));
    __m256i r = _mm256_setzero_si256();
    for (int k = 1; k < B->nc; k++) {
        l = _mm256_sub_epi8(l, s16);
        r = _mm256_xor_si256(
            r, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(B->D + 32 * k)), l));
    }
    return _mm256_add_epi8(
        r, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)B->base), h));
}

/* The 16 chunks of a plane (at tabs, 32 bytes each) in registers */
static inline __attribute__((always_inline)) AXS_AVX2 void
xchunks_avx2(const uint8_t *tabs, __m256i *T)
{
    for (int i = 0; i < 16; i++)
        T[i] = _mm256_loadu_si256((const __m256i *)(tabs + 32 * i));
}

/* The int16 values U[code] of n codes (r = 1), 32 at a time by byte shuffles instead of
 * gathers (0.37 against 0.62 ns a value in a C driver on Zen 3): for each byte plane of U and
 * each half of the codes, tabs holds 8 chunks of 16 entries XOR-chained as in the direct
 * kernel (D_0 = T_0, D_h = T_h ^ T_(h-1); both 128-bit lanes alike), at tabs + ((plane * 2 +
 * half) * 8 + h) * 32: vpshufb gives 0 where (code & 127) - 16 h is negative, so the XOR of
 * the 8 lookups is T_(code >> 4 & 7)[code & 15]; bit 7 of the code picks the half. */
AXS_AVX2 void axs_fvalues_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                                    const int16_t *U, int16_t *d)
{
    __m256i T[32];
    xchunks_avx2(tabs, T);
    xchunks_avx2(tabs + 512, T + 16);
    const __m256i low7 = _mm256_set1_epi8(0x7f);
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(codes + c));
        const __m256i l = _mm256_and_si256(x, low7);
        /* low bytes, high bytes (the two chains share their index subtractions once inlined) */
        const __m256i lo = xchain32_avx2(T, x, l), hi = xchain32_avx2(T + 16, x, l);
        /* bytes to int16, in order: unpacks work per 128-bit lane */
        const __m256i a = _mm256_unpacklo_epi8(lo, hi), b = _mm256_unpackhi_epi8(lo, hi);
        _mm256_storeu_si256((__m256i *)(d + c), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256((__m256i *)(d + c + 16), _mm256_permute2x128_si256(a, b, 0x31));
    }
    for (; c < n; c++)
        d[c] = U[codes[c]];
}

/* Values U = off + byte: the low plane's lookups only, each byte widened and offset. */
AXS_AVX2 void axs_fvalues_shuf8_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                                     int16_t off, const axs_bclass *bc, const int16_t *U,
                                     int16_t *d)
{
    __m256i T[16];
    if (!bc)
        xchunks_avx2(tabs, T);
    const __m256i low7 = _mm256_set1_epi8(0x7f), o = _mm256_set1_epi16(off);
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(codes + c));
        const __m256i b = bc ? xclass32_avx2(bc, x)
                             : xchain32_avx2(T, x, _mm256_and_si256(x, low7));
        _mm256_storeu_si256((__m256i *)(d + c),
                            _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(b)), o));
        _mm256_storeu_si256(
            (__m256i *)(d + c + 16),
            _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(b, 1)), o));
    }
    for (; c < n; c++)
        d[c] = U[codes[c]];
}

/* One component of 32 codes as int16, codes 0..15 in *v0 and 16..31 in *v1 (x: the codes,
 * l: x & 127; T: the component's 16 chunks when it looks up). */
static inline __attribute__((always_inline)) AXS_AVX2 void
fcomp32_avx2(__m256i x, __m256i l, const __m256i *T, const axs_fcomp *cp, __m256i *v0,
             __m256i *v1)
{
    const __m256i b = !cp->lookup ? x : cp->bc ? xclass32_avx2(cp->bc, x)
                                               : xchain32_avx2(T, x, l);
    const __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
    __m256i w0, w1;
    if (cp->sgn) {
        w0 = _mm256_cvtepi8_epi16(lo);
        w1 = _mm256_cvtepi8_epi16(hi);
    } else {
        w0 = _mm256_cvtepu8_epi16(lo);
        w1 = _mm256_cvtepu8_epi16(hi);
    }
    const __m256i o = _mm256_set1_epi16(cp->off);
    *v0 = cp->neg ? _mm256_sub_epi16(o, w0) : _mm256_add_epi16(o, w0);
    *v1 = cp->neg ? _mm256_sub_epi16(o, w1) : _mm256_add_epi16(o, w1);
}

/* The pairs of 32 codes whose component `a` (0 or 1) is offa + or - (nega) the code itself,
 * zero-extended, and the other offb + the byte of B: the dwords of the codes taken in the
 * order 0 2 4 6 1 3 5 7 first, so that the in-lane unpacks (bytes to int16, then int16
 * pairs) leave the 32 pairs in order, with no lane-crossing permute per 16 of them. */
static inline __attribute__((always_inline)) AXS_AVX2 void
fpairs32_code_class_avx2(const uint8_t *codes, const axs_bclass *B, __m256i offa,
                         __m256i offb, const int a, const int nega, int16_t *d)
{
    const __m256i zero = _mm256_setzero_si256();
    const __m256i x = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)codes),
                                                  _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    const __m256i y = xclass32_avx2(B, x);
    __m256i u[2], v[2];
    u[0] = _mm256_unpacklo_epi8(x, zero);
    u[1] = _mm256_unpackhi_epi8(x, zero);
    for (int i = 0; i < 2; i++) {
        u[i] = nega ? _mm256_sub_epi16(offa, u[i]) : _mm256_add_epi16(offa, u[i]);
        v[i] = _mm256_add_epi16(offb, i ? _mm256_unpackhi_epi8(y, zero)
                                        : _mm256_unpacklo_epi8(y, zero));
    }
    for (int i = 0; i < 2; i++) {
        const __m256i p = a ? v[i] : u[i], q = a ? u[i] : v[i];
        _mm256_storeu_si256((__m256i *)(d + 32 * i), _mm256_unpacklo_epi16(p, q));
        _mm256_storeu_si256((__m256i *)(d + 32 * i + 16), _mm256_unpackhi_epi16(p, q));
    }
}

/* Pairs of the code itself (unsigned, component a) and a classed byte plane: DRUM's table
 * with the weight zero point folded in */
static AXS_AVX2 int64_t fvalues2_code_class_avx2(const uint8_t *codes, int64_t n,
                                                 const axs_fcomp *ca, const axs_fcomp *cb,
                                                 int a, int16_t *d)
{
    const __m256i offa = _mm256_set1_epi16(ca->off), offb = _mm256_set1_epi16(cb->off);
    int64_t c = 0;
#define AXS_CODE_CLASS(A, NEG)                                                              \
    for (; c + 32 <= n; c += 32)                                                            \
        fpairs32_code_class_avx2(codes + c, cb->bc, offa, offb, A, NEG, d + 2 * c)
    if (a == 0 && ca->neg)
        AXS_CODE_CLASS(0, 1);
    else if (a == 0)
        AXS_CODE_CLASS(0, 0);
    else if (ca->neg)
        AXS_CODE_CLASS(1, 1);
    else
        AXS_CODE_CLASS(1, 0);
#undef AXS_CODE_CLASS
    return c;
}

AXS_AVX2 void axs_fvalues2_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                                     const axs_fcomp *comp, const int16_t *U, int16_t *d)
{
    const axs_fcomp c0 = comp[0], c1 = comp[1];
    for (int a = 0; a < 2; a++) {
        const axs_fcomp *ca = a ? &c1 : &c0, *cb = a ? &c0 : &c1;
        if (!ca->lookup && !ca->sgn && cb->lookup && cb->bc && !cb->sgn && !cb->neg) {
            const int64_t c = fvalues2_code_class_avx2(codes, n, ca, cb, a, d);
            for (int64_t e = c; e < n; e++)
                memcpy(d + 2 * e, U + 2 * (ptrdiff_t)codes[e], 2 * sizeof(int16_t));
            return;
        }
    }
    const __m256i low7 = _mm256_set1_epi8(0x7f);
    __m256i T0[16], T1[16];
    if (c0.lookup && !c0.bc)
        xchunks_avx2(tabs, T0);
    if (c1.lookup && !c1.bc)
        xchunks_avx2(tabs + 512, T1);
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(codes + c));
        const __m256i l = _mm256_and_si256(x, low7);
        __m256i a0, a1, b0, b1;
        fcomp32_avx2(x, l, T0, &c0, &a0, &a1);
        fcomp32_avx2(x, l, T1, &c1, &b0, &b1);
        fstore_pairs16_avx2(a0, b0, d + 2 * c);
        fstore_pairs16_avx2(a1, b1, d + 2 * c + 32);
    }
    for (; c < n; c++)
        memcpy(d + 2 * c, U + 2 * (ptrdiff_t)codes[c], 2 * sizeof(int16_t));
}

/* 16 codes' int16 values from V32 (the values as int32): two gathers, packed in order. */
static inline __attribute__((always_inline)) AXS_AVX2 __m256i
fvals16_avx2(const uint8_t *codes, const int32_t *V32)
{
    __m128i c = _mm_loadu_si128((const __m128i *)codes);
    __m256i a = _mm256_i32gather_epi32((const int *)V32, _mm256_cvtepu8_epi32(c), 4);
    __m256i b = _mm256_i32gather_epi32((const int *)V32,
                                       _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)), 4);
    /* packs works per 128-bit lane: a0-3 b0-3 | a4-7 b4-7 -> a0-7 b0-7 */
    return _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
}

/* A full block of 16 fixed columns in the factored method's pair layout (factored.c), for
 * r = 1 (V32[code]: the value) or r = 2 (V32[code]: both values, the first in the low
 * half, which is already the pair of positions 2c, 2c + 1): step k = t * cg + c of column j
 * at Wc[k * ld + j]. Every slot is written (the odd slot of an odd run with 0). */
AXS_AVX2 void axs_fpack_avx2(const uint8_t *Wc, ptrdiff_t ld, int64_t cg, int64_t ntap,
                             int64_t L, const int32_t *V32, int r, int16_t *Bp)
{
    for (int64_t t = 0; t < ntap; t++) {
        const uint8_t *f = Wc + t * cg * ld;
        int16_t *d = Bp + t * L * 16;
        if (r == 2) {
            for (int64_t c = 0; c < cg; c++, d += 32) {
                const __m128i codes = _mm_loadu_si128((const __m128i *)(f + c * ld));
                _mm256_storeu_si256((__m256i *)d,
                                    _mm256_i32gather_epi32((const int *)V32,
                                                           _mm256_cvtepu8_epi32(codes), 4));
                _mm256_storeu_si256((__m256i *)(d + 16),
                                    _mm256_i32gather_epi32(
                                        (const int *)V32,
                                        _mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8)), 4));
            }
            continue;
        }
        for (int64_t c = 0; c < cg; c += 2, d += 32) {
            const __m256i v0 = fvals16_avx2(f + c * ld, V32);
            const __m256i v1 = c + 1 < cg ? fvals16_avx2(f + (c + 1) * ld, V32)
                                          : _mm256_setzero_si256();
            /* unpacks interleave within 128-bit lanes: columns 0-3 | 8-11 and 4-7 | 12-15 */
            const __m256i lo = _mm256_unpacklo_epi16(v0, v1), hi = _mm256_unpackhi_epi16(v0, v1);
            _mm256_storeu_si256((__m256i *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    }
}

/* ------------------------------------------------------------ depthwise planes */

/* Per input column: the sum of its filter rows' lanes, shifted into the register (see
 * depthwise.c). NC = 2 channels share a ymm (channel i in 128-bit lane i: vpsrldq shifts
 * within lanes), NC = 1 takes an xmm; KH is a constant in the inlined copies below. */
static inline __attribute__((always_inline)) AXS_AVX2 void
dwplane_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, const int KH, int KW,
             int sw, int64_t OH, int64_t OW, const uint32_t *E, ptrdiff_t es, uint32_t *sums,
             ptrdiff_t os, const int NC)
{
    const int64_t np = (OW - 1) * sw + KW;
    const __m256i lane0 = _mm256_set_epi32(0, 0, 0, 0, 0, 0, 4, 0);
    for (int64_t y = 0; y < OH; y++) {
        const uint8_t *sy = s + y * ys;
        uint32_t *out = sums + y * OW * os;
        __m256i acc = _mm256_setzero_si256();
        int64_t next = KW - 1;
        for (int64_t p = 0; p < np; p++) {
            const uint8_t *q = sy + p;
            __m256i v = _mm256_setzero_si256();
            for (int ky = 0; ky < KH; ky++) {
                const uint32_t *e = E + (size_t)ky * 1024;
                const uint8_t *qk = q + ky * ks;
                __m128i r0 = _mm_load_si128((const __m128i *)(e + ((size_t)qk[0] << 2)));
                __m256i t = NC == 2 ? _mm256_inserti128_si256(_mm256_castsi128_si256(r0),
                                          _mm_load_si128((const __m128i *)(
                                              e + es + ((size_t)qk[cs] << 2))), 1)
                                    : _mm256_castsi128_si256(r0);
                v = _mm256_add_epi32(v, t);
            }
            acc = _mm256_add_epi32(_mm256_srli_si256(acc, 4), v);
            if (p == next) {
                if (NC == 2)
                    _mm_storel_epi64((__m128i *)out, _mm256_castsi256_si128(
                                                        _mm256_permutevar8x32_epi32(acc, lane0)));
                else
                    *out = (uint32_t)_mm256_cvtsi256_si32(acc);
                out += os;
                next += sw;
            }
        }
    }
}

#define AXS_DW_KH(NC)                                                                      \
    switch (KH) {                                                                          \
    case 1: dwplane_avx2(sc, cs, ys, ks, 1, KW, sw, OH, OW, Ec, es, sums + c, os, NC); break; \
    case 3: dwplane_avx2(sc, cs, ys, ks, 3, KW, sw, OH, OW, Ec, es, sums + c, os, NC); break; \
    case 5: dwplane_avx2(sc, cs, ys, ks, 5, KW, sw, OH, OW, Ec, es, sums + c, os, NC); break; \
    default: dwplane_avx2(sc, cs, ys, ks, KH, KW, sw, OH, OW, Ec, es, sums + c, os, NC); break; \
    }

AXS_AVX2 void axs_dwplanes_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks,
                                int KH, int KW, int sw, int64_t OH, int64_t OW, int nc,
                                const uint32_t *E, ptrdiff_t es, uint32_t *sums, ptrdiff_t os)
{
    for (int c = 0; c < nc;) {
        const uint8_t *sc = s + c * cs;
        const uint32_t *Ec = E + c * es;
        if (c + 2 <= nc) {
            AXS_DW_KH(2)
            c += 2;
        } else {
            AXS_DW_KH(1)
            c += 1;
        }
    }
}
#undef AXS_DW_KH

/* Rows of E as 4 uint16 lanes (16-bit-class tables), widened by the load (vpmovzxwd): half
 * the footprint of the uint32 rows above, and each channel in its own xmm chain, so that
 * no lane insert or cross-lane permute is needed. NC channels by NR output rows at a time
 * (2 x 2: four chains in flight; at stride 1 and no dilation the two rows share the codes
 * of their common input rows). In a C driver on Zen 3 (one thread, 32 x 16 x 16 x 64, 3x3,
 * the plane loops alone, median of 9 rounds): NHWC codes with the uint32 rows 4.7 - 4.9
 * GMAC/s, planar codes 6.0 - 6.4, planar with these rows 6.8 - 7.3, and 2 x 2 chains 7.3 -
 * 8.2 (4 x 1: 7.4 - 7.8, 4 x 2: 6.7 - 7.7). */
static inline __attribute__((always_inline)) AXS_AVX2 void
dwrows16_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, const int KH, int KW,
              int sw, int64_t OW, const uint16_t *E, ptrdiff_t es, uint32_t *out,
              ptrdiff_t ro, ptrdiff_t os, ptrdiff_t ocs, const int ADD, const int NC,
              const int NR)
{
    const int64_t np = (OW - 1) * sw + KW;
    __m128i acc[2][2];
    for (int i = 0; i < NC; i++)
        for (int r = 0; r < NR; r++)
            acc[i][r] = _mm_setzero_si128();
    int64_t next = KW - 1;
    for (int64_t p = 0; p < np; p++) {
        for (int i = 0; i < NC; i++) {
            const uint16_t *e = E + i * es;
            for (int r = 0; r < NR; r++) {
                const uint8_t *q = s + i * cs + r * ys + p;
                __m128i v = _mm_cvtepu16_epi32(
                    _mm_loadl_epi64((const __m128i *)(e + ((size_t)q[0] << 2))));
                for (int ky = 1; ky < KH; ky++)
                    v = _mm_add_epi32(v, _mm_cvtepu16_epi32(_mm_loadl_epi64(
                                             (const __m128i *)(e + (size_t)ky * 1024 +
                                                               ((size_t)q[ky * ks] << 2)))));
                acc[i][r] = _mm_add_epi32(_mm_srli_si128(acc[i][r], 4), v);
            }
        }
        if (p == next) {
            for (int r = 0; r < NR; r++)
                for (int i = 0; i < NC; i++) {
                    /* (ADD: a later group of filter columns, see axs_dwplanes16_avx2; a
                     * compile-time switch: a select on a runtime flag read every output
                     * first and ran 3 x 3 layers 0.8 times as fast) */
                    uint32_t v = (uint32_t)_mm_cvtsi128_si32(acc[i][r]);
                    if (ADD)
                        out[r * ro + i * ocs] += v;
                    else
                        out[r * ro + i * ocs] = v;
                }
            out += os;
            next += sw;
        }
    }
}

/* One filter row's E as uint16 rows: e[4 v + j] = c_j[v] for v < 256, j < 4 (the columns
 * of the row's taps, zeros past KW): 16 codes per round, the 4 x 16 entries interleaved by
 * two rounds of unpacks and put in code order by 128-bit lane moves (the portable loop
 * compiles to SSE2 shuffles of half the width; at 7 x 7 pixels by 1024 channels, batch 1,
 * building E was 44% of the call). */
AXS_AVX2 void axs_dwbuild16_avx2(const uint16_t *c0, const uint16_t *c1, const uint16_t *c2,
                                 const uint16_t *c3, uint16_t *e)
{
    for (int v = 0; v < 256; v += 16) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(c0 + v));
        __m256i b = _mm256_loadu_si256((const __m256i *)(c1 + v));
        __m256i c = _mm256_loadu_si256((const __m256i *)(c2 + v));
        __m256i d = _mm256_loadu_si256((const __m256i *)(c3 + v));
        /* per 128-bit lane (codes v..v+7 | v+8..v+15): pairs (a, b) and (c, d) */
        __m256i ab0 = _mm256_unpacklo_epi16(a, b), ab1 = _mm256_unpackhi_epi16(a, b);
        __m256i cd0 = _mm256_unpacklo_epi16(c, d), cd1 = _mm256_unpackhi_epi16(c, d);
        /* rows of 4: codes 0-1 | 8-9, 2-3 | 10-11, 4-5 | 12-13, 6-7 | 14-15 */
        __m256i r0 = _mm256_unpacklo_epi32(ab0, cd0), r1 = _mm256_unpackhi_epi32(ab0, cd0);
        __m256i r2 = _mm256_unpacklo_epi32(ab1, cd1), r3 = _mm256_unpackhi_epi32(ab1, cd1);
        __m256i *o = (__m256i *)(e + 4 * v);
        _mm256_storeu_si256(o, _mm256_permute2x128_si256(r0, r1, 0x20));      /* 0 - 3 */
        _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(r2, r3, 0x20));  /* 4 - 7 */
        _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(r0, r1, 0x31));  /* 8 - 11 */
        _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(r2, r3, 0x31));  /* 12 - 15 */
    }
}

#define AXS_DW16_ROWS(KH_, NC, NR)                                                          \
    do {                                                                                    \
        if (add)                                                                            \
            dwrows16_avx2(sy, cs, ys, ks, KH_, KW, sw, OW, Ec, es, oy, ro, os, ocs, 1, NC, NR); \
        else                                                                                \
            dwrows16_avx2(sy, cs, ys, ks, KH_, KW, sw, OW, Ec, es, oy, ro, os, ocs, 0, NC, NR); \
    } while (0)
#define AXS_DW16_KH(NC, NR)                                                                 \
    switch (KH) {                                                                           \
    case 1: AXS_DW16_ROWS(1, NC, NR); break;                                                \
    case 3: AXS_DW16_ROWS(3, NC, NR); break;                                                \
    case 5: AXS_DW16_ROWS(5, NC, NR); break;                                                \
    default: AXS_DW16_ROWS(KH, NC, NR); break;                                              \
    }

AXS_AVX2 void axs_dwplanes16_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks,
                                  int KH, int KW, int sw, int64_t OH, int64_t OW, int nc,
                                  const uint16_t *E, ptrdiff_t es, uint32_t *sums,
                                  ptrdiff_t os, ptrdiff_t ocs, int add)
{
    const ptrdiff_t ro = (ptrdiff_t)(OW * os);
    for (int c = 0; c < nc;) {
        const uint16_t *Ec = E + c * es;
        int two = c + 2 <= nc;
        for (int64_t y = 0; y < OH;) {
            const uint8_t *sy = s + c * cs + y * ys;
            uint32_t *oy = sums + y * ro + c * ocs;
            if (y + 2 <= OH) {
                if (two) {
                    AXS_DW16_KH(2, 2)
                } else {
                    AXS_DW16_KH(1, 2)
                }
                y += 2;
            } else {
                if (two) {
                    AXS_DW16_KH(2, 1)
                } else {
                    AXS_DW16_KH(1, 1)
                }
                y += 1;
            }
        }
        c += two ? 2 : 1;
    }
}
#undef AXS_DW16_KH
#undef AXS_DW16_ROWS

/* ------------------------------------------------------------ 8 x 8 transposes */

/* The 8 x 8 transpose of the rows r[0..7] stored as the rows of dst (row stride ldd): 24
 * in-lane shuffles and lane swaps. */
static inline __attribute__((always_inline)) AXS_AVX2 void tr8_store(__m256 *r, float *dst,
                                                                    ptrdiff_t ldd)
{
    __m256 t[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        r[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        r[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xee);
        r[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        r[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xee);
    }
    /* 128-bit lane L of r[4k + m]: rows 4k..4k+3 of column 4L + m */
    for (int m = 0; m < 4; m++) {
        _mm256_storeu_ps(dst + m * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
        _mm256_storeu_ps(dst + (4 + m) * ldd, _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
    }
}

/* dst[i * ldd + j] = src[j * ld + i] for i, j < 8: 8 row loads, the transpose, 8 row stores
 * (the NCHW store: 32-byte runs of a column instead of the 16 of 4 x 4 SSE blocks). */
AXS_AVX2 void axs_tr8_avx2(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    __m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps((const float *)(src + i * ld));
    tr8_store(r, (float *)dst, ldd);
}

/* Eight int32 sums x (their correction added) dequantized as axs_dequant_rows does:
 * float64 (plus the float64 correction c where there is one), times the scales s0, s1
 * (columns 0 - 3, 4 - 7), rounded once to float32, plus the float32 bias b where there is
 * one (without a bias nothing is added: -0.0 stays -0.0). */
static inline __attribute__((always_inline)) AXS_AVX2 __m256
dq8_avx2(__m256i x, const __m256d *c, __m256d s0, __m256d s1, const __m256 *b)
{
    __m256d d0 = _mm256_cvtepi32_pd(_mm256_castsi256_si128(x));
    __m256d d1 = _mm256_cvtepi32_pd(_mm256_extracti128_si256(x, 1));
    if (c) {
        d0 = _mm256_add_pd(d0, c[0]);
        d1 = _mm256_add_pd(d1, c[1]);
    }
    const __m256 r = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(d1, s1)),
                                     _mm256_cvtpd_ps(_mm256_mul_pd(d0, s0)));
    return b ? _mm256_add_ps(r, *b) : r;
}

/* The NCHW store of int32 sums without window sums, dequantized and transposed in
 * registers: y[j * P + i] = float32(float64((int32)(v[i * ldv + j] + c32[j])) * scale[j])
 * (+ bias[j] in float32) for i < ms, j < nf, both multiples of 8: the bits of
 * axs_dequant_rows for such sums (a float64 product rounded once; no FMA on this target),
 * each 8 x 8 block stored into 8 planes as it is computed, instead of the tile dequantized
 * in place and then transposed (DRUM depthwise calls 1.02 - 1.05 times as fast, paired). */
AXS_AVX2 void axs_dqplanes8_avx2(const uint32_t *v, ptrdiff_t ldv, int ms, int nf,
                                 const double *scale, const int32_t *c32, const float *bias,
                                 float *y, ptrdiff_t P)
{
    for (int j = 0; j < nf; j += 8) {
        const __m256i k = _mm256_loadu_si256((const __m256i *)(c32 + j));
        const __m256d s0 = _mm256_loadu_pd(scale + j), s1 = _mm256_loadu_pd(scale + j + 4);
        const __m256 b = bias ? _mm256_loadu_ps(bias + j) : _mm256_setzero_ps();
        float *yj = y + (ptrdiff_t)j * P;
        for (int i = 0; i < ms; i += 8) {
            __m256 r[8];
            for (int q = 0; q < 8; q++)
                r[q] = dq8_avx2(
                    _mm256_add_epi32(
                        _mm256_loadu_si256((const __m256i *)(v + (ptrdiff_t)(i + q) * ldv + j)),
                        k),
                    NULL, s0, s1, bias ? &b : NULL);
            tr8_store(r, yj + i, P);
        }
    }
}

/* axs_dequant_rows without window sums for n a multiple of 8 columns (expand.c): each group
 * of 8 columns' terms held in registers while the rows pass, the same bits (the int32 sum
 * with c32, or the float64 sum with corr; the float64 product rounded once; the float32
 * bias added only where there is one). The portable loop reloaded the terms per row and
 * ran its remainder code per row: on rows of 16 columns (the depthwise bands') it took 18%
 * of a depthwise call's samples. Paired (a switch read per call, axconv2d, two threads):
 * the synthetic depthwise layer in NHWC 1.06 (avx512_vbmi) and 1.10 (avx2) times as fast,
 * 16->16 and 32->32 1.005 - 1.009. */
AXS_AVX2 void axs_dequant_rows8_avx2(const uint32_t *v, ptrdiff_t ldv, int rows, int n,
                                     uint32_t vbias, const double *scale, const double *corr,
                                     const int32_t *c32, const float *bias, float *y,
                                     ptrdiff_t ldy)
{
    for (int j = 0; j < n; j += 8) {
        const __m256i k = c32 ? _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(c32 + j)),
                                                 _mm256_set1_epi32((int)vbias))
                              : _mm256_set1_epi32(-(int)vbias);
        const __m256d s0 = _mm256_loadu_pd(scale + j), s1 = _mm256_loadu_pd(scale + j + 4);
        const __m256d cd[2] = {c32 ? _mm256_setzero_pd() : _mm256_loadu_pd(corr + j),
                               c32 ? _mm256_setzero_pd() : _mm256_loadu_pd(corr + j + 4)};
        const __m256 b = bias ? _mm256_loadu_ps(bias + j) : _mm256_setzero_ps();
        for (int i = 0; i < rows; i++) {
            const __m256i x = _mm256_add_epi32(
                _mm256_loadu_si256((const __m256i *)(v + (ptrdiff_t)i * ldv + j)), k);
            _mm256_storeu_ps(y + (ptrdiff_t)i * ldy + j,
                             dq8_avx2(x, c32 ? NULL : cd, s0, s1, bias ? &b : NULL));
        }
    }
}

#else  /* not x86-64 GCC/Clang: never selected (axs_path_supported says no) */
void axs_fvalues_shuf8_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs, int16_t off,
                            const axs_bclass *bc, const int16_t *U, int16_t *d)
{
    (void)tabs, (void)off, (void)bc;
    for (int64_t c = 0; c < n; c++)
        d[c] = U[codes[c]];
}

void axs_fvalues_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                           const int16_t *U, int16_t *d)
{
    (void)codes; (void)n; (void)tabs; (void)U; (void)d;
    abort();  /* never selected off x86-64 */
}

void axs_fpack_avx2(const uint8_t *Wc, ptrdiff_t ld, int64_t cg, int64_t ntap, int64_t L,
                    const int32_t *V32, int r, int16_t *Bp)
{
    (void)Wc; (void)ld; (void)cg; (void)ntap; (void)L; (void)V32; (void)r; (void)Bp;
    abort();  /* never selected off x86-64 */
}

void axs_fvalues2_avx2(const uint8_t *codes, int64_t n, const int32_t *U32, int16_t *d)
{
    (void)codes; (void)n; (void)U32; (void)d;
    abort();  /* never selected off x86-64 */
}

void axs_fvalues2_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                            const axs_fcomp *comp, const int16_t *U, int16_t *d)
{
    (void)codes; (void)n; (void)tabs; (void)comp; (void)U; (void)d;
    abort();  /* never selected off x86-64 */
}

void axs_fkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                    int ntap, int L, const int16_t *Bp, uint32_t *acc, ptrdiff_t lda)
{
    axs_fkern_scalar(S, roff, ms, toff, ntap, L, Bp, acc, lda);
}

void axs_fdwkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                      int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                      ptrdiff_t lda)
{
    axs_fdwkern_scalar(S, roff, ms, toff, ntap, C, c0, Wv, acc, lda);
}

void axs_fpairs_avx2(const int16_t *v, int64_t n, ptrdiff_t s, uint32_t *d)
{
    axs_fpairs_scalar(v, n, s, d);
}

void axs_fdwplane_avx2(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH, int64_t OW,
                       const ptrdiff_t *toff, int ntap, const uint32_t *wp, uint32_t *out)
{
    axs_fdwplane_scalar(P, Wp, sh, OH, OW, toff, ntap, wp, out);
}

void axs_kern16_avx2(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                     ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C)
{
    axs_kern16_scalar(S, soff, ms, F, ldF, nf, K, t, C);
}

void axs_xbuild_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                     uint16_t *R, const uint16_t *mask)
{
    axs_xbuild_scalar(tab16, F, ldF, nf, kb, R, mask);
}

void axs_xkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                    int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                    int last, uint32_t init)
{
    axs_xkern_scalar(S, roff, ms, koff, kb, R, acc, lda, first, last, init);
}

/* R of NB-wide rows, column col(p) at position p */
static void xbuild_portable(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                            int kb, uint16_t *R, int NB)
{
    for (int kk = 0; kk < kb; kk++)
        for (int p = 0; p < NB; p++) {
            int j = NB == AXS_XNB32 ? AXS_XCOL32(p) : AXS_XCOL8(p);
            const uint16_t *src = tab16 + ((size_t)(j < nf ? F[j * ldF + kk] : 0) << 8);
            for (int v = 0; v < 256; v++)
                R[(size_t)kk * AXS_XSTEP(NB) + (size_t)v * NB + p] = src[v];
        }
}

void axs_xbuild8_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                      uint16_t *R, const uint16_t *mask)
{
    (void)mask;
    xbuild_portable(tab16, F, ldF, nf, kb, R, AXS_XNB8);
}

void axs_xbuild32_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                       int kb, uint16_t *R, const uint16_t *mask)
{
    (void)mask;
    xbuild_portable(tab16, F, ldF, nf, kb, R, AXS_XNB32);
}

void axs_rbuild_avx2(const uint8_t *res8d, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                     int rsigned, int32_t rz, uint8_t *R, int16_t *W, const uint16_t *mask)
{
    (void)mask;
    (void)res8d; (void)F; (void)ldF; (void)nf; (void)kb; (void)rsigned; (void)rz; (void)R;
    (void)W;
    abort();  /* never selected off x86-64 */
}

void axs_rkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                    int kb, const uint8_t *R, const int16_t *W, uint32_t *acc, ptrdiff_t lda,
                    const uint32_t *init, int rsigned)
{
    (void)S; (void)roff; (void)ms; (void)koff; (void)kb; (void)R; (void)W; (void)acc;
    (void)lda; (void)init; (void)rsigned;
    abort();  /* never selected off x86-64 */
}

void axs_xkern8_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                     int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                     int last, uint32_t init)
{
    (void)last;
    for (int i = 0; i < ms; i++) {
        uint32_t *a = acc + i * lda;
        for (int j = 0; j < AXS_XNB8; j++)
            if (first)
                a[j] = init;
        for (int kk = 0; kk < kb; kk++) {
            const uint16_t *row =
                R + (size_t)kk * AXS_XSTEP(AXS_XNB8) + (size_t)S[roff[i] + koff[kk]] * AXS_XNB8;
            for (int t = 0; t < 4; t++) {
                a[t] += row[2 * t];
                a[4 + t] += row[2 * t + 1];
            }
        }
    }
}

void axs_dwplanes_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                       int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                       ptrdiff_t es, uint32_t *sums, ptrdiff_t os)
{
    axs_dwplanes_scalar(s, cs, ys, ks, KH, KW, sw, OH, OW, nc, E, es, sums, os);
}

void axs_dwplanes16_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint16_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os, ptrdiff_t ocs, int add)
{
    (void)s; (void)cs; (void)ys; (void)ks; (void)KH; (void)KW; (void)sw; (void)OH; (void)OW;
    (void)nc; (void)E; (void)es; (void)sums; (void)os; (void)ocs; (void)add;
    abort();  /* never selected off x86-64 */
}

void axs_dwbuild16_avx2(const uint16_t *c0, const uint16_t *c1, const uint16_t *c2,
                        const uint16_t *c3, uint16_t *e)
{
    (void)c0; (void)c1; (void)c2; (void)c3; (void)e;
    abort();  /* never selected off x86-64 */
}

void axs_tr8_avx2(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            dst[i * ldd + j] = src[j * ld + i];
}

void axs_dqplanes8_avx2(const uint32_t *v, ptrdiff_t ldv, int ms, int nf,
                        const double *scale, const int32_t *c32, const float *bias,
                        float *y, ptrdiff_t P)
{
    (void)v; (void)ldv; (void)ms; (void)nf; (void)scale; (void)c32; (void)bias; (void)y;
    (void)P;
    abort();  /* never selected off x86-64 */
}

void axs_dequant_rows8_avx2(const uint32_t *v, ptrdiff_t ldv, int rows, int n, uint32_t vbias,
                            const double *scale, const double *corr, const int32_t *c32,
                            const float *bias, float *y, ptrdiff_t ldy)
{
    (void)v; (void)ldv; (void)rows; (void)n; (void)vbias; (void)scale; (void)corr; (void)c32;
    (void)bias; (void)y; (void)ldy;
    abort();  /* never selected off x86-64 */
}
#endif
