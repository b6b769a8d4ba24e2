/* axsimd: exact LUT-based GEMM and conv2d kernels with runtime ISA dispatch.
 *
 * The arithmetic is the internal kernel contract of axkern.backends:
 *   gemm:   out[m, n] = sum_k T[a[m, k], b[k, n]]
 *   conv2d: out[n, oy, ox, o] = sum_{ky, kx, c} T[xpad[...], w[ky, kx, c, o]]
 * with uint8 table indices, an int32 (256, 256) table and int32 or int64 outputs.
 *
 * Two methods: direct lookups (the micro-kernels below, one lookup per multiply-accumulate
 * with the fixed code's column held in registers) and expanded tables (expand.c: a row of
 * entries of 16 output columns per streamed code, fetched with one vector load);
 * axs_gemm and axs_conv2d pick one by a cost model of the shape unless one is forced.
 *
 * Two table classes:
 *  - "16-bit": max(T) - min(T) <= 65535. Every entry plus a bias (-min(T)) fits uint16, so
 *    the kernels sum biased uint16 entries in uint32 lanes (split into a low and a high byte
 *    plane for the SIMD lookups) and subtract bias * K at the end.  Modular uint32 arithmetic
 *    is exact whenever the true result fits the output type; for int64 outputs the reduction
 *    is cut into chunks of at most AXS_KCHUNK terms, whose biased sums are < 2^32.
 *  - "generic": any other int32 table, summed in int64 by portable C.
 */
#ifndef AXSIMD_H
#define AXSIMD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Dispatch paths. */
enum { AXS_PATH_SCALAR = 0, AXS_PATH_AVX2 = 1, AXS_PATH_AVX512_VBMI = 2, AXS_NPATHS = 3 };

/* Error codes returned by the drivers. */
enum { AXS_OK = 0, AXS_ENOMEM = 1, AXS_EPATH = 2, AXS_EARG = 3 };

/* Rows of the streamed operand handled by one micro-kernel call. */
#define AXS_MB 192
/* Columns (fixed codes) per micro-kernel call: bounds the tile buffer. */
#define AXS_NB 64
/* Reduction steps summed in 16-bit lanes before widening (each step adds < 256 per lane). */
#define AXS_FLUSH 128
/* Max reduction terms whose biased uint16 sum is guaranteed below 2^32. */
#define AXS_KCHUNK 32768

/* Prepared table for one orientation ("fixed" operand = the code held constant while the
 * micro-kernel streams codes of the other operand past it). */
typedef struct {
    int generic;              /* 1: int32 table outside the 16-bit class */
    uint32_t bias;            /* 16-bit class: entry + bias in [0, 65535] (mod 2^32) */
    int64_t bias64;           /* the same bias, -min(T), as an integer: for int64 sums */
    const uint16_t *tab16;    /* [fixed][streamed] biased entries (+ 4 bytes of padding) */
    const uint8_t *planes;    /* [fixed][2][256]: low bytes, then high bytes of tab16 */
    const uint8_t *xtab;      /* [fixed][plane][half][8][32]: XOR-chained vpshufb chunks */
    const int32_t *tab32;     /* [fixed][streamed] original entries (generic class) */
    /* The byte-residual form (16-bit class, NULL when the table has none): entry =
     * v(streamed) * (v(fixed) - rz) + res8[streamed][fixed] + a per-fixed-code offset, v the
     * codes themselves (rsigned = 0) or their int8 bit patterns (rsigned = 1); rcc[fixed]:
     * that offset - bias + the exact part's correction (axsimd.c, prepare_residual). */
    const uint8_t *res8;
    /* res8 transposed, [fixed][streamed]: the direct kernel's byte table per fixed code
     * (axs_kern8r_avx512) and the source of the AVX2 byte-residual rows (axs_rbuild_avx2);
     * set exactly when res8 is */
    const uint8_t *res8d;
    const int32_t *rcc;
    int rsigned;
    int32_t rz;
} axs_fixed_table;

/* 16-bit micro-kernel: for j < nf (<= AXS_NB), i < ms (<= AXS_MB):
 *   C[j * AXS_MB + i] = sum_{k < K} tab16[F[j * ldF + k]][S[soff[k] + i]]   (mod 2^32). */
typedef void (*axs_kern16_fn)(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                              ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t,
                              uint32_t *C);

void axs_kern16_scalar(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C);
void axs_kern16_avx2(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                     ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C);
void axs_kern16_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C);
/* The same sums from the byte-residual form (t->res8d; AVX-512 VBMI with VNNI): the
 * residual bytes by two vpermi2b per 64 rows, the exact part by vpdpbusd on the streamed
 * codes interleaved once per tile for all fixed codes; axs_kern16_avx512 runs it for
 * AXS_R8MINF fixed codes or more (fewer leave the interleaving too little to share: one
 * fixed code, the depthwise variant's, ran at 0.91 - 0.95 times the 16-bit kernel). */
#define AXS_R8MINF 6
/* Reductions the method choice counts it for (expand.c, AXS_DIRECT_R8): shorter ones weigh
 * the tile's fixed costs more. */
#define AXS_R8MINK 64
void axs_kern8r_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                       ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, uint32_t *C);
/* axs_kern16_avx512 for one fixed code per step (nf = 1, ldF = K, the depthwise method's)
 * and up to AXS_EMB rows, the streamed codes of step k and block b (rows 64 b .. 64 b + 63)
 * read only in the lanes of km[4 k + b] and taken as pad_code in the others: the rows past
 * ms, and the positions whose tap falls in the padding columns that the depthwise method's
 * planar copy leaves out. */
void axs_kern16e_avx512(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                        int K, const axs_fixed_table *t, uint32_t *C, const uint64_t *km,
                        int pad_code);
#define AXS_EMB 256

/* Generic micro-kernel (any int32 table), exact int64 sums:
 *   C[j * AXS_MB + i] = sum_{k < K} tab32[F[j * ldF + k]][S[soff[k] + i]]. */
void axs_kern_generic(const uint8_t *S, const ptrdiff_t *soff, int ms, const uint8_t *F,
                      ptrdiff_t ldF, int nf, int K, const axs_fixed_table *t, int64_t *C);

/* Expanded tables (expand.c): for a block of kb reduction steps and AXS_XNB fixed codes (one
 * per output column), R[kk][v][p] = tab16[F[col(p) * ldF + kk]][v]: the biased entries of
 * every column's table column, one row of AXS_XNB uint16 per streamed code v, so that a
 * streamed code fetches the entries of all the block's columns with one vector load (no
 * per-entry lookup). Position 2t + h holds column 8h + t: the low and the high uint16 of
 * each 32-bit lane widen to columns t and 8 + t with an AND and a shift. Columns j >= nf
 * read code 0 (computed, never stored). */
#define AXS_XNB 16
#define AXS_XCOL(p) ((((p) & 1) << 3) | ((p) >> 1))
/* uint16 between the starts of consecutive steps' rows: 256 rows and 256 bytes more. Without
 * the pad a step's rows span 8 KiB (4 KiB for 8-wide rows), a multiple of the L1 way
 * (4 KiB on Zen 3), so code v's rows of all the block's steps fall in one L1 set: codes
 * that cluster (a ReLU's zeros, any activation near its zero point) then miss L1 once the
 * set's 8 ways are full. The pad moves each step 4 sets on. Paired (AVX2, one and two
 * threads, ResNet-8 layers, int32 sums): ReLU-like codes 1.07 - 1.13 times as fast, codes
 * of a normal around the zero point 1.04 - 1.08, uniform codes unchanged. */
#define AXS_XPAD 128
#define AXS_XSTEP(nb) (256 * (nb) + AXS_XPAD)
/* Steps times columns per block of R: 256 * 256 uint16 = 128 KiB (512 ran slower); a block
 * of 16-wide rows has 16 steps. */
#ifndef AXS_XSTEPW
#define AXS_XSTEPW 256
#endif
/* Blocks of 8 (the AVX2 code, for 8 fixed codes or fewer: GEMMs of a few rows): rows of
 * 8 uint16, position 2t + h holding column 4h + t, and acc rows of 8 sums. */
#define AXS_XNB8 8
#define AXS_XCOL8(p) ((((p) & 1) << 2) | ((p) >> 1))
/* Blocks of 32 (the AVX-512 path): rows of 32 uint16, one zmm vector, position 2t + h
 * holding column 16h + t. */
#define AXS_XNB32 32
#define AXS_XCOL32(p) ((((p) & 1) << 4) | ((p) >> 1))
/* Steps times columns per block of R for 32-wide rows. */
#ifndef AXS_XSTEPW32
#define AXS_XSTEPW32 512
#endif
/* The builders' mask: NULL, or mask[kk] for the block's steps, bit h set where step kk's
 * streamed codes may lie in 16 h .. 16 h + 15; the rows of the other codes are left
 * unbuilt (never read). */
typedef void (*axs_xbuild_fn)(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                              int kb, uint16_t *R, const uint16_t *mask);
/* Whether a block's steps read consecutive codes (koff[kk] = koff[0] + kk: within a tap of
 * an NHWC convolution, rows of a GEMM), which the expanded kernels take a row at a time. */
static inline int axs_xconsecutive(const ptrdiff_t *koff, int kb)
{
    int consecutive = 1;
    for (int kk = 1; kk < kb; kk++)
        consecutive &= koff[kk] == koff[0] + kk;
    return consecutive;
}
/* acc[i * lda + j] = (first ? init : acc[i * lda + j])
 *                    + sum_{kk < kb} R[kk][S[roff[i] + koff[kk]]][pos of column j]  (mod 2^32)
 * for i < ms and j < AXS_XNB (all columns are written), R[kk] at R + kk * AXS_XSTEP(nb),
 * over a reduction cut into blocks:
 * the call with first = 1 starts the sums, the one with last = 1 leaves them; between calls
 * acc may hold them in a form of the kernel's own. */
typedef void (*axs_xkern_fn)(const uint8_t *S, const ptrdiff_t *roff, int ms,
                             const ptrdiff_t *koff, int kb, const uint16_t *R, uint32_t *acc,
                             ptrdiff_t lda, int first, int last, uint32_t init);

void axs_xbuild_scalar(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                       uint16_t *R, const uint16_t *mask);
void axs_xkern_scalar(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                      int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                      int last, uint32_t init);
void axs_xbuild_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                     uint16_t *R, const uint16_t *mask);
void axs_xkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                    int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                    int last, uint32_t init);
void axs_xbuild8_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                      uint16_t *R, const uint16_t *mask);
void axs_xbuild32_avx2(const uint16_t *tab16, const uint8_t *F, ptrdiff_t ldF, int nf,
                       int kb, uint16_t *R, const uint16_t *mask);
void axs_xkern32_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                        int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                        int last, uint32_t init);
void axs_xkern8_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                     int kb, const uint16_t *R, uint32_t *acc, ptrdiff_t lda, int first,
                     int last, uint32_t init);

/* Byte-residual expanded tables (expand.c; AVX-512 VBMI with VNNI): blocks of AXS_RNB
 * fixed codes and up to AXS_RSTEPS steps. R[kk][v][p] = res8[v][F[col(p) * ldF + kk]]: rows
 * of AXS_RNB uint8, step kk at R + kk * AXS_RSTEP, position 2t + h holding column 32 h + t;
 * W: the block's fixed codes as the exact part's vpdpbusd operand, 4 steps by 16 columns a
 * zmm (lane l: column 16 q + l, byte i: step 4 g + i) at W + (4 g + q) * 64; columns j >= nf
 * and steps kk >= kb take code 0 in R and 0 in W. */
#define AXS_RSTEPS 16
#define AXS_RNB 64
#define AXS_RSTEP (256 * AXS_RNB + 256)
void axs_rbuild_avx512(const uint8_t *res8, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                       uint8_t *R, uint8_t *W, const uint16_t *mask);
/* acc[i * lda + j] = (init ? init[j] : acc[i * lda + j]) + sum_{kk < kb} (R[kk][c][pos of j]
 * + v(c) * v(column j's code in W) - rz * v(c)), c = p_i[kk] (p_i = S + roff[i] + koff0:
 * consecutive codes), for i < ms, j < AXS_RNB (mod 2^32); rsigned, rz as in
 * axs_fixed_table. */
void axs_rkern_avx512(const uint8_t *S, const ptrdiff_t *roff, int ms, ptrdiff_t koff0, int kb,
                      const uint8_t *R, const uint8_t *W, uint32_t *acc, ptrdiff_t lda,
                      const uint32_t *init, int rsigned, int32_t rz);
/* The byte-residual form on AVX2 (expand.c, kern_avx2.c): blocks of AXS_R2NB fixed codes
 * and up to AXS_R2STEPS steps, whose halves of AXS_RSTEPS steps each read consecutive codes.
 * R[kk][v][p] = res8[v][F[col(p) * ldF + kk]]: rows of AXS_R2NB uint8, step kk at R + kk *
 * AXS_R2STEP, position 2t + h holding column 16 h + t (t < 16); built from res8d. W: the
 * exact part's vpmaddwd operand, int16 pairs (v(f) - rz for steps 2g and 2g + 1) of column
 * 8 q + l at W + ((4 g + q) * 8 + l) * 2; columns j >= nf take code 0 in R and 0 in W,
 * steps kk >= kb 0 in W. */
#define AXS_R2NB 32
#define AXS_R2COL(p) ((((p) & 1) << 4) | ((p) >> 1))
#define AXS_R2STEP (256 * AXS_R2NB + 256)
#define AXS_R2STEPS 32
#define AXS_R2W (AXS_R2STEPS * AXS_R2NB)
void axs_rbuild_avx2(const uint8_t *res8d, const uint8_t *F, ptrdiff_t ldF, int nf, int kb,
                     int rsigned, int32_t rz, uint8_t *R, int16_t *W, const uint16_t *mask);
/* acc[i * lda + j] = (init ? init[j] : acc[i * lda + j]) + sum_{kk < kb} (R[kk][c][pos of j]
 * + v(c) * (v(column j's code) - rz)), c = S[roff[i] + koff[kk]] (koff consecutive within
 * each half block; koff[AXS_RSTEPS] read only when kb > AXS_RSTEPS), for i < ms, j <
 * AXS_R2NB (mod 2^32). */
void axs_rkern_avx2(const uint8_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *koff,
                    int kb, const uint8_t *R, const int16_t *W, uint32_t *acc, ptrdiff_t lda,
                    const uint32_t *init, int rsigned);
/* Whether this CPU has AVX-512 VNNI (vpdpbusd), which the AVX-512 byte-residual form
 * needs. */
int axs_has_vnni(void);

/* Depthwise plane kernels (depthwise.c): for nc channels i < nc, with E_i = E + i * es
 * holding E_i[ky] (ky < KH) 256 rows of 4 uint32 lanes (lane j: the entry of filter tap
 * kx = KW - 1 - j, zero for j >= KW; KW <= 4) at E_i + ky * 1024, and channel i's padded
 * input codes planar, at s[i * cs + y * ys + ky * ks + p] for output row y, filter row ky
 * and input column p:
 *   sums[(y * OW + o) * os + i]
 *       = sum_{ky < KH, kx < KW} E_i[ky][code_i(y, ky, o * sw + kx)][KW - 1 - kx]
 * (mod 2^32) for y < OH, o < OW. */
typedef void (*axs_dwplanes_fn)(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks,
                                int KH, int KW, int sw, int64_t OH, int64_t OW, int nc,
                                const uint32_t *E, ptrdiff_t es, uint32_t *sums,
                                ptrdiff_t os);
void axs_dwplanes_scalar(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os);
void axs_dwplanes_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                       int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                       ptrdiff_t es, uint32_t *sums, ptrdiff_t os);
void axs_dwplanes_avx512(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint32_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os);
/* The same with E_i holding rows of 4 uint16 lanes (E_i[ky] at E_i + ky * 1024, row v at
 * + 4 v): the biased entries of 16-bit-class tables, half the footprint in L1 (AVX2); the
 * sum of channel i, pixel (y, o) at sums[(y * OW + o) * os + i * ocs] (ocs = 1: pixel-major
 * as above; os = 1, ocs = OH * OW: channel planes), stored, or with add added to what is
 * there (filters wider than 4 columns run in groups of 4). */
void axs_dwplanes16_avx2(const uint8_t *s, ptrdiff_t cs, ptrdiff_t ys, ptrdiff_t ks, int KH,
                         int KW, int sw, int64_t OH, int64_t OW, int nc, const uint16_t *E,
                         ptrdiff_t es, uint32_t *sums, ptrdiff_t os, ptrdiff_t ocs, int add);
/* One filter row's rows of E (uint16, 4 lanes) from the 4 table columns of its taps. */
void axs_dwbuild16_avx2(const uint16_t *c0, const uint16_t *c1, const uint16_t *c2,
                        const uint16_t *c3, uint16_t *e);

/* dst[i * ldd + j] = src[j * ld + i] for i, j < 16 (AVX-512 F; depthwise.c, the NCHW store),
 * and for i, j < 8 (AVX2; the NCHW store). */
void axs_tr16_avx512(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd);
void axs_tr8_avx2(const uint32_t *src, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd);
/* axs_tr16_avx512's transpose dequantized on the way, as axs_dequant_rows does without window
 * sums: y[i * ldy + j] = float32(float64((int32)(src[j * ld + i] - vbias + c32[j])) * scale[j])
 * (+ bias[j]), or with the float64 corr[j] added after the conversion where c32 is NULL, for
 * i < nc and j < nr (both at most 16; AVX-512 F; the depthwise NHWC store). */
void axs_dqtr16_avx512(const uint32_t *src, ptrdiff_t ld, int nr, int nc, uint32_t vbias,
                       const double *scale, const double *corr, const int32_t *c32,
                       const float *bias, float *y, ptrdiff_t ldy);
/* axs_dequant_run over each of `rows` rows of n sums (row strides ldv, ldy; AVX-512 F: the
 * depthwise NCHW store). */
void axs_dqrows_avx512(const uint32_t *v, ptrdiff_t ldv, int64_t rows, int64_t n,
                       uint32_t kbias, double scale, double corr, const int32_t *c32,
                       const float *bias, float *y, ptrdiff_t ldy);
/* axs_dequant_rows without window sums for n a multiple of 8 (AVX2; expand.c). */
void axs_dequant_rows8_avx2(const uint32_t *v, ptrdiff_t ldv, int rows, int n, uint32_t vbias,
                            const double *scale, const double *corr, const int32_t *c32,
                            const float *bias, float *y, ptrdiff_t ldy);
/* The NCHW store of int32 sums without window sums (epilogue.c): ms x nf sums (multiples of
 * 8) dequantized as axs_dequant_rows does and written transposed, y[j * P + i]. */
void axs_dqplanes8_avx2(const uint32_t *v, ptrdiff_t ldv, int ms, int nf,
                        const double *scale, const int32_t *c32, const float *bias,
                        float *y, ptrdiff_t P);

/* Factored tables (factored.c): a table that is exactly a sum of r products of int16
 * factors, T[a][b] = sum_{i < r} U[a * r + i] * V[b * r + i] (U and V of 256 * r entries),
 * as every DRUM-style, perforated or exact multiplier is with r = 1 (an operand mapped, then
 * multiplied exactly) and truncated or broken-array ones with r of 3 to 8. Its sums are then
 * r * K exact products of int16 values per output, added in int32 lanes modulo 2^32: an
 * integer GEMM without lookups. The caller vouches that the factors are exact (axkern
 * derives and checks them in Python, for tables whose entries cannot change). */
typedef struct {
    int r;
    const int16_t *U, *V;
    /* NULL, or this call's fixed codes already packed by axs_fpack (packed_size int16
     * values; a size that does not fit the call's geometry is not used) */
    const int16_t *packed;
    int64_t packed_size;
} axs_factors;
#define AXS_FMAXRANK 8
/* The factored method's packed fixed side of codes w, rows of k = t * CG + c (t < ntap taps,
 * CG channels per group) by groups * OG columns (HWIO filters; a gemm's b with ntap = 1,
 * CG = K, OG = N, groups = 1): its size in int16 values, and the packing into Bp (of that
 * size). The packing does not depend on the path; it is what every factored call does
 * first, kept by a caller that passes the same weights again. */
int64_t axs_fpacked_size(int64_t ntap, int64_t CG, int64_t OG, int64_t groups, int r);
void axs_fpack(const uint8_t *w, int64_t ntap, int64_t CG, int64_t OG, int64_t groups,
               const axs_factors *fac, int16_t *Bp, int nthreads, int path);
/* For one block of 16 fixed columns: acc[i * lda + j] = sum_{t < ntap} sum_{q < L}
 * S[roff[i] + toff[t] + q] * Bp[((t * L + q) >> 1) * 32 + 2 * j + (q & 1)] (mod 2^32) for
 * i < ms, j < 16; L is even (the streamed values come in pairs, as vpmaddwd takes them). */
typedef void (*axs_fkern_fn)(const int16_t *S, const ptrdiff_t *roff, int ms,
                             const ptrdiff_t *toff, int ntap, int L, const int16_t *Bp,
                             uint32_t *acc, ptrdiff_t lda);
void axs_fkern_scalar(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                      int ntap, int L, const int16_t *Bp, uint32_t *acc, ptrdiff_t lda);
void axs_fkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                    int ntap, int L, const int16_t *Bp, uint32_t *acc, ptrdiff_t lda);
/* Depthwise filters (factored.c, axs_fdwconv2d): for pixels i < ms and channels
 * c0 <= c < C, acc[i * lda + c] = sum_{t < ntap} sum_{q < 2} S[roff[i] + toff[t] + 2 c + q] *
 * Wv[(t * C + c) * 2 + q] (mod 2^32): a pair of values per channel, pixel and tap. */
typedef void (*axs_fdwkern_fn)(const int16_t *S, const ptrdiff_t *roff, int ms,
                               const ptrdiff_t *toff, int ntap, int64_t C, int64_t c0,
                               const int16_t *Wv, uint32_t *acc, ptrdiff_t lda);
void axs_fdwkern_scalar(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                        int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                        ptrdiff_t lda);
/* Whether ntap taps form 3 filter rows of kwt taps each (ntap 9: 3 a row, as 3 x 3 filters
 * of r = 2; ntap 6: 2, as the pairs of r = 1) lying d pixels of ps int16 apart within each
 * row: d (1 or 2), else 0. Outputs ps apart (stride 1) then meet the same pixels through
 * different taps, and the AVX-512 kernel loads each pixel of a filter row once for 4 outputs
 * (6 loads instead of 12 or 8). */
static inline int axs_fdw_rowstep(const ptrdiff_t *toff, int ntap, ptrdiff_t ps)
{
    const int kwt = ntap == 9 ? 3 : ntap == 6 ? 2 : 0;
    if (!kwt || ps <= 0)
        return 0;
    const ptrdiff_t step = toff[1] - toff[0];
    const int d = step == ps ? 1 : step == 2 * ps ? 2 : 0;
    for (int t = 0; d && t < ntap; t++)
        if (toff[t] != toff[t - t % kwt] + (t % kwt) * step)
            return 0;
    return d;
}
void axs_fdwkern_avx2(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                      int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                      ptrdiff_t lda);
void axs_fdwkern_avx512(const int16_t *S, const ptrdiff_t *roff, int ms, const ptrdiff_t *toff,
                        int ntap, int64_t C, int64_t c0, const int16_t *Wv, uint32_t *acc,
                        ptrdiff_t lda);
/* The same on one channel's plane of pairs (NCHW, horizontal stride 1): out[oy * OW + ox] =
 * sum_{t < ntap} sum_{q < 2} P[(oy * sh) * Wp + ox + toff[t]] as int16 pairs times the pairs
 * wp[t] (mod 2^32), for oy < OH, ox < OW. Reads up to 7 pairs past the last output's taps. */
typedef void (*axs_fdwplane_fn)(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH,
                                int64_t OW, const ptrdiff_t *toff, int ntap,
                                const uint32_t *wp, uint32_t *out);
void axs_fdwplane_scalar(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH, int64_t OW,
                         const ptrdiff_t *toff, int ntap, const uint32_t *wp, uint32_t *out);
void axs_fdwplane_avx2(const uint32_t *P, ptrdiff_t Wp, int sh, int64_t OH, int64_t OW,
                       const ptrdiff_t *toff, int ntap, const uint32_t *wp, uint32_t *out);
/* d[i] = (uint16) v[i] | (uint16) v[i + s] << 16 for i < n: a value and the one s further on
 * as one pair (the depthwise filters' r = 1 values image). */
void axs_fpairs_scalar(const int16_t *v, int64_t n, ptrdiff_t s, uint32_t *d);
void axs_fpairs_avx2(const int16_t *v, int64_t n, ptrdiff_t s, uint32_t *d);
/* d[2 c + i] = the i-th of the r = 2 factor values of codes[c], c < n: U32[code] holds both
 * int16 as one int32, the first in the low half. */
void axs_fvalues2_avx2(const uint8_t *codes, int64_t n, const int32_t *U32, int16_t *d);
/* d[c] = U[codes[c]] (r = 1) by byte shuffles over tabs, U's byte planes as XOR-chained
 * 16-entry chunks (factored.c, fvals_init). */
/* The same on the AVX-512 VBMI path, r = 1 or 2, 64 codes at a time: planes holds the 2 r
 * byte planes of the codes' values (byte b of a code's r int16 at planes + 256 b), looked up
 * by vpermi2b. */
void axs_fvalues_vbmi(const uint8_t *codes, int64_t n, int r, const uint8_t *planes,
                      const int16_t *U, int16_t *d);
/* A byte plane (the bytes U - off of values that span at most 256) whose 16 rows, codes
 * 16 h .. 16 h + 15, take at most 8 non-zero forms once each row's first byte is taken
 * off: byte(code) = base[h] + R_k[code & 15] (mod 256) with k = cls[h] / 16, R_0 the zero
 * form. Looked up as 16 k + (code & 15) in the XOR-chained chunks D_k = R_k ^ R_(k-1), k =
 * 1 .. nc - 1 (each 16 bytes, both 128-bit lanes alike; D_0 would be zero): nc - 1
 * shuffles instead of the 16 of the whole plane (DRUM's rows: 4). */
typedef struct {
    int nc;
    uint8_t cls[32], base[32], D[9 * 32];
} axs_bclass;
/* The same for values that span at most 256: tabs' low plane holds U - off (bc: that
 * plane's row classes, or NULL). */
void axs_fvalues_shuf8_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs, int16_t off,
                            const axs_bclass *bc, const int16_t *U, int16_t *d);
void axs_fvalues_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                           const int16_t *U, int16_t *d);
/* One of a code's two values (r = 2) for axs_fvalues2_shuf_avx2: off + the byte looked up in
 * a low plane of XOR-chained chunks (lookup: values that span at most 256; by its row
 * classes where bc is not NULL), or off + or - (neg) the code itself, zero- or
 * sign-extended (sgn). */
typedef struct {
    int lookup, sgn, neg;
    int16_t off;
    const axs_bclass *bc;
} axs_fcomp;
/* d[2 c + i] = component i of codes[c] (r = 2, c < n), 32 codes at a time: component i's
 * plane (when it looks up) at tabs + 512 i; U (pairs) for the tail. The form of r = 2 that
 * a rank-1 table takes once the weight zero point is folded in (T[a, b] - z_w a: its
 * narrow values and the code), without gathers. */
void axs_fvalues2_shuf_avx2(const uint8_t *codes, int64_t n, const uint8_t *tabs,
                            const axs_fcomp *comp, const int16_t *U, int16_t *d);
/* A full block of 16 fixed columns in the factored method's pair layout (factored.c) for
 * r = 1 or 2, V32[code] the code's values as one int32 (r = 1: the value; r = 2: both, the
 * first in the low half); codes of step
 * k = t * cg + c, column j at Wc[k * ld + j] (AVX2; the portable fpack does the rest). */
void axs_fpack_avx2(const uint8_t *Wc, ptrdiff_t ld, int64_t cg, int64_t ntap, int64_t L,
                    const int32_t *V32, int r, int16_t *Bp);
/* The bytes of a convolution's input values the factored method builds at a time (whole
 * images, 32 MiB by default): sets it when bytes > 0, returns the previous value. */
int64_t axs_set_fchunk(int64_t bytes);

/* Kernel methods: AXS_METHOD_AUTO picks by a cost model, the others force one.
 *  - direct: the micro-kernels above, one table lookup per multiply-accumulate;
 *  - expand: expanded tables (16-bit class tables and int32 accumulation only);
 *  - depthwise: tap rows slid along output rows (depthwise.c: conv2d with groups == C ==
 *    COUT, horizontal dilation 1, at most 4 filter columns, up to AXS_DWKW with a
 *    16-bit-class table off the scalar path; int64 sums need a 16-bit-class table). Chosen
 *    automatically for such layers (on the AVX-512 path with a generic-class table from
 *    128 outputs);
 *  - factored: integer products of the table's factors (fac given, int32 sums only). */
enum { AXS_METHOD_AUTO = 0, AXS_METHOD_DIRECT = 1, AXS_METHOD_EXPAND = 2,
       AXS_METHOD_DEPTHWISE = 3, AXS_METHOD_FACTORED = 4 };
/* Returned when a forced method (expand, depthwise) cannot serve the call. */
enum { AXS_EMETHOD = 4 };

/* CPU features: 1 when the path can run on this machine (compiler and CPU). */
int axs_path_supported(int path);
/* Best supported path. */
int axs_best_path(void);
/* 1 when the expanded tables of this table (fixed codes its columns) take the
 * byte-residual form on this path (expand.c): AVX-512 VBMI with VNNI, and a table whose
 * entries are an exact product plus a byte for every fixed code; -1 on a failed allocation. */
int axs_byte_residual(const int32_t *table, uint64_t token, int path);
/* Called in a child process made by fork(): from then on every kernel runs on one thread.
 * GNU OpenMP does not rebuild its thread pool in a forked child, so a parallel region of
 * two or more threads there waits forever for the parent's threads. */
void axs_forked_child(void);

/* Dequantization fused into the kernels: with it the kernels write float32 instead of the
 * integer sums. For the sum v of output row r, column o (int64, exact):
 *   x = v + corr[o] - zw[o] * sumx[r * groups + gcol[o]]
 *   y[r, o] = (float)((double)x * scale[o]), then + bias[o] in float32
 * corr, bias and (zw, sumx, gcol) nullable; the integer accumulation is still chosen by
 * out64 (int32 wraps like any int32 sum: exact whenever the sum fits). */
typedef struct {
    const double *scale;   /* (cols) */
    const int64_t *corr;   /* (cols) or NULL */
    const float *bias;     /* (cols) or NULL */
    const int64_t *zw;     /* (cols) or NULL (then sumx and gcol unused) */
    const int64_t *sumx;   /* (rows, groups) */
    const int64_t *gcol;   /* (cols): group of each column */
    int64_t groups;
    /* conv2d only: 0 writes y (N, OH, OW, COUT) (rows (n, oy, ox) by columns); P = OH * OW
     * writes y (N, COUT, OH, OW) instead: row r = n * P + p, column o at (n * COUT + o) * P
     * + p (the NCHW layout, stored directly: no transposed copy of the output) */
    int64_t nchw;
    /* a bound on |v| over every output (axkern._fast gives K max|T| for a frozen table), or 0
     * where none is known; with it and no window sums, the stores add corr to the int32
     * sums in int32 when the total cannot leave int32 (axs_xdeq_init) */
    int64_t bound;
} axs_dequant;

/* gemm: a (M, K), b (K, N) C-contiguous uint8; table (256, 256) int32 C-contiguous;
 * token: 0, or a number the caller gives this table alone and only while its entries cannot
 * change (the prepared-table cache then finds it without comparing its entries);
 * fac: NULL, or the table's exact factors (the factored method; see axs_factors);
 * out (M, N) int32 (out64 == 0) or int64 (out64 == 1) sums, or float32 with dq (NULL:
 * integers). nthreads <= 0: OpenMP default.
 * Returns an AXS_* code. */
int axs_gemm(const uint8_t *a, const uint8_t *b, const int32_t *table, uint64_t token,
             const axs_factors *fac, int64_t M, int64_t K, int64_t N, int out64, void *out,
             const axs_dequant *dq, int nthreads, int path, int method);

/* conv2d: x (N, H, W, C) NHWC, or (N, C, H, W) with in_nchw, w (KH, KW, C / groups, COUT)
 * HWIO, both C-contiguous uint8; out (N, OH, OW, COUT): int32/int64 sums, or float32 with
 * dq (NULL: integers). The depthwise method reads NCHW codes as they are (it works on
 * planes), and so does the factored one on depthwise layers with a dequantized NCHW output
 * (horizontal stride 1, no window sums); the other methods and calls take an NHWC copy of
 * them. Returns an AXS_* code. */
int axs_conv2d(const uint8_t *x, const uint8_t *w, const int32_t *table, uint64_t token,
               const axs_factors *fac, int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH,
               int64_t KW, int64_t COUT, int sh, int sw, int pt, int pb, int pl, int pr, int dh,
               int dw, int64_t groups, int pad_code, int out64, void *out,
               const axs_dequant *dq, int nthreads, int path, int method, int in_nchw);

/* grad="table" backward products (gradtab.c): ga[m, k] = sum_n DA[a[m, k], b[k, n]] gs[m, n]
 * and gb[k, n] = sum_m DB[a[m, k], b[k, n]] g[m, n] in float64 (either output may be NULL).
 * Returns an AXS_* code. */
int axs_table_grads(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t N,
                     const float *DA, const float *DB, const double *gs, const double *g,
                     double *ga, double *gb, int nthreads);

/* The im2col rows of one group of NCHW codes (row (n, oy, ox), column (c, ky, kx); pad_code
 * outside the image), and the reverse accumulation of gradients into gx (N, C, H, W). */
void axs_im2col_codes(const uint8_t *x, int64_t N, int64_t C, int64_t H, int64_t W,
                      int64_t G, int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt,
                      int pl, int dh, int dw, int64_t OH, int64_t OW, int pad_code,
                      uint8_t *out, int nthreads);
void axs_col2im_add(const double *ga, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G,
                    int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt, int pl, int dh,
                    int dw, int64_t OH, int64_t OW, double *gx, int nthreads);

/* Plain vector loops (quantize.c, epilogue.c) get an AVX2 clone picked at load time
 * (GCC's ifunc): twice the lanes of the x86-64 baseline, same IEEE operations (no FMA). */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) \
    && defined(__linux__)
#define AXS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AXS_VECTOR_CLONES
#endif

/* Fused float32 -> table index quantization (quantize.c); rowsum (nullable) gets the sum of
 * the codes of each row of the (rows, cols) array. */
int64_t axs_quantize(const float *x, int64_t rows, int64_t cols, int is_signed, float scale,
                  int32_t zp, float nmin, float nmax, float inv, int32_t qmin, int32_t qmax,
                  uint8_t mask, uint8_t *idx, int64_t *rowsum, int nthreads);
/* The same quantization of a planar (N, C, HW) float32 array (NCHW), written as (N, HW, C)
 * table indices (NHWC, the kernels' layout): the layout change made while quantizing. */
int64_t axs_quantize_nchw(const float *x, int64_t N, int64_t C, int64_t HW, int is_signed,
                          float scale, int32_t zp, float nmin, float nmax, float inv,
                          int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *idx, int nthreads);
/* Dequantized values of a tile, tile[i * ld + j] for rows r0 + i (i < ms) and columns
 * o0 + j (j < nf), into the NCHW output y (N, cols, P) (row r = n * P + p): one contiguous
 * run of pixels per column and image; blocks of 16 x 16 (path AVX-512) or 8 x 8 (AVX2)
 * transposed in registers. */
void axs_scatter_nchw(const float *tile, ptrdiff_t ld, int ms, int nf, int64_t r0, int64_t o0,
                      int64_t P, int64_t cols, float *y, int path);

/* min and max of x[0 .. n), n >= 1, in one parallel pass (quantize.c); returns the number
 * of NaN-holding blocks (0 when x holds no NaN; min and max are then meaningless). */
int64_t axs_minmax(const float *x, int64_t n, float *lo, float *hi, int nthreads);

/* Fused zero-point correction and dequantization (epilogue.c): y (rows, cols) float32 from
 * the int32 (in64 = 0) or int64 sums; sumx (rows, groups), zw and corr (cols) nullable. */
int axs_epilogue(const void *total, int in64, int64_t rows, int64_t cols, int64_t groups,
                  const int64_t *sumx, const int64_t *zw, const int64_t *corr,
                  const double *scale, const float *bias, float *y, int nthreads);

/* Per-group sums of values[index] over each receptive field (epilogue.c); out is
 * (N, OH, OW, G) int64; values has 256 entries. */
int axs_window_sums(const uint8_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                    int64_t G, const int64_t *values, int64_t KH, int64_t KW, int sh, int sw,
                    int pt, int pl, int dh, int dw, int64_t OH, int64_t OW, int pad_code,
                    int64_t *out, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
