/* What a row of an expanded table costs, by what the row holds (docs/performance.md, "Instructions
 * per multiply-accumulate").
 *
 *   gcc -O2 -mavx2 -o rows_u8 tools/drivers/rows_u8.c && ./rows_u8 [max_code [rounds]]
 *
 * Three loops over the same pixels, one output pixel ("row") at a time through a block of 16 steps
 * whose codes are consecutive bytes, as the expanded method's row-at-a-time loop (kern_avx2.c):
 *   int16x16  rows of 16 int16 entries: the expanded method's loop (add, shift, add per load);
 *   u8x32     rows of 32 uint8 entries, summed in 16-bit lanes the same way, widened per block;
 *   u8x32+pmadd  the same plus an exact part: a vpmaddwd per 8 columns and pair of steps, of the
 *             codes' int16 values against interleaved int16 weights (an exact product plus a
 *             uint8 residual, the split of a table T = a * w + e with e in [0, 255]).
 * Codes are uniform below max_code (default 256). Each loop's sums are checked against plain C
 * first; the figures are ns per multiply-accumulate (best round) and each loop's speed over the
 * first one's (median and quartiles of per-round ratios, the loops alternating in each round). */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEPS 16
#define STEPB (256 * 32 + 256) /* bytes per step of a block: 256 rows of 32 bytes and a pad */
#define TILE 196               /* rows per call, as a tile of the expanded method */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef void (*loop_fn)(const uint8_t *S, const int16_t *V, int ms, const char *R,
                        const int16_t *W, uint32_t *acc);

/* 16 columns: lane t of a row holds columns t (low half) and 8 + t (high half) */
static __attribute__((noinline)) void rows_i16(const uint8_t *S, const int16_t *V, int ms,
                                               const char *R, const int16_t *W, uint32_t *acc)
{
    (void)V;
    (void)W;
    for (int i = 0; i < ms; i++) {
        const uint8_t *p = S + i * STEPS;
        uint32_t *a = acc + i * 16;
        __m256i raw = _mm256_loadu_si256((const __m256i *)a);
        __m256i high = _mm256_loadu_si256((const __m256i *)(a + 8));
        __m256i raw2 = _mm256_setzero_si256(), high2 = _mm256_setzero_si256();
        for (int k = 0; k < STEPS; k += 2) {
            __m256i x = _mm256_load_si256((const __m256i *)(R + k * STEPB + ((size_t)p[k] << 5)));
            __m256i y = _mm256_load_si256(
                (const __m256i *)(R + (k + 1) * STEPB + ((size_t)p[k + 1] << 5)));
            raw = _mm256_add_epi32(raw, x);
            high = _mm256_add_epi32(high, _mm256_srli_epi32(x, 16));
            raw2 = _mm256_add_epi32(raw2, y);
            high2 = _mm256_add_epi32(high2, _mm256_srli_epi32(y, 16));
            __asm__("" : "+x"(raw), "+x"(high), "+x"(raw2), "+x"(high2));
        }
        _mm256_storeu_si256((__m256i *)a, _mm256_add_epi32(raw, raw2));
        _mm256_storeu_si256((__m256i *)(a + 8), _mm256_add_epi32(high, high2));
    }
}

/* 32 columns: 16-bit lane t holds columns t (low byte) and 16 + t (high byte); the low sums are
 * raw - (high << 8) modulo 2^16, exact below 257 steps */
static inline __attribute__((always_inline)) void
residual_block(const uint8_t *p, const char *R, __m256i *lo, __m256i *hi)
{
    __m256i raw = _mm256_setzero_si256(), high = _mm256_setzero_si256();
    __m256i raw2 = _mm256_setzero_si256(), high2 = _mm256_setzero_si256();
    for (int k = 0; k < STEPS; k += 2) {
        __m256i x = _mm256_load_si256((const __m256i *)(R + k * STEPB + ((size_t)p[k] << 5)));
        __m256i y =
            _mm256_load_si256((const __m256i *)(R + (k + 1) * STEPB + ((size_t)p[k + 1] << 5)));
        raw = _mm256_add_epi16(raw, x);
        high = _mm256_add_epi16(high, _mm256_srli_epi16(x, 8));
        raw2 = _mm256_add_epi16(raw2, y);
        high2 = _mm256_add_epi16(high2, _mm256_srli_epi16(y, 8));
        __asm__("" : "+x"(raw), "+x"(high), "+x"(raw2), "+x"(high2));
    }
    raw = _mm256_add_epi16(raw, raw2);
    *hi = _mm256_add_epi16(high, high2);
    *lo = _mm256_sub_epi16(raw, _mm256_slli_epi16(*hi, 8));
}

static __attribute__((noinline)) void rows_u8(const uint8_t *S, const int16_t *V, int ms,
                                              const char *R, const int16_t *W, uint32_t *acc)
{
    (void)V;
    (void)W;
    for (int i = 0; i < ms; i++) {
        __m256i lo, hi;
        residual_block(S + i * STEPS, R, &lo, &hi);
        __m256i *a = (__m256i *)(acc + i * 32);
        a[0] = _mm256_add_epi32(a[0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo)));
        a[1] = _mm256_add_epi32(a[1], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo, 1)));
        a[2] = _mm256_add_epi32(a[2], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
        a[3] = _mm256_add_epi32(a[3], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
    }
}

/* W: per pair of steps, 4 vectors of 8 columns, each column's two steps' weights interleaved;
 * column order 0-3 | 8-11 (lane order of vpmaddwd's 32-bit results), then 4-7 | 12-15, ... */
static __attribute__((noinline)) void rows_u8_pmadd(const uint8_t *S, const int16_t *V, int ms,
                                                    const char *R, const int16_t *W,
                                                    uint32_t *acc)
{
    for (int i = 0; i < ms; i++) {
        const uint8_t *p = S + i * STEPS;
        const int16_t *v = V + i * STEPS;
        __m256i *a = (__m256i *)(acc + i * 32);
        __m256i e0 = a[0], e1 = a[1], e2 = a[2], e3 = a[3];
        __m256i raw = _mm256_setzero_si256(), high = _mm256_setzero_si256();
        __m256i raw2 = _mm256_setzero_si256(), high2 = _mm256_setzero_si256();
        for (int k = 0; k < STEPS; k += 2) {   /* both parts in one loop, so that they overlap */
            __m256i x = _mm256_load_si256((const __m256i *)(R + k * STEPB + ((size_t)p[k] << 5)));
            __m256i y = _mm256_load_si256(
                (const __m256i *)(R + (k + 1) * STEPB + ((size_t)p[k + 1] << 5)));
            raw = _mm256_add_epi16(raw, x);
            high = _mm256_add_epi16(high, _mm256_srli_epi16(x, 8));
            raw2 = _mm256_add_epi16(raw2, y);
            high2 = _mm256_add_epi16(high2, _mm256_srli_epi16(y, 8));
            int32_t pair;
            memcpy(&pair, v + k, 4);
            const __m256i b = _mm256_set1_epi32(pair);
            const __m256i *w = (const __m256i *)(W + k * 32);
            e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(b, _mm256_load_si256(w)));
            e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(b, _mm256_load_si256(w + 1)));
            e2 = _mm256_add_epi32(e2, _mm256_madd_epi16(b, _mm256_load_si256(w + 2)));
            e3 = _mm256_add_epi32(e3, _mm256_madd_epi16(b, _mm256_load_si256(w + 3)));
            __asm__("" : "+x"(raw), "+x"(high), "+x"(raw2), "+x"(high2));
            __asm__("" : "+x"(e0), "+x"(e1), "+x"(e2), "+x"(e3));
        }
        raw = _mm256_add_epi16(raw, raw2);
        __m256i hi = _mm256_add_epi16(high, high2);
        __m256i lo = _mm256_sub_epi16(raw, _mm256_slli_epi16(hi, 8));
        /* e0..e3 hold columns 0-3|8-11, 4-7|12-15, 16-19|24-27, 20-23|28-31; the residual's
         * widened vectors hold 0-7, 8-15, 16-23, 24-31: put the exact part in that order */
        __m256i c0 = _mm256_permute2x128_si256(e0, e1, 0x20);
        __m256i c1 = _mm256_permute2x128_si256(e0, e1, 0x31);
        __m256i c2 = _mm256_permute2x128_si256(e2, e3, 0x20);
        __m256i c3 = _mm256_permute2x128_si256(e2, e3, 0x31);
        a[0] = _mm256_add_epi32(c0, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(lo)));
        a[1] = _mm256_add_epi32(c1, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(lo, 1)));
        a[2] = _mm256_add_epi32(c2, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
        a[3] = _mm256_add_epi32(c3, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
    }
}

/* Each loop's sums of one tile from zeros against plain C; nonzero when any differs. */
static int check(const uint8_t *S, const int16_t *V, const char *R, const int16_t *Wk,
                 const int16_t *W, uint32_t *acc, int ms)
{
    int bad = 0;
    /* int16 rows: 32-bit lane t holds columns 2t (low half) and 2t + 1 (high half) of a row's
     * uint16 entries; acc[t] = raw = low sum + (high sum << 16), acc[8 + t] = high sum */
    memset(acc, 0, (size_t)ms * 32 * 4);
    rows_i16(S, V, ms, R, W, acc);
    for (int i = 0; i < ms; i++)
        for (int t = 0; t < 8; t++) {
            uint32_t lo = 0, hi = 0;
            for (int k = 0; k < STEPS; k++) {
                const uint16_t *row =
                    (const uint16_t *)(R + k * STEPB + ((size_t)S[i * STEPS + k] << 5));
                lo += row[2 * t];
                hi += row[2 * t + 1];
            }
            bad |= acc[i * 16 + 8 + t] != hi || acc[i * 16 + t] - (hi << 16) != lo;
        }
    /* uint8 rows, with and without the exact part */
    for (int pass = 0; pass < 2; pass++) {
        memset(acc, 0, (size_t)ms * 32 * 4);
        (pass ? rows_u8_pmadd : rows_u8)(S, V, ms, R, W, acc);
        for (int i = 0; i < ms; i++)
            for (int c = 0; c < 32; c++) {
                uint32_t want = 0;
                int byte = c < 16 ? 2 * c : 2 * (c - 16) + 1;
                for (int k = 0; k < STEPS; k++) {
                    const uint8_t *row =
                        (const uint8_t *)(R + k * STEPB + ((size_t)S[i * STEPS + k] << 5));
                    want += row[byte];
                    if (pass)
                        want += (uint32_t)((int32_t)V[i * STEPS + k] * Wk[k * 32 + c]);
                }
                bad |= acc[i * 32 + c] != want;
            }
    }
    return bad;
}

int main(int argc, char **argv)
{
    int maxc = argc > 1 ? atoi(argv[1]) : 256, rounds = argc > 2 ? atoi(argv[2]) : 41;
    if (maxc < 1 || maxc > 256 || rounds < 1) {
        fprintf(stderr, "usage: %s [max_code 1..256 [rounds >= 1]]\n", argv[0]);
        return 2;
    }
    const int npix = 34 * 34 * 32, ntile = npix / TILE;
    uint8_t *S = malloc((size_t)npix * STEPS);
    int16_t *V = malloc((size_t)npix * STEPS * sizeof(int16_t));
    char *R = aligned_alloc(64, (size_t)STEPS * STEPB);
    int16_t *Wk = malloc(STEPS * 32 * sizeof(int16_t));        /* weight of step k, column c */
    int16_t *W = aligned_alloc(64, STEPS * 32 * sizeof(int16_t)); /* interleaved for vpmaddwd */
    uint32_t *acc = aligned_alloc(64, (size_t)TILE * 32 * 4);
    if (!S || !V || !R || !Wk || !W || !acc)
        return 1;
    srand(1);
    for (size_t i = 0; i < (size_t)npix * STEPS; i++) {
        S[i] = (uint8_t)(rand() % maxc);
        V[i] = S[i];
    }
    for (size_t i = 0; i < (size_t)STEPS * STEPB; i++)
        R[i] = (char)rand();
    for (int i = 0; i < STEPS * 32; i++)
        Wk[i] = (int16_t)(rand() % 511 - 255);
    static const int order[32] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15,
                                  16, 17, 18, 19, 24, 25, 26, 27, 20, 21, 22, 23, 28, 29, 30, 31};
    for (int k = 0; k < STEPS; k += 2)
        for (int j = 0; j < 32; j++) {
            W[k * 32 + 2 * j] = Wk[k * 32 + order[j]];
            W[k * 32 + 2 * j + 1] = Wk[(k + 1) * 32 + order[j]];
        }
    if (check(S, V, R, Wk, W, acc, TILE)) {
        printf("check FAILED\n");
        return 1;
    }
    printf("check ok\n");
    loop_fn fn[3] = {rows_i16, rows_u8, rows_u8_pmadd};
    const char *name[3] = {"int16x16", "u8x32", "u8x32+pmadd"};
    const double cols[3] = {16, 32, 32};
    double best[3] = {1e30, 1e30, 1e30};
    double *t = malloc(sizeof(double) * 3 * (size_t)rounds);
    for (int r = 0; r < rounds; r++)
        for (int f = 0; f < 3; f++) {
            double t0 = now();
            for (int j = 0; j < ntile; j++)
                fn[f](S + (size_t)j * TILE * STEPS, V + (size_t)j * TILE * STEPS, TILE, R, W, acc);
            double dt = (now() - t0) / cols[f];
            t[r * 3 + f] = dt;
            best[f] = dt < best[f] ? dt : best[f];
        }
    const double macs = (double)ntile * TILE * STEPS;
    for (int f = 0; f < 3; f++) {
        double *q = malloc(sizeof(double) * (size_t)rounds);
        for (int r = 0; r < rounds; r++)
            q[r] = t[r * 3] / t[r * 3 + f];
        for (int a = 1; a < rounds; a++)
            for (int b = a; b > 0 && q[b] < q[b - 1]; b--) {
                double x = q[b];
                q[b] = q[b - 1];
                q[b - 1] = x;
            }
        printf("%-12s %.4f ns/MAC  speed over int16x16: median %.2f [%.2f - %.2f]\n", name[f],
               best[f] / macs * 1e9, q[rounds / 2], q[rounds / 4],
               q[3 * rounds / 4]);
        free(q);
    }
    free(t);
    return 0;
}
