/* AVX-512 VBMI micro-kernel: the fixed code's table column lives in eight zmm registers.
 *
 * For a fixed code f the 256 biased uint16 entries tab16[f][0..255] are split into a plane
 * of low bytes and a plane of high bytes, 256 bytes = 4 zmm each.  vpermt2b
 * (_mm512_permutex2var_epi8) looks up 64 streamed codes in 128 bytes using index bits 0..6;
 * a second one covers entries 128..255 and a blend on bit 7 picks the right half.  Each plane
 * is then summed in 16-bit lanes: a lane holds an even row's byte plus 256 times the next
 * odd row's byte, so adding the raw vector and, separately, the odd bytes (shifted down)
 * gives both rows' sums exactly for up to 257 steps (we flush every AXS_FLUSH = 128, which
 * keeps every sum below 2**15 for the signed vpmaddwd of the flush). At a flush the even/odd
 * lanes are put back in row order and combined as low + 256 * high into the uint32 tile C.
 *
 * Compiled with a function-level target so that one build runs everywhere; only called
 * after the CPU reported avx512f, avx512bw and avx512vbmi. */
#include <stdlib.h>
#include <string.h>

#include "axsimd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AXS_512 __attribute__((target("avx512f,avx512bw,avx512vbmi")))

_Static_assert(AXS_FLUSH <= 128, "flush64 combines sums of at most 128 bytes as int16");

/* 64 byte lookups of idx in the 256 bytes P0 .. P3, top the lanes of index bit 7 set and
 * bottom the others: index bit 7 picks the half. Merge-masked vpermi2b keeps the index in
 * the lanes it does not write, so the second lookup (other half, complementary mask) still
 * sees the index there and no separate blend is needed. */
static inline AXS_512 __attribute__((always_inline)) __m512i
lookup256(__m512i idx, __mmask64 top, __mmask64 bottom, __m512i P0, __m512i P1, __m512i P2,
          __m512i P3)
{
    return _mm512_mask2_permutex2var_epi8(P0, _mm512_mask2_permutex2var_epi8(P2, idx, top, P3),
                                          bottom, P1);
}

/* The low and high byte planes' lookups of a 16-bit entry. */
static inline AXS_512 __attribute__((always_inline)) void
lookup2(__m512i idx, __m512i P0, __m512i P1, __m512i P2, __m512i P3, __m512i Q0, __m512i Q1,
        __m512i Q2, __m512i Q3, __m512i *lo, __m512i *hi)
{
    __mmask64 top = _mm512_movepi8_mask(idx);
    __mmask64 bottom = _knot_mask64(top);
    *lo = lookup256(idx, top, bottom, P0, P1, P2, P3);
    *hi = lookup256(idx, top, bottom, Q0, Q1, Q2, Q3);
}

/* The 16-bit partial sums of 64 rows (raw and odd-byte accumulators of both planes) as
 * uint32 into the tile c[0..63]: added to it, or stored over it at a block's first flush
 * (no zeroed tile to read back). */
static inline AXS_512 __attribute__((always_inline)) void
flush64(__m512i rl, __m512i ol, __m512i rh, __m512i oh, uint32_t *c, int add)
{
    /* u16 lane t of the even sums holds row 2t, lane t of the odd sums row 2t + 1. The
     * indices gather rows 0..31 (32..63) of a plane in the order that the in-lane unpacks
     * below need: unpacklo pairs up rows 0..15 (32..47) with their high plane's sums,
     * unpackhi rows 16..31 (48..63); vpmaddwd then adds low + 256 * high into each row's
     * 32-bit lane (every 16-bit sum is below 2**15: at most 128 steps of bytes). */
    const __m512i first = _mm512_set_epi16(47, 15, 46, 14, 39, 7, 38, 6, 45, 13, 44, 12, 37,
                                           5, 36, 4, 43, 11, 42, 10, 35, 3, 34, 2, 41, 9, 40,
                                           8, 33, 1, 32, 0);
    const __m512i second = _mm512_add_epi16(first, _mm512_set1_epi16(16));
    const __m512i weights = _mm512_set1_epi32(1 | 256 << 16);
    __m512i el = _mm512_sub_epi16(rl, _mm512_slli_epi16(ol, 8));
    __m512i eh = _mm512_sub_epi16(rh, _mm512_slli_epi16(oh, 8));
    __m512i l0 = _mm512_permutex2var_epi16(el, first, ol);  /* rows 0..31 */
    __m512i l1 = _mm512_permutex2var_epi16(el, second, ol); /* rows 32..63 */
    __m512i h0 = _mm512_permutex2var_epi16(eh, first, oh);
    __m512i h1 = _mm512_permutex2var_epi16(eh, second, oh);
    __m512i v[4] = {_mm512_madd_epi16(_mm512_unpacklo_epi16(l0, h0), weights),
                    _mm512_madd_epi16(_mm512_unpackhi_epi16(l0, h0), weights),
                    _mm512_madd_epi16(_mm512_unpacklo_epi16(l1, h1), weights),
                    _mm512_madd_epi16(_mm512_unpackhi_epi16(l1, h1), weights)};
    for (int q = 0; q < 4; q++) {
        if (add)
            v[q] = _mm512_add_epi32(_mm512_loadu_si512((const void *)(c + 16 * q)), v[q]);
        _mm512_storeu_si512((void *)(c + 16 * q), v[q]);
    }
}

/* NB blocks of 64 streamed rows per fixed code; NB is a compile-time constant in each
 * instantiation so that all accumulators stay in registers (4 * NB + 8 table registers). */
static inline AXS_512 __attribute__((always_inline)) void
kern_nb(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F, ptrdiff_t ldF, int nf,
        int K, const uint8_t *planes, uint32_t *C, const int NB, const int EDGE,
        const uint64_t *km, __m512i padv)
{
    __mmask64 lm[4];
    for (int b = 0; b < 4; b++) {
        int r = ms - 64 * b;
        lm[b] = r >= 64 ? ~(__mmask64)0 : (r <= 0 ? (__mmask64)0 : (((__mmask64)1 << r) - 1));
    }
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF;
        uint32_t *c = C + (ptrdiff_t)j * AXS_MB;
        if (K <= 0)   /* no flush to store the (empty) sums */
            for (int b = 0; b < NB; b++)
                for (int q = 0; q < 4; q++)
                    _mm512_storeu_si512((void *)(c + 64 * b + 16 * q), _mm512_setzero_si512());
        for (int k0 = 0; k0 < K; k0 += AXS_FLUSH) {
            int k1 = K - k0 < AXS_FLUSH ? K : k0 + AXS_FLUSH;
            __m512i rl[4], ol[4], rh[4], oh[4];
            for (int b = 0; b < NB; b++)
                rl[b] = ol[b] = rh[b] = oh[b] = _mm512_setzero_si512();
            for (int k = k0; k < k1; k++) {
                const uint8_t *s = S + soff[k];
                const __m512i *p = (const __m512i *)(planes + ((size_t)f[k] << 9));
                const uint64_t *kmk = EDGE ? km + 4 * k : NULL;
                __m512i P0 = _mm512_load_si512(p), P1 = _mm512_load_si512(p + 1);
                __m512i P2 = _mm512_load_si512(p + 2), P3 = _mm512_load_si512(p + 3);
                __m512i Q0 = _mm512_load_si512(p + 4), Q1 = _mm512_load_si512(p + 5);
                __m512i Q2 = _mm512_load_si512(p + 6), Q3 = _mm512_load_si512(p + 7);
#pragma GCC unroll 4
                for (int b = 0; b < NB; b++) {
                    /* km (the depthwise method's rows without padding columns): per step
                     * and block the lanes to load, the others hold the pad code */
                    __m512i idx = EDGE ? _mm512_mask_loadu_epi8(padv, (__mmask64)kmk[b],
                                                                s + 64 * b)
                                       : _mm512_maskz_loadu_epi8(lm[b], s + 64 * b);
                    __m512i lo, hi;
                    lookup2(idx, P0, P1, P2, P3, Q0, Q1, Q2, Q3, &lo, &hi);
                    rl[b] = _mm512_add_epi16(rl[b], lo);
                    ol[b] = _mm512_add_epi16(ol[b], _mm512_srli_epi16(lo, 8));
                    rh[b] = _mm512_add_epi16(rh[b], hi);
                    oh[b] = _mm512_add_epi16(oh[b], _mm512_srli_epi16(hi, 8));
                }
            }
            for (int b = 0; b < NB; b++)
                flush64(rl[b], ol[b], rh[b], oh[b], c + 64 * b, k0 > 0);
        }
    }
}

/* kern_nb's instantiations, one per NB: kern_nbN for any fixed codes, kern_eN for one
 * fixed code per step with each step's lanes masked by km (see axsimd.h) */
#define AXS_KERN_NB(N)                                                                        \
    static AXS_512 void kern_nb##N(const uint8_t *S, const ptrdiff_t *soff, int ms,          \
                                   const uint8_t *F, ptrdiff_t ldF, int nf, int K,           \
                                   const uint8_t *pl, uint32_t *C)                           \
    { kern_nb(S, soff, ms, F, ldF, nf, K, pl, C, N, 0, NULL, _mm512_setzero_si512()); }      \
    static AXS_512 void kern_e##N(const uint8_t *S, const ptrdiff_t *soff, int ms,           \
                                  const uint8_t *F, int K, const uint8_t *pl, uint32_t *C,   \
                                  const uint64_t *km, __m512i p)                             \
    { kern_nb(S, soff, ms, F, K, 1, K, pl, C, N, 1, km, p); }
AXS_KERN_NB(1)
AXS_KERN_NB(2)
AXS_KERN_NB(3)
AXS_KERN_NB(4)
#undef AXS_KERN_NB

AXS_512 void axs_kern16e_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                                int K, const axs_fixed_table *t, uint32_t *C, const uint64_t *km,
                                int pad_code)
{
    const __m512i p = _mm512_set1_epi8((char)pad_code);
    switch ((ms + 63) / 64) {
    case 0: return;
    case 1: kern_e1(S, soff, ms, F, K, t->planes, C, km, p); return;
    case 2: kern_e2(S, soff, ms, F, K, t->planes, C, km, p); return;
    case 3: kern_e3(S, soff, ms, F, K, t->planes, C, km, p); return;
    default: kern_e4(S, soff, ms, F, K, t->planes, C, km, p); return;
    }
}

AXS_512 void axs_kern16_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                               ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t,
                               uint32_t *C)
{
    if (t->res8d && nf >= AXS_R8MINF) {
        axs_kern8r_avx512(S, soff, ms, F, ldF, nf, K, t, C);
        return;
    }
    switch ((ms + 63) / 64) {
    case 0: return;
    case 1: kern_nb1(S, soff, ms, F, ldF, nf, K, t->planes, C); return;
    case 2: kern_nb2(S, soff, ms, F, ldF, nf, K, t->planes, C); return;
    case 3: kern_nb3(S, soff, ms, F, ldF, nf, K, t->planes, C); return;
    default: kern_nb4(S, soff, ms, F, ldF, nf, K, t->planes, C); return;
    }
}

/* ------------------------------------------------------------ depthwise planes */

/* Four channels at once (depthwise.c): channel i's 128-bit E rows fill 128-bit lane i of a
 * zmm, so one byte shift within lanes (vpsrldq) slides the tap rows of all four and their
 * sums of an output leave as one 16-byte store into the pixel-major staging buffer. The
 * loads stay one per channel and filter row; the adds, the shift and the dependency through
 * acc are shared by four channels. */
static inline AXS_512 __attribute__((always_inline)) void
dwplane4(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, const int KH, int KW,
         int sw, int64_t OH, int64_t OW, const uint32_t *E, ptrdiff_t es, uint32_t *sums,
         ptrdiff_t os)
{
    const int64_t np = (OW - 1) * sw + KW;
    const __m512i lane0 = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    for (int64_t y = 0; y < OH; y++) {
        const uint8_t *sy = s + y * ys;
        uint32_t *out = sums + y * OW * os;
        __m512i acc = _mm512_setzero_si512();
        int64_t next = KW - 1;
        for (int64_t p = 0; p < np; p++) {
            const uint8_t *q = sy + p;
            __m512i v = _mm512_setzero_si512();
            for (int ky = 0; ky < KH; ky++) {
                const uint8_t *qk = q + ky * ks;
                const uint32_t *e = E + (size_t)ky * 1024;
#define ROW(i) _mm_load_si128((const __m128i *)(e + (i) * es + ((size_t)qk[(i) * cs] << 2)))
                __m512i t = _mm512_castsi128_si512(ROW(0));
                t = _mm512_inserti32x4(t, ROW(1), 1);
                t = _mm512_inserti32x4(t, ROW(2), 2);
                t = _mm512_inserti32x4(t, ROW(3), 3);
#undef ROW
                v = _mm512_add_epi32(v, t);
            }
            acc = _mm512_add_epi32(_mm512_bsrli_epi128(acc, 4), v);
            if (p == next) {
                _mm_storeu_si128((__m128i *)out,
                                 _mm512_castsi512_si128(_mm512_permutexvar_epi32(lane0, acc)));
                out += os;
                next += sw;
            }
        }
    }
}

AXS_512 void axs_dwplanes_avx512(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks,
                                 int KH, int KW, int sw, int64_t OH, int64_t OW, int nc,
                                 const uint32_t *E, ptrdiff_t es, uint32_t *sums, ptrdiff_t os)
{
    int c = 0;
    for (; c + 4 <= nc; c += 4) {
        const uint8_t *sc = s + c * cs;
        const uint32_t *Ec = E + c * es;
        switch (KH) {
        case 1: dwplane4(sc, cs, ys, ks, 1, KW, sw, OH, OW, Ec, es, sums + c, os); break;
        case 3: dwplane4(sc, cs, ys, ks, 3, KW, sw, OH, OW, Ec, es, sums + c, os); break;
        case 5: dwplane4(sc, cs, ys, ks, 5, KW, sw, OH, OW, Ec, es, sums + c, os); break;
        default: dwplane4(sc, cs, ys, ks, KH, KW, sw, OH, OW, Ec, es, sums + c, os); break;
        }
    }
    if (c < nc)  /* the AVX-512 path's CPUs all run AVX2 */
        axs_dwplanes_avx2(s + c * cs, cs, ys, ks, KH, KW, sw, OH, OW, nc - c, E + c * es, es,
                          sums + c, os);
}

/* 16 x 16 uint32 transpose in registers: pairs of rows interleaved by 32 and 64 bits, then
 * 128-bit lanes gathered across the four groups of four rows. Row i of t: column i of r. */
static inline AXS_512 __attribute__((always_inline)) void tr16(__m512i r[16], __m512i t[16])
{
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        r[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        r[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        r[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        r[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    /* 128-bit lane L of r[4k + m]: rows 4k..4k+3 of column 4L + m */
    for (int m = 0; m < 4; m++) {
        __m512i a = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88);  /* lanes 0, 2 */
        __m512i b = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xdd);  /* lanes 1, 3 */
        __m512i c = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88);
        __m512i d = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xdd);
        t[m] = _mm512_shuffle_i32x4(a, c, 0x88);
        t[8 + m] = _mm512_shuffle_i32x4(a, c, 0xdd);
        t[4 + m] = _mm512_shuffle_i32x4(b, d, 0x88);
        t[12 + m] = _mm512_shuffle_i32x4(b, d, 0xdd);
    }
}

AXS_512 void axs_tr16_avx512(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    __m512i r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_si512((const void *)(src + i * ld));
    tr16(r, t);
    for (int i = 0; i < 16; i++)
        _mm512_storeu_si512((void *)(dst + i * ldd), t[i]);
}

/* Sixteen int32 sums x (their correction added) dequantized as axs_dequant_rows does: float64
 * (plus the float64 correction c[0 .. 2) where there is one), times the scales s[0 .. 2)
 * (columns 0 - 7, 8 - 15), rounded once to float32, plus the float32 bias b where there is
 * one. The zmm conversions: 1.1 - 1.3 times the ymm ones' rate on Zen 4 (a C driver, one
 * thread, rows of 16 in L1), where they bound the store. */
static inline AXS_512 __attribute__((always_inline)) __m512
dq16(__m512i x, const __m512d *c, const __m512d *s, const __m512 *b)
{
    __m512d d0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(x));
    __m512d d1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(x, 1));
    if (c) {
        d0 = _mm512_add_pd(d0, c[0]);
        d1 = _mm512_add_pd(d1, c[1]);
    }
    const __m256 f0 = _mm512_cvtpd_ps(_mm512_mul_pd(d0, s[0]));
    const __m256 f1 = _mm512_cvtpd_ps(_mm512_mul_pd(d1, s[1]));
    const __m512 r = _mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castps_pd(_mm512_castps256_ps512(f0)), _mm256_castps_pd(f1), 1));
    return b ? _mm512_add_ps(r, *b) : r;
}

/* The nr x nc block at src (nr, nc <= 16) transposed and dequantized, MASKED a compile-time
 * switch: the full block's loads and stores, or masked ones that read no column and write no
 * channel past the block (the rows' last columns and the layer's last channels). */
static inline AXS_512 __attribute__((always_inline)) void
dqtr16(const uint32_t *src, ptrdiff_t ld, int nr, int nc, uint32_t vbias, const double *scale,
       const double *corr, const int32_t *c32, const float *bias, float *y, ptrdiff_t ldy,
       const int MASKED)
{
    const __mmask16 rm = MASKED ? (__mmask16)((1u << nr) - 1) : (__mmask16)0xffff;
    const __mmask16 cm = MASKED ? (__mmask16)((1u << nc) - 1) : (__mmask16)0xffff;
    __m512i r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = !MASKED ? _mm512_loadu_si512((const void *)(src + i * ld))
               : i < nr ? _mm512_maskz_loadu_epi32(cm, src + i * ld)
                        : _mm512_setzero_si512();
    tr16(r, t);
    const __m512i k = c32 ? _mm512_sub_epi32(_mm512_maskz_loadu_epi32(rm, c32),
                                             _mm512_set1_epi32((int)vbias))
                          : _mm512_set1_epi32(-(int)vbias);
    const __mmask8 rm0 = (__mmask8)rm, rm1 = (__mmask8)(rm >> 8);
    const __m512d s[2] = {_mm512_maskz_loadu_pd(rm0, scale),
                          _mm512_maskz_loadu_pd(rm1, scale + 8)};
    const __m512d cd[2] = {c32 ? _mm512_setzero_pd() : _mm512_maskz_loadu_pd(rm0, corr),
                           c32 ? _mm512_setzero_pd() : _mm512_maskz_loadu_pd(rm1, corr + 8)};
    const __m512 b = bias ? _mm512_maskz_loadu_ps(rm, bias) : _mm512_setzero_ps();
    for (int i = 0; i < (MASKED ? nc : 16); i++) {
        const __m512 v = dq16(_mm512_add_epi32(t[i], k), c32 ? NULL : cd, s, bias ? &b : NULL);
        if (MASKED)
            _mm512_mask_storeu_ps(y + i * ldy, rm, v);
        else
            _mm512_storeu_ps(y + i * ldy, v);
    }
}

AXS_512 void axs_dqtr16_avx512(const uint32_t *src, ptrdiff_t ld, int nr, int nc, uint32_t vbias,
                               const double *scale, const double *corr, const int32_t *c32,
                               const float *bias, float *y, ptrdiff_t ldy)
{
    if (nr == 16 && nc == 16)
        dqtr16(src, ld, 16, 16, vbias, scale, corr, c32, bias, y, ldy, 0);
    else
        dqtr16(src, ld, nr, nc, vbias, scale, corr, c32, bias, y, ldy, 1);
}

/* axs_dequant_run over rows of n sums at stride ldv into rows of n floats at stride ldy,
 * 16 sums a zmm, each row's last ones masked (the depthwise NCHW store, rows of a band: on
 * 14 x 14 images the compiled loop left 6 of a row's 14 sums to its scalar tail). */
AXS_512 void axs_dqrows_avx512(const uint32_t *v, ptrdiff_t ldv, int64_t rows, int64_t n,
                               uint32_t kbias, double scale, double corr, const int32_t *c32,
                               const float *bias, float *y, ptrdiff_t ldy)
{
    const __m512i k = _mm512_set1_epi32(-(int)(c32 ? kbias - (uint32_t)*c32 : kbias));
    const __m512d s[2] = {_mm512_set1_pd(scale), _mm512_set1_pd(scale)};
    const __m512d cd[2] = {_mm512_set1_pd(corr), _mm512_set1_pd(corr)};
    const __m512 b = _mm512_set1_ps(bias ? *bias : 0.0f);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff
                                            : (__mmask16)((1u << (n - i)) - 1);
            const __m512i x = _mm512_maskz_loadu_epi32(m, v + r * ldv + i);
            _mm512_mask_storeu_ps(y + r * ldy + i, m,
                                  dq16(_mm512_add_epi32(x, k), c32 ? NULL : cd, s,
                                       bias ? &b : NULL));
        }
}

/* ------------------------------------------------------------ factor values */

/* 64 codes' bytes from two 256-byte planes (lookup2's split on index bit 7), then the bytes
 * interleaved into int16 in order (unpacks work per 128-bit lane: a holds codes 0-7, 16-23,
 * 32-39, 48-55 of the 64 and b the others). r = 2 interleaves the two values' int16 the same
 * way, into pairs. */
AXS_512 void axs_fvalues_vbmi(const uint8_t *codes, int64_t n, int r, const uint8_t *planes,
                              const int16_t *U, int16_t *d)
{
#define AXS_PL(i) _mm512_loadu_si512((const void *)(planes + 64 * (i)))
    const __m512i P0 = AXS_PL(0), P1 = AXS_PL(1), P2 = AXS_PL(2), P3 = AXS_PL(3);
    const __m512i Q0 = AXS_PL(4), Q1 = AXS_PL(5), Q2 = AXS_PL(6), Q3 = AXS_PL(7);
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    int64_t c = 0;
    if (r == 1) {
        for (; c + 64 <= n; c += 64) {
            __m512i lo, hi;
            lookup2(_mm512_loadu_si512((const void *)(codes + c)), P0, P1, P2, P3, Q0, Q1, Q2,
                    Q3, &lo, &hi);
            __m512i a = _mm512_unpacklo_epi8(lo, hi), b = _mm512_unpackhi_epi8(lo, hi);
            _mm512_storeu_si512((void *)(d + c), _mm512_permutex2var_epi64(a, first, b));
            _mm512_storeu_si512((void *)(d + c + 32), _mm512_permutex2var_epi64(a, second, b));
        }
        for (; c < n; c++)
            d[c] = U[codes[c]];
        return;
    }
    const __m512i R0 = AXS_PL(8), R1 = AXS_PL(9), R2 = AXS_PL(10), R3 = AXS_PL(11);
    const __m512i S0 = AXS_PL(12), S1 = AXS_PL(13), S2 = AXS_PL(14), S3 = AXS_PL(15);
#undef AXS_PL
    for (; c + 64 <= n; c += 64) {
        __m512i x = _mm512_loadu_si512((const void *)(codes + c)), lo, hi, lo2, hi2;
        lookup2(x, P0, P1, P2, P3, Q0, Q1, Q2, Q3, &lo, &hi);
        lookup2(x, R0, R1, R2, R3, S0, S1, S2, S3, &lo2, &hi2);
        /* first values u and second values v of the 64 codes, as int16 in lane order */
        __m512i ua = _mm512_unpacklo_epi8(lo, hi), ub = _mm512_unpackhi_epi8(lo, hi);
        __m512i va = _mm512_unpacklo_epi8(lo2, hi2), vb = _mm512_unpackhi_epi8(lo2, hi2);
        /* (u, v) pairs: codes 0-3, 16-19, 32-35, 48-51 | 4-7, ... | 8-11, ... | 12-15, ... */
        __m512i p0 = _mm512_unpacklo_epi16(ua, va), p1 = _mm512_unpackhi_epi16(ua, va);
        __m512i p2 = _mm512_unpacklo_epi16(ub, vb), p3 = _mm512_unpackhi_epi16(ub, vb);
        /* 128-bit lane L of p_j holds codes 16 L + 4 j .. + 3: gather lanes in code order */
        __m512i e0 = _mm512_shuffle_i64x2(p0, p1, 0x44), e1 = _mm512_shuffle_i64x2(p2, p3, 0x44);
        __m512i e2 = _mm512_shuffle_i64x2(p0, p1, 0xee), e3 = _mm512_shuffle_i64x2(p2, p3, 0xee);
        /* e0: p0.L0 p0.L1 p1.L0 p1.L1; want codes 0-15 = p0.L0 p1.L0 p2.L0 p3.L0 */
        _mm512_storeu_si512((void *)(d + 2 * c),
                            _mm512_shuffle_i64x2(e0, e1, 0x88));        /* L0 of p0 p1 p2 p3 */
        _mm512_storeu_si512((void *)(d + 2 * c + 32),
                            _mm512_shuffle_i64x2(e0, e1, 0xdd));        /* L1 */
        _mm512_storeu_si512((void *)(d + 2 * c + 64),
                            _mm512_shuffle_i64x2(e2, e3, 0x88));        /* L2 */
        _mm512_storeu_si512((void *)(d + 2 * c + 96),
                            _mm512_shuffle_i64x2(e2, e3, 0xdd));        /* L3 */
    }
    for (; c < n; c++) {
        d[2 * c] = U[2 * codes[c]];
        d[2 * c + 1] = U[2 * codes[c] + 1];
    }
}

/* ------------------------------------------------------------ factored depthwise filters */

/* fdwblock_avx2 on zmm: 16 channels per vector, one vpmaddwd per tap and 16 channels; 4
 * pixels at a time, the taps' weights in registers for 3 x 3 filters (9 taps of r = 2, or
 * 6 of r = 1 with its columns paired). */
static inline __attribute__((always_inline)) AXS_512 void
fdwblock16(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff, int ntap,
           const int16_t *wv, ptrdiff_t wstep, uint32_t *acc, ptrdiff_t lda, const int NT)
{
    const int nt = NT ? NT : ntap;
#define AXS_FDW_W(t) _mm512_loadu_si512((const void *)(wv + (t) * wstep))
#define AXS_FDW_X(p) _mm512_loadu_si512((const void *)(p))
    __m512i w[9];
    if (NT)
        for (int t = 0; t < NT; t++)
            w[t] = AXS_FDW_W(t);
    int i = 0;
    for (; i + 4 <= ms; i += 4) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < nt; t++) {
            const __m512i wt = NT ? w[t] : AXS_FDW_W(t);
            const int16_t *x = S + toff[t];
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(AXS_FDW_X(x + roff[i]), wt));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(AXS_FDW_X(x + roff[i + 1]), wt));
            a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(AXS_FDW_X(x + roff[i + 2]), wt));
            a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(AXS_FDW_X(x + roff[i + 3]), wt));
            __asm__("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3));
        }
        _mm512_storeu_si512((void *)(acc + i * lda), a0);
        _mm512_storeu_si512((void *)(acc + (i + 1) * lda), a1);
        _mm512_storeu_si512((void *)(acc + (i + 2) * lda), a2);
        _mm512_storeu_si512((void *)(acc + (i + 3) * lda), a3);
    }
    for (; i < ms; i++) {
        __m512i a0 = _mm512_setzero_si512();
        for (int t = 0; t < nt; t++)
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(AXS_FDW_X(S + toff[t] + roff[i]),
                                                        NT ? w[t] : AXS_FDW_W(t)));
        _mm512_storeu_si512((void *)(acc + i * lda), a0);
    }
#undef AXS_FDW_W
#undef AXS_FDW_X
}

/* fdwblock16 for taps in 3 filter rows of KWT, D pixels apart (axs_fdw_rowstep), at stride
 * 1: 4 outputs of a row read pixels 0 .. 3 + (KWT - 1) D of each filter row, every one loaded
 * once and multiplied by the taps that meet it (6 loads for 12 or 8 vpmaddwd instead of one
 * load each). Groups of 4 that are not ps apart (a row's end) take one output at a time. The
 * conv2d call of `axkern bench`'s depthwise layer (DRUM) ran 1.06 times as fast; groups of 8
 * (10 loads for 24 vpmaddwd) 0.82 times, and the scheme on ymm for kern_avx2.c 0.93
 * (docs/performance.md). */
static inline __attribute__((always_inline)) AXS_512 void
fdwrows16(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
          const int16_t *wv, ptrdiff_t wstep, ptrdiff_t ps, uint32_t *acc, ptrdiff_t lda,
          const int KWT, const int D)
{
    enum { G = 4 };
    __m512i w[3 * KWT];
    for (int t = 0; t < 3 * KWT; t++)
        w[t] = _mm512_loadu_si512((const void *)(wv + t * wstep));
    int i = 0;
    while (i < ms) {
        int run = i + G <= ms;
        for (int j = 1; run && j < G; j++)
            run = roff[i + j] - roff[i + j - 1] == ps;
        if (run) {
            __m512i a[G];
            for (int j = 0; j < G; j++)
                a[j] = _mm512_setzero_si512();
            for (int ky = 0; ky < 3; ky++) {
                const int16_t *x = S + roff[i] + toff[ky * KWT];
                for (int m = 0; m < G + (KWT - 1) * D; m++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(x + m * ps));
                    for (int kx = 0; kx < KWT; kx++) {
                        const int j = m - kx * D;
                        if (j >= 0 && j < G)
                            a[j] = _mm512_add_epi32(a[j],
                                                    _mm512_madd_epi16(v, w[ky * KWT + kx]));
                    }
                }
                for (int j = 0; j < G; j++)   /* no add trees */
                    __asm__("" : "+v"(a[j]));
            }
            for (int j = 0; j < G; j++)
                _mm512_storeu_si512((void *)(acc + (i + j) * lda), a[j]);
            i += G;
            continue;
        }
        __m512i a0 = _mm512_setzero_si512();
        for (int t = 0; t < 3 * KWT; t++)
            a0 = _mm512_add_epi32(
                a0, _mm512_madd_epi16(_mm512_loadu_si512((const void *)(S + toff[t] + roff[i])),
                                      w[t]));
        _mm512_storeu_si512((void *)(acc + i * lda), a0);
        i++;
    }
}

AXS_512 void axs_fdwkern_avx512(const int16_t *S, const ptrdiff_t *roff, int ms,
                                const ptrdiff_t *toff, int ntap, int64_t C, int64_t c0,
                                const int16_t *Wv, uint32_t *acc, ptrdiff_t lda)
{
    const ptrdiff_t ws = (ptrdiff_t)(2 * C);
    const int d = axs_fdw_rowstep(toff, ntap, ws);
    for (; c0 + 16 <= C; c0 += 16) {
        const int16_t *Sc = S + 2 * c0, *wv = Wv + 2 * c0;
        if (d) {
            if (ntap == 9 && d == 1)
                fdwrows16(Sc, roff, ms, toff, wv, ws, ws, acc + c0, lda, 3, 1);
            else if (ntap == 9)
                fdwrows16(Sc, roff, ms, toff, wv, ws, ws, acc + c0, lda, 3, 2);
            else if (d == 1)
                fdwrows16(Sc, roff, ms, toff, wv, ws, ws, acc + c0, lda, 2, 1);
            else
                fdwrows16(Sc, roff, ms, toff, wv, ws, ws, acc + c0, lda, 2, 2);
            continue;
        }
        switch (ntap) {
        case 6: fdwblock16(Sc, roff, ms, toff, 6, wv, ws, acc + c0, lda, 6); break;
        case 9: fdwblock16(Sc, roff, ms, toff, 9, wv, ws, acc + c0, lda, 9); break;
        default: fdwblock16(Sc, roff, ms, toff, ntap, wv, ws, acc + c0, lda, 0); break;
        }
    }
    if (c0 < C)   /* the last channels: 8 at a time, then one by one */
        axs_fdwkern_avx2(S, roff, ms, toff, ntap, C, c0, Wv, acc, lda);
}

/* ------------------------------------------------------------ expanded tables, 32 wide */

/* The AVX2 kernel's scheme (kern_avx2.c, xrows_avx2) on 32 columns: a 32-bit lane of a zmm
 * row holds the entries of columns t (low half) and 16 + t (high half); the whole lane goes
 * to the raw sum and its high half to the high sum, and low = raw - (high << 16) at the last
 * block. A load, an add, a shift and an add per 32 entries: half the instructions per
 * multiply-accumulate of 16-wide rows. ROWS rows at a time keep 2 * ROWS sums among the 32
 * zmm registers. */
#ifndef AXS_X32ROWS
#define AXS_X32ROWS 12
#endif
static inline __attribute__((always_inline)) AXS_512 void
xrows32(const uint8_t *S, const ptrdiff_t *roff, const ptrdiff_t *koff, int kb,
        const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init,
        const int ROWS)
{
    __m512i raw[AXS_X32ROWS], high[AXS_X32ROWS];
    const uint8_t *p[AXS_X32ROWS];
    for (int r = 0; r < ROWS; r++) {
        p[r] = S + roff[r];
        uint32_t *a = acc + r * lda;
        raw[r] = first ? _mm512_set1_epi32((int)(init + (init << 16)))
                       : _mm512_loadu_si512((const void *)a);
        high[r] = first ? _mm512_set1_epi32((int)init) : _mm512_loadu_si512((const void *)(a + 16));
    }
    const char *Rk = (const char *)R;
    for (int kk = 0; kk < kb; kk++, Rk += 2 * AXS_XSTEP(AXS_XNB32)) {
        const ptrdiff_t o = koff[kk];
        for (int r = 0; r < ROWS; r++) {
            __m512i x = _mm512_load_si512((const void *)(Rk + ((size_t)p[r][o] << 6)));
            raw[r] = _mm512_add_epi32(raw[r], x);
            high[r] = _mm512_add_epi32(high[r], _mm512_srli_epi32(x, 16));
        }
    }
    for (int r = 0; r < ROWS; r++) {
        uint32_t *a = acc + r * lda;
        __m512i lo = last ? _mm512_sub_epi32(raw[r], _mm512_slli_epi32(high[r], 16)) : raw[r];
        _mm512_storeu_si512((void *)a, lo);
        _mm512_storeu_si512((void *)(a + 16), high[r]);
    }
}

/* One row over a block of consecutive codes p[0 .. kb), even and odd steps in two pairs of
 * sums (as xcrow_avx2). */
static inline __attribute__((always_inline)) AXS_512 void
xcrow32(const uint8_t *p, const int kb, const uint16_t *R, uint32_t *a, int first, int last,
        uint32_t init)
{
    const ptrdiff_t step = 2 * AXS_XSTEP(AXS_XNB32);
    __m512i raw0 = first ? _mm512_set1_epi32((int)(init + (init << 16)))
                         : _mm512_loadu_si512((const void *)a);
    __m512i high0 = first ? _mm512_set1_epi32((int)init)
                          : _mm512_loadu_si512((const void *)(a + 16));
    __m512i raw1 = _mm512_setzero_si512(), high1 = _mm512_setzero_si512();
    const char *Rk = (const char *)R;
    int kk = 0;
    for (; kk + 2 <= kb; kk += 2, Rk += 2 * step) {
        __m512i x = _mm512_load_si512((const void *)(Rk + ((size_t)p[kk] << 6)));
        __m512i y = _mm512_load_si512((const void *)(Rk + step + ((size_t)p[kk + 1] << 6)));
        raw0 = _mm512_add_epi32(raw0, x);
        high0 = _mm512_add_epi32(high0, _mm512_srli_epi32(x, 16));
        raw1 = _mm512_add_epi32(raw1, y);
        high1 = _mm512_add_epi32(high1, _mm512_srli_epi32(y, 16));
        __asm__("" : "+v"(raw0), "+v"(high0), "+v"(raw1), "+v"(high1));
    }
    if (kk < kb) {
        __m512i x = _mm512_load_si512((const void *)(Rk + ((size_t)p[kk] << 6)));
        raw0 = _mm512_add_epi32(raw0, x);
        high0 = _mm512_add_epi32(high0, _mm512_srli_epi32(x, 16));
    }
    raw0 = _mm512_add_epi32(raw0, raw1);
    high0 = _mm512_add_epi32(high0, high1);
    __m512i lo = last ? _mm512_sub_epi32(raw0, _mm512_slli_epi32(high0, 16)) : raw0;
    _mm512_storeu_si512((void *)a, lo);
    _mm512_storeu_si512((void *)(a + 16), high0);
}

static __attribute__((noinline)) AXS_512 void
xcrows32(const uint8_t *S0, const ptrdiff_t *roff, int ms, int kb, const uint16_t *R,
         uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init)
{
    if (kb == AXS_XSTEPW32 / AXS_XNB32)   /* whole blocks: unrolled */
        for (int i = 0; i < ms; i++)
            xcrow32(S0 + roff[i], AXS_XSTEPW32 / AXS_XNB32, R, acc + i * lda, first, last, init);
    else
        for (int i = 0; i < ms; i++)
            xcrow32(S0 + roff[i], kb, R, acc + i * lda, first, last, init);
}

static __attribute__((noinline)) AXS_512 void
xorows32(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff, int kb,
         const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first, int last, uint32_t init)
{
    int i = 0;
    for (; i + AXS_X32ROWS <= ms; i += AXS_X32ROWS)
        xrows32(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, AXS_X32ROWS);
    for (; i + 4 <= ms; i += 4)
        xrows32(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, 4);
    for (; i < ms; i++)
        xrows32(S, roff + i, koff, kb, R, acc + i * lda, lda, first, last, init, 1);
}

AXS_512 void axs_xkern32_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms,
                                const ptrdiff_t *koff, int kb, const uint16_t *R, uint32_t *acc,
                                ptrdiff_t lda, int first, int last, uint32_t init)
{
    if (axs_xconsecutive(koff, kb))
        xcrows32(S + koff[0], roff, ms, kb, R, acc, lda, first, last, init);
    else
        xorows32(S, roff, ms, koff, kb, R, acc, lda, first, last, init);
}

/* ------------------------------------------------------------ byte-residual expanded tables */

#define AXS_R512 __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni")))

/* Row v of step kk is a 64-way byte lookup in res8[v][0 .. 256) by the step's fixed codes
 * in row order (two vpermi2b on 128 bytes each, bit 7 picks), so each 256-byte row of res8
 * is loaded once for all steps of the block. */
static inline __attribute__((always_inline)) AXS_R512 void
rbuild_rows(const uint8_t *res8, const __m512i *idx, const int kb, uint8_t *R, uint16_t chunks)
{
    __mmask64 hi[AXS_RSTEPS];
    for (int kk = 0; kk < kb; kk++)
        hi[kk] = _mm512_movepi8_mask(idx[kk]);
    for (int v = 0; v < 256; v++) {
        if (!((chunks >> (v >> 4)) & 1))   /* no step of the block reads this code's row */
            continue;
        const uint8_t *row = res8 + v * 256;
        const __m512i t0 = _mm512_loadu_si512((const void *)row);
        const __m512i t1 = _mm512_loadu_si512((const void *)(row + 64));
        const __m512i t2 = _mm512_loadu_si512((const void *)(row + 128));
        const __m512i t3 = _mm512_loadu_si512((const void *)(row + 192));
        uint8_t *d = R + (size_t)v * AXS_RNB;
        for (int kk = 0; kk < kb; kk++) {
            const __m512i lo = _mm512_permutex2var_epi8(t0, idx[kk], t1);
            const __m512i up = _mm512_permutex2var_epi8(t2, idx[kk], t3);
            _mm512_store_si512((void *)(d + (size_t)kk * AXS_RSTEP),
                               _mm512_mask_blend_epi8(hi[kk], lo, up));
        }
    }
}

AXS_R512 void axs_rbuild_avx512(const uint8_t *res8, const uint8_t *F, ptrdiff_t ldF, int nf,
                                int kb, uint8_t *R, uint8_t *W, const uint16_t *mask)
{
    /* the exact part's operand (4 steps by 16 columns a zmm: a column's 4 codes are 4
     * consecutive bytes of F) and the rows' indices, both 0 past nf and kb */
    memset(W, 0, (size_t)AXS_RSTEPS * AXS_RNB);
    uint8_t c[AXS_RSTEPS][AXS_RNB];
    memset(c, 0, sizeof(c));
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF;
        const int p = j < AXS_RNB / 2 ? 2 * j : 2 * (j - AXS_RNB / 2) + 1;  /* axsimd.h */
        uint8_t *w = W + (j >> 4) * 64 + 4 * (j & 15);
        for (int kk = 0; kk < kb; kk++) {
            w[(kk >> 2) * 256 + (kk & 3)] = f[kk];
            c[kk][p] = f[kk];
        }
    }
    __m512i idx[AXS_RSTEPS];
    for (int kk = 0; kk < kb; kk++)
        idx[kk] = _mm512_loadu_si512((const void *)c[kk]);
    /* the codes any step of the block reads: rows are built for all steps at once */
    uint16_t chunks = mask ? 0 : 0xffff;
    for (int kk = 0; mask && kk < kb; kk++)
        chunks |= mask[kk];
    if (kb == AXS_RSTEPS)
        rbuild_rows(res8, idx, AXS_RSTEPS, R, chunks);
    else
        rbuild_rows(res8, idx, kb, R, chunks);
}

/* The exact part of 4 steps of one row: c4 the codes of the steps (bytes), XOR 0x80 (see
 * prepare_residual in axsimd.c); w the block's group of 4 steps. */
static inline __attribute__((always_inline)) AXS_R512 void
rexact(uint32_t c4, const uint8_t *w, const int sgn, __m512i *e)
{
    const __m512i c = _mm512_set1_epi32((int)(c4 ^ 0x80808080u));
    for (int q = 0; q < 4; q++) {
        const __m512i wq = _mm512_load_si512((const void *)(w + 64 * q));
        e[q] = sgn ? _mm512_dpbusd_epi32(e[q], c, wq) : _mm512_dpbusd_epi32(e[q], wq, c);
    }
}

/* One row over the block: residual rows summed in 16-bit lanes (the raw lane, low byte
 * plus 256 times the high byte, and the high bytes alone; low = raw - (high << 8) is exact
 * for up to 257 steps), the exact part in the int32 sums, and the row's values summed for
 * the rz term. */
static inline __attribute__((always_inline)) AXS_R512 void
rrow(const uint8_t *p, const int kb, const uint8_t *R, const uint8_t *W, uint32_t *a,
     const uint32_t *init, const int sgn, const int32_t rz)
{
    const uint32_t *src = init ? init : a;
    __m512i e[4];
    for (int q = 0; q < 4; q++)
        e[q] = _mm512_loadu_si512((const void *)(src + 16 * q));
    __m512i raw0 = _mm512_setzero_si512(), high0 = raw0, raw1 = raw0, high1 = raw0;
    int32_t vs = 0;
    int kk = 0;
    for (; kk + 4 <= kb; kk += 4) {
        uint32_t c4;
        memcpy(&c4, p + kk, 4);
        rexact(c4, W + (size_t)kk * 64, sgn, e);
        const uint8_t *Rk = R + (size_t)kk * AXS_RSTEP;
        for (int i = 0; i < 4; i += 2, Rk += 2 * AXS_RSTEP) {
            const __m512i x = _mm512_load_si512((const void *)(Rk + ((size_t)p[kk + i] << 6)));
            const __m512i y = _mm512_load_si512(
                (const void *)(Rk + AXS_RSTEP + ((size_t)p[kk + i + 1] << 6)));
            raw0 = _mm512_add_epi16(raw0, x);
            high0 = _mm512_add_epi16(high0, _mm512_srli_epi16(x, 8));
            raw1 = _mm512_add_epi16(raw1, y);
            high1 = _mm512_add_epi16(high1, _mm512_srli_epi16(y, 8));
        }
    }
    if (kk < kb) {
        /* the last steps: their codes alone (W is 0 past kb) */
        uint32_t c4 = 0;
        for (int i = 0; kk + i < kb; i++)
            c4 |= (uint32_t)p[kk + i] << (8 * i);
        rexact(c4, W + (size_t)kk * 64, sgn, e);
        for (; kk < kb; kk++) {
            const __m512i x = _mm512_load_si512(
                (const void *)(R + (size_t)kk * AXS_RSTEP + ((size_t)p[kk] << 6)));
            raw0 = _mm512_add_epi16(raw0, x);
            high0 = _mm512_add_epi16(high0, _mm512_srli_epi16(x, 8));
        }
    }
    if (rz) {
        /* the row's values: one vpsadbw on whole blocks (int8 values as the codes XOR 0x80,
         * less 128 each), a loop on the last one */
        if (kb == AXS_RSTEPS) {
            __m128i cv = _mm_loadu_si128((const __m128i *)p);
            if (sgn)
                cv = _mm_xor_si128(cv, _mm_set1_epi8((char)0x80));
            const __m128i sad = _mm_sad_epu8(cv, _mm_setzero_si128());
            vs = _mm_cvtsi128_si32(sad) + _mm_extract_epi32(sad, 2) -
                 (sgn ? 128 * AXS_RSTEPS : 0);
        } else {
            for (int i = 0; i < kb; i++)
                vs += sgn ? (int8_t)p[i] : p[i];
        }
    }
    const __m512i raw = _mm512_add_epi16(raw0, raw1), high = _mm512_add_epi16(high0, high1);
    const __m512i low = _mm512_sub_epi16(raw, _mm512_slli_epi16(high, 8));
    e[0] = _mm512_add_epi32(e[0], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(low)));
    e[1] = _mm512_add_epi32(e[1], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(low, 1)));
    e[2] = _mm512_add_epi32(e[2], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(high)));
    e[3] = _mm512_add_epi32(e[3], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(high, 1)));
    const __m512i zt = _mm512_set1_epi32((int)((uint32_t)rz * (uint32_t)vs));
    for (int q = 0; q < 4; q++)
        _mm512_storeu_si512((void *)(a + 16 * q), _mm512_sub_epi32(e[q], zt));
}

#define AXS_RROWS(KB, SGN)                                                                  \
    for (int i = 0; i < ms; i++)                                                            \
        rrow(S + roff[i] + koff0, KB, R, W, acc + i * lda, init, SGN, rz)

AXS_R512 void axs_rkern_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms,
                               ptrdiff_t koff0, int kb, const uint8_t *R, const uint8_t *W,
                               uint32_t *acc, ptrdiff_t lda, const uint32_t *init, int rsigned,
                               int32_t rz)
{
    /* whole blocks unrolled, each sign compiled on its own */
    if (kb == AXS_RSTEPS) {
        if (rsigned)
            AXS_RROWS(AXS_RSTEPS, 1);
        else
            AXS_RROWS(AXS_RSTEPS, 0);
    } else {
        if (rsigned)
            AXS_RROWS(kb, 1);
        else
            AXS_RROWS(kb, 0);
    }
}
#undef AXS_RROWS

/* ------------------------------------------------------------ byte-residual direct kernel */

/* Steps per chunk: the chunk's codes (a row block's 64 bytes a step) and their
 * 4-step interleaved copy X stay in L1 while every fixed code of the tile passes. */
#define AXS_R8KC 64

/* 4 x 4 transpose of 128-bit lanes: v[q] lane l = e[l] lane q. The exact part's sums come
 * out of the in-lane unpacks with e[q] lane L holding rows 16 L + 4 q .. + 3; this puts
 * row 16 q + m at v[q] element m. */
static inline __attribute__((always_inline)) AXS_R512 void
r8_lanes(const __m512i e[4], __m512i v[4])
{
    const __m512i u0 = _mm512_shuffle_i32x4(e[0], e[1], 0x44);
    const __m512i u1 = _mm512_shuffle_i32x4(e[0], e[1], 0xEE);
    const __m512i u2 = _mm512_shuffle_i32x4(e[2], e[3], 0x44);
    const __m512i u3 = _mm512_shuffle_i32x4(e[2], e[3], 0xEE);
    v[0] = _mm512_shuffle_i32x4(u0, u2, 0x88);
    v[1] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
    v[2] = _mm512_shuffle_i32x4(u1, u3, 0x88);
    v[3] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
}

/* The codes of steps k .. k + 3 of 64 rows, XOR 0x80, as one dword per row (the exact
 * part's vpdpbusd operand): o[q] lane L dword m is row 16 L + 4 q + m. */
static inline __attribute__((always_inline)) AXS_R512 void
r8_interleave(__m512i a0, __m512i a1, __m512i a2, __m512i a3, __m512i o[4])
{
    const __m512i t0 = _mm512_unpacklo_epi8(a0, a1), t1 = _mm512_unpackhi_epi8(a0, a1);
    const __m512i t2 = _mm512_unpacklo_epi8(a2, a3), t3 = _mm512_unpackhi_epi8(a2, a3);
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    o[0] = _mm512_xor_si512(_mm512_unpacklo_epi16(t0, t2), x80);
    o[1] = _mm512_xor_si512(_mm512_unpackhi_epi16(t0, t2), x80);
    o[2] = _mm512_xor_si512(_mm512_unpacklo_epi16(t1, t3), x80);
    o[3] = _mm512_xor_si512(_mm512_unpackhi_epi16(t1, t3), x80);
}

/* One chunk of kc <= AXS_R8KC steps for NB blocks of 64 rows and every fixed code:
 * c[j * AXS_MB + i] = (add ? c : 0) + the chunk's sum of tab16 entries (biased), as
 * entry + bias = v(s) (v(f) - rz) + res8[s][f] + rcc[f] + bias (prepare_residual). Two
 * passes per fixed code: the exact part, one vpdpbusd per 4 steps and 16 rows on X (the
 * chunk's codes interleaved once for all fixed codes), stored with the per-column and
 * per-row terms; then the residual bytes, two vpermi2b per step and 64 rows summed in
 * 16-bit lanes as the expanded tables' rows are (raw and high bytes), added. Apart, each
 * loop's sums stay in registers (together they spilled). */
static inline __attribute__((always_inline)) AXS_R512 void
r8_chunk(const uint8_t *S, const ptrdiff_t *soff, const __mmask64 *lm, const uint8_t *F,
         ptrdiff_t ldF, int nf, int k0, int kc, const axs_fixed_table *t, uint32_t *C,
         int add, const int NB, const int sgn, const int full)
{
    __m512i X[AXS_R8KC / 4][4][4];   /* [step group][block][q] */
    int32_t zrow[4 * 64];            /* rz times the row's values over the chunk */
    const int rz = t->rz;
    for (int b = 0; b < NB; b++) {
        __m512i zs[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                         _mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int kk = 0; kk < kc; kk += 4) {
            __m512i a[4];
            for (int d = 0; d < 4; d++) {
                const int k = k0 + (kk + d < kc ? kk + d : kc - 1);
                a[d] = _mm512_maskz_loadu_epi8(lm[b], S + soff[k] + 64 * b);
            }
            r8_interleave(a[0], a[1], a[2], a[3], X[kk / 4][b]);
            if (rz) {
                const int n = kc - kk < 4 ? kc - kk : 4;
                const __m512i ones = _mm512_set1_epi32((int)(0x01010101u >> (8 * (4 - n))));
                for (int q = 0; q < 4; q++)
                    zs[q] = sgn ? _mm512_dpbusd_epi32(zs[q], X[kk / 4][b][q], ones)
                                : _mm512_dpbusd_epi32(zs[q], ones, X[kk / 4][b][q]);
            }
        }
        if (rz) {
            /* sum of v(s) = the XORed bytes' sum + 128 kc (unsigned) or - 128 kc (signed) */
            __m512i v[4];
            r8_lanes(zs, v);
            const __m512i off = _mm512_set1_epi32(sgn ? -128 * kc : 128 * kc);
            const __m512i zz = _mm512_set1_epi32(rz);
            for (int q = 0; q < 4; q++)
                _mm512_storeu_si512((void *)(zrow + 64 * b + 16 * q),
                                    _mm512_mullo_epi32(_mm512_add_epi32(v[q], off), zz));
        }
    }
    const uint8_t *res8d = t->res8d;
    const int32_t *rcc = t->rcc;
    const uint32_t bias = t->bias;
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF + k0;
        __m512i e[4][4];
        for (int b = 0; b < NB; b++)
            for (int q = 0; q < 4; q++)
                e[b][q] = _mm512_setzero_si512();
        uint32_t colc = bias * (uint32_t)kc;   /* the per-column terms */
        for (int kk = 0; kk < kc; kk++)
            colc += (uint32_t)rcc[f[kk]];
        /* the steps' fixed codes 4 at a time, those past kc 0 (their X is the last step's) */
        uint32_t w4s[AXS_R8KC / 4];
        memcpy(w4s, f, (size_t)(kc & ~3));
        if (kc & 3) {
            uint32_t w4 = 0;
            for (int d = 0; d < (kc & 3); d++)
                w4 |= (uint32_t)f[(kc & ~3) + d] << (8 * d);
            w4s[kc / 4] = w4;
        }
        for (int g = 0; g < (kc + 3) / 4; g++) {
            const __m512i wv = _mm512_set1_epi32((int)w4s[g]);
            for (int b = 0; b < NB; b++)
                for (int q = 0; q < 4; q++) {
                    e[b][q] = sgn ? _mm512_dpbusd_epi32(e[b][q], X[g][b][q], wv)
                                  : _mm512_dpbusd_epi32(e[b][q], wv, X[g][b][q]);
                    /* pinned: without it GCC copied every sum to another register a step */
                    __asm__("" : "+v"(e[b][q]));
                }
        }
        uint32_t *c = C + (ptrdiff_t)j * AXS_MB;
        const __m512i cc = _mm512_set1_epi32((int)colc);
        for (int b = 0; b < NB; b++) {
            __m512i v[4];
            r8_lanes(e[b], v);
            for (int q = 0; q < 4; q++) {
                __m512i x = _mm512_add_epi32(v[q], cc);
                if (rz)
                    x = _mm512_sub_epi32(
                        x, _mm512_loadu_si512((const void *)(zrow + 64 * b + 16 * q)));
                uint32_t *cq = c + 64 * b + 16 * q;
                if (add)
                    x = _mm512_add_epi32(x, _mm512_loadu_si512((const void *)cq));
                _mm512_storeu_si512((void *)cq, x);
            }
        }
    }
    /* row order of the 16-bit sums: even rows in u16 lane t of one vector, odd in the other */
    const __m512i inter = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41,
                                           9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2,
                                           33, 1, 32, 0);
    const __m512i inter2 = _mm512_add_epi16(inter, _mm512_set1_epi16(16));
    for (int j = 0; j < nf; j++) {
        const uint8_t *f = F + j * ldF + k0;
        __m512i raw[4], high[4];
        for (int b = 0; b < NB; b++)
            raw[b] = high[b] = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int k = 0; k < kc; k++) {
            const __m512i *p = (const __m512i *)(res8d + ((size_t)f[k] << 8));
            const __m512i T0 = _mm512_load_si512(p), T1 = _mm512_load_si512(p + 1);
            const __m512i T2 = _mm512_load_si512(p + 2), T3 = _mm512_load_si512(p + 3);
            const uint8_t *s = S + soff[k0 + k];
#pragma GCC unroll 4
            for (int b = 0; b < NB; b++) {
                const __m512i idx = full ? _mm512_loadu_si512((const void *)(s + 64 * b))
                                         : _mm512_maskz_loadu_epi8(lm[b], s + 64 * b);
                const __mmask64 top = _mm512_movepi8_mask(idx);
                const __m512i r = lookup256(idx, top, _knot_mask64(top), T0, T1, T2, T3);
                raw[b] = _mm512_add_epi16(raw[b], r);
                high[b] = _mm512_add_epi16(high[b], _mm512_srli_epi16(r, 8));
                __asm__("" : "+v"(raw[b]), "+v"(high[b]));
            }
        }
        uint32_t *c = C + (ptrdiff_t)j * AXS_MB;
        for (int b = 0; b < NB; b++) {
            /* bytes of even rows: raw less the high bytes moved up; odd rows: the high sums */
            const __m512i even = _mm512_sub_epi16(raw[b], _mm512_slli_epi16(high[b], 8));
            const __m512i w0 = _mm512_permutex2var_epi16(even, inter, high[b]);
            const __m512i w1 = _mm512_permutex2var_epi16(even, inter2, high[b]);
            const __m512i v[4] = {_mm512_cvtepu16_epi32(_mm512_castsi512_si256(w0)),
                                  _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w0, 1)),
                                  _mm512_cvtepu16_epi32(_mm512_castsi512_si256(w1)),
                                  _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(w1, 1))};
            for (int q = 0; q < 4; q++) {
                uint32_t *cq = c + 64 * b + 16 * q;
                _mm512_storeu_si512(
                    (void *)cq, _mm512_add_epi32(_mm512_loadu_si512((const void *)cq), v[q]));
            }
        }
    }
}

static inline __attribute__((always_inline)) AXS_R512 void
r8_kern(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F, ptrdiff_t ldF,
        int nf, int K, const axs_fixed_table *t, uint32_t *C, const int NB, const int sgn)
{
    __mmask64 lm[4];
    for (int b = 0; b < 4; b++) {
        int r = ms - 64 * b;
        lm[b] = r >= 64 ? ~(__mmask64)0 : (r <= 0 ? (__mmask64)0 : (((__mmask64)1 << r) - 1));
    }
    if (K <= 0) {
        for (int j = 0; j < nf; j++)
            memset(C + (ptrdiff_t)j * AXS_MB, 0, (size_t)NB * 64 * sizeof(uint32_t));
        return;
    }
    for (int k0 = 0; k0 < K; k0 += AXS_R8KC) {
        const int kc = K - k0 < AXS_R8KC ? K - k0 : AXS_R8KC;
        if (ms == 64 * NB)   /* whole blocks: plain loads, no masks held across the loop */
            r8_chunk(S, soff, lm, F, ldF, nf, k0, kc, t, C, k0 > 0, NB, sgn, 1);
        else
            r8_chunk(S, soff, lm, F, ldF, nf, k0, kc, t, C, k0 > 0, NB, sgn, 0);
    }
}

#define AXS_R8K(NB, SGN)                                                                    \
    static __attribute__((noinline)) AXS_R512 void r8_kern_##NB##_##SGN(                    \
        const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F, ptrdiff_t ldF,   \
        int nf, int K, const axs_fixed_table *t, uint32_t *C)                               \
    { r8_kern(S, soff, ms, F, ldF, nf, K, t, C, NB, SGN); }
AXS_R8K(1, 0)
AXS_R8K(2, 0)
AXS_R8K(3, 0)
AXS_R8K(1, 1)
AXS_R8K(2, 1)
AXS_R8K(3, 1)
#undef AXS_R8K

_Static_assert(AXS_MB <= 192, "the byte-residual direct kernel holds 3 blocks of 64 rows");

AXS_R512 void axs_kern8r_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms,
                                const uint8_t *F, ptrdiff_t ldF, int nf, int K,
                                const axs_fixed_table *t, uint32_t *C)
{
    const int nb = (ms + 63) / 64;
    if (nb <= 0)
        return;
    if (t->rsigned) {
        if (nb == 1) r8_kern_1_1(S, soff, ms, F, ldF, nf, K, t, C);
        else if (nb == 2) r8_kern_2_1(S, soff, ms, F, ldF, nf, K, t, C);
        else r8_kern_3_1(S, soff, ms, F, ldF, nf, K, t, C);
    } else {
        if (nb == 1) r8_kern_1_0(S, soff, ms, F, ldF, nf, K, t, C);
        else if (nb == 2) r8_kern_2_0(S, soff, ms, F, ldF, nf, K, t, C);
        else r8_kern_3_0(S, soff, ms, F, ldF, nf, K, t, C);
    }
}

#else  /* not x86-64 GCC/Clang: never selected (axs_path_supported says no) */
void axs_kern16_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C)
{
    axs_kern16_scalar(S, soff, ms, F, ldF, nf, K, t, C);
}

void axs_dwplanes_avx512(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os)
{
    axs_dwplanes_scalar(s, cs, ys, ks, KH, KW, sw, OH, OW, nc, E, es, sums, os);
}

void axs_tr16_avx512(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            dst[i * ldd + j] = src[j * ld + i];
}
void axs_kern16e_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                        int K, const axs_fixed_table *t, uint32_t *C, const uint64_t *km,
                        int pad_code)
{
    (void)S, (void)soff, (void)ms, (void)F, (void)K, (void)t, (void)C, (void)km;
    (void)pad_code;
    abort();  /* never selected off x86-64 */
}
void axs_dqtr16_avx512(const uint32_t *src, ptrdiff_t ld, int nr, int nc, uint32_t vbias,
                       const double *scale, const double *corr, const int32_t *c32,
                       const float *bias, float *y, ptrdiff_t ldy)
{
    (void)src, (void)ld, (void)nr, (void)nc, (void)vbias, (void)scale, (void)corr, (void)c32;
    (void)bias, (void)y, (void)ldy;
    abort();  /* never selected off x86-64 */
}

void axs_dqrows_avx512(const uint32_t *v, ptrdiff_t ldv, int64_t rows, int64_t n,
                       uint32_t kbias, double scale, double corr, const int32_t *c32,
                       const float *bias, float *y, ptrdiff_t ldy)
{
    (void)v, (void)ldv, (void)rows, (void)n, (void)kbias, (void)scale, (void)corr, (void)c32;
    (void)bias, (void)y, (void)ldy;
    abort();  /* never selected off x86-64 */
}

void axs_fdwkern_avx512(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                        int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                        ptrdiff_t lda)
{
    axs_fdwkern_scalar(S, roff, ms, toff, ntap, C, c0, Wv, acc, lda);
}

void axs_fvalues_vbmi(const uint8_t *codes, int64_t n, int r, const uint8_t *planes,
                      const int16_t *U, int16_t *d)
{
    (void)planes;
    for (int64_t c = 0; c < n; c++)
        for (int i = 0; i < r; i++)
            d[c * r + i] = U[codes[c] * r + i];
}

void axs_xkern32_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                        int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                        int last, uint32_t init)
{
    /* plain sums (the contract lets the form between calls be the kernel's own) */
    for (int i = 0; i < ms; i++)
        for (int p = 0; p < AXS_XNB32; p++) {
            uint32_t s = first ? init : acc[i * lda + AXS_XCOL32(p)];
            for (int kk = 0; kk < kb; kk++)
                s += R[(size_t)kk * AXS_XSTEP(AXS_XNB32) +
                       (size_t)S[roff[i] + koff[kk]] * AXS_XNB32 + p];
            acc[i * lda + AXS_XCOL32(p)] = s;
        }
}
void axs_kern8r_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C)
{
    axs_kern16_scalar(S, soff, ms, F, ldF, nf, K, t, C);
}
/* never called: axs_has_vnni says no */
void axs_rbuild_avx512(const uint8_t *res8, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                       uint8_t *R, uint8_t *W, const uint16_t *mask)
{
    (void)mask;
    (void)res8, (void)F, (void)ldF, (void)nf, (void)kb, (void)R, (void)W;
}

void axs_rkern_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms, ptrdiff_t koff0, int kb,
                      const uint8_t *R, const uint8_t *W, uint32_t *acc, ptrdiff_t lda,
                      const uint32_t *init, int rsigned, int32_t rz)
{
    (void)S, (void)roff, (void)ms, (void)koff0, (void)kb, (void)R, (void)W, (void)acc;
    (void)lda, (void)init, (void)rsigned, (void)rz;
}
#endif
