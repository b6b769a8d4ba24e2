/* Fused quantization of float32 tensors to table indices (and optional row sums of the
 * codes), bit-identical to the float32 formulas of axkern.quant.quantize_float:
 *
 *   unsigned (TensorFlow's FakeQuant rounding):
 *     code = min(floor((clamp(x, nmin, nmax) - nmin) * inv + 0.5), qmax - qmin) + qmin
 *   signed (symmetric):
 *     code = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)
 *
 * every operation rounded to float32 in the same order; index = code & mask.
 * One pass over the data instead of NumPy's seven, in parallel. */
#include <stdint.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
/* a fused multiply-add would skip the rounding of the product: keep them separate */
#pragma GCC optimize("fp-contract=off")
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "axsimd.h"

static inline int32_t code_unsigned(float x, float nmin, float nmax, float inv, int32_t span,
                                    int32_t qmin)
{
    float t = x < nmin ? nmin : x;  /* np.maximum / np.minimum for finite x */
    t = t > nmax ? nmax : t;
    t = t - nmin;                   /* >= 0 */
    t = t * inv;
    t = t + 0.5f;                   /* >= 0.5: floor is truncation */
    int32_t c = (int32_t)t;
    return (c < span ? c : span) + qmin;
}

static inline int32_t code_signed(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    float t = x / scale;
    /* round half to even: adding and subtracting 1.5 * 2^23 rounds in the default mode
     * (exact for |t| < 2^22; larger values end up clamped either way) */
    t = t > 4194304.0f ? 4194304.0f : (t < -4194304.0f ? -4194304.0f : t);
    t = (t + 12582912.0f) - 12582912.0f;
    int32_t c = (int32_t)t + zp;
    return c < qmin ? qmin : (c > qmax ? qmax : c);
}

static void quantize_rows(const float *x, int64_t r0, int64_t r1, int64_t cols, int is_signed,
                          float scale, int32_t zp, float nmin, float nmax, float inv,
                          int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *idx,
                          int64_t *rowsum)
{
    int32_t span = qmax - qmin;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * cols;
        uint8_t *ir = idx + r * cols;
        int64_t s = 0;
        if (is_signed) {
            for (int64_t c = 0; c < cols; c++) {
                int32_t q = code_signed(xr[c], scale, zp, qmin, qmax);
                ir[c] = (uint8_t)((uint32_t)q & mask);
                s += q;
            }
        } else {
            for (int64_t c = 0; c < cols; c++) {
                int32_t q = code_unsigned(xr[c], nmin, nmax, inv, span, qmin);
                ir[c] = (uint8_t)((uint32_t)q & mask);
                s += q;
            }
        }
        if (rowsum)
            rowsum[r] = s;
    }
}

void axs_quantize(const float *x, int64_t rows, int64_t cols, int is_signed, float scale,
                  int32_t zp, float nmin, float nmax, float inv, int32_t qmin, int32_t qmax,
                  uint8_t mask, uint8_t *idx, int64_t *rowsum, int nthreads)
{
#ifdef _OPENMP
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    int nt = 1;
    (void)nthreads;
#endif
    if (rows >= 4 * (int64_t)nt || rowsum || rows * cols < 65536) {
        /* whole rows per thread (row sums need them); small inputs on one thread */
        int use = rows * cols < 65536 ? 1 : nt;
#pragma omp parallel for schedule(static) num_threads(use)
        for (int64_t r = 0; r < rows; r++)
            quantize_rows(x, r, r + 1, cols, is_signed, scale, zp, nmin, nmax, inv, qmin, qmax,
                          mask, idx, rowsum);
        return;
    }
    /* few long rows and no sums: split the flat array */
    int64_t n = rows * cols, block = 16384;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t b = 0; b < (n + block - 1) / block; b++) {
        int64_t e = (b + 1) * block < n ? (b + 1) * block : n;
        quantize_rows(x + b * block, 0, 1, e - b * block, is_signed, scale, zp, nmin, nmax, inv,
                      qmin, qmax, mask, idx + b * block, NULL);
    }
}
