/* The backward products of axkern.torch's grad="table": gathers from the multiplier's
 * difference tables in place of the operands (see axkern/_torch_grad.py).
 *
 *   ga[m, k] = sum_n DA[a[m, k], b[k, n]] * gs[m, n]
 *   gb[k, n] = sum_m DB[a[m, k], b[k, n]] * g[m, n]
 *
 * a (M, K) and b (K, N) are operand indices (value - smallest value, < 256), DA and DB
 * (256, 256) float32 tables indexed [a][b], g and gs (M, N) float64; the sums are float64.
 *
 * As in the expanded tables of expand.c, the gathers along n are done once per reduction
 * index k instead of once per row: R_k[v][n] = T[v, b[k, n]] for all 256 codes v, so that a
 * row m reads the contiguous row R_k[a[m, k]] (a dot product with gs[m, :], or an update of
 * gb[k, :] with g[m, :]). The rows are built for a block of k at a time (at most 512 KiB for
 * both tables). ga runs over rows m; gb over k, each thread keeping whole rows gb[k, :]
 * while a tile of rows of g (at most 256 KiB) passes, so that g comes from L2 and no two
 * threads write one row. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "axs_internal.h"

#define AXS_GT_TILE (256 * 1024)
#define AXS_GT_ROWS (512 * 1024)

static void gt_rows(const float *T, const uint8_t *bk, int64_t N, float *R)
{
    for (int v = 0; v < 256; v++) {
        const float *t = T + ((size_t)v << 8);
        float *r = R + (size_t)v * N;
        for (int64_t n = 0; n < N; n++)
            r[n] = t[bk[n]];
    }
}

/* ga[k] = sum_n R_k[a[k]][n] * gm[n] for k < nk (one row m; R_k at R + k * 256 * N): a
 * call per row and block of k (the vector clones are called through an indirection). */
AXS_VECTOR_CLONES
static void gt_dots(const float *R, const uint8_t *am, int64_t nk, const double *gm, int64_t N,
                    double *ga)
{
    for (int64_t k = 0; k < nk; k++) {
        const float *r = R + ((size_t)k * 256 + am[k]) * N;
        /* 8 partial sums: a single one chains every add (the compiler may not reorder a
         * floating-point reduction), 8 fill two vectors of 4 */
        double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t n = 0;
        for (; n + 8 <= N; n += 8)
            for (int j = 0; j < 8; j++)
                p[j] += (double)r[n + j] * gm[n + j];
        double s = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
        for (; n < N; n++)
            s += (double)r[n] * gm[n];
        ga[k] = s;
    }
}

/* acc[n] += sum over the rows m < nm of R_k[a[m * K]][n] * g[m * N + n] (one k). */
AXS_VECTOR_CLONES
static void gt_axpys(const float *Rk, const uint8_t *ak, int64_t K, int64_t nm, const double *g,
                     int64_t N, double *acc)
{
    for (int64_t m = 0; m < nm; m++) {
        const float *r = Rk + (size_t)ak[m * K] * N;
        const double *gm = g + m * N;
        for (int64_t n = 0; n < N; n++)
            acc[n] += (double)r[n] * gm[n];
    }
}

int axs_table_grads(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t N,
                    const float *DA, const float *DB, const double *gs, const double *g,
                    double *ga, double *gb, int nthreads)
{
    const int nt = axs_threads(nthreads);
    if (gb)
        for (int64_t e = 0; e < K * N; e++)
            gb[e] = 0.0;
    if (M == 0 || K == 0 || N == 0 || (!ga && !gb)) {
        for (int64_t e = 0; ga && e < M * K; e++)
            ga[e] = 0.0;
        return AXS_OK;
    }
    const int64_t per_k = 256 * N * (int64_t)sizeof(float);   /* one table's rows for one k */
    int64_t kb = AXS_GT_ROWS / (2 * per_k);
    kb = kb < 1 ? 1 : (kb > K ? K : kb);
    float *RA = ga ? (float *)malloc((size_t)(kb * per_k)) : NULL;
    float *RB = gb ? (float *)malloc((size_t)(kb * per_k)) : NULL;
    if ((ga && !RA) || (gb && !RB)) {
        free(RA);
        free(RB);
        return AXS_ENOMEM;
    }
    int64_t rows = AXS_GT_TILE / (int64_t)(8 * N);
    rows = rows < 1 ? 1 : rows;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = k0 + kb < K ? k0 + kb : K;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t k = k0; k < k1; k++) {
            if (RA)
                gt_rows(DA, b + k * N, N, RA + (size_t)(k - k0) * 256 * N);
            if (RB)
                gt_rows(DB, b + k * N, N, RB + (size_t)(k - k0) * 256 * N);
        }
        if (ga) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t m = 0; m < M; m++)
                gt_dots(RA, a + m * K + k0, k1 - k0, gs + m * N, N, ga + m * K + k0);
        }
        if (gb) {
            for (int64_t m0 = 0; m0 < M; m0 += rows) {
                const int64_t m1 = m0 + rows < M ? m0 + rows : M;
#pragma omp parallel for num_threads(nt) schedule(static)
                for (int64_t k = k0; k < k1; k++)
                    gt_axpys(RB + (size_t)(k - k0) * 256 * N, a + m0 * K + k, K, m1 - m0,
                             g + m0 * N, N, gb + k * N);
            }
        }
    }
    free(RA);
    free(RB);
    return AXS_OK;
}

/* The im2col layout of group g of an NCHW image batch (N, C, H, W): row (n * OH + oy) * OW
 * + ox, column (c * KH + ky) * KW + kx for the group's channels c < Cg. With x, the rows of
 * codes into out (pad_code outside the image); else gx += the columns ga (padded positions
 * take nothing). One thread per image, as images never share a pixel. */
static void gt_walk(const uint8_t *x, uint8_t *out, int pad_code, const double *ga, double *gx,
                    int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t g,
                    int64_t KH, int64_t KW, int sh, int sw, int pt, int pl, int dh, int dw,
                    int64_t OH, int64_t OW, int nthreads)
{
    const int64_t Cg = C / G, Kg = Cg * KH * KW;
#pragma omp parallel for num_threads(axs_threads(nthreads)) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                const int64_t row = ((n * OH + oy) * OW + ox) * Kg;
                int64_t col = 0;
                for (int64_t c = 0; c < Cg; c++) {
                    const int64_t plane = ((n * C + g * Cg + c) * H) * W;
                    for (int64_t ky = 0; ky < KH; ky++) {
                        const int64_t iy = oy * sh - pt + ky * dh;
                        for (int64_t kx = 0; kx < KW; kx++, col++) {
                            const int64_t ix = ox * sw - pl + kx * dw;
                            const int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                            if (x)
                                out[row + col] = inside ? x[plane + iy * W + ix]
                                                        : (uint8_t)pad_code;
                            else if (inside)
                                gx[plane + iy * W + ix] += ga[row + col];
                        }
                    }
                }
            }
}

void axs_im2col_codes(const uint8_t *x, int64_t N, int64_t C, int64_t H, int64_t W,
                      int64_t G, int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt,
                      int pl, int dh, int dw, int64_t OH, int64_t OW, int pad_code,
                      uint8_t *out, int nthreads)
{
    gt_walk(x, out, pad_code, NULL, NULL, N, C, H, W, G, g, KH, KW, sh, sw, pt, pl, dh, dw, OH,
            OW, nthreads);
}

void axs_col2im_add(const double *ga, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G,
                    int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt, int pl, int dh,
                    int dw, int64_t OH, int64_t OW, double *gx, int nthreads)
{
    gt_walk(NULL, NULL, 0, ga, gx, N, C, H, W, G, g, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW,
            nthreads);
}
