/* The backward products of axkern.torch's grad="table": gathers from the multiplier's
 * difference tables in place of the operands (see axkern/_torch_grad.py).
 *
 *   ga[m, k] = sum_n DA[a[m, k], b[k, n]] * gs[m, n]
 *   gb[k, n] = sum_m DB[a[m, k], b[k, n]] * g[m, n]
 *
 * a (M, K) and b (K, N) are operand indices (value - smallest value, < 256), DA and DB
 * (256, 256) float32 tables indexed [a][b], g and gs (M, N) float64; the sums are float64.
 * ga runs over rows (each a dot product along n, the row DA[a[m, k]] in L1); gb over the
 * reduction index k, each thread keeping whole rows gb[k, :] while a tile of rows of g
 * (at most 256 KiB) passes, so that g comes from L2 and no two threads write one row. */
#include <stddef.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "axsimd.h"

#define AXS_GT_TILE (256 * 1024)

AXS_VECTOR_CLONES
static double gt_dot(const float *row, const uint8_t *bk, const double *gm, int64_t N)
{
    double s = 0.0;
    for (int64_t n = 0; n < N; n++)
        s += (double)row[bk[n]] * gm[n];
    return s;
}

AXS_VECTOR_CLONES
static void gt_axpy(const float *row, const uint8_t *bk, const double *gm, int64_t N,
                    double *acc)
{
    for (int64_t n = 0; n < N; n++)
        acc[n] += (double)row[bk[n]] * gm[n];
}

void axs_table_grads(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t N,
                     const float *DA, const float *DB, const double *gs, const double *g,
                     double *ga, double *gb, int nthreads)
{
#ifdef _OPENMP
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    int nt = 1;
    (void)nthreads;
#endif
    if (ga) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++)
                ga[m * K + k] = gt_dot(DA + ((size_t)a[m * K + k] << 8), b + k * N,
                                       gs + m * N, N);
    }
    if (gb) {
        for (int64_t e = 0; e < K * N; e++)
            gb[e] = 0.0;
        int64_t rows = AXS_GT_TILE / (int64_t)(8 * (N > 0 ? N : 1));
        rows = rows < 1 ? 1 : rows;
        for (int64_t m0 = 0; m0 < M; m0 += rows) {
            int64_t m1 = m0 + rows < M ? m0 + rows : M;
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t k = 0; k < K; k++)
                for (int64_t m = m0; m < m1; m++)
                    gt_axpy(DB + ((size_t)a[m * K + k] << 8), b + k * N, g + m * N, N,
                            gb + k * N);
        }
    }
}
