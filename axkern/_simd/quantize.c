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
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
/* a fused multiply-add would skip the rounding of the product: keep them separate */
#pragma GCC optimize("fp-contract=off")
#endif

#include "axs_internal.h"

/* The largest t an unsigned loop truncates: a scale so large that nmax - nmin overflows
 * gives t = +Inf, whose truncation would overflow (any cap above the 65535 codes serves) */
#define AXS_TCAP 1073741824.0f

static inline int32_t code_unsigned(float x, float nmin, float nmax, float inv, int32_t span,
                                    int32_t qmin)
{
    float t = x < nmin ? nmin : x;  /* np.maximum / np.minimum for finite x */
    t = t > nmax ? nmax : t;
    t = t - nmin;                   /* >= 0 */
    t = t * inv;
    t = t + 0.5f;                   /* >= 0.5: floor is truncation */
    /* capped (AXS_TCAP): then the span is the code, as the reference's min(floor(t), span)
     * in float32 gives */
    t = t < AXS_TCAP ? t : AXS_TCAP;
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

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define AXS_QUANT_AVX2 1
/* A round's four vectors of masked codes (0 .. 255 each) as 32 bytes, in order: two packs,
 * then the lanes put back in place. */
static inline __attribute__((always_inline, target("avx2"))) void
store_codes_avx2(const __m256i q[4], uint8_t *ir)
{
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]),
                                    _mm256_packus_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)ir, _mm256_permutevar8x32_epi32(w, order));
}

static inline __attribute__((always_inline, target("avx2"))) int32_t lane_sum_avx2(__m256i v)
{
    int32_t lanes[8], s = 0;
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (int i = 0; i < 8; i++)
        s += lanes[i];
    return s;
}

/* The codes of quantize_run with explicit AVX2, 32 values a round: the same float32
 * operations in the same order, separate instructions (no multiply-add). Unsigned codes:
 * max, min, subtract, multiply, add 0.5, truncate, clamp to the span; signed codes: divide,
 * clamp to +-2^22, round half to even by adding and subtracting 1.5 * 2^23, add the zero
 * point, clamp to the code range. Non-finite values are counted per lane (x - x is not 0;
 * a true compare is -1 in its lane). The compiler vectorized the plain unsigned loop at
 * about a cycle per value and left the signed one scalar, at 2 ns a value. */
static inline __attribute__((always_inline, target("avx2"))) int64_t
quantize_run_avx2(const float *restrict xr, int64_t n, const int is_signed, float scale,
                  int32_t zp, float nmin, float nmax, float inv, int32_t qmin, int32_t qmax,
                  uint8_t mask, uint8_t *restrict ir, int32_t *restrict bad)
{
    const __m256 lo = _mm256_set1_ps(nmin), hi = _mm256_set1_ps(nmax);
    const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
    const __m256 cap = _mm256_set1_ps(AXS_TCAP);
    const __m256 vscale = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
    const __m256 big = _mm256_set1_ps(4194304.0f), nbig = _mm256_set1_ps(-4194304.0f);
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256i span = _mm256_set1_epi32(qmax - qmin), vzp = _mm256_set1_epi32(zp);
    const __m256i qlo = _mm256_set1_epi32(qmin), qhi = _mm256_set1_epi32(qmax);
    const __m256i vmask = _mm256_set1_epi32(mask);
    __m256i sum = _mm256_setzero_si256(), nbad = _mm256_setzero_si256();
    int32_t nb = 0;
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256i q[4];
        for (int u = 0; u < 4; u++) {
            __m256 x = _mm256_loadu_ps(xr + c + 8 * u);
            nbad = _mm256_sub_epi32(nbad, _mm256_castps_si256(
                _mm256_cmp_ps(_mm256_sub_ps(x, x), zero, _CMP_NEQ_UQ)));
            __m256i k;
            if (is_signed) {
                __m256 t = _mm256_div_ps(x, vscale);
                t = _mm256_min_ps(big, _mm256_max_ps(nbig, t));
                t = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
                k = _mm256_add_epi32(_mm256_cvttps_epi32(t), vzp);
                k = _mm256_min_epi32(_mm256_max_epi32(k, qlo), qhi);
            } else {
                __m256 t = _mm256_max_ps(lo, x);   /* x < nmin ? nmin : x */
                t = _mm256_min_ps(hi, t);          /* t > nmax ? nmax : t */
                t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(t, lo), vinv), half);
                k = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_min_ps(t, cap)), span);
                k = _mm256_add_epi32(k, qlo);
            }
            sum = _mm256_add_epi32(sum, k);
            q[u] = _mm256_and_si256(k, vmask);   /* the index bits: 0 .. 255 */
        }
        store_codes_avx2(q, ir + c);
    }
    int32_t s = lane_sum_avx2(sum);
    nb += lane_sum_avx2(nbad);
    for (; c < n; c++) {
        nb += !(xr[c] - xr[c] == 0.0f);
        int32_t q = is_signed ? code_signed(xr[c], scale, zp, qmin, qmax)
                              : code_unsigned(xr[c], nmin, nmax, inv, qmax - qmin, qmin);
        ir[c] = (uint8_t)((uint32_t)q & mask);
        s += q;
    }
    *bad += nb;
    return s;
}

/* The common case of unsigned 8-bit codes (qmin 0, qmax 255, index mask 255) without their
 * sum, 9 operations per 8 values instead of 15 for the same codes: the clamp to the span is
 * taken before the truncation (min(t, 255) truncates to min(floor(t), 255) for t >= 0.5,
 * and keeps t = +Inf, which a scale so large that the range overflows gives, from
 * truncating to INT32_MIN; the second pack reads its int16 inputs as signed, so codes must
 * stay below 32768 there); the add of qmin and the mask are nothing; the clamp from below
 * is the packs' unsigned saturation (x < nmin gives x - nmin < 0 and t < 0.5, which
 * truncates to 0 or a negative int32 that saturates to 0, the code of nmin; -Inf gives
 * INT32_MIN, also 0); and non-finite values are found by OR-ing the bits of x - x (+0 for
 * every finite x) instead of counting them. The clamp to nmax stays: a huge x would
 * truncate to INT32_MIN. */
__attribute__((target("avx2"))) static void
quantize_run_u8_avx2(const float *restrict xr, int64_t n, float nmin, float nmax, float inv,
                     uint8_t *restrict ir, int32_t *restrict bad)
{
    const __m256 lo = _mm256_set1_ps(nmin), hi = _mm256_set1_ps(nmax);
    const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
    const __m256 top = _mm256_set1_ps(255.0f);
    __m256 nonfin = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256i q[4];
        for (int u = 0; u < 4; u++) {
            __m256 x = _mm256_loadu_ps(xr + c + 8 * u);
            nonfin = _mm256_or_ps(nonfin, _mm256_sub_ps(x, x));
            __m256 t = _mm256_min_ps(hi, x);   /* x > nmax ? nmax : x */
            t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(t, lo), vinv), half);
            q[u] = _mm256_cvttps_epi32(_mm256_min_ps(t, top));
        }
        store_codes_avx2(q, ir + c);
    }
    int32_t nb = !_mm256_testz_si256(_mm256_castps_si256(nonfin), _mm256_castps_si256(nonfin));
    for (; c < n; c++) {
        nb += !(xr[c] - xr[c] == 0.0f);
        ir[c] = (uint8_t)code_unsigned(xr[c], nmin, nmax, inv, 255, 0);
    }
    *bad += nb;
}

/* The two kinds as functions of their own: quantize_run's default clone may call them but
 * not inline an AVX2 function. */
__attribute__((target("avx2"))) static int64_t
quantize_run_u_avx2(const float *restrict xr, int64_t n, float nmin, float nmax, float inv,
                    int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *restrict ir,
                    int32_t *restrict bad)
{
    return quantize_run_avx2(xr, n, 0, 1.0f, 0, nmin, nmax, inv, qmin, qmax, mask, ir, bad);
}

__attribute__((target("avx2"))) static int64_t
quantize_run_s_avx2(const float *restrict xr, int64_t n, float scale, int32_t zp, int32_t qmin,
                    int32_t qmax, uint8_t mask, uint8_t *restrict ir, int32_t *restrict bad)
{
    return quantize_run_avx2(xr, n, 1, scale, zp, 0.0f, 0.0f, 1.0f, qmin, qmax, mask, ir, bad);
}

/* Whether this CPU runs it: asked once (relaxed atomics: every writer stores the same). */
static int quant_avx2(void)
{
    static int known = -1;
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        v = axs_path_supported(AXS_PATH_AVX2);
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

/* Codes of one run of at most 32768 values (int32 sums cannot overflow: the caller
 * guarantees |code| <= 65535): the AVX2 loops above where the CPU has AVX2, else plain
 * loops over float32 and int32 that the compiler may vectorize; returns the sum of the
 * codes (only when need_sum: else possibly 0) and adds to *bad a positive number when the
 * run holds non-finite inputs (their codes are meaningless: the caller raises). */
AXS_VECTOR_CLONES
static int64_t quantize_run(const float *restrict xr, int64_t n, int is_signed, float scale,
                            int32_t zp, float nmin, float nmax, float inv, int32_t qmin,
                            int32_t qmax, uint8_t mask, uint8_t *restrict ir,
                            int32_t *restrict bad, int need_sum)
{
#ifdef AXS_QUANT_AVX2
    if (quant_avx2()) {
        if (!need_sum && !is_signed && qmin == 0 && qmax == 255 && mask == 255) {
            quantize_run_u8_avx2(xr, n, nmin, nmax, inv, ir, bad);
            return 0;
        }
        return is_signed ? quantize_run_s_avx2(xr, n, scale, zp, qmin, qmax, mask, ir, bad)
                         : quantize_run_u_avx2(xr, n, nmin, nmax, inv, qmin, qmax, mask, ir,
                                               bad);
    }
#endif
    int32_t span = qmax - qmin, s = 0, nb = 0;
    if (is_signed) {
        for (int64_t c = 0; c < n; c++) {
            nb += !(xr[c] - xr[c] == 0.0f);  /* NaN or Inf */
            int32_t q = code_signed(xr[c], scale, zp, qmin, qmax);
            ir[c] = (uint8_t)((uint32_t)q & mask);
            s += q;
        }
    } else {
        for (int64_t c = 0; c < n; c++) {
            nb += !(xr[c] - xr[c] == 0.0f);
            int32_t q = code_unsigned(xr[c], nmin, nmax, inv, span, qmin);
            ir[c] = (uint8_t)((uint32_t)q & mask);
            s += q;
        }
    }
    *bad += nb;
    return s;
}

static int64_t quantize_rows(const float *x, int64_t r0, int64_t r1, int64_t cols, int is_signed,
                             float scale, int32_t zp, float nmin, float nmax, float inv,
                             int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *idx,
                             int64_t *rowsum)
{
    int32_t bad = 0;
    int64_t nbad = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * cols;
        uint8_t *ir = idx + r * cols;
        int64_t s = 0;
        for (int64_t c0 = 0; c0 < cols; c0 += 32768) {
            int64_t n = cols - c0 < 32768 ? cols - c0 : 32768;
            s += quantize_run(xr + c0, n, is_signed, scale, zp, nmin, nmax, inv, qmin, qmax,
                              mask, ir + c0, &bad, rowsum != NULL);
            nbad += bad;
            bad = 0;
        }
        if (rowsum)
            rowsum[r] = s;
    }
    return nbad;
}

int64_t axs_quantize(const float *x, int64_t rows, int64_t cols, int is_signed, float scale,
                     int32_t zp, float nmin, float nmax, float inv, int32_t qmin, int32_t qmax,
                     uint8_t mask, uint8_t *idx, int64_t *rowsum, int nthreads)
{
    const int nt = axs_threads(nthreads);
    int64_t nbad = 0;
    if (rows >= 4 * (int64_t)nt || rowsum || rows * cols < 65536) {
        /* whole rows per thread (row sums need them); small inputs on one thread; short
         * rows in blocks of rows, so that the vector loops run over long stretches */
        int use = rows * cols < 65536 ? 1 : nt;
        int64_t per = cols >= 4096 ? 1 : 4096 / cols;
#pragma omp parallel for schedule(static) num_threads(use) reduction(+:nbad)
        for (int64_t b = 0; b < (rows + per - 1) / per; b++) {
            int64_t r1 = (b + 1) * per < rows ? (b + 1) * per : rows;
            if (rowsum) {
                nbad += quantize_rows(x, b * per, r1, cols, is_signed, scale, zp, nmin, nmax,
                                      inv, qmin, qmax, mask, idx, rowsum);
            } else {
                /* the block is contiguous: one long run */
                nbad += quantize_rows(x + b * per * cols, 0, 1, (r1 - b * per) * cols,
                                      is_signed, scale, zp, nmin, nmax, inv, qmin, qmax, mask,
                                      idx + b * per * cols, NULL);
            }
        }
        return nbad;
    }
    /* few long rows and no sums: split the flat array */
    int64_t n = rows * cols, block = 16384;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(+:nbad)
    for (int64_t b = 0; b < (n + block - 1) / block; b++) {
        int64_t e = (b + 1) * block < n ? (b + 1) * block : n;
        nbad += quantize_rows(x + b * block, 0, 1, e - b * block, is_signed, scale, zp, nmin,
                              nmax, inv, qmin, qmax, mask, idx + b * block, NULL);
    }
    return nbad;
}

/* Planar input (NCHW) to NHWC indices: per image and block of pixels, each channel's run
 * is quantized by the same vector loop into a channel-major tile (in L1), which is then
 * written pixel-major. The codes are those of axs_quantize, bit for bit: only where they
 * are stored differs. */
static void tile_to_nhwc(const uint8_t *restrict tile, int64_t pb, int64_t len, int64_t C,
                         uint8_t *restrict dst)
{
    int64_t i0 = 0, c16 = 0;
#if defined(__SSE2__)
    /* 16 x 16 blocks (pixels x channels); the channels past a multiple of 16 below */
    c16 = C / 16 * 16;
    for (; i0 + 16 <= len; i0 += 16)
        for (int64_t c = 0; c < c16; c += 16)
            axs_tr16x16_u8(tile + c * pb + i0, (ptrdiff_t)pb, dst + i0 * C + c, (ptrdiff_t)C);
    for (int64_t i = 0; i < i0; i++)
        for (int64_t c = c16; c < C; c++)
            dst[i * C + c] = tile[c * pb + i];
#endif
    for (int64_t i = i0; i < len; i++)
        for (int64_t c = 0; c < C; c++)
            dst[i * C + c] = tile[c * pb + i];
}

int64_t axs_quantize_nchw(const float *x, int64_t N, int64_t C, int64_t HW, int is_signed,
                          float scale, int32_t zp, float nmin, float nmax, float inv,
                          int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *idx, int nthreads)
{
    const int nt = axs_threads_for(nthreads, N * C * HW);
    (void)nt;
    /* pixels per tile: the tile (C x pb bytes) stays within 16 KiB of L1 */
    int64_t pb = 16384 / (C > 0 ? C : 1);
    pb = pb < 16 ? 16 : pb > HW ? HW : pb;
    int64_t tiles = (HW + pb - 1) / pb, nbad = 0;
    int err = 0;
#pragma omp parallel num_threads(nt) reduction(+:nbad)
    {
        uint8_t *tile = (uint8_t *)malloc((size_t)(C * pb));
        if (!tile) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < N * tiles; u++) {
            if (!tile)
                continue;
            int64_t n = u / tiles, p0 = (u % tiles) * pb;
            int64_t len = HW - p0 < pb ? HW - p0 : pb;
            int32_t bad = 0;
            for (int64_t c = 0; c < C; c++)
                quantize_run(x + (n * C + c) * HW + p0, len, is_signed, scale, zp, nmin, nmax,
                             inv, qmin, qmax, mask, tile + c * pb, &bad, 0);
            nbad += bad;
            tile_to_nhwc(tile, pb, len, C, idx + (n * HW + p0) * C);
        }
        free(tile);
    }
    return err ? -1 : nbad;
}

/* ---- min and max of a float32 array, one pass (the per-call quantization range) ---- */

static void minmax_scalar(const float *x, int64_t n, float *lo, float *hi, int64_t *nan)
{
    float a = *lo, b = *hi;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        k += v != v;
        a = v < a ? v : a;
        b = v > b ? v : b;
    }
    *lo = a;
    *hi = b;
    *nan += k;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
/* explicit AVX2: compilers do not vectorize float min/max reductions without fast-math */
__attribute__((target("avx2"))) static void minmax_avx2(const float *x, int64_t n, float *lo,
                                                        float *hi, int64_t *nan)
{
    __m256 mn0 = _mm256_set1_ps(*lo), mx0 = _mm256_set1_ps(*hi), mn1 = mn0, mx1 = mx0;
    __m256 un = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        mn0 = _mm256_min_ps(mn0, v0);
        mx0 = _mm256_max_ps(mx0, v0);
        mn1 = _mm256_min_ps(mn1, v1);
        mx1 = _mm256_max_ps(mx1, v1);
        un = _mm256_or_ps(un, _mm256_cmp_ps(v0, v1, _CMP_UNORD_Q));  /* a NaN in either */
    }
    float a[8], b[8], c[8], d[8];
    _mm256_storeu_ps(a, mn0);
    _mm256_storeu_ps(b, mn1);
    _mm256_storeu_ps(c, mx0);
    _mm256_storeu_ps(d, mx1);
    float l = *lo, h = *hi;
    for (int j = 0; j < 8; j++) {
        l = a[j] < l ? a[j] : l;
        l = b[j] < l ? b[j] : l;
        h = c[j] > h ? c[j] : h;
        h = d[j] > h ? d[j] : h;
    }
    *nan += _mm256_movemask_ps(un) != 0;
    *lo = l;
    *hi = h;
    minmax_scalar(x + i, n - i, lo, hi, nan);
}
#define AXS_HAVE_MINMAX_AVX2 1
#endif

int64_t axs_minmax(const float *x, int64_t n, float *lo, float *hi, int nthreads)
{
    const int nt = axs_threads_for(nthreads, n);
    (void)nt;
    int avx2 = 0;
#ifdef AXS_HAVE_MINMAX_AVX2
    avx2 = __builtin_cpu_supports("avx2");
#endif
    float a = x[0], b = x[0];
    int64_t nan = 0, block = 32768;
#pragma omp parallel num_threads(nt)
    {
        float la = x[0], lb = x[0];
        int64_t ln = 0;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (n + block - 1) / block; i++) {
            int64_t e = (i + 1) * block < n ? (i + 1) * block : n;
#ifdef AXS_HAVE_MINMAX_AVX2
            if (avx2)
                minmax_avx2(x + i * block, e - i * block, &la, &lb, &ln);
            else
#endif
                minmax_scalar(x + i * block, e - i * block, &la, &lb, &ln);
        }
#pragma omp critical(axs_minmax)
        {
            a = la < a ? la : a;
            b = lb > b ? lb : b;
            nan += ln;
        }
    }
    (void)avx2;
    *lo = a;
    *hi = b;
    return nan;
}
