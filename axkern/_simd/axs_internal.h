/* Helpers shared by the kernel drivers (axsimd.c: direct lookups, expand.c: expanded
 * tables). Not part of the interface of axsimd.h. */
#ifndef AXS_INTERNAL_H
#define AXS_INTERNAL_H

#include "axsimd.h"

/* 64-byte aligned blocks (zmm loads) from plain malloc; free with axs_free64. */
void *axs_alloc64(size_t n);
void axs_free64(void *p);
/* nthreads <= 0: OpenMP's default. */
int axs_threads(int nthreads);
/* The same, or 1 for passes over fewer than 65536 elements (a thread team costs more than
 * such a pass: the plain loops of quantize.c and epilogue.c). */
int axs_threads_for(int nthreads, int64_t elements);

/* Drivers of the expanded-table method (expand.c) over a prepared 16-bit-class table t whose
 * fixed operand is the weight code (gemm: swapped = 0; conv2d) or the activation code
 * (gemm: swapped = 1); int32 sums (or float32 with dq). Return an AXS_* code. */
int axs_xgemm(const uint8_t *a, const uint8_t *b, const axs_fixed_table *t, int swapped,
              int64_t M, int64_t K, int64_t N, void *out, const axs_dequant *dq, int nt,
              int path);
int axs_xconv2d(const uint8_t *x, const uint8_t *w, const axs_fixed_table *t, int64_t N,
                int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int64_t COUT, int sh,
                int sw, int pt, int pb, int pl, int pr, int dh, int dw, int64_t groups,
                int pad_code, void *out, const axs_dequant *dq, int nt, int path);
/* One call's problem (expanded and factored methods): rows streamed past groups * cols fixed
 * codes. */
typedef struct {
    const uint8_t *S;        /* streamed codes */
    int64_t rows, K;
    const ptrdiff_t *koff;   /* [K] */
    /* roff(r): r * rstride (conv == 0), or, for pixel r = (n * OH + oy) * OW + ox of a
     * convolution, n * nstride + oy * ystride + ox * xstride */
    ptrdiff_t rstride, nstride, ystride, xstride;
    int64_t P, OW;
    int conv;
    const uint8_t *F;        /* fixed codes: F[(g * cols + j) * K + k] */
    int64_t cols, groups;
    ptrdiff_t gstride;       /* S offset of group g: g * gstride */
    void *out;               /* int32 (dq NULL) or float32 */
    const axs_dequant *dq;
    int64_t ldo;             /* output row length */
    int transposed;          /* element (r, o) at out[o * ldo + r], else out[r * ldo + o] */
    int path;                /* AXS_PATH_*: the ISA of the NCHW store's transposes */
    /* [K] or NULL: bit h of kmask[k] set where a streamed code of step k may lie in
     * 16 h .. 16 h + 15 (the expanded tables build no rows for the other codes) */
    const uint16_t *kmask;
} xproblem;

#if defined(__GNUC__) || defined(__clang__)
typedef uint32_t __attribute__((may_alias)) xword; /* the sums may sit in a float32 output */
#else
typedef uint32_t xword;
#endif

/* Per-column terms of a dequantization as float64, so that a row dequantizes in one
 * branch-free vector loop: every term is an integer below 2^53, so x = v + corr - zw * sumx
 * is exact in float64, as in the int64 arithmetic of axs_dequant_one (expand.c). */
typedef struct {
    const double *scale;
    double *corr, *zw;     /* (cols), zero where absent */
    /* (cols) corr as int32 when dq->bound says that v + corr fits int32 for every output
     * (no window sums), else NULL: the stores then add it before the one conversion (a
     * fifth less time than adding in float64, where the store is a sixth of a call) */
    int32_t *corr32;
    const float *bias;     /* (cols) or NULL */
    int exact;             /* every term below 2^52: else axs_dequant_one, element by element */
} axs_xdeq;
/* Sets dd up for dq (all zero, nothing allocated, for dq NULL) over ncol columns and rows
 * output rows; free dd->corr when done. Returns an AXS_* code. */
int axs_xdeq_init(const axs_dequant *dq, int64_t ncol, int64_t rows, axs_xdeq *dd);
/* y[i * ldy + j] = float32(float64((int32)(v[i * ldv + j] - vbias) + corr[j] - zw[j] * sx_i)
 * * scale[j]) (+ bias[j]) for i < rows, j < n, with sx_i = sx[i * ldsx] (0 without sx),
 * exact when dd->exact said so. With c32 (dd->corr32 at the same columns; only without sx)
 * the correction is added as c32[j] in int32 instead, for the same bits. */
void axs_dequant_rows(const uint32_t *v, ptrdiff_t ldv, int rows, int n, uint32_t vbias,
                      const int64_t *sx, ptrdiff_t ldsx, const double *scale,
                      const double *corr, const int32_t *c32, const double *zw,
                      const float *bias, float *y, ptrdiff_t ldy);
/* The same for one column's run of n sums biased by kbias, without window sums (the
 * depthwise method's planar sums): y[i] = float32(float64((int32)(v[i] - kbias) + corr)
 * * scale) (+ bias); with c32 (the column's dd->corr32 entry) corr is added in int32. */
void axs_dequant_run(const uint32_t *v, int64_t n, uint32_t kbias, double scale, double corr,
                     const int32_t *c32, const float *bias, float *y);
/* int32 sums without window sums (dd->corr32 set) of rows r0 + i, columns o0 + j of the
 * tile acc, dequantized straight into the NCHW output y (N, cols, dq->nchw): 8 x 8 blocks by
 * axs_dqplanes8_avx2 (the AVX2 and AVX-512 paths), the rest by axs_dequant_one. */
void axs_dqscatter_nchw(const axs_dequant *dq, const axs_xdeq *dd, const uint32_t *acc,
                        ptrdiff_t lda, int ms, int nf, int64_t r0, int64_t o0, int64_t cols,
                        float *y);
/* axs_dequant_rows of the int32 totals in acc (row i, column j at acc[i * lda + j]) of
 * output rows r0 .. r0 + ms by columns o0 .. o0 + nf into y (row i at y + i * ldy), a call
 * per run of columns whose window sums are the same group of sumx (dq->gcol: sumx may hold
 * other groups than the convolution's, or several for a GEMM). */
void axs_dequant_cols(const axs_dequant *dq, const axs_xdeq *dd, const xword *acc,
                      ptrdiff_t lda, int64_t r0, int ms, int64_t o0, int nf, float *y,
                      ptrdiff_t ldy);
/* Sums in acc (int32 totals, row i, column j at acc[i * lda + j]) of rows r0 .. r0 + ms and
 * output columns o0 .. o0 + nf, into pb's output, dequantized as dd says (window sums by
 * the groups of its sumx, dq->gcol);
 * acc may be the output itself (inplace); tmp: a tile-sized buffer for transposed
 * dequantizing stores (expand.c). */
void axs_xstore(const xproblem *pb, const axs_xdeq *dd, xword *acc, ptrdiff_t lda, int64_t r0,
                int ms, int64_t o0, int nf, int inplace, xword *tmp);
/* *pb for a convolution's output pixels (N images of OH x OW) streamed over a padded NHWC
 * image of px elements per pixel (plane = Hp * Wp pixels per image, Wp per row), OG fixed
 * codes per group, group g's elements at g * gstride of a pixel, the output of groups * OG
 * columns, path the ISA of its NCHW store (expand.c; S, K, koff and F are left to the
 * caller). */
void axs_xconv_problem(xproblem *pb, int64_t N, int64_t OH, int64_t OW, int64_t plane,
                       int64_t Wp, int64_t px, int sh, int sw, int64_t OG, int64_t groups,
                       int64_t gstride, void *out, const axs_dequant *dq, int path);
/* Offsets roff(r) of streamed rows r0 .. r0 + ms (expand.c). */
void axs_xrow_offsets(const xproblem *pb, int64_t r0, int ms, ptrdiff_t *roff);
/* Drivers of the factored method (factored.c): int32 sums (or float32 with dq) from the
 * factors of a table; the same contract as axs_xgemm (swapped = 0) and axs_xconv2d. */
int axs_fgemm(const uint8_t *a, const uint8_t *b, const axs_factors *fac, int64_t M,
              int64_t K, int64_t N, void *out, const axs_dequant *dq, int nt, int path);
int axs_fconv2d(const uint8_t *x, const uint8_t *w, const axs_factors *fac, int64_t N,
                int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int64_t COUT, int sh,
                int sw, int pt, int pb, int pl, int pr, int dh, int dw, int64_t groups,
                int pad_code, void *out, const axs_dequant *dq, int nt, int path);
/* Returned by conv2d_body (axsimd.c) and axs_fdwconv2d when given NCHW codes that the call
 * needs NHWC. */
#define AXS_NEED_NHWC (-1)
/* Depthwise filters (groups == C == COUT) of tables with r <= 2 factors (factored.c): the
 * same contract as axs_fconv2d; x holds NCHW codes when in_nchw (AXS_NEED_NHWC when the
 * call does not suit planes). */
int axs_fdwconv2d(const uint8_t *x, const uint8_t *w, const axs_factors *fac, int64_t N,
                  int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int sh, int sw,
                  int pt, int pb, int pl, int pr, int dh, int dw, int pad_code, void *out,
                  const axs_dequant *dq, int nt, int path, int in_nchw);
/* Estimated time of the factored method, in the units of axs_xcost: K steps in runs of cg
 * (a tap's channels of a group; a gemm's whole K); values streamed codes turned into factor
 * values (gemm: M * K; conv2d: the padded input's codes); packed: the fixed side comes
 * packed (no packing counted). */
double axs_fcost(int path, int64_t rows, int64_t K, int64_t cg, int64_t cols, int64_t groups,
                 int r, int64_t values, int packed, int nt);
/* The padded NHWC copy of x (N, H + pt + pb, W + pl + pr, C) into xp, padding with pad_code
 * (expand.c; used by the expanded and depthwise convolutions). */
void axs_pad_nhwc(const uint8_t *x, int64_t N, int64_t H, int64_t W, int64_t C, int pt,
                  int pb, int pl, int pr, int pad_code, uint8_t *xp, int nt);
/* Channels c0 .. c1 - 1 of one NHWC image (H, W, C) into planar (C, Hp, Wp) layout at dst
 * with pad_code in the border (pt rows above, pl columns left): for a fixed tap and channel,
 * consecutive output pixels of a row then read consecutive bytes (axsimd.c; the direct and
 * depthwise methods). */
void axs_to_planar(const uint8_t *xn, int64_t H, int64_t W, int64_t C, int64_t c0, int64_t c1,
                   int pt, int pl, int64_t Hp, int64_t Wp, int pad_code, uint8_t *dst);
/* Parts per image of a batch's planar copy: one where there is an image for every thread,
 * else up to enough for the threads, of whole blocks of 16 channels (a batch-1 layer's copy
 * ran on one thread while the other waited); part q starts at channel axs_planar_c0. */
static inline int64_t axs_planar_parts(int64_t N, int64_t C, int nt)
{
    if (N >= nt || N < 1 || C <= 16)
        return 1;
    int64_t blocks = (C + 15) / 16, want = (nt + N - 1) / N;
    return blocks < want ? blocks : want;
}
static inline int64_t axs_planar_c0(int64_t C, int64_t parts, int64_t q)
{
    int64_t c = (C + 15) / 16 * q / parts * 16;
    return c < C ? c : C;
}
/* Unit u of a batch's planar copy in cp parts per image (axs_planar_parts): its image's
 * channels of part u % cp, from the NHWC batch x into the planar batch dst. */
static inline void axs_to_planar_unit(const uint8_t *x, int64_t u, int64_t cp, int64_t H,
                                      int64_t W, int64_t C, int pt, int pl, int64_t Hp,
                                      int64_t Wp, int pad_code, uint8_t *dst)
{
    const int64_t n = u / cp, q = u % cp;
    axs_to_planar(x + n * H * W * C, H, W, C, axs_planar_c0(C, cp, q),
                  axs_planar_c0(C, cp, q + 1), pt, pl, Hp, Wp, pad_code, dst + n * C * Hp * Wp);
}
/* The depthwise method (depthwise.c): whether it serves a conv2d shape (the table class
 * aside), and its driver over a table prepared with the weight code fixed. */
int axs_dw_serves(int64_t C, int64_t COUT, int64_t groups, int64_t KH, int64_t KW, int dw);
/* The widest filters of the depthwise method: the VBMI variant takes a tap at a time, and
 * the rows of E hold 4 filter columns (axs_dw_rows), wider filters in groups of 4 (16-bit
 * class, uint16 rows only). */
#define AXS_DWKW 64
static inline int axs_dw_rows(int64_t KW)
{
    return KW <= 4;
}
/* The strides of the VBMI variant: 1, and 2 over phase planes made straight from the codes
 * (Zen 4, int32 sums, 3 x 3 stride 2: 1.2 - 1.55 times the rows of E on five MobileNet-like
 * layers; made from a planar copy, a second pass, 0.76 - 1.65). */
static inline int axs_dw_vbmi_strides(int sh, int sw)
{
    return sh == sw && (sh == 1 || sh == 2);
}
/* Whether the depthwise method runs its variant over the AVX-512 VBMI direct kernel (a
 * 16-bit-class table at those strides) rather than rows of E. */
static inline int axs_dw_vbmi(int path, const axs_fixed_table *t, int sh, int sw)
{
    return path == AXS_PATH_AVX512_VBMI && !t->generic && axs_dw_vbmi_strides(sh, sw);
}
int axs_dwconv2d(const uint8_t *x, const uint8_t *w, const axs_fixed_table *t, int64_t N,
                 int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int sh, int sw,
                 int pt, int pb, int pl, int pr, int dh, int pad_code, int out64, void *out,
                 const axs_dequant *dq, int nt, int path, int in_nchw);
/* Estimated time of a call, in units of one expanded-table lookup of the path and per
 * thread: direct (rows * K * cols lookups, rows streamed past cols fixed codes, over the
 * `units` threads its tiles keep busy) against expanded (tables built per unit plus
 * lookups of padded column blocks, over the threads its units keep busy). */
/* res: the byte-residual direct kernel's factor applies (axsimd.c, direct_residual: the
 * swapped orientation of a table in the byte-residual form on this path, enough fixed codes
 * and steps) */
double axs_direct_cost(int path, int64_t rows, int64_t K, int64_t cols, int64_t units,
                       int res);
/* res: the table has the byte-residual form in this orientation and the call's blocks read
 * consecutive codes (see expand.c) */
double axs_xcost(int path, int64_t rows, int64_t K, int64_t cols, int64_t groups, int nt,
                 int res);
/* Whether the byte-residual form can run for cols columns on this path (expand.c, "Byte
 * residuals"): the AVX-512 path on a CPU with VNNI and more than 32 columns (64-wide
 * blocks: 32-wide ones ran at 0.84 - 0.91 of its 16-bit rows, the AVX2 form's at 0.78 -
 * 0.86), or the AVX2 path and more than 16 columns (32-wide blocks). */
int axs_xresidual_runs(int path, int64_t cols);
/* bt[n * K + k] = b[k * N + n] (a K x N byte matrix transposed; 16 x 16 blocks where SSE2
 * is there, parallel over blocks of columns) */
void axs_transpose_u8(const uint8_t *b, int64_t K, int64_t N, uint8_t *bt, int nt);

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
/* Exactly the epilogue of axkern (epilogue.c): int64 correction, one float64 product
 * rounded to float32, then a float32 bias. */
static inline float axs_dequant_one(const axs_dequant *dq, int64_t v, int64_t r, int64_t o)
{
    if (dq->corr)
        v += dq->corr[o];
    if (dq->zw)
        v -= dq->zw[o] * dq->sumx[r * dq->groups + dq->gcol[o]];
    float f = (float)((double)v * dq->scale[o]);
    return dq->bias ? f + dq->bias[o] : f;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
/* The 16 x 16 byte transposes of the rows a[0..15] (type T, intrinsics P##_unpack...) in
 * place: four rounds of unpacks, which never cross a 128-bit lane, so that on __m256i each
 * lane is transposed on its own (kern_avx2.c) */
#define AXS_TR16X16(T, P, a)                                                                \
    do {                                                                                    \
        T b_[16];                                                                           \
        for (int r = 0; r < 8; r++) {                                                       \
            b_[2 * r] = P##_unpacklo_epi8((a)[2 * r], (a)[2 * r + 1]);                      \
            b_[2 * r + 1] = P##_unpackhi_epi8((a)[2 * r], (a)[2 * r + 1]);                  \
        }                                                                                   \
        for (int q = 0; q < 4; q++)                                                         \
            for (int h = 0; h < 2; h++) {                                                   \
                (a)[4 * q + 2 * h] = P##_unpacklo_epi16(b_[4 * q + h], b_[4 * q + 2 + h]);  \
                (a)[4 * q + 2 * h + 1] =                                                    \
                    P##_unpackhi_epi16(b_[4 * q + h], b_[4 * q + 2 + h]);                   \
            }                                                                               \
        for (int q = 0; q < 2; q++)                                                         \
            for (int h = 0; h < 4; h++) {                                                   \
                b_[8 * q + 2 * h] = P##_unpacklo_epi32((a)[8 * q + h], (a)[8 * q + 4 + h]); \
                b_[8 * q + 2 * h + 1] =                                                     \
                    P##_unpackhi_epi32((a)[8 * q + h], (a)[8 * q + 4 + h]);                 \
            }                                                                               \
        for (int h = 0; h < 8; h++) {                                                       \
            (a)[2 * h] = P##_unpacklo_epi64(b_[h], b_[8 + h]);                              \
            (a)[2 * h + 1] = P##_unpackhi_epi64(b_[h], b_[8 + h]);                          \
        }                                                                                   \
    } while (0)

/* The 16 x 16 byte transpose of the rows a[0..15] in place (SSE2, part of x86-64) */
static inline void axs_tr16x16_regs(__m128i a[16])
{
    AXS_TR16X16(__m128i, _mm, a);
}

/* d[i * ldd + c] = s[c * lds + i] for i, c < 16 */
static inline void axs_tr16x16_u8(const uint8_t *s, ptrdiff_t lds, uint8_t *d, ptrdiff_t ldd)
{
    __m128i a[16];
    for (int r = 0; r < 16; r++)
        a[r] = _mm_loadu_si128((const __m128i *)(s + r * lds));
    axs_tr16x16_regs(a);
    for (int r = 0; r < 16; r++)
        _mm_storeu_si128((__m128i *)(d + r * ldd), a[r]);
}
#endif

#endif
