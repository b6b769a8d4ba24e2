/* Expanded-table driver: exact LUT sums without a lookup per multiply-accumulate.
 *
 * For one reduction step k and a block of 16 output columns, the entries that a streamed
 * code v can meet are T[v, b[k, j]] for the 16 fixed codes b[k, j]: one row of an expanded
 * table R[k][v][0..16) (axsimd.h). A streamed row then costs one code load and one vector
 * load per step, its 16 sums staying in registers; nothing is gathered. The price is
 * building R, 256 * 16 entries per step, once per unit of work (a tile of up to 4096
 * streamed rows by one column block), and the padding of the last column block to 16.
 * Groups of at most 8 columns take 8-wide blocks on the AVX2 code (kern_avx2.c: 128-bit
 * lanes), and calls with too few tiles and blocks for the threads cut the reduction
 * instead of the rows (xksplit).
 *
 * R is built for 16 steps at a time (128 KiB, which stays in a 512 KiB L2 while all rows of
 * the tile pass by) and the tile's sums live in the output itself between those blocks
 * (int32 or float32 outputs: 4 bytes, the biased uint32 sums fit) or, for transposed and
 * partial column blocks, in a per-thread buffer. The sums start at -bias * K, so they end as
 * the int32 totals (two's complement), exact whenever the true sums fit int32, like every
 * int32 accumulation of axkern.
 *
 * Rows are generic: streamed row r of step k reads S[roff(r) + koff[k]], which covers GEMM
 * rows (roff = r * K, koff = k), GEMM columns (roff = r, koff = k * N) and convolution
 * pixels in a padded NHWC image (roff = pixel origin, koff = tap offset + channel): the
 * channels of a tap are contiguous, so no im2col copy is made. */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "axs_internal.h"

/* Bytes of sums per unit of work (see xtile_rows): 128 KiB ran about 10% slower on the
 * ResNet-8 layers (more building), 64 KiB 40%. */
#ifndef AXS_XACC
#define AXS_XACC (256 * 1024)
#endif
#ifndef AXS_RACC
#define AXS_RACC (512 * 1024)
#endif
/* Relative time of building one R entry, and of one direct lookup, against one expanded
 * lookup, per path (measured on Zen 3: AVX2 about 0.07 ns per entry built, 0.06 ns per
 * expanded and 0.5 ns per direct lookup and thread; portable C about 0.5, 0.25 and 0.7). */
#define AXS_XBUILD_AVX2 1.5
#define AXS_XBUILD_C 2.0
#define AXS_DIRECT_C 2.7
/* The AVX2 direct kernel per lookup, in expanded lookups: 0.46 - 0.52 ns a lookup of rows in
 * whole vectors of 32 and 1.1 - 1.2 ns of the rest (the portable loop), against 0.042 -
 * 0.057 ns an expanded lookup (Zen 3, one thread, int32 sums, 16-bit table; batch-1 layers
 * of 4 to 100 pixels by 64 to 512 filters). The former estimate (6 per lookup on rows
 * rounded up to 64) took the direct method for batch-1 layers of 25 - 64 pixels at 1.3 -
 * 2 times the expanded method's time. */
#define AXS_DIRECT_VEC 11.0
#define AXS_DIRECT_TAIL 27.0
/* A column of an 8-wide block (groups of at most 8 filters) against one of a 16-wide block:
 * a row and step take the same instructions on 128-bit lanes (as long as on 256-bit ones on
 * Zen 3), and groups of one filter add their own tables and stores; fitted on 132
 * depthwise-like, grouped and batch-1 layers on one thread (two-thread timings on the shared
 * machine were too noisy to fit, and agreed where they were clear). Counted as 8 columns,
 * the expanded method took depthwise layers of 5 x 5 and 7 x 7 filters, or of dilated 3 x 3
 * ones, at 1.2 - 1.5 times the direct method's time. */
#define AXS_X8 3.0
/* The AVX-512 VBMI path, in units of a 16-wide expanded lookup: a direct lookup (64 per
 * vpermi2b pair, rows rounded up to 64) and a column of a 32-wide block (zmm rows, half the
 * instructions per entry). Fitted on Zen 4 (double-pumped 512-bit units; two threads, 28
 * convolution and GEMM shapes from batch-1 ResNet layers to the bench's, every method
 * forced in turn): the former rule (direct lookups whenever the table has no factors) took
 * 1.2 - 3 times the best method's time on 11 of them, this one at most 1.14 (docs/
 * performance.md, "Zen 4"). Not measured on a CPU with full-width 512-bit units. */
#define AXS_DIRECT_512 1.1
#define AXS_X32 0.5
/* A direct lookup of the byte-residual kernel (axs_kern8r_avx512: tables in the byte-residual
 * form, AXS_R8MINF fixed codes or more, reductions of AXS_R8MINK steps or more) where the
 * fixed codes are the input's (the swapped orientations: pixels of a convolution, rows of
 * a GEMM; many of them, so the codes' interleaving and the exact part's pass are shared by
 * 64 fixed codes a tile). Fitted on Zen 4 (int32 sums, dequantizing store, two threads, a
 * folded synthetic table, codes of normals around the zero point) on 21 convolutions and
 * GEMMs, each the direct and the expanded method alternating: the swapped ones wanted
 * 0.59 - 0.69 (batch-1 and -2 layers of 256 and 512 channels, 3 x 3 and 1 x 1; GEMMs of 16 -
 * 256 rows). Where the fixed codes are the filters the 16-bit kernel's factor fits it too
 * (32 x 32 x 32 x 16 -> 16 wanted more than 1.03: its codes, clustered as activations are,
 * keep the expanded tables' rows in L1, which the direct kernel cannot use). Shorter
 * reductions (3 -> 16, 27 steps: 0.84 times the expanded method) weigh the tile's fixed
 * costs more. */
#define AXS_DIRECT_R8 0.65
/* The byte-residual form's 64-wide blocks (AVX-512 with VNNI), in the same units: a column
 * of a row and step, and an entry built (the 16-bit form's builders: AXS_XBUILD_AVX2).
 * Fitted on Zen 4 from perf profiles of 32 x 8 x 8 x 64 -> 64 and 256 x 1024 x 1024 (a row
 * step of 64 columns took 3.3 cycles against 2.5 for 32 columns of the 16-bit rows; a
 * block's building 12 - 15% of the kernel with tiles of 1024 rows). */
#define AXS_XRES 0.33
#define AXS_XRBUILD 0.4
/* The AVX2 byte-residual blocks (32 wide: ymm rows of residual bytes, the exact part by
 * vpmaddwd), in the same units: 1.1 - 1.2 times as fast as the 16-bit rows per column on
 * Zen 4 (int32 sums, two threads, codes of normals; docs/performance.md, "A thirteenth
 * session on Zen 4"), and half the bytes built per entry. */
#define AXS_XRES2 0.85
#define AXS_XRBUILD2 0.75

/* Blocks of 16 columns. Wider blocks fit fewer steps in a block of R that stays in L2, so
 * they reload their sums more often: in paired A/B timings 16-wide blocks ran 3 to 6%
 * faster than 32-wide ones on the ResNet-8 layers and 10% on the 8192 x 576 x 64 GEMM (and
 * allow 7 rows in flight, another 3 to 17%); 64-wide ones ran 30 to 40% slower (Zen 3,
 * ymm rows). On the AVX-512 path one zmm row holds 32 entries: there 32-wide blocks ran
 * 1.35 times as fast as 16-wide ones, with 16 steps per block of R (8: 0.91 - 0.95). */
static int xsteps(int nb)
{
    if (nb == AXS_RNB)
        return AXS_RSTEPS;
    return nb == AXS_XNB32 ? AXS_XSTEPW32 / nb : AXS_XSTEPW / nb;
}

/* Block width: 8 on the AVX2 code when a group has at most 8 columns (128-bit lanes,
 * kern_avx2.c), 32 on the AVX-512 path for groups of more than 16, else 16. */
static int xwidth(int path, int64_t cols)
{
    if (path == AXS_PATH_SCALAR)
        return AXS_XNB;
    if (cols <= AXS_XNB8)
        return AXS_XNB8;
    return path == AXS_PATH_AVX512_VBMI && cols > AXS_XNB ? AXS_XNB32 : AXS_XNB;
}

/* Block width of the byte-residual form on a path where it runs. */
static int rwidth(int path)
{
    return path == AXS_PATH_AVX2 ? AXS_R2NB : AXS_RNB;
}

/* Padded width of all column blocks of cols columns. */
static int64_t xpadded(int64_t cols, int nb)
{
    return (cols + nb - 1) / nb * nb;
}

/* Streamed rows per unit of work at most: AXS_XACC bytes of sums, or AXS_RACC for the
 * byte-residual blocks, and for 32-wide blocks where that still leaves every thread a unit
 * without cutting the reduction (Zen 4's 1 MiB L2: the ResNet-8 32->32 layer and GEMMs of
 * 8192 rows by 32 columns 1.08 - 1.10 times as fast, as each unit builds its own blocks of
 * R; where it had to cut the reduction 0.90 - 0.95). */
static int64_t xrows_max(int64_t rows, int64_t nblocks, int nt, int nb)
{
    const int64_t big = AXS_RACC / (4 * nb);
    if (nb == AXS_RNB || (nb == AXS_XNB32 && (rows + big - 1) / big * nblocks >= nt))
        return big;
    return AXS_XACC / (4 * nb);
}

/* Parts of the reduction per tile and column block. When the tiles of at most
 * AXS_XACC bytes of sums and the column blocks give the threads fewer than two units each
 * (GEMMs of few rows against many columns, or the reverse), the reduction is cut instead of
 * the rows: a row split builds each block of R once per tile, a reduction split builds it
 * once in all, and its partial sums cost one pass to add. Every part keeps at least 4
 * blocks of steps. */
static int64_t xksplit(int64_t rows, int64_t cols, int64_t groups, int64_t K, int nt, int nb)
{
    int64_t nblocks = xpadded(cols, nb) / nb * groups;
    int64_t rows_max = xrows_max(rows, nblocks, nt, nb);
    int64_t u = (rows + rows_max - 1) / rows_max * nblocks;
    if (nt == 1 || u >= 2 * nt)
        return 1;
    int64_t ks = (2 * nt + u - 1) / u, most = K / (4 * xsteps(nb));
    ks = ks < most ? ks : most;
    ks = ks < 8 ? ks : 8;
    return ks < 2 ? 1 : ks;
}

/* Rows per tile: a unit of work is one tile of rows by one column block (by one part of the
 * reduction, see xksplit), and its sums (rows * nb * 4 bytes) should stay in a 512 KiB L2
 * next to R; enough units for every thread, in whole rounds when there are only a few.
 * Splitting the columns first (and the rows only as far as needed) saves building: each unit
 * builds its own block of R. */
static int64_t xtile_rows(int64_t rows, int64_t cols, int64_t groups, int64_t K, int nt,
                          int nb)
{
    int64_t nblocks = xpadded(cols, nb) / nb * groups;
    int64_t rows_max = xrows_max(rows, nblocks, nt, nb);
    int64_t ntiles = (rows + rows_max - 1) / rows_max;
    int64_t most = (rows + 3) / 4;
    if (xksplit(rows, cols, groups, K, nt, nb) == 1)
        while (ntiles < most && (ntiles * nblocks < nt ||
                                 (ntiles * nblocks < 4 * nt && ntiles * nblocks % nt)))
            ntiles++;
    int64_t ms = (rows + ntiles - 1) / ntiles;
    ms = (ms + 3) & ~(int64_t)3;
    return ms < 4 ? 4 : ms;
}

/* Both costs are per thread: the work divided by the threads its units of work can keep
 * busy (units: the threads it can use, at most nt). A batch-1 layer of 64 pixels by 64
 * filters is one unit of the direct method but four of the expanded one (its column
 * blocks): on 2 threads the expanded method ran it in 0.39 ms, the direct one in 1.03. */
double axs_direct_cost(int path, int64_t rows, int64_t K, int64_t cols, int64_t units,
                       int res)
{
    double lookups;
    if (path == AXS_PATH_AVX2) {
        /* the vector loop takes 32 streamed rows at a time, a portable loop the rest */
        lookups = AXS_DIRECT_VEC * (double)(rows / 32 * 32) +
                  AXS_DIRECT_TAIL * (double)(rows % 32);
    } else {
        double per = path == AXS_PATH_SCALAR ? AXS_DIRECT_C : AXS_DIRECT_512;
        if (res)
            per = AXS_DIRECT_R8;
        lookups = per * (double)((rows + 63) / 64 * 64);
    }
    return lookups * (double)K * (double)cols / (double)(units > 1 ? units : 1);
}

/* A block of nb columns of the 16-bit rows in the units above: the entries built per code
 * and step (8-wide blocks were fitted as 24 columns), and the cost of a row and step (32-wide
 * ones at half a column each). */
static double xbuilt16(int nb)
{
    return nb == AXS_XNB8 ? AXS_X8 * AXS_XNB8 : nb;
}

static double xrow16(int nb)
{
    return nb == AXS_XNB32 ? AXS_X32 * AXS_XNB32 : xbuilt16(nb);
}

/* Width of the tail block of a byte-residual call of cols columns per group: its last
 * columns past the whole blocks (cols % nb) in one block of the 16-bit rows where that
 * costs less than a padded residual block (on AVX2 1 - 16 columns left over, on the AVX-512
 * path 9 - 32), else 0. Paired on Zen 4 (docs/performance.md, "A thirteenth session on Zen
 * 4"): 1.08 - 1.24 times as fast with 48 and 144 output channels on AVX2, 96 and 144 and
 * GEMMs of 80 and 144 columns on AVX-512. */
static int xtail(int path, int64_t cols)
{
    const int nb = rwidth(path);
    const int64_t rem = cols % nb;
    if (rem == 0 || cols < nb)
        return 0;
    const int nbt = xwidth(path, rem);   /* one block of the 16-bit rows, when it covers */
    const double xres = path == AXS_PATH_AVX2 ? AXS_XRES2 : AXS_XRES;
    return nbt >= rem && xrow16(nbt) < (double)nb * xres ? nbt : 0;
}

double axs_xcost(int path, int64_t rows, int64_t K, int64_t cols, int64_t groups, int nt,
                 int res)
{
    res = res && axs_xresidual_runs(path, cols);
    const int avx2 = path == AXS_PATH_AVX2;
    const double build16 = path == AXS_PATH_SCALAR ? AXS_XBUILD_C : AXS_XBUILD_AVX2;
    int nb = res ? rwidth(path) : xwidth(path, cols);
    int64_t ms = xtile_rows(rows, cols, groups, K, nt, nb), tiles = (rows + ms - 1) / ms;
    const int64_t blocks = xpadded(cols, nb) / nb;
    /* per group, w: the lookups' cost per row and step; bw: the building's per code and
     * step; a residual call's tail block (xtail) in the 16-bit rows at their weights */
    double w, bw;
    if (res) {
        const int nbt = xtail(path, cols);
        const double rcols = (double)((blocks - (nbt != 0)) * nb);
        w = rcols * (avx2 ? AXS_XRES2 : AXS_XRES);
        bw = rcols * (avx2 ? AXS_XRBUILD2 : AXS_XRBUILD);
        if (nbt) {
            w += xrow16(nbt);
            bw += build16 * xbuilt16(nbt);
        }
    } else {
        w = (double)blocks * xrow16(nb);
        bw = (double)blocks * build16 * xbuilt16(nb);
    }
    w *= (double)groups;
    bw *= (double)groups;
    int64_t units = tiles * (blocks * groups) * xksplit(rows, cols, groups, K, nt, nb);
    units = units < nt ? units : nt;
    return ((double)rows * (double)K * w + (double)tiles * 256.0 * (double)K * bw) /
           (double)(units > 1 ? units : 1);
}

static void xfns_for(int path, int nb, axs_xbuild_fn *build, axs_xkern_fn *kern)
{
    /* the AVX-512 path's CPUs all run AVX2 */
    if (path == AXS_PATH_SCALAR) {
        *build = axs_xbuild_scalar;
        *kern = axs_xkern_scalar;
    } else if (nb == AXS_XNB32) {
        *build = axs_xbuild32_avx2;
        *kern = axs_xkern32_avx512;
    } else if (nb == AXS_XNB8) {
        *build = axs_xbuild8_avx2;
        *kern = axs_xkern8_avx2;
    } else {
        *build = axs_xbuild_avx2;
        *kern = axs_xkern_avx2;
    }
}

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
/* y[i * ldy + j] = float32(float64((int32)(v[i * ldv + j] - vbias) + corr[j] - zw[j] * sx_i)
 * * scale[j]) (+ bias[j]) for i < rows, j < n, with sx_i = sx[i * ldsx] (0 without sx): the
 * epilogue of axs_dequant_one for a tile of rows, in one call (a call per row cost as much
 * as the row). Without sx the zw term is left out: x - zw * 0 is x (x is never -0), and
 * the short rows of a depthwise band (16 columns) then take a third less time. */
AXS_VECTOR_CLONES
static void dequant_rows_any(const uint32_t *v, ptrdiff_t ldv, int rows, int n, uint32_t vbias,
                             const int64_t *sx, ptrdiff_t ldsx, const double *scale,
                             const double *corr, const int32_t *c32, const double *zw,
                             const float *bias, float *y, ptrdiff_t ldy)
{
    for (int i = 0; i < rows; i++) {
        const xword *vi = v + i * ldv;
        float *yi = y + i * ldy;
        if (!sx && c32) {   /* v - vbias + corr fits int32: one conversion */
            if (bias) {
                for (int j = 0; j < n; j++) {
                    double x = (double)(int32_t)(vi[j] - vbias + (uint32_t)c32[j]);
                    yi[j] = (float)(x * scale[j]) + bias[j];
                }
            } else {
                for (int j = 0; j < n; j++) {
                    double x = (double)(int32_t)(vi[j] - vbias + (uint32_t)c32[j]);
                    yi[j] = (float)(x * scale[j]);
                }
            }
            continue;
        }
        if (!sx) {
            if (bias) {
                for (int j = 0; j < n; j++) {
                    double x = (double)(int32_t)(vi[j] - vbias) + corr[j];
                    yi[j] = (float)(x * scale[j]) + bias[j];
                }
            } else {
                for (int j = 0; j < n; j++) {
                    double x = (double)(int32_t)(vi[j] - vbias) + corr[j];
                    yi[j] = (float)(x * scale[j]);
                }
            }
            continue;
        }
        const double s = (double)sx[i * ldsx];
        if (bias) {
            for (int j = 0; j < n; j++) {
                double x = (double)(int32_t)(vi[j] - vbias) + corr[j] - zw[j] * s;
                yi[j] = (float)(x * scale[j]) + bias[j];
            }
        } else {
            for (int j = 0; j < n; j++) {
                double x = (double)(int32_t)(vi[j] - vbias) + corr[j] - zw[j] * s;
                yi[j] = (float)(x * scale[j]);
            }
        }
    }
}
void axs_dequant_rows(const uint32_t *v, ptrdiff_t ldv, int rows, int n, uint32_t vbias,
                      const int64_t *sx, ptrdiff_t ldsx, const double *scale,
                      const double *corr, const int32_t *c32, const double *zw,
                      const float *bias, float *y, ptrdiff_t ldy)
{
    if (!sx && n > 0 && n % 8 == 0 && axs_path_supported(AXS_PATH_AVX2)) {
        axs_dequant_rows8_avx2(v, ldv, rows, n, vbias, scale, corr, c32, bias, y, ldy);
        return;
    }
    dequant_rows_any(v, ldv, rows, n, vbias, sx, ldsx, scale, corr, c32, zw, bias, y, ldy);
}
AXS_VECTOR_CLONES
void axs_dequant_run(const uint32_t *v, int64_t n, uint32_t kbias, double scale, double corr,
                     const int32_t *c32, const float *bias, float *y)
{
    /* the terms of axs_dequant_rows without window sums, for the same bits */
    if (c32) {
        const uint32_t k = kbias - (uint32_t)*c32;
        const float b = bias ? *bias : 0.0f;
        if (bias)
            for (int64_t i = 0; i < n; i++)
                y[i] = (float)((double)(int32_t)(v[i] - k) * scale) + b;
        else
            for (int64_t i = 0; i < n; i++)
                y[i] = (float)((double)(int32_t)(v[i] - k) * scale);
        return;
    }
    if (bias) {
        const float b = *bias;
        for (int64_t i = 0; i < n; i++) {
            double x = (double)(int32_t)(v[i] - kbias) + corr;
            y[i] = (float)(x * scale) + b;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            double x = (double)(int32_t)(v[i] - kbias) + corr;
            y[i] = (float)(x * scale);
        }
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

static int gcol_run(const axs_dequant *dq, int64_t o0, int j0, int n)
{
    /* the end of the run of columns o0 + j0 .. o0 + n - 1 in j0's group (all without sumx) */
    int j1 = dq->zw ? j0 + 1 : n;
    while (j1 < n && dq->gcol[o0 + j1] == dq->gcol[o0 + j0])
        j1++;
    return j1;
}

void axs_dequant_cols(const axs_dequant *dq, const axs_xdeq *dd, const xword *acc,
                      ptrdiff_t lda, int64_t r0, int ms, int64_t o0, int nf, float *y,
                      ptrdiff_t ldy)
{
    for (int j0 = 0, j1; j0 < nf; j0 = j1) {
        j1 = gcol_run(dq, o0, j0, nf);
        axs_dequant_rows(acc + j0, lda, ms, j1 - j0, 0,
                         dq->zw ? dq->sumx + r0 * dq->groups + dq->gcol[o0 + j0] : NULL,
                         (ptrdiff_t)dq->groups, dd->scale + o0 + j0, dd->corr + o0 + j0,
                         dd->corr32 ? dd->corr32 + o0 + j0 : NULL, dd->zw + o0 + j0,
                         dd->bias ? dd->bias + o0 + j0 : NULL, y + j0, ldy);
    }
}

/* Sums in acc (int32 totals, row i, column j at acc[i * lda + j]) of rows r0 .. r0 + ms and
 * output columns o0 .. o0 + nf, into the output; acc may be the output
 * itself (inplace: then int32 outputs are already done). */
void axs_xstore(const xproblem *pb, const axs_xdeq *dd, xword *acc, ptrdiff_t lda,
                int64_t r0, int ms, int64_t o0, int nf, int inplace, xword *tmp)
{
    const axs_dequant *dq = pb->dq;
    if (!dq) {
        if (inplace)
            return;
        int32_t *o = (int32_t *)pb->out;
        if (!pb->transposed) {
            for (int i = 0; i < ms; i++)
                memcpy(o + (r0 + i) * pb->ldo + o0, acc + i * lda, (size_t)nf * sizeof(int32_t));
            return;
        }
        for (int i = 0; i < ms; i++)
            for (int j = 0; j < nf; j++) {
                int64_t e = pb->transposed ? (o0 + j) * pb->ldo + r0 + i
                                           : (r0 + i) * pb->ldo + o0 + j;
                o[e] = (int32_t)acc[i * lda + j];
            }
        return;
    }
    float *y = (float *)pb->out;
    if (dq->nchw && dd->exact && !dq->zw && dd->corr32 && pb->path != AXS_PATH_SCALAR) {
        /* NCHW output of int32 sums without window sums: dequantized and transposed in
         * registers into the planes (depthwise 32 x 16 x 16 x 64, mul8u_drum4, whole calls,
         * paired: 1.02 - 1.05 times as fast) */
        axs_dqscatter_nchw(dq, dd, acc, lda, ms, nf, r0, o0, pb->ldo, y);
        return;
    }
    if (dq->nchw) {
        /* NCHW output: dequantize the tile in place (float32 over its uint32 sums), then
         * store a run of pixels per column */
        float *ft = (float *)acc;
        if (dd->exact) {
            axs_dequant_cols(dq, dd, acc, lda, r0, ms, o0, nf, ft, lda);
        } else {
            for (int i = 0; i < ms; i++)
                for (int j = 0; j < nf; j++)
                    ft[i * lda + j] = axs_dequant_one(dq, (int32_t)acc[i * lda + j], r0 + i,
                                                      o0 + j);
        }
        axs_scatter_nchw(ft, lda, ms, nf, r0, o0, dq->nchw, pb->ldo, y, pb->path);
        return;
    }
    if (pb->transposed && dd->exact && tmp) {
        /* swapped GEMM: output row o0 + j holds the sums of streamed rows r0 .. r0 + ms;
         * transposed into tmp, they dequantize a row at a time (per-column terms indexed
         * by the streamed row) instead of element by element */
        for (int j = 0; j < nf; j++)
            for (int i = 0; i < ms; i++)
                tmp[(ptrdiff_t)j * ms + i] = acc[(ptrdiff_t)i * lda + j];
        /* its columns are the streamed rows: runs of them by group, as in axs_dequant_cols */
        for (int i0 = 0, i1; i0 < ms; i0 = i1) {
            i1 = gcol_run(dq, r0, i0, ms);
            axs_dequant_rows(tmp + i0, ms, nf, i1 - i0, 0,
                             dq->zw ? dq->sumx + o0 * dq->groups + dq->gcol[r0 + i0] : NULL,
                             (ptrdiff_t)dq->groups, dd->scale + r0 + i0, dd->corr + r0 + i0,
                             dd->corr32 ? dd->corr32 + r0 + i0 : NULL, dd->zw + r0 + i0,
                             dd->bias ? dd->bias + r0 + i0 : NULL,
                             y + o0 * pb->ldo + r0 + i0, (ptrdiff_t)pb->ldo);
        }
        return;
    }
    if (pb->transposed || !dd->exact) {
        for (int i = 0; i < ms; i++)
            for (int j = 0; j < nf; j++)
                if (pb->transposed)
                    y[(o0 + j) * pb->ldo + r0 + i] =
                        axs_dequant_one(dq, (int32_t)acc[i * lda + j], o0 + j, r0 + i);
                else
                    y[(r0 + i) * pb->ldo + o0 + j] =
                        axs_dequant_one(dq, (int32_t)acc[i * lda + j], r0 + i, o0 + j);
        return;
    }
    axs_dequant_cols(dq, dd, acc, lda, r0, ms, o0, nf, y + r0 * pb->ldo + o0, (ptrdiff_t)pb->ldo);
}

/* Offsets of rows r0 .. r0 + ms into roff. */
void axs_xrow_offsets(const xproblem *pb, int64_t r0, int ms, ptrdiff_t *roff)
{
    if (!pb->conv) {
        for (int i = 0; i < ms; i++)
            roff[i] = (ptrdiff_t)(r0 + i) * pb->rstride;
        return;
    }
    /* pixel (n, oy, ox) of row r0, then stepped: no divisions per row */
    int64_t n = r0 / pb->P, q = r0 % pb->P, oy = q / pb->OW, ox = q % pb->OW;
    for (int i = 0; i < ms; i++) {
        roff[i] = n * pb->nstride + oy * pb->ystride + ox * pb->xstride;
        if (++ox == pb->OW) {
            ox = 0;
            if (++oy * pb->OW == pb->P) {
                oy = 0;
                n++;
            }
        }
    }
}

int axs_xdeq_init(const axs_dequant *dq, int64_t ncol, int64_t rows, axs_xdeq *dd)
{
    memset(dd, 0, sizeof(*dd));
    if (!dq)
        return AXS_OK;
    const int64_t lim = (int64_t)1 << 52, zlim = (int64_t)1 << 20;
    /* corr, zw, then the int32 corr */
    dd->corr = (double *)malloc((size_t)ncol * (2 * sizeof(double) + sizeof(int32_t)));
    if (!dd->corr)
        return AXS_ENOMEM;
    dd->zw = dd->corr + ncol;
    dd->exact = 1;
    int64_t cmax = 0;
    for (int64_t o = 0; o < ncol; o++) {
        int64_t c = dq->corr ? dq->corr[o] : 0, z = dq->zw ? dq->zw[o] : 0;
        dd->exact &= c > -lim && c < lim && z > -zlim && z < zlim;
        dd->corr[o] = (double)c;
        dd->zw[o] = (double)z;
        c = c < 0 ? -c : c;   /* |c| < 2^52 when exact */
        cmax = c > cmax ? c : cmax;
    }
    /* every |v + corr| <= bound + max|corr| below 2^31: the int32 sum of the two is exact */
    if (dd->exact && !dq->zw && dq->bound > 0 && dq->bound < ((int64_t)1 << 31) &&
        cmax < ((int64_t)1 << 31) - dq->bound) {
        dd->corr32 = (int32_t *)(dd->zw + ncol);
        for (int64_t o = 0; o < ncol; o++)
            dd->corr32[o] = (int32_t)(dq->corr ? dq->corr[o] : 0);
    }
    if (dq->zw)  /* |zw * sumx| < 2^20 * 2^32 */
        for (int64_t e = 0; e < rows * dq->groups && dd->exact; e++)
            dd->exact &= dq->sumx[e] > -(lim >> 20) && dq->sumx[e] < (lim >> 20);
    dd->scale = dq->scale;
    dd->bias = dq->bias;
    return AXS_OK;
}

int axs_xresidual_runs(int path, int64_t cols)
{
    if (path == AXS_PATH_AVX2)
        return cols > AXS_XNB;
    return path == AXS_PATH_AVX512_VBMI && cols > AXS_XNB32 && axs_has_vnni();
}

/* Whether a table and path give cols columns the byte-residual form: a table that has one,
 * where axs_xresidual_runs. */
static int xresidual_for(const axs_fixed_table *t, int path, int64_t cols)
{
    return t->res8 && axs_xresidual_runs(path, cols);
}

/* Whether the call takes the byte-residual form: xresidual_for, and consecutive codes in
 * every block of steps (GEMM rows, NHWC convolutions whose taps hold whole blocks). */
static int xresidual(const xproblem *pb, const axs_fixed_table *t, int path)
{
    if (!xresidual_for(t, path, pb->cols))
        return 0;
    for (int64_t k0 = 0; k0 < pb->K; k0 += AXS_RSTEPS) {
        const int kb = (int)(pb->K - k0 < AXS_RSTEPS ? pb->K - k0 : AXS_RSTEPS);
        if (!axs_xconsecutive(pb->koff + k0, kb))
            return 0;
    }
    return 1;
}

/* The sums' start of each column of a unit, byte-residual form: the per-code constant rcc
 * of its fixed codes over steps k0 .. k1 (columns j >= nf: 0). rcc holds the correction of
 * vpdpbusd's operands (prepare_residual in axsimd.c), which the AVX2 form (int16 values,
 * vpmaddwd) does not want: plain takes it off. */
static void rstart(const axs_fixed_table *t, const uint8_t *F, ptrdiff_t ldF, int nf, int nb,
                   int plain, int64_t k0, int64_t k1, uint32_t *init)
{
    for (int j = 0; j < nb; j++) {
        uint32_t c = 0;
        for (int64_t k = k0; j < nf && k < k1; k++) {
            const int f = F[j * ldF + k];
            c += (uint32_t)t->rcc[f];
            if (plain)
                c -= t->rsigned ? (uint32_t)(-128 * (int8_t)f) : (uint32_t)(128 * f);
        }
        init[j] = c;
    }
}

static int xrun(const xproblem *pb, const axs_fixed_table *t, int nt, int path)
{
    axs_xbuild_fn build = NULL;
    axs_xkern_fn kern = NULL;
    const int res = xresidual(pb, t, path), res2 = res && path == AXS_PATH_AVX2;
    const int nb = res ? rwidth(path) : xwidth(path, pb->cols);
    /* a byte-residual call's last block of each group in the 16-bit rows (xtail) */
    const int nbt = res ? xtail(path, pb->cols) : 0;
    if (!res || nbt)
        xfns_for(path, res ? nbt : nb, &build, &kern);
    int64_t ms_max = xtile_rows(pb->rows, pb->cols, pb->groups, pb->K, nt, nb);
    int64_t ntiles = (pb->rows + ms_max - 1) / ms_max;
    int64_t bpg = xpadded(pb->cols, nb) / nb; /* column blocks per group */
    int64_t nblocks = bpg * pb->groups, tb = ntiles * nblocks;
    /* reduction parts: whole blocks of steps each; with several, every unit sums into its
     * own slice of part, and the slices of a tile are added before the store */
    const int kbmax = res2 ? AXS_R2STEPS : xsteps(nb);
    int64_t ks = xksplit(pb->rows, pb->cols, pb->groups, pb->K, nt, nb);
    int64_t kblocks = (pb->K + kbmax - 1) / kbmax, kper = (kblocks + ks - 1) / ks;
    ks = (kblocks + kper - 1) / kper;
    int64_t units = tb * ks;
    if (nt > units)
        nt = (int)units;
    const size_t slice = (size_t)ms_max * nb;
    xword *part = NULL;
    if (ks > 1) {
        part = (xword *)axs_alloc64((size_t)units * slice * sizeof(xword));
        if (!part)
            return AXS_ENOMEM;
    }
    /* int32 totals: the biased sums start at -bias * K (mod 2^32) */
    const uint32_t init = (uint32_t)(0u - (uint32_t)((uint64_t)t->bias * (uint64_t)pb->K));
    axs_xdeq dd;
    /* per-column terms of the output: transposed (swapped GEMM), its columns are the
     * streamed rows and its rows the fixed codes */
    if (pb->transposed ? axs_xdeq_init(pb->dq, pb->rows, pb->groups * pb->cols, &dd)
                       : axs_xdeq_init(pb->dq, pb->groups * pb->cols, pb->rows, &dd)) {
        axs_free64(part);
        return AXS_ENOMEM;
    }
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        /* a block of R: kbmax steps; the byte-residual form's rows, its exact part's
         * operand and the sums' start of a unit */
        const size_t rbytes = res2 ? (size_t)AXS_R2STEPS * AXS_R2STEP
                                   : (size_t)AXS_RSTEPS * AXS_RSTEP;
        const int n16 = res ? nbt : nb;   /* the 16-bit rows' width, 0: none */
        const size_t rbytes16 = n16 ? (size_t)xsteps(n16) * AXS_XSTEP(n16) * sizeof(uint16_t)
                                    : 0;
        const size_t rall = res ? rbytes + (size_t)AXS_R2STEPS * AXS_RNB + AXS_RNB * 4 : 0;
        uint16_t *R = (uint16_t *)axs_alloc64(rall > rbytes16 ? rall : rbytes16);
        /* W: AXS_RSTEPS * AXS_RNB bytes (AVX-512) or AXS_R2W int16 (AVX2) */
        uint8_t *R8 = (uint8_t *)R, *W8 = R8 + rbytes;
        uint32_t *rinit = (uint32_t *)(W8 + (size_t)AXS_R2STEPS * AXS_RNB);
        ptrdiff_t *roff = (ptrdiff_t *)malloc((size_t)ms_max * sizeof(ptrdiff_t));
        xword *local = NULL;
        /* the transposed dequantizing store's buffer */
        xword *tmp = pb->transposed && pb->dq ? (xword *)axs_alloc64(slice * sizeof(xword))
                                              : NULL;
        int ok = R && roff && (tmp || !(pb->transposed && pb->dq));
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        /* dynamic: a busy core must not hold everyone up */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            if (!ok)
                continue;
            int64_t q = u / ks, kp = u % ks;   /* tile and block; reduction part */
            int64_t r0 = (q / nblocks) * ms_max, g = (q % nblocks) / bpg;
            int64_t c0 = (q % nblocks) % bpg * nb;
            int ms = (int)(pb->rows - r0 < ms_max ? pb->rows - r0 : ms_max);
            int nf = (int)(pb->cols - c0 < nb ? pb->cols - c0 : nb);
            int64_t o0 = g * pb->cols + c0;
            /* the tail block (16-bit rows of nbt columns: steps of their own blocks) */
            const int rblock = res && !(nbt && (q % nblocks) % bpg == bpg - 1);
            const int kbu = rblock || !res ? kbmax : xsteps(nbt);
            /* sums in the output itself only when its rows are the block's width: rows of
             * 64 or 128 bytes every 256 bytes use a quarter or half of the L2 sets, and the
             * 64->64 @8x8 layer ran 1.2 - 1.7 times as long as through the buffer */
            int inplace = ks == 1 && !pb->transposed && nf == nb && pb->ldo == nb &&
                          !(pb->dq && pb->dq->nchw);
            xword *acc;
            ptrdiff_t lda;
            if (ks > 1) {
                acc = part + (size_t)u * slice;
                lda = nb;
            } else if (inplace) {
                acc = (xword *)pb->out + r0 * pb->ldo + o0;
                lda = (ptrdiff_t)pb->ldo;
            } else {
                if (!local)
                    local = (xword *)axs_alloc64(slice * sizeof(xword));
                if (!local) {
                    ok = 0;
#pragma omp atomic write
                    failed = 1;
                    continue;
                }
                acc = local;
                lda = nb;
            }
            axs_xrow_offsets(pb, r0, ms, roff);
            const uint8_t *S = pb->S + g * pb->gstride, *F = pb->F + o0 * pb->K;
            int64_t k1 = (kp + 1) * kper * kbmax < pb->K ? (kp + 1) * kper * kbmax : pb->K;
            if (rblock) {
                rstart(t, F, (ptrdiff_t)pb->K, nf, nb, res2, kp * kper * kbmax, k1, rinit);
                for (int64_t k0 = kp * kper * kbmax; k0 < k1; k0 += kbmax) {
                    int kb = (int)(k1 - k0 < kbmax ? k1 - k0 : kbmax);
                    const uint32_t *start = k0 == kp * kper * kbmax ? rinit : NULL;
                    const uint16_t *mk = pb->kmask ? pb->kmask + k0 : NULL;
                    if (res2) {
                        axs_rbuild_avx2(t->res8d, F + k0, (ptrdiff_t)pb->K, nf, kb,
                                        t->rsigned, t->rz, R8, (int16_t *)W8, mk);
                        axs_rkern_avx2(S, roff, ms, pb->koff + k0, kb, R8, (int16_t *)W8, acc,
                                       lda, start, t->rsigned);
                        continue;
                    }
                    axs_rbuild_avx512(t->res8, F + k0, (ptrdiff_t)pb->K, nf, kb, R8, W8, mk);
                    axs_rkern_avx512(S, roff, ms, pb->koff[k0], kb, R8, W8, acc, lda, start,
                                     t->rsigned, t->rz);
                }
                if (ks == 1)
                    axs_xstore(pb, &dd, acc, lda, r0, ms, o0, nf, inplace, tmp);
                continue;
            }
            for (int64_t k0 = kp * kper * kbmax; k0 < k1; k0 += kbu) {
                int kb = (int)(k1 - k0 < kbu ? k1 - k0 : kbu);
                build(t->tab16, F + k0, (ptrdiff_t)pb->K, nf, kb, R,
                      pb->kmask ? pb->kmask + k0 : NULL);
                /* the -bias * K start in the first part only: the parts add up */
                kern(S, roff, ms, pb->koff + k0, kb, R, acc, lda, k0 == kp * kper * kbmax,
                     k0 + kb == k1, kp == 0 ? init : 0);
            }
            if (ks == 1)
                axs_xstore(pb, &dd, acc, lda, r0, ms, o0, nf, inplace, tmp);
        }
        if (ks > 1) {
            /* the parts of each tile and block, added modulo 2^32, then stored; with fewer
             * tiles than threads, in runs of a tile's rows (one tile: the adds and the
             * store ran on one thread while the others waited) */
            const int64_t rch = tb >= nt ? 1 : (nt + tb - 1) / tb;
#pragma omp for schedule(dynamic, 1)
            for (int64_t qc = 0; qc < tb * rch; qc++) {
                if (!ok)
                    continue;
                const int64_t q = qc / rch;
                int64_t r0 = (q / nblocks) * ms_max, g = (q % nblocks) / bpg;
                int64_t c0 = (q % nblocks) % bpg * nb;
                int ms = (int)(pb->rows - r0 < ms_max ? pb->rows - r0 : ms_max);
                int nf = (int)(pb->cols - c0 < nb ? pb->cols - c0 : nb);
                const int per = (int)((ms + rch - 1) / rch + 3) & ~3;
                const int i0 = (int)(qc % rch) * per;
                if (i0 >= ms)
                    continue;
                const int mc = ms - i0 < per ? ms - i0 : per;
                xword *sum = part + (size_t)q * ks * slice + (size_t)i0 * nb;
                for (int64_t kp = 1; kp < ks; kp++) {
                    const xword *p = sum + (size_t)kp * slice;
                    for (int i = 0; i < mc; i++)   /* a tail block fills nf of nb */
                        for (int j = 0; j < nf; j++)
                            sum[(size_t)i * nb + j] += p[(size_t)i * nb + j];
                }
                axs_xstore(pb, &dd, sum, nb, r0 + i0, mc, g * pb->cols + c0, nf, 0, tmp);
            }
        }
        axs_free64(R);
        axs_free64(local);
        axs_free64(tmp);
        free(roff);
    }
    free(dd.corr);
    axs_free64(part);
    return failed ? AXS_ENOMEM : AXS_OK;
}

void axs_transpose_u8(const uint8_t *b, int64_t K, int64_t N, uint8_t *bt, int nt)
{
#pragma omp parallel for schedule(static) num_threads(axs_threads_for(nt, K * N))
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        const int64_t n1 = n0 + 16 < N ? n0 + 16 : N;
        int64_t k0 = 0;
#if defined(__SSE2__)
        if (n1 - n0 == 16)
            for (; k0 + 16 <= K; k0 += 16)
                axs_tr16x16_u8(b + k0 * N + n0, (ptrdiff_t)N, bt + n0 * K + k0, (ptrdiff_t)K);
#endif
        for (int64_t n = n0; n < n1; n++)
            for (int64_t k = k0; k < K; k++)
                bt[n * K + k] = b[k * N + n];
    }
}

/* Masks of the codes a step streams (xproblem.kmask), by their span: the chunks of 16 codes
 * between the least and the greatest code. Activations cluster (a channel's codes, a ReLU's
 * zero point), so the expanded tables skip building the rows of whole chunks of codes no
 * row reads; a pass over the streamed operand, once per call, made only where a built row
 * serves few streamed rows (AXS_XMASK_ROWS or fewer: batch-1 layers of small maps, GEMMs
 * of few rows), as building is then a large part of the call. */
#define AXS_XMASK_ROWS 2048
static uint16_t chunk_span(unsigned lo, unsigned hi)
{
    return (uint16_t)(((2u << (hi >> 4)) - 1u) & ~((1u << (lo >> 4)) - 1u));
}

/* m[j]: the span of column j < n of a rows x n byte matrix s (row stride ld). */
static int col_spans(const uint8_t *s, int64_t rows, int64_t n, ptrdiff_t ld, uint16_t *m)
{
    uint8_t *lo = (uint8_t *)malloc((size_t)(2 * n));
    if (!lo)
        return AXS_ENOMEM;
    uint8_t *hi = lo + n;
    memset(lo, 255, (size_t)n);
    memset(hi, 0, (size_t)n);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = s + r * ld;
        for (int64_t j = 0; j < n; j++) {
            lo[j] = row[j] < lo[j] ? row[j] : lo[j];
            hi[j] = row[j] > hi[j] ? row[j] : hi[j];
        }
    }
    for (int64_t j = 0; j < n; j++)
        m[j] = lo[j] <= hi[j] ? chunk_span(lo[j], hi[j]) : 0;
    free(lo);
    return AXS_OK;
}

/* m[i]: the span of row i < rows of a rows x n byte matrix s. */
static void row_spans(const uint8_t *s, int64_t rows, int64_t n, uint16_t *m)
{
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = s + i * n;
        uint8_t lo = 255, hi = 0;
        for (int64_t j = 0; j < n; j++) {
            lo = row[j] < lo ? row[j] : lo;
            hi = row[j] > hi ? row[j] : hi;
        }
        m[i] = n ? chunk_span(lo, hi) : 0;
    }
}

#define AXS_XCOPY_ROWS 32
int axs_xgemm(const uint8_t *a, const uint8_t *b, const axs_fixed_table *t, int swapped,
              int64_t M, int64_t K, int64_t N, void *out, const axs_dequant *dq, int nt,
              int path)
{
    /* Streamed columns of b (swapped) have their codes N apart; the byte-residual form
     * wants them consecutive, which a transposed copy of b gives (as it gives the fixed
     * columns of the other orientation), and so do the 16-bit rows from AXS_XCOPY_ROWS
     * fixed rows of a on: a row at a time over consecutive codes instead of 7 rows in
     * flight through offsets. Paired on Zen 4 (int32 sums, dequantizing store, codes of
     * normals): 256 x 1024 x 1024 1.08 (AVX2) and 1.11 (AVX-512, a table without the
     * residual form) times as fast, 128 x 512 x 4096 1.17 and 1.29, 32 x 768 x 768 1.01
     * and 1.05; with 16 rows and fewer the copy outweighs the gain (8 x 2048 x 1024: 0.88). */
    const int bcopy = !swapped || xresidual_for(t, path, M) || M >= AXS_XCOPY_ROWS;
    ptrdiff_t *koff = (ptrdiff_t *)malloc((size_t)K * sizeof(ptrdiff_t));
    uint8_t *bt = bcopy ? (uint8_t *)malloc((size_t)(N * K)) : NULL;
    const int masked = (swapped ? N : M) <= AXS_XMASK_ROWS;
    uint16_t *kmask = masked ? (uint16_t *)malloc((size_t)K * sizeof(uint16_t)) : NULL;
    /* step k streams row k of b (swapped) or column k of a */
    if (!koff || (bcopy && !bt) || (masked && !kmask) ||
        (masked && !swapped && col_spans(a, M, K, (ptrdiff_t)K, kmask))) {
        free(koff);
        free(bt);
        free(kmask);
        return AXS_ENOMEM;
    }
    if (masked && swapped)
        row_spans(b, K, N, kmask);
    xproblem pb;
    memset(&pb, 0, sizeof(pb));
    pb.K = K;
    pb.koff = koff;
    pb.groups = 1;
    pb.out = out;
    pb.dq = dq;
    pb.ldo = N;
    pb.kmask = kmask;
    if (bt)
        axs_transpose_u8(b, K, N, bt, nt);
    if (swapped) {  /* streamed: columns of b; fixed: rows of a */
        for (int64_t k = 0; k < K; k++)
            koff[k] = (ptrdiff_t)(bt ? k : k * N);
        pb.S = bt ? bt : b;
        pb.rows = N;
        pb.rstride = bt ? (ptrdiff_t)K : 1;
        pb.F = a;
        pb.cols = M;
        pb.transposed = 1;
    } else {
        for (int64_t k = 0; k < K; k++)
            koff[k] = (ptrdiff_t)k;
        pb.S = a;
        pb.rows = M;
        pb.rstride = (ptrdiff_t)K;
        pb.F = bt;
        pb.cols = N;
    }
    int rc = xrun(&pb, t, nt, path);
    free(koff);
    free(bt);
    free(kmask);
    return rc;
}

void axs_xconv_problem(xproblem *pb, int64_t N, int64_t OH, int64_t OW, int64_t plane,
                       int64_t Wp, int64_t px, int sh, int sw, int64_t OG, int64_t groups,
                       int64_t gstride, void *out, const axs_dequant *dq, int path)
{
    memset(pb, 0, sizeof(*pb));
    pb->path = path;
    pb->rows = N * OH * OW;
    pb->conv = 1;
    pb->nstride = (ptrdiff_t)(plane * px);
    pb->ystride = (ptrdiff_t)(sh * Wp * px);
    pb->xstride = (ptrdiff_t)(sw * px);
    pb->P = OH * OW;
    pb->OW = OW;
    pb->cols = OG;
    pb->groups = groups;
    pb->gstride = (ptrdiff_t)gstride;
    pb->out = out;
    pb->dq = dq;
    pb->ldo = OG * groups;
}

void axs_pad_nhwc(const uint8_t *x, int64_t N, int64_t H, int64_t W, int64_t C, int pt,
                  int pb, int pl, int pr, int pad_code, uint8_t *xp, int nt)
{
    int64_t Hp = H + pt + pb, Wp = W + pl + pr, rowb = Wp * C;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t ny = 0; ny < N * Hp; ny++) {
        int64_t n = ny / Hp, y = ny % Hp;
        uint8_t *d = xp + ny * rowb;
        if (y < pt || y >= pt + H) {
            memset(d, pad_code, (size_t)rowb);
            continue;
        }
        memset(d, pad_code, (size_t)(pl * C));
        memcpy(d + pl * C, x + ((n * H) + (y - pt)) * W * C, (size_t)(W * C));
        memset(d + (pl + W) * C, pad_code, (size_t)(pr * C));
    }
}

int axs_xconv2d(const uint8_t *x, const uint8_t *w, const axs_fixed_table *t, int64_t N,
                int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int64_t COUT, int sh,
                int sw, int pt, int pb_, int pl, int pr, int dh, int dw, int64_t groups,
                int pad_code, void *out, const axs_dequant *dq, int nt, int path)
{
    int64_t Hp = H + pt + pb_, Wp = W + pl + pr;
    int64_t OH = (Hp - (int64_t)dh * (KH - 1) - 1) / sh + 1;
    int64_t OW = (Wp - (int64_t)dw * (KW - 1) - 1) / sw + 1;
    int64_t CG = C / groups, OG = COUT / groups, K = KH * KW * CG;
    int padded = pt || pb_ || pl || pr;
    uint8_t *xp = padded ? (uint8_t *)malloc((size_t)(N * Hp * Wp * C)) : NULL;
    ptrdiff_t *koff = (ptrdiff_t *)malloc((size_t)K * sizeof(ptrdiff_t));
    uint8_t *F = (uint8_t *)malloc((size_t)(COUT * K));
    const int masked = N * OH * OW <= AXS_XMASK_ROWS;
    uint16_t *kmask = masked ? (uint16_t *)malloc((size_t)(K + C) * sizeof(uint16_t)) : NULL;
    uint16_t *cm = kmask ? kmask + K : NULL;
    if ((padded && !xp) || !koff || !F || (masked && (!kmask ||
                                                      col_spans(x, N * H * W, C, C, cm)))) {
        free(xp);
        free(koff);
        free(F);
        free(kmask);
        return AXS_ENOMEM;
    }
    /* step k reads channel k % CG of every group, or the pad code */
    for (int64_t k = 0; masked && k < K; k++) {
        uint16_t m = padded ? (uint16_t)(1u << ((unsigned)pad_code >> 4)) : 0;
        for (int64_t g = 0; g < groups; g++)
            m |= cm[g * CG + k % CG];
        kmask[k] = m;
    }
    /* k = (ky * KW + kx) * CG + c: HWIO filters are already (K, COUT) per group */
    for (int64_t ky = 0; ky < KH; ky++)
        for (int64_t kx = 0; kx < KW; kx++)
            for (int64_t c = 0; c < CG; c++)
                koff[(ky * KW + kx) * CG + c] = (ptrdiff_t)((ky * dh * Wp + kx * dw) * C + c);
    axs_transpose_u8(w, K, COUT, F, nt);
    if (padded)
        axs_pad_nhwc(x, N, H, W, C, pt, pb_, pl, pr, pad_code, xp, nt);
    xproblem pb;
    axs_xconv_problem(&pb, N, OH, OW, Hp * Wp, Wp, C, sh, sw, OG, groups, CG, out, dq, path);
    pb.S = padded ? xp : x;
    pb.K = K;
    pb.koff = koff;
    pb.F = F;
    pb.kmask = kmask;
    int rc = xrun(&pb, t, nt, path);
    free(xp);
    free(koff);
    free(F);
    free(kmask);
    return rc;
}
