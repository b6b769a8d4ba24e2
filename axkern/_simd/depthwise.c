/* Depthwise method: exact LUT sums of depthwise convolutions (groups == channels == output
 * channels) with a vector load per input column and filter row instead of a lookup per tap.
 *
 * For channel c and filter row ky, the entries a code v can meet along a row of taps are
 * T[v, w[ky, kx, c]] for kx < KW: one row E[ky][v] of 4 uint32 lanes, lane j holding tap
 * kx = KW - 1 - j (zero for j >= KW). Walking the input columns p of an output row, with
 * v_p = sum_ky E[ky][x[row + ky * dh, p]] (a load and an add per filter row), the recurrence
 *   acc = (acc shifted down one lane) + v_p
 * leaves in lane 0 the sum over kx of lane KW - 1 - kx of v_(p - KW + 1 + kx), i.e. the sum
 * of all taps of the output whose window ends at p: one output every sw columns. Depthwise
 * filters share nothing across channels, so the expanded tables of expand.c would fill one
 * lane in 16; this method fills KW in 4 (3 for 3x3) and reads the codes from a planar padded
 * copy of the batch (each channel's plane contiguous).
 *
 * E holds biased 16-bit entries (sums of at most 65536 stay below 2^32, so int64 outputs are
 * exact; on the AVX2 path stored as uint16 and widened by the load) or, for generic tables,
 * the int32 entries (their uint32 sums wrap like any int32 sum: int32 outputs only). */
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "axs_internal.h"

/* Channels per unit of work (fewer for filters over 4 rows, so that a thread's E stays
 * within 256 KiB): their E (KH * 4 KiB each) are built once per unit; their sums of a band
 * of output rows are staged in a buffer, then stored pixel by pixel (16 * 4 contiguous
 * bytes; storing each plane with a stride of C elements took a quarter of the time). A unit
 * spans enough images that looking up costs much more than building (at least AXS_DWMIN
 * lookups per filter row and channel), as far as the threads allow (at least two units
 * each). 65536 instead of 2048 (units of 3 images of 16 x 16 before, of the whole batch of
 * 32 now, on one or two threads) ran 1.20 times as
 * fast on 32 x 16 x 16 x 64 (3x3, one thread, two builds alternating, 11 rounds), 1.13 on
 * 32 x 8 x 8 x 128, 1.06 on 8 x 56 x 56 x 32 and 1.01 on 1 x 112 x 112 x 32; on two
 * threads 1.02, 1.16 and 0.99 on the first three (Zen 3). */
#define AXS_DWCB 16
#define AXS_DWMIN 65536
/* Lookups per filter row and channel that a chunk of images needs for the split by images
 * (below): four times the entries of a row of E, which each unit builds afresh (at 1024,
 * 8 images of 14 x 14 by 256 channels ran 0.72 to 1.11 times as fast). */
#define AXS_DWIMG 4096
/* uint32 sums staged per band of output rows, for all channels of the block */
#define AXS_DWBAND 4096

/* A column of 256 zeros for the lanes past KW. */
static const uint16_t dw_zeros[256];

/* d[0 .. n) = s[0 .. n) for short rows, inline: 16-byte moves, the last one overlapping the
 * one before (a library memcpy per row of a 16-pixel plane cost more than its bytes) */
static inline void dw_copy_row(uint8_t *d, const uint8_t *s, int64_t n)
{
#if defined(__SSE2__)
    if (n >= 16) {
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
            _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
        if (i < n)
            _mm_storeu_si128((__m128i *)(d + n - 16),
                             _mm_loadu_si128((const __m128i *)(s + n - 16)));
        return;
    }
#endif
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        d[i] = s[i];
}

/* E of channel c at Ec: row v of filter row ky at Ec + ky * 1024 + 4 * v. */
static void dw_build(const axs_fixed_table *t, const uint8_t *w, int64_t C, int64_t c,
                     int64_t KH, int64_t KW, uint32_t *Ec)
{
    for (int64_t ky = 0; ky < KH; ky++) {
        uint32_t *e = Ec + ky * 1024;
        size_t f[4];
        for (int j = 0; j < 4; j++)
            f[j] = j < KW ? (size_t)w[(ky * KW + KW - 1 - j) * C + c] << 8 : 0;
        if (t->generic) {
            const int32_t *c0 = t->tab32 + f[0], *c1 = t->tab32 + f[1];
            const int32_t *c2 = t->tab32 + f[2], *c3 = t->tab32 + f[3];
            for (int v = 0; v < 256; v++) {
                e[4 * v] = (uint32_t)c0[v];
                e[4 * v + 1] = KW > 1 ? (uint32_t)c1[v] : 0;
                e[4 * v + 2] = KW > 2 ? (uint32_t)c2[v] : 0;
                e[4 * v + 3] = KW > 3 ? (uint32_t)c3[v] : 0;
            }
        } else {  /* branch-free, so that the compiler interleaves vectors */
            const uint16_t *c0 = t->tab16 + f[0];
            const uint16_t *c1 = KW > 1 ? t->tab16 + f[1] : dw_zeros;
            const uint16_t *c2 = KW > 2 ? t->tab16 + f[2] : dw_zeros;
            const uint16_t *c3 = KW > 3 ? t->tab16 + f[3] : dw_zeros;
            for (int v = 0; v < 256; v++) {
                e[4 * v] = c0[v];
                e[4 * v + 1] = c1[v];
                e[4 * v + 2] = c2[v];
                e[4 * v + 3] = c3[v];
            }
        }
    }
}

/* E of channel c as uint16 rows (16-bit-class tables, for axs_dwplanes16_avx2): for each
 * group g of 4 filter columns (filters wider than 4 run group by group), row v of filter
 * row ky at Ec + (g * KH + ky) * 1024 + 4 * v. */
static void dw_build16(const axs_fixed_table *t, const uint8_t *w, int64_t C, int64_t c,
                       int64_t KH, int64_t KW, uint16_t *Ec)
{
    for (int64_t g = 0; 4 * g < KW; g++) {
        const int64_t kw = KW - 4 * g < 4 ? KW - 4 * g : 4;
        for (int64_t ky = 0; ky < KH; ky++) {
            const uint16_t *col[4];
            for (int j = 0; j < 4; j++)
                col[j] = j < kw ? t->tab16 + ((size_t)w[(ky * KW + 4 * g + kw - 1 - j) * C + c]
                                              << 8)
                                : dw_zeros;
            axs_dwbuild16_avx2(col[0], col[1], col[2], col[3], Ec + (g * KH + ky) * 1024);
        }
    }
}

/* Positions of a band's channel in dw_band_vbmi's buffer: the band's nb rows at the padded
 * stride Wp, rounded up to the kernel's blocks of 64 (it stores whole blocks). */
static int64_t dw_vbmi_stride(int64_t nb, int64_t Wp, int64_t OW)
{
    return ((nb - 1) * Wp + OW + 63) / 64 * 64;
}

/* dw_band_vbmi's dequantizing NHWC store: the band's output pixels at y + i * ldy, the
 * block's first channel c0, the kernel's bias kbias (int32 sums without window sums). */
typedef struct {
    const axs_xdeq *dd;
    int64_t c0;
    uint32_t kbias;
    float *y;
    ptrdiff_t ldy;
} dw_dqstore;

/* A planar copy without padding columns (dw_band_vbmi): row stride W, the taps' columns
 * that fall in the left or right padding masked off per lane and read as the pad code. km:
 * a thread's masks of every chunk of a band of nb rows, K * 4 per chunk (dw_edge_masks),
 * made again when a band of another height comes (the last one). */
typedef struct {
    int pl, KW, pad_code;
    int64_t nb;
    uint64_t *km;
} dw_edges;

/* The lanes i < 64 of positions base + i (row stride W, column (base + i) % W) whose
 * column o is below lo or at hi or above: those of a tap whose input column o + kx - pl
 * falls in the padding (lo = pl - kx, hi = W + pl - kx). */
static uint64_t dw_edge(int64_t base, int64_t W, int64_t lo, int64_t hi)
{
    uint64_t m = 0;
    if (lo <= 0 && hi >= W)
        return 0;
    lo = lo < W ? lo : W;
    hi = hi > lo ? hi : lo;
    for (int64_t r = base - base % W - base; r < 64; r += W) {   /* r: lane of column 0 */
        for (int64_t i = r; i < r + lo; i++)
            if (i >= 0 && i < 64)
                m |= (uint64_t)1 << i;
        for (int64_t i = r + hi; i < r + W; i++)
            if (i >= 0 && i < 64)
                m |= (uint64_t)1 << i;
    }
    return m;
}

/* eg->km for a band of nb rows of W (Q = nb W positions, chunks of AXS_EMB): in chunk j,
 * step k (column kx = k % KW) and block b load the lanes below Q that are not in the
 * padding. */
static void dw_edge_masks(dw_edges *eg, int64_t W, int64_t nb, int64_t K)
{
    const int64_t Q = nb * W;
    for (int64_t j = 0; j * AXS_EMB < Q; j++) {
        uint64_t *km = eg->km + j * K * 4;
        for (int b = 0; b < 4; b++) {
            int64_t q = j * AXS_EMB + 64 * b, r = Q - q;
            uint64_t lm = r >= 64 ? ~(uint64_t)0 : r <= 0 ? 0 : ((uint64_t)1 << r) - 1;
            for (int kx = 0; kx < eg->KW; kx++) {
                uint64_t e = lm & ~dw_edge(q, W, eg->pl - kx, W + eg->pl - kx);
                for (int64_t k = kx; k < K; k += eg->KW)
                    km[4 * k + b] = e;
            }
        }
    }
    eg->nb = nb;
}

/* The sums of output rows [0, nb) of channels c < nc (planes at s + c * ps, row stride Wp;
 * filter codes w[k * C + c]), stride 1 (at stride 2 a channel's four phase planes,
 * dw_to_phases, whose taps soff reaches). The AVX-512 VBMI direct kernel streams the
 * positions q = y * Wp + o of a plane, at most AXS_MB (with eg AXS_EMB) at a time, into
 * sT[c * cs + q] (cs: dw_vbmi_stride; the Wp - OW columns past the right edge are computed
 * and left there, as in the direct method's wide tiles); tap k reads q + soff[k]. With eg
 * the planes have no padding columns (Wp = OW = W) and the kernel masks the taps that fall
 * in them. With sums, the valid outputs then go pixel-major into sums[(y * OW + o) * os +
 * c], by 16 x 16 transposes per output row (stored straight into sums, one element per
 * cache line, they took longer than the lookups; copying the valid runs into a packed
 * buffer first took a fifth of the call), or with st dequantized into the NHWC output as
 * they are transposed. */
static void dw_band_vbmi(const uint8_t *s, int64_t ps, int64_t Wp, int64_t nb, int64_t OW,
                         int64_t nc, const uint8_t *w, int64_t C, int64_t K,
                         const ptrdiff_t *soff, uint8_t *fk, const axs_fixed_table *t,
                         uint32_t *sT, uint32_t *sums, int64_t os, const dw_dqstore *st,
                         dw_edges *eg)
{
    const int64_t Q = (nb - 1) * Wp + OW, cs = dw_vbmi_stride(nb, Wp, OW);
    /* with eg: the masks made once per band height, chunks of four blocks (AXS_EMB) */
    const int64_t mb = eg ? AXS_EMB : AXS_MB;
    if (eg && eg->nb != nb)
        dw_edge_masks(eg, Wp, nb, K);
    for (int64_t c = 0; c < nc; c++) {
        for (int64_t k = 0; k < K; k++)
            fk[k] = w[k * C + c];
        for (int64_t q0 = 0; q0 < Q; q0 += mb) {
            int64_t ms = Q - q0 < mb ? Q - q0 : mb;
            if (eg)
                axs_kern16e_avx512(s + c * ps + q0, soff, (int)ms, fk, (int)K, t,
                                   sT + c * cs + q0, eg->km + q0 / mb * K * 4, eg->pad_code);
            else
                axs_kern16_avx512(s + c * ps + q0, soff, (int)ms, fk, (ptrdiff_t)K, 1, (int)K,
                                  t, sT + c * cs + q0);
        }
    }
    if (!sums)   /* the caller takes the channel planes */
        return;
    if (st) {
        /* dequantized into the NHWC output as the blocks of 16 columns are transposed (the
         * last one and a block of fewer channels masked: through a staging buffer and
         * axs_dequant_rows, such blocks took a third of a one-thread call of 32 x 14 x 14 x
         * 256) */
        const axs_xdeq *dd = st->dd;
        const int64_t c0 = st->c0;
        const double *scale = dd->scale + c0, *corr = dd->corr + c0;
        const int32_t *c32 = dd->corr32 ? dd->corr32 + c0 : NULL;
        const float *bias = dd->bias ? dd->bias + c0 : NULL;
        for (int64_t y = 0; y < nb; y++) {
            const uint32_t *row = sT + y * Wp;
            float *out = st->y + y * OW * st->ldy;
            for (int64_t o = 0; o < OW; o += 16)
                axs_dqtr16_avx512(row + o, (ptrdiff_t)cs, (int)nc,
                                  OW - o < 16 ? (int)(OW - o) : 16, st->kbias, scale, corr, c32,
                                  bias, out + o * st->ldy, st->ldy);
        }
        return;
    }
    for (int64_t y = 0; y < nb; y++) {
        const uint32_t *row = sT + y * Wp;
        uint32_t *out = sums + y * OW * os;
        int64_t o = 0;
        if (nc == 16)
            for (; o + 16 <= OW; o += 16)
                axs_tr16_avx512(row + o, (ptrdiff_t)cs, out + o * os, (ptrdiff_t)os);
        for (; o < OW; o++)
            for (int64_t c = 0; c < nc; c++)
                out[o * os + c] = row[c * cs + o];
    }
}

/* The four phase planes of channels c0 .. c1 - 1 of one image for stride 2, straight from
 * its codes: NHWC (xn, H x W x C) or, with nchw, its planes (xn + c * H * W). Of channel c's
 * padded plane (Hp x Wp, the image at row pt and column pl, pad codes around it), phase
 * (a, b) at dst + c * PS + (2 a + b) * Hq * Wq (PS = 4 Hq Wq) holds rows a, a + 2, ... and
 * columns b, b + 2, ..., Hq = (Hp + 1) / 2 rows of Wq = (Wp + 1) / 2 (a phase one short of
 * them ends in a pad code). Output (oy, ox) of a stride-2 layer reads tap (ky, kx) at row
 * oy + ky / 2 and column ox + kx / 2 of phase (ky % 2, kx % 2): positions of one row stride,
 * as at stride 1. One pass, where the planar copy and then its phases were two (a third of
 * a one-thread call of 1 x 112 x 112 x 96). */
static void dw_to_phases(const uint8_t *xn, int64_t H, int64_t W, int64_t C, int64_t c0,
                         int64_t c1, int pt, int pl, int64_t Hp, int64_t Wp, int pad_code,
                         int nchw, uint8_t *dst)
{
    const int64_t Hq = (Hp + 1) / 2, Wq = (Wp + 1) / 2, Q = Hq * Wq, PS = 4 * Q;
    memset(dst + c0 * PS, pad_code, (size_t)((c1 - c0) * PS));
    /* pixel (y, x) of a channel's planes d: phase (r & 1, cc & 1) of padded (r, cc) */
#define DW_PH(d, y, x) ((d) + (2 * (((y) + pt) & 1) + (((x) + pl) & 1)) * Q + \
                        (((y) + pt) >> 1) * Wq + (((x) + pl) >> 1))
#if defined(__SSE2__)
    const __m128i lo = _mm_set1_epi16(0xff), z = _mm_setzero_si128();
    /* 16 pixels of a channel's row: the 8 even ones to the phase of pixel x0, the 8 odd ones
     * to the phase of pixel x0 + 1 */
#define DW_PH16(d, y, x0, a)                                                               \
    do {                                                                                   \
        _mm_storel_epi64((__m128i *)DW_PH(d, y, x0),                                       \
                         _mm_packus_epi16(_mm_and_si128(a, lo), z));                       \
        _mm_storel_epi64((__m128i *)DW_PH(d, y, (x0) + 1),                                 \
                         _mm_packus_epi16(_mm_srli_epi16(a, 8), z));                       \
    } while (0)
#endif
    if (nchw) {
        for (int64_t c = c0; c < c1; c++)
            for (int64_t y = 0; y < H; y++) {
                const uint8_t *s = xn + (c * H + y) * W;
                int64_t x = 0;
#if defined(__SSE2__)
                /* by 16 pixels, the last block stepped back to end at the row's last pixel */
                for (int64_t xx = 0; W >= 16 && xx < W; xx += 16) {
                    const int64_t x0 = xx + 16 <= W ? xx : W - 16;
                    DW_PH16(dst + c * PS, y, x0, _mm_loadu_si128((const __m128i *)(s + x0)));
                }
                x = W >= 16 ? W : 0;
#endif
                for (; x < W; x++)
                    *DW_PH(dst + c * PS, y, x) = s[x];
            }
        return;
    }
    int64_t c16 = c0;
#if defined(__SSE2__)
    /* 16 pixels of 16 channels by a 16 x 16 transpose, each channel's 16 pixels split into
     * its even and odd ones (8 bytes to each of two phases); the last block of a row stepped
     * back to end at its last pixel */
    if (W >= 16) {
        c16 = c0 + ((c1 - c0) & ~(int64_t)15);
        for (int64_t y = 0; y < H; y++)
            for (int64_t xx = 0; xx < W; xx += 16) {
                const int64_t x0 = xx + 16 <= W ? xx : W - 16;
                for (int64_t c = c0; c < c16; c += 16) {
                    __m128i a[16];
                    for (int q = 0; q < 16; q++)
                        a[q] = _mm_loadu_si128((const __m128i *)(xn + (y * W + x0 + q) * C +
                                                                 c));
                    axs_tr16x16_regs(a);
                    for (int q = 0; q < 16; q++)
                        DW_PH16(dst + (c + q) * PS, y, x0, a[q]);
                }
            }
    }
#endif
    for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
            const uint8_t *s = xn + (y * W + x) * C;
            for (int64_t c = c16; c < c1; c++)
                *DW_PH(dst + c * PS, y, x) = s[c];
        }
#undef DW_PH
#undef DW_PH16
}

int axs_dw_serves(int64_t C, int64_t COUT, int64_t groups, int64_t KH, int64_t KW, int dw)
{
    return groups == C && COUT == C && dw == 1 && KW <= AXS_DWKW && KH * KW <= 65536;
}

/* Compiled with the options of axs_dequant_one (no contraction), so that GCC inlines it in
 * the element-by-element store below: a call per element cost as much as the lookups. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
int axs_dwconv2d(const uint8_t *x, const uint8_t *w, const axs_fixed_table *t, int64_t N,
                 int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int sh, int sw,
                 int pt, int pb_, int pl, int pr, int dh, int pad_code, int out64, void *out,
                 const axs_dequant *dq, int nt, int path, int in_nchw)
{
    int64_t Hp = H + pt + pb_, Wp = W + pl + pr;
    int64_t OH = (Hp - (int64_t)dh * (KH - 1) - 1) / sh + 1;
    int64_t OW = (Wp - KW) / sw + 1, K = KH * KW;
    axs_dwplanes_fn planes = path == AXS_PATH_SCALAR ? axs_dwplanes_scalar
                           : path == AXS_PATH_AVX2 ? axs_dwplanes_avx2
                                                   : axs_dwplanes_avx512;
    /* On the AVX-512 VBMI path, strides 1 and 2 and a 16-bit-class table: the direct
     * kernel's lookups (64 codes per vpermi2b, the filter code's table column in registers)
     * streamed along each channel's plane of a planar copy (stride 2: its phase planes),
     * instead of rows of E (dw_band_vbmi). */
    const int vbmi = axs_dw_vbmi(path, t, sh, sw);
    /* rows of E as uint16 (16-bit-class tables) on the AVX2 path, and on the AVX-512 path
     * where the VBMI variant does not serve (strides) */
    const int e16 = (path == AXS_PATH_AVX2 || (path == AXS_PATH_AVX512_VBMI && !vbmi)) &&
                    !t->generic;
    /* groups of 4 filter columns (rows of E hold 4; wider filters only with e16) */
    const int64_t groups4 = (KW + 3) / 4;
    /* VBMI with the left and right padding exactly the filter's overhang (SAME; then OW = W):
     * the planar copy leaves the padding columns out (row stride Wr = W) and the kernel
     * masks the taps that fall in them (dw_edges), so that every position it streams is an
     * output (with Wp = W + 2 on 16 x 16 images a band's 256 outputs took 320 lookups) */
    int compact = vbmi && sw == 1 && pl + pr == KW - 1 && (pl || pr);
    /* channels per unit, and output rows per band: the block's sums of a band (16 KiB) stay
     * in L1 until stored */
    int64_t cb = KH <= 4 ? AXS_DWCB : (4 * AXS_DWCB) / KH;
    cb = cb < 1 ? 1 : cb;
    int64_t band = AXS_DWBAND / (cb * OW);
    band = band < 1 ? 1 : band;
    if (compact) {
        /* only where a band's positions take an eighth fewer blocks of 64: the masks cost
         * the kernel a load per step and block (on 1 x 112 x 112 x 32, the same blocks,
         * 0.92 times as fast) */
        int64_t nb = band < OH ? band : OH;
        int64_t full = ((nb - 1) * Wp + OW + 63) / 64, tight = (nb * W + 63) / 64;
        compact = 8 * tight <= 7 * full;
    }
    const int64_t Wr = compact ? W : Wp, plc = compact ? 0 : pl;
    /* every variant reads a planar padded copy: consecutive input columns of a channel are
     * consecutive bytes (read from the NHWC image in place, every C-th byte, the codes of a
     * channel pair spanned a cache line per pixel: 1.3 times as slow on 32 x 16 x 16 x 64) */
    int padded = pt || pb_ || pl || pr;
    /* the VBMI variant at stride 2 reads phase planes, made from the codes directly */
    const int phases = vbmi && sh == 2;
    /* (64 bytes before and after: the compact copy's masked loads start before a plane) */
    uint8_t *xbuf = NULL, *xp = NULL;
    if (!phases && (!in_nchw || padded)) {
        xbuf = (uint8_t *)malloc((size_t)(N * C * Hp * Wr + 128));
        if (!xbuf)
            return AXS_ENOMEM;
        xp = xbuf + 64;
    }
    /* images, or for fewer images than threads parts of an image's channels (see
     * axs_planar_parts: a batch-1 call copied on one thread while the other waited) */
    const int64_t cp = axs_planar_parts(N, C, nt);
    if (phases) {
        /* no planar copy: the phases below */
    } else if (!in_nchw) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t u = 0; u < N * cp; u++)
            axs_to_planar_unit(x, u, cp, H, W, C, pt, (int)plc, Hp, Wr, pad_code, xp);
    } else if (padded) {
        /* NCHW codes are planes already: only the border is added (one fill per image,
         * then the rows: three library calls per row and plane cost more than the copy,
         * and one more than copying inline: synthetic depthwise NCHW calls 1.05 times as
         * fast, paired) */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t u = 0; u < N * cp; u++) {
            int64_t n = u / cp, c0 = axs_planar_c0(C, cp, u % cp);
            int64_t c1 = axs_planar_c0(C, cp, u % cp + 1);
            uint8_t *d = xp + n * C * Hp * Wr;
            memset(d + c0 * Hp * Wr, pad_code, (size_t)((c1 - c0) * Hp * Wr));
            for (int64_t c = c0; c < c1; c++) {
                const uint8_t *src = x + (n * C + c) * H * W;
                uint8_t *dc = d + c * Hp * Wr + pt * Wr + plc;
                if (compact)
                    memcpy(dc, src, (size_t)(H * W));
                else
                    for (int64_t y = 0; y < H; y++)
                        dw_copy_row(dc + y * Wr, src + y * W, W);
            }
        }
    }
    const uint8_t *xs = xp ? xp : x;
    /* The VBMI variant's planes: PS bytes per channel, rows of RS; at stride 2 the four phase
     * planes of each channel's padded plane (dw_to_phases), so that its outputs stream as at
     * stride 1 (the rows of E slid along every input column, two per output). */
    int64_t PS = Hp * Wr, RS = Wr;
    uint8_t *qbuf = NULL;
    if (phases) {
        const int64_t Hq = (Hp + 1) / 2, Wq = (Wp + 1) / 2;
        PS = 4 * Hq * Wq;
        RS = Wq;
        qbuf = (uint8_t *)malloc((size_t)(N * C * PS + 128));
        if (!qbuf) {
            free(xbuf);
            return AXS_ENOMEM;
        }
        /* images, or parts of an image's channels as for the planar copy */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t u = 0; u < N * cp; u++) {
            const int64_t n = u / cp;
            dw_to_phases(x + n * H * W * C, H, W, C, axs_planar_c0(C, cp, u % cp),
                         axs_planar_c0(C, cp, u % cp + 1), pt, pl, Hp, Wp, pad_code, in_nchw,
                         qbuf + 64 + n * C * PS);
        }
        xs = qbuf + 64;
    }
    /* units: a block of channels by a chunk of images, enough of them for every thread */
    int64_t cblocks = (C + cb - 1) / cb;
    int64_t per_image = OH * OW * KW;
    int64_t chunk = (AXS_DWMIN + per_image - 1) / per_image;
    chunk = chunk < 1 ? 1 : chunk > N ? N : chunk;
    while (chunk > 1 && cblocks * ((N + chunk - 1) / chunk) < 2 * nt)
        chunk = (chunk + 1) / 2;
    /* Pixel-major outputs of short rows (up to 4 channel blocks): threads take whole chunks
     * of images, all channel blocks of one after the other, when there are images enough.
     * Split by channel blocks, both threads wrote 64 bytes of every 256 of the same NHWC
     * rows (C = 64): 32 images of 16 x 16 ran 1.2 to 1.6 times slower on two threads in
     * six of eight paired runs (the same in the other two, and on one thread). With C = 128
     * the split by images ran 0.83 to 0.97 times as fast: not there. Each unit still builds
     * E of its block. */
    const int by_images = !(dq && dq->nchw) && nt > 1 && cblocks > 1 && cblocks <= 4 &&
                          N / (2 * nt) * per_image >= AXS_DWIMG;
    if (by_images && chunk > N / (2 * nt))
        chunk = N / (2 * nt);
    int64_t nchunks = (N + chunk - 1) / chunk, units = cblocks * nchunks;
    const int ucs = by_images ? (int)cblocks : 1;   /* units per hand-out */
    const uint32_t kbias = (uint32_t)((uint64_t)t->bias * (uint64_t)K);
    const int64_t kbias64 = t->bias64 * K;
    /* int32 sums without window sums dequantize a band at a time in float64 (exact, see
     * axs_xdeq); else element by element with axs_dequant_one */
    axs_xdeq dd;
    if (axs_xdeq_init(dq && !out64 && !dq->zw ? dq : NULL, C, N * OH * OW, &dd)) {
        free(xbuf);
        free(qbuf);
        return AXS_ENOMEM;
    }
    const int rows_dq = dd.exact;
    /* NCHW float32 output of int32 sums without window sums (AVX2 rows of E, and the
     * AVX-512 variant's channel planes) */
    const int planar_dq = (e16 || vbmi) && dq && dq->nchw && rows_dq;
    int failed = 0;
#pragma omp parallel num_threads(nt < units ? nt : (int)units)
    {
        /* E rows, or (vbmi) the band's sums channel by channel, a tile of the kernel's sums,
         * the taps' offsets, the compact copy's masks and a channel's codes */
        size_t nsum = (size_t)(cb * band * OW);
        size_t nT = vbmi ? (size_t)(cb * dw_vbmi_stride(band, RS, OW)) : 0;
        /* the masks of a band's chunks (compact) */
        size_t nkm = compact ? (size_t)((band * W + AXS_EMB - 1) / AXS_EMB * K * 4) : 0;
        uint32_t *E = (uint32_t *)axs_alloc64(
            vbmi ? nT * sizeof(uint32_t) + (size_t)K * (sizeof(ptrdiff_t) + 1) +
                       nkm * sizeof(uint64_t)
                 : (size_t)(cb * KH * 1024) * (e16 ? 2 * (size_t)groups4 : sizeof(uint32_t)));
        uint32_t *sums = (uint32_t *)malloc(nsum * sizeof(uint32_t));
        int ok = E && sums;
        ptrdiff_t *soff = (ptrdiff_t *)(E + nT);
        dw_edges eg = {pl, (int)KW, pad_code, 0, (uint64_t *)(soff + K)};
        uint8_t *fk = (uint8_t *)(eg.km + nkm);
        if (ok && vbmi)
            for (int64_t ky = 0; ky < KH; ky++)
                for (int64_t kx = 0; kx < KW; kx++) {
                    /* (stride 2: the phase plane of the tap's row and column parities) */
                    int64_t y = ky * dh, ph = sh == 2 ? 2 * (y & 1) + (kx & 1) : 0;
                    soff[ky * KW + kx] = (ptrdiff_t)(ph * (PS / 4) + y / sh * RS + kx / sh -
                                                     (compact ? pl : 0));
                }
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, ucs)
        for (int64_t u = 0; u < units; u++) {
            if (!ok)
                continue;
            int64_t c0 = (u % cblocks) * cb, n0 = (u / cblocks) * chunk;
            int64_t c1 = c0 + cb < C ? c0 + cb : C, n1 = n0 + chunk < N ? n0 + chunk : N;
            int64_t nc = c1 - c0;
            for (int64_t c = c0; c < c1 && !vbmi; c++) {
                if (e16)
                    dw_build16(t, w, C, c, KH, KW, (uint16_t *)E + (c - c0) * groups4 * KH * 1024);
                else
                    dw_build(t, w, C, c, KH, KW, E + (c - c0) * KH * 1024);
            }
            for (int64_t n = n0; n < n1; n++)
                for (int64_t y0 = 0; y0 < OH; y0 += band) {
                    int64_t nb = OH - y0 < band ? OH - y0 : band, P = nb * OW;
                    if (vbmi) {
                        /* a dequantized NCHW output takes the band's channel planes as they
                         * are, each row dequantized as one run into its output plane, with
                         * no transposes (paired, synthetic table: 1.13 - 1.21 times as fast
                         * on depthwise layers from 32 x 16 x 16 x 64 to 1 x 112 x 112 x 32;
                         * the same for NHWC outputs, transposed after, ran 0.96 - 1.03) */
                        /* a dequantized NHWC output is stored from the transposes (16
                         * channels; their stores and the staging buffer's reloads took
                         * 1/8 of a one-thread call of 32 x 16 x 16 x 64) */
                        const int nhwc_dq = rows_dq && !dq->nchw;
                        dw_dqstore st = {&dd, c0, kbias,
                                         (float *)out + (n * OH + y0) * OW * C + c0,
                                         (ptrdiff_t)C};
                        dw_band_vbmi(xs + (n * C + c0) * PS + y0 * RS, PS, RS, nb, OW,
                                     nc, w + c0, C, K, soff, fk, t, E,
                                     planar_dq ? NULL : sums, cb, nhwc_dq ? &st : NULL,
                                     compact ? &eg : NULL);
                        if (nhwc_dq)
                            continue;
                        if (planar_dq) {
                            /* (compact: the band's rows are one run) */
                            const int64_t cs = dw_vbmi_stride(nb, RS, OW);
                            const int64_t runs = RS == OW ? 1 : nb, run = RS == OW ? P : OW;
                            for (int64_t j = 0; j < nc; j++) {
                                int64_t c = c0 + j;
                                axs_dqrows_avx512(E + j * cs, (ptrdiff_t)RS, runs, run, kbias,
                                                  dd.scale[c], dd.corr[c],
                                                  dd.corr32 ? dd.corr32 + c : NULL,
                                                  dd.bias ? dd.bias + c : NULL,
                                                  (float *)out + ((n * C + c) * OH + y0) * OW,
                                                  (ptrdiff_t)OW);
                            }
                            continue;
                        }
                    } else if (e16) {
                        /* planar_dq: channel planes of sums (pixel stride 1, channel stride
                         * P), each dequantized as one run straight into its NCHW output
                         * plane (no transposition); else pixel-major as below */
                        for (int64_t g = 0; g < groups4; g++)
                            axs_dwplanes16_avx2(
                                xs + ((n * C + c0) * Hp + y0 * sh) * Wp + 4 * g,
                                (ptrdiff_t)(Hp * Wp), (ptrdiff_t)(sh * Wp),
                                (ptrdiff_t)(dh * Wp), (int)KH,
                                (int)(KW - 4 * g < 4 ? KW - 4 * g : 4), sw, nb, OW, (int)nc,
                                (const uint16_t *)E + g * KH * 1024,
                                (ptrdiff_t)(groups4 * KH * 1024), sums,
                                planar_dq ? 1 : (ptrdiff_t)cb, planar_dq ? (ptrdiff_t)P : 1,
                                g > 0);
                        if (planar_dq) {
                            for (int64_t j = 0; j < nc; j++) {
                                int64_t c = c0 + j;
                                axs_dequant_run(sums + j * P, P, kbias, dd.scale[c],
                                                dd.corr[c], dd.corr32 ? dd.corr32 + c : NULL,
                                                dd.bias ? dd.bias + c : NULL,
                                                (float *)out + ((n * C + c) * OH + y0) * OW);
                            }
                            continue;
                        }
                    } else
                        planes(xs + ((n * C + c0) * Hp + y0 * sh) * Wp, (ptrdiff_t)(Hp * Wp),
                               (ptrdiff_t)(sh * Wp), (ptrdiff_t)(dh * Wp), (int)KH, (int)KW,
                               sw, nb, OW, (int)nc, E, (ptrdiff_t)(KH * 1024), sums,
                               (ptrdiff_t)cb);
                    /* pixel by pixel: the block's channels are contiguous in the output */
                    int64_t r0 = (n * OH + y0) * OW;
                    if (dq && dq->nchw) {
                        /* NCHW output: the band dequantized in place (float32 over its
                         * uint32 sums), then a run of P pixels per channel */
                        float *ft = (float *)sums;
                        if (rows_dq) {
                            axs_dequant_rows(sums, (ptrdiff_t)cb, (int)P, (int)nc, kbias, NULL, 0,
                                             dd.scale + c0, dd.corr + c0,
                                             dd.corr32 ? dd.corr32 + c0 : NULL, dd.zw + c0,
                                             dd.bias ? dd.bias + c0 : NULL, ft, (ptrdiff_t)cb);
                        } else {
                            for (int64_t i = 0; i < P; i++)
                                for (int64_t j = 0; j < nc; j++) {
                                    uint32_t v = sums[i * cb + j];
                                    ft[i * cb + j] = axs_dequant_one(
                                        dq, out64 ? (int64_t)v - kbias64
                                                  : (int64_t)(int32_t)(v - kbias),
                                        r0 + i, c0 + j);
                                }
                        }
                        axs_scatter_nchw(ft, (ptrdiff_t)cb, (int)P, (int)nc, r0, c0, OH * OW,
                                         C, (float *)out, path);
                        continue;
                    }
                    if (rows_dq) {
                        axs_dequant_rows(sums, (ptrdiff_t)cb, (int)P, (int)nc, kbias, NULL, 0,
                                         dd.scale + c0, dd.corr + c0,
                                         dd.corr32 ? dd.corr32 + c0 : NULL, dd.zw + c0,
                                         dd.bias ? dd.bias + c0 : NULL,
                                         (float *)out + r0 * C + c0, (ptrdiff_t)C);
                        continue;
                    }
                    for (int64_t i = 0; i < P; i++) {
                        const uint32_t *si = sums + i * cb;
                        if (dq) {
                            float *y = (float *)out + (r0 + i) * C + c0;
                            for (int64_t j = 0; j < nc; j++)
                                y[j] = axs_dequant_one(dq, out64 ? (int64_t)si[j] - kbias64
                                                       : (int64_t)(int32_t)(si[j] - kbias),
                                                       r0 + i, c0 + j);
                        } else if (out64) {
                            int64_t *o = (int64_t *)out + (r0 + i) * C + c0;
                            for (int64_t j = 0; j < nc; j++)
                                o[j] = (int64_t)si[j] - kbias64;
                        } else {
                            int32_t *o = (int32_t *)out + (r0 + i) * C + c0;
                            for (int64_t j = 0; j < nc; j++)
                                o[j] = (int32_t)(si[j] - kbias);
                        }
                    }
                }
        }
        axs_free64(E);
        free(sums);
    }
    free(xbuf);
    free(qbuf);
    free(dd.corr);
    return failed ? AXS_ENOMEM : AXS_OK;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
