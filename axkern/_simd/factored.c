/* Factored tables: exact sums without lookups for tables that are sums of products.
 *
 * Many approximate multipliers map each operand and multiply exactly (DRUM, perforated
 * partial products, the exact product itself): their table is T[a][b] = U[a] * V[b], and
 * truncated or broken-array multipliers are sums of a few such products. With T[a][b] =
 * sum_{i < r} U[a][i] * V[b][i] (int16 factors, found and checked by axkern.lowrank),
 *
 *   sum_k T[a_k][b_k] = sum_k sum_i U[a_k][i] * V[b_k][i],
 *
 * an integer GEMM of reduction length r * K over the factors: the streamed operand's codes
 * become rows of int16 values (U of each code), the fixed operand's a block of int16 columns
 * (V), and vpmaddwd multiplies 16 pairs and adds them into 8 int32 lanes per instruction.
 * Products of int16 values fit int32 and the lanes wrap modulo 2^32, so the int32 totals
 * are exact whenever the true sums fit int32, as with the other methods.
 *
 * Layout: the streamed values of one tap (conv2d) or of the whole reduction (gemm) are one
 * contiguous run of L int16 (L = CG * r rounded up to even, a zero in the odd slot), in a
 * padded NHWC image of the values (conv2d: UI[pixel][group][L]) or a row per row of a
 * (gemm). The fixed side of a block of 16 output columns holds, for each pair of
 * consecutive positions q, q + 1 of the run, the 16 columns' two values side by side:
 * Bp[((t * L + q) >> 1) * 32 + 2 * j + (q & 1)]. */
#include <stdlib.h>
#include <string.h>

#include "axs_internal.h"

#define AXS_FNB 16
/* Rows per unit of work: 192 rows of 16 sums (12 KiB) stay in L1 with the kernel's rows. */
#define AXS_FTILE 192
/* Bytes of a convolution's padded input values built at a time (whole images; the tests
 * lower it to take a batch in several chunks); a depthwise layer's band of rows takes at
 * most the smaller of this and 256 KiB (fdw_nhwc). */
static int64_t fchunk_bytes = (int64_t)32 << 20;

int64_t axs_set_fchunk(int64_t bytes)
{
    int64_t old = fchunk_bytes;
    if (bytes > 0)
        fchunk_bytes = bytes;
    return old;
}
/* Time per multiply-accumulate of one factor against one expanded-table lookup per
 * (row, step, column) (axs_xcost's unit, about 0.05 ns a thread on Zen 3): about 0.018 ns a
 * factor product on the AVX2 code; the portable loop about 0.3 of its own expanded
 * lookups. A value of the streamed image costs about 6 units, a packed fixed value 6 on
 * the AVX2 code (0.3 ns: a 1024 x 1024 weight matrix packs into 2 MB) and 20 in the
 * portable loop. */
#define AXS_FMAC_AVX2 0.36
#define AXS_FMAC_C 0.6
#define AXS_FIMG 6.0
#define AXS_FPACK_AVX2 6.0
#define AXS_FPACK_C 20.0
/* Per row and block of 16 columns, whatever the taps: the sums' start and store, the row's
 * offsets. One thread on Zen 3, int32 sums, 8 images of 32 x 32 (and 28 x 28 by 64 groups):
 * 9.4 ns + 0.236 ns per value of the row a block, from 1x1 layers of 2 channels (9.9 ns) up to
 * 3x3 of 16 (43 ns); without this term, layers of few channels (an RGB or grey first layer,
 * groups of one or two channels) took the factored kernel at 1.4 - 4 times the time of the
 * expanded or direct method. */
#define AXS_FROWB 190.0

static int64_t even(int64_t v)
{
    return (v + 1) & ~(int64_t)1;
}

static int64_t ftile_rows(int64_t rows, int64_t nblocks, int nt)
{
    int64_t ms = AXS_FTILE;
    int64_t units = (rows + ms - 1) / ms * nblocks;
    if (units < 2 * nt) {  /* small calls: enough tiles for every thread */
        int64_t want = (2 * nt + nblocks - 1) / nblocks;
        ms = (rows + want - 1) / want;
        ms = (ms + 5) / 6 * 6;
        ms = ms < 6 ? 6 : ms;
    }
    return ms;
}

double axs_fcost(int path, int64_t rows, int64_t K, int64_t cg, int64_t cols, int64_t groups,
                 int r, int64_t values, int packed, int nt)
{
    double per = path == AXS_PATH_SCALAR ? AXS_FMAC_C : AXS_FMAC_AVX2;
    double pack = packed ? 0.0 : path == AXS_PATH_SCALAR || r > 2 ? AXS_FPACK_C
                                                                  : AXS_FPACK_AVX2;
    int64_t bpg = (cols + AXS_FNB - 1) / AXS_FNB, nblocks = bpg * groups;
    int64_t ms = ftile_rows(rows, nblocks, nt);
    int64_t units = (rows + ms - 1) / ms * nblocks;
    units = units < nt ? units : nt;
    int64_t pack_units = nblocks < nt ? nblocks : nt;
    /* the kernel takes rows 6 at a time, and each tap's run of cg * r values padded to even
     * (one channel of rank 1 takes a pair per tap, half of it a zero) */
    double krows = (double)((rows + 5) / 6 * 6);
    double w = (double)(bpg * AXS_FNB * groups);
    double kr = (double)(K / cg) * (double)even(cg * r);
    return (per * krows * kr * w + AXS_FROWB * krows * (double)nblocks +
            AXS_FIMG * (double)values * r) / (double)(units > 1 ? units : 1) +
           pack * kr * w / (double)(pack_units > 1 ? pack_units : 1);
}

static axs_fkern_fn fkern_for(int path)
{
    return path == AXS_PATH_SCALAR ? axs_fkern_scalar : axs_fkern_avx2;
}

/* The fixed values of output columns o0 .. o0 + nf in the pair layout above, from codes
 * held as rows of a (K, ld) matrix (b of a gemm, HWIO filters: step k = t * cg + c of
 * column o at Wc[k * ld + o]); columns j >= nf and the odd slot of a run stay 0. */
static void fpack(const uint8_t *Wc, int64_t ld, int64_t cg, int64_t ntap, int64_t L,
                  const axs_factors *fac, int64_t o0, int nf, int16_t *Bp)
{
    const int r = fac->r;
    memset(Bp, 0, (size_t)(ntap * L * AXS_FNB) * sizeof(int16_t));
    for (int64_t t = 0; t < ntap; t++)
        for (int64_t c = 0; c < cg; c++) {
            const uint8_t *f = Wc + (t * cg + c) * ld + o0;
            for (int i = 0; i < r; i++) {
                int64_t q = t * L + c * r + i;
                int16_t *d = Bp + (q >> 1) * 32 + (q & 1);
                for (int j = 0; j < nf; j++)
                    d[2 * j] = fac->V[(ptrdiff_t)f[j] * r + i];
            }
        }
}

/* How the streamed codes become values: values that are the code itself up to sign and
 * offset (exact and perforated multipliers) by widening, on every path (on the AVX2 path
 * 1.2 - 1.3 times as fast on depthwise layers and the 8192 x 576 GEMM, paired; the same
 * elsewhere); else on the AVX-512 VBMI path by vpermi2b lookups in
 * byte planes (r <= 2: planes; in a layer call 1.2 - 1.6 times as fast as the AVX2 code's
 * lookups, where they took a third of a depthwise layer's time); on the AVX2 code r = 1 by
 * byte-shuffle lookups (tabs), r = 2 by byte-shuffle lookups or widening per value (pairs:
 * when each of the two values is narrow or the code itself, as in a rank-1 table with the
 * weight zero point folded in), else by gathers of the int32 form (u32); else the portable
 * loop. */
typedef struct {
    const axs_factors *fac;
    const int32_t *u32;
    const uint8_t *tabs;
    const uint8_t *planes;
    int narrow;        /* r = 1, AVX2: values span at most 256, one byte plane of U - off */
    int16_t off;
    /* r = 1 values that are the code itself, zero- or sign-extended, negated or not, plus
     * an offset (exact and perforated multipliers): widened as aff says, not looked up */
    int affine;
    axs_fcomp aff;
    int pairs;         /* r = 2, AVX2: axs_fvalues2_shuf_avx2 with comp over T */
    axs_fcomp comp[2];
    const axs_bclass *bc;   /* r = 1 narrow: the plane's row classes, or NULL */
    axs_bclass bcl[2];
    int32_t U32[256];
    uint8_t T[1024];
} fvals;

/* Whether value i of the r values of every code is off + or - the code itself (zero- or
 * sign-extended): then *cp says how (lookup 0). */
static int fcomp_affine(const int16_t *U, int r, int i, axs_fcomp *cp)
{
    for (int sgn = 0; sgn < 2; sgn++)
        for (int neg = 0; neg < 2; neg++) {
            int ok = 1;
            const int off = U[i];   /* code 0 extends to 0 either way */
            for (int v = 0; v < 256 && ok; v++) {
                int e = sgn ? (int)(int8_t)v : v;
                ok = U[v * r + i] == off + (neg ? -e : e);
            }
            if (ok) {
                *cp = (axs_fcomp){0, sgn, neg, (int16_t)off, NULL};
                return 1;
            }
        }
    return 0;
}

/* The smallest value i of the r values of a code and whether they span at most 256. */
static int fcomp_narrow(const int16_t *U, int r, int i, int16_t *umin)
{
    int lo = U[i], hi = U[i];
    for (int v = 1; v < 256; v++) {
        lo = U[v * r + i] < lo ? U[v * r + i] : lo;
        hi = U[v * r + i] > hi ? U[v * r + i] : hi;
    }
    *umin = (int16_t)lo;
    return hi - lo <= 255;
}

/* Byte plane p of value i (of r) minus off, in the XOR-chained 16-entry chunks of the
 * AVX2 shuffle lookups: chunk h of half `half` at T + (half * 8 + h) * 32, both 128-bit
 * lanes alike (512 bytes). */
static void fchunks(const int16_t *U, int r, int i, int16_t off, int p, uint8_t *T)
{
    for (int half = 0; half < 2; half++)
        for (int h = 0; h < 8; h++)
            for (int e = 0; e < 16; e++) {
                int v = half * 128 + h * 16 + e;
                uint8_t cur = (uint8_t)((uint16_t)(U[v * r + i] - off) >> (8 * p));
                uint8_t prev = h ? (uint8_t)((uint16_t)(U[(v - 16) * r + i] - off) >> (8 * p))
                                 : 0;
                uint8_t *t = T + (half * 8 + h) * 32;
                t[e] = t[16 + e] = cur ^ prev;
            }
}

/* The row classes of the byte plane of value i (of r) minus off (axs_bclass), or 0 when its
 * rows, each less its first byte, take more than 8 non-zero forms. Class 0 is the zero form
 * whether a row takes it or not: its chunk is never looked up, and the index 16 k + 15 of
 * the ninth class stays below 128 once the first chunk's 16 is taken off. */
static int fclasses(const int16_t *U, int r, int i, int16_t off, axs_bclass *B)
{
    uint8_t R[9][16];
    int n = 1;
    memset(R, 0, sizeof R);
    for (int h = 0; h < 16; h++) {
        uint8_t row[16];
        const uint8_t base = (uint8_t)(U[16 * h * r + i] - off);
        for (int e = 0; e < 16; e++)
            row[e] = (uint8_t)((uint8_t)(U[(16 * h + e) * r + i] - off) - base);
        int k = 0;
        for (; k < n && memcmp(R[k], row, 16); k++)
            ;
        if (k == n) {
            if (n == 9)
                return 0;
            memcpy(R[n++], row, 16);
        }
        B->cls[h] = B->cls[16 + h] = (uint8_t)(16 * k);
        B->base[h] = B->base[16 + h] = base;
    }
    B->nc = n;
    for (int k = 1; k < n; k++)
        for (int e = 0; e < 16; e++)
            B->D[32 * k + e] = B->D[32 * k + 16 + e] = (uint8_t)(R[k][e] ^ R[k - 1][e]);
    return 1;
}

/* The int32 form of the factors F (U or V) of every code for the AVX2 gathers (r = 1: the
 * value; r = 2: both, the first in the low half), or NULL (portable path, r > 2) in *use. */
static void values32(const int16_t *F, int r, int path, int32_t *F32, const int32_t **use)
{
    *use = NULL;
    if (path == AXS_PATH_SCALAR || r > 2)
        return;
    for (int v = 0; v < 256; v++)
        F32[v] = r == 1 ? (int32_t)F[v]
                        : (int32_t)((uint32_t)(uint16_t)F[2 * v] |
                                    (uint32_t)(uint16_t)F[2 * v + 1] << 16);
    *use = F32;
}

static void fvals_init(fvals *fv, const axs_factors *fac, int path)
{
    fv->fac = fac;
    fv->tabs = NULL;
    fv->u32 = NULL;
    fv->planes = NULL;
    fv->narrow = 0;
    fv->off = 0;
    fv->pairs = 0;
    fv->bc = NULL;
    fv->affine = fac->r == 1 && fcomp_affine(fac->U, 1, 0, &fv->aff);
    if (path == AXS_PATH_SCALAR || fac->r > 2)
        return;
    if (path == AXS_PATH_AVX512_VBMI) {
        /* byte plane b (of the r * 2 bytes of a code's values) at T + 256 b */
        for (int v = 0; v < 256; v++)
            for (int b = 0; b < 2 * fac->r; b++)
                fv->T[256 * b + v] =
                    (uint8_t)((uint16_t)fac->U[v * fac->r + b / 2] >> (8 * (b & 1)));
        fv->planes = fv->T;
        return;
    }
    if (fac->r == 2) {
        int ok = 1;
        for (int i = 0; i < 2 && ok; i++) {
            axs_fcomp *cp = &fv->comp[i];
            if (fcomp_affine(fac->U, 2, i, cp))
                continue;
            int16_t umin;
            ok = fcomp_narrow(fac->U, 2, i, &umin);
            if (ok) {
                *cp = (axs_fcomp){1, 0, 0, umin, NULL};
                if (fclasses(fac->U, 2, i, umin, &fv->bcl[i]))
                    cp->bc = &fv->bcl[i];
                else
                    fchunks(fac->U, 2, i, umin, 0, fv->T + 512 * i);
            }
        }
        fv->pairs = ok;
        if (!ok)
            values32(fac->U, 2, path, fv->U32, &fv->u32);
        return;
    }
    /* the byte planes of U in the XOR-chained 16-entry chunks of axs_fvalues_shuf_avx2; when
     * the values span at most 256 (every shipped rank-1 table: DRUM, perforated, exact), the
     * low plane of U - min alone, widened and offset in the kernel: half the lookups */
    fv->narrow = fcomp_narrow(fac->U, 1, 0, &fv->off);
    if (!fv->narrow)
        fv->off = 0;
    else if (fclasses(fac->U, 1, 0, fv->off, &fv->bcl[0]))
        fv->bc = &fv->bcl[0];
    for (int p = 0; p < 2 && !fv->bc; p++)   /* (the classes need no chunks) */
        fchunks(fac->U, 1, 0, fv->off, p, fv->T + 512 * p);
    fv->tabs = fv->T;
}

/* fvals' affine values: four plain loops, which the compiler vectorizes */
static void fvalues_affine(const uint8_t *codes, int64_t n, const fvals *fv, int16_t *d)
{
    const int off = fv->aff.off;
    if (fv->aff.sgn && fv->aff.neg)
        for (int64_t c = 0; c < n; c++)
            d[c] = (int16_t)(off - (int8_t)codes[c]);
    else if (fv->aff.sgn)
        for (int64_t c = 0; c < n; c++)
            d[c] = (int16_t)(off + (int8_t)codes[c]);
    else if (fv->aff.neg)
        for (int64_t c = 0; c < n; c++)
            d[c] = (int16_t)(off - codes[c]);
    else
        for (int64_t c = 0; c < n; c++)
            d[c] = (int16_t)(off + codes[c]);
}

/* One run of n codes as n * r values (the odd slot of an odd run left as it is: zero). */
static void fvalues(const uint8_t *codes, int64_t n, const fvals *fv, int16_t *d)
{
    const axs_factors *fac = fv->fac;
    const int r = fac->r;
    if (fv->affine) {
        fvalues_affine(codes, n, fv, d);
        return;
    }
    if (fv->planes) {
        axs_fvalues_vbmi(codes, n, r, fv->planes, fac->U, d);
        return;
    }
    if (fv->tabs) {
        if (fv->narrow)
            axs_fvalues_shuf8_avx2(codes, n, fv->tabs, fv->off, fv->bc, fac->U, d);
        else
            axs_fvalues_shuf_avx2(codes, n, fv->tabs, fac->U, d);
        return;
    }
    if (fv->pairs) {
        axs_fvalues2_shuf_avx2(codes, n, fv->T, fv->comp, fac->U, d);
        return;
    }
    if (fv->u32) {
        axs_fvalues2_avx2(codes, n, fv->u32, d);
        return;
    }
    for (int64_t c = 0; c < n; c++)
        for (int i = 0; i < r; i++)
            d[c * r + i] = fac->U[(ptrdiff_t)codes[c] * r + i];
}

/* Tiles of rows by column blocks over the streamed values S (offsets as pb says, in int16
 * units), the fixed values of every block packed in Bp (per group and block, ntap * L * 16
 * each), sums stored through axs_xstore. A gemm may instead give its codes a (rows of K,
 * S NULL): then a thread turns one tile of rows at a time into values in its own buffer
 * and runs all column blocks over them (the values of a whole 8192 x 576 a took a fifth of
 * the call written out and read back). */
static int frun(const xproblem *pb, const int16_t *S, const ptrdiff_t *toff, int64_t ntap,
                int64_t L, const int16_t *Bp, const uint8_t *a, int64_t K, const fvals *fv,
                int nt, int path)
{
    axs_fkern_fn kern = fkern_for(path);
    const int64_t bpg = (pb->cols + AXS_FNB - 1) / AXS_FNB, nblocks = bpg * pb->groups;
    const int64_t ms_max = ftile_rows(pb->rows, nblocks, nt);
    const int64_t ntiles = (pb->rows + ms_max - 1) / ms_max, units = ntiles * nblocks;
    const int64_t per = a ? nblocks : 1;   /* units per hand-out: a tile's blocks */
    const size_t bsize = (size_t)(ntap * L * AXS_FNB);
    if (nt > units / per)
        nt = (int)(units / per);
    axs_xdeq dd;
    if (axs_xdeq_init(pb->dq, pb->groups * pb->cols, pb->rows, &dd))
        return AXS_ENOMEM;
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        uint32_t *acc = (uint32_t *)axs_alloc64((size_t)ms_max * AXS_FNB * sizeof(uint32_t));
        ptrdiff_t *roff = (ptrdiff_t *)malloc((size_t)ms_max * sizeof(ptrdiff_t));
        int16_t *St = a ? (int16_t *)axs_alloc64((size_t)(ms_max * L) * sizeof(int16_t) + 64)
                        : NULL;
        int ok = acc && roff && (St || !a);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        /* blocks of a tile next to each other: its streamed rows stay in cache */
#pragma omp for schedule(dynamic, 1)
        for (int64_t uc = 0; uc < units / per; uc++)
        for (int64_t u = uc * per; u < (uc + 1) * per; u++) {
            if (!ok)
                continue;
            int64_t r0 = (u / nblocks) * ms_max, blk = u % nblocks;
            int64_t g = blk / bpg, c0 = blk % bpg * AXS_FNB;
            int ms = (int)(pb->rows - r0 < ms_max ? pb->rows - r0 : ms_max);
            int nf = (int)(pb->cols - c0 < AXS_FNB ? pb->cols - c0 : AXS_FNB);
            const int16_t *src = S;
            if (a) {
                if (blk == 0)
                    for (int i = 0; i < ms; i++) {
                        St[(i + 1) * L - 1] = 0;
                        fvalues(a + (r0 + i) * K, K, fv, St + i * L);
                        roff[i] = (ptrdiff_t)(i * L);
                    }
                src = St;
            } else {
                axs_xrow_offsets(pb, r0, ms, roff);
            }
            kern(src + g * pb->gstride, roff, ms, toff, (int)ntap, (int)L, Bp + blk * bsize,
                 acc, AXS_FNB);
            axs_xstore(pb, &dd, (xword *)acc, AXS_FNB, r0, ms, g * pb->cols + c0, nf, 0,
                       NULL);
        }
        axs_free64(acc);
        axs_free64(St);
        free(roff);
    }
    free(dd.corr);
    return failed ? AXS_ENOMEM : AXS_OK;
}

/* Every group's and block's fixed values (blocks in parallel: a 64->64 layer has 4); full
 * blocks of r <= 2 by AVX2 gathers (the portable loop took 1.2 ns a value: a quarter of the
 * 256 x 1024 x 1024 call). */
static void fpack_into(const uint8_t *Wc, int64_t ld, int64_t cg, int64_t ntap, int64_t L,
                       const axs_factors *fac, int64_t cols, int64_t groups, int nt, int path,
                       int16_t *Bp)
{
    const int64_t bpg = (cols + AXS_FNB - 1) / AXS_FNB, nblocks = bpg * groups;
    const size_t bsize = (size_t)(ntap * L * AXS_FNB);
    int32_t V32[256];
    const int32_t *v32;
    values32(fac->V, fac->r, path, V32, &v32);
    int np = axs_threads_for(nt, (int64_t)(nblocks * bsize));
#pragma omp parallel for num_threads(nblocks < np ? (int)nblocks : np) schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t g = blk / bpg, c0 = blk % bpg * AXS_FNB;
        int nf = (int)(cols - c0 < AXS_FNB ? cols - c0 : AXS_FNB);
        if (v32 && nf == AXS_FNB)
            axs_fpack_avx2(Wc + g * cols + c0, (ptrdiff_t)ld, cg, ntap, L, v32, fac->r,
                           Bp + blk * bsize);
        else
            fpack(Wc, ld, cg, ntap, L, fac, g * cols + c0, nf, Bp + blk * bsize);
    }
}

int64_t axs_fpacked_size(int64_t ntap, int64_t CG, int64_t OG, int64_t groups, int r)
{
    return (OG + AXS_FNB - 1) / AXS_FNB * groups * ntap * even(CG * r) * AXS_FNB;
}

void axs_fpack(const uint8_t *w, int64_t ntap, int64_t CG, int64_t OG, int64_t groups,
               const axs_factors *fac, int16_t *Bp, int nthreads, int path)
{
    fpack_into(w, OG * groups, CG, ntap, even(CG * fac->r), fac, OG, groups,
               axs_threads(nthreads), path, Bp);
}

/* The fixed side of a call: the caller's packing when it has the call's size (owned = 0),
 * else packed here into a new buffer (owned = 1; NULL when out of memory). */
static int16_t *fpacked(const uint8_t *Wc, int64_t ld, int64_t cg, int64_t ntap, int64_t L,
                        const axs_factors *fac, int64_t cols, int64_t groups, int nt, int path,
                        int *owned)
{
    const int64_t size = axs_fpacked_size(ntap, cg, cols, groups, fac->r);
    *owned = 0;
    if (fac->packed && fac->packed_size == size)
        return (int16_t *)fac->packed;
    int16_t *Bp = (int16_t *)axs_alloc64((size_t)size * sizeof(int16_t) + 64);
    if (Bp) {
        fpack_into(Wc, ld, cg, ntap, L, fac, cols, groups, nt, path, Bp);
        *owned = 1;
    }
    return Bp;
}

int axs_fgemm(const uint8_t *a, const uint8_t *b, const axs_factors *fac, int64_t M,
              int64_t K, int64_t N, void *out, const axs_dequant *dq, int nt, int path)
{
    const int r = fac->r;
    const int64_t L = even(K * r);
    const int64_t nblocks = (N + AXS_FNB - 1) / AXS_FNB, ms = ftile_rows(M, nblocks, nt);
    /* values per tile when every thread gets two tiles or more, else all rows at once */
    const int tiled = (M + ms - 1) / ms >= 2 * nt;
    fvals fv;
    fvals_init(&fv, fac, path);
    /* + 64 bytes: the kernel's pair loads stay inside the buffer */
    int16_t *S = tiled ? NULL
                       : (int16_t *)axs_alloc64((size_t)(M * L) * sizeof(int16_t) + 64);
    int owned = 0;
    int16_t *Bp = S || tiled ? fpacked(b, N, K, 1, L, fac, N, 1, nt, path, &owned) : NULL;
    if (!Bp) {
        axs_free64(S);
        return AXS_ENOMEM;
    }
    if (!tiled) {
#pragma omp parallel for num_threads(axs_threads_for(nt, M * K)) schedule(static)
        for (int64_t m = 0; m < M; m++) {
            int16_t *d = S + m * L;
            d[L - 1] = 0;
            fvalues(a + m * K, K, &fv, d);
        }
    }
    xproblem pb;
    memset(&pb, 0, sizeof(pb));
    pb.rows = M;
    pb.rstride = (ptrdiff_t)L;
    pb.cols = N;
    pb.groups = 1;
    pb.out = out;
    pb.dq = dq;
    pb.ldo = N;
    const ptrdiff_t toff = 0;
    int rc = frun(&pb, S, &toff, 1, L, Bp, tiled ? a : NULL, K, &fv, nt, path);
    axs_free64(S);
    if (owned)
        axs_free64(Bp);
    return rc;
}

/* Padded row d of the values image (Wp pixels of px values) whose pixels' runs are
 * contiguous: the border's pixels copied from padv, the W pixels inside (codes: W * C codes,
 * NULL for a row of the top or bottom border) turned into values in one run (a call per
 * pixel of 16 codes took a tenth of a 16->16 layer). */
static void frow_whole(const uint8_t *codes, int64_t W, int64_t C, int64_t Wp, int64_t pl,
                       int64_t px, const int16_t *padv, const fvals *fv, int16_t *d)
{
    for (int64_t xq = 0; xq < Wp; xq++)
        if (!codes || xq < pl || xq >= pl + W)
            memcpy(d + xq * px, padv, (size_t)px * sizeof(int16_t));
    if (codes)
        fvalues(codes, W * C, fv, d + pl * px);
}

int axs_fconv2d(const uint8_t *x, const uint8_t *w, const axs_factors *fac, int64_t N,
                int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int64_t COUT, int sh,
                int sw, int pt, int pb_, int pl, int pr, int dh, int dw, int64_t groups,
                int pad_code, void *out, const axs_dequant *dq, int nt, int path)
{
    const int r = fac->r;
    const int64_t Hp = H + pt + pb_, Wp = W + pl + pr;
    const int64_t OH = (Hp - (int64_t)dh * (KH - 1) - 1) / sh + 1;
    const int64_t OW = (Wp - (int64_t)dw * (KW - 1) - 1) / sw + 1;
    const int64_t CG = C / groups, OG = COUT / groups, ntap = KH * KW;
    const int64_t L = even(CG * r), px = groups * L; /* int16 values per padded pixel */
    /* images per chunk: the values of at most fchunk_bytes of images at a time (of a large
     * batch, twice its codes at once would be needed) */
    const int64_t img = Hp * Wp * px * (int64_t)sizeof(int16_t);
    int64_t nchunk = fchunk_bytes / img;
    nchunk = nchunk < 1 ? 1 : nchunk > N ? N : nchunk;
    int16_t *S = (int16_t *)axs_alloc64((size_t)(nchunk * img) + 64);
    ptrdiff_t *toff = (ptrdiff_t *)malloc((size_t)ntap * sizeof(ptrdiff_t));
    uint8_t *pad = (uint8_t *)malloc((size_t)C);
    /* HWIO filters: step k = (ky * KW + kx) * CG + c of column o at w[k * COUT + o] */
    int owned = 0;
    int16_t *Bp = S && toff && pad ? fpacked(w, COUT, CG, ntap, L, fac, OG, groups, nt, path,
                                             &owned)
                                   : NULL;
    if (!Bp) {
        axs_free64(S);
        free(toff);
        free(pad);
        return AXS_ENOMEM;
    }
    for (int64_t ky = 0; ky < KH; ky++)
        for (int64_t kx = 0; kx < KW; kx++)
            toff[ky * KW + kx] = (ptrdiff_t)((ky * dh * Wp + kx * dw) * px);
    fvals fv;
    fvals_init(&fv, fac, path);
    /* a padded position holds the values of pad_code: one pixel's, copied */
    memset(pad, pad_code, (size_t)C);
    const int whole = L == CG * r;   /* the groups' runs are contiguous: whole rows of pixels */
    /* the pad pixel's values: px in the image's layout (whole), else C * r in a row's */
    int16_t *padv = (int16_t *)malloc((size_t)(whole ? px : C * r) * sizeof(int16_t));
    if (!padv) {
        axs_free64(S);
        if (owned)
            axs_free64(Bp);
        free(toff);
        free(pad);
        return AXS_ENOMEM;
    }
    fvalues(pad, C, &fv, padv);
    int rc = AXS_OK;
    for (int64_t n0 = 0; n0 < N && rc == AXS_OK; n0 += nchunk) {
        const int64_t nn = N - n0 < nchunk ? N - n0 : nchunk;
        int failed = 0;
#pragma omp parallel num_threads(axs_threads_for(nt, nn * Hp * Wp * C))
        {
            /* groups of an odd number of values (CG * r odd; L has a zero slot per group): a
             * row's values in one run into this buffer, then copied group by group (a call
             * per pixel and group cost 2 - 4 times the kernel on 3-channel images) */
            int16_t *row =
                whole ? NULL : (int16_t *)malloc((size_t)(W * C * r) * sizeof(int16_t));
            if (!whole && !row) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t ny = 0; ny < nn * Hp; ny++) {
                int64_t n = n0 + ny / Hp, y = ny % Hp;
                int inside = y >= pt && y < pt + H;
                int16_t *d = S + ny * Wp * px;
                if (whole) {
                    frow_whole(inside ? x + (n * H + y - pt) * W * C : NULL, W, C, Wp, pl, px,
                               padv, &fv, d);
                    continue;
                }
                if (!row)
                    continue;
                if (inside)
                    fvalues(x + (n * H + y - pt) * W * C, W * C, &fv, row);
                const int64_t run = CG * r;
                for (int64_t xq = 0; xq < Wp; xq++, d += px) {
                    const int16_t *v = inside && xq >= pl && xq < pl + W
                                           ? row + (xq - pl) * C * r : padv;
                    for (int64_t g = 0; g < groups; g++) {
                        memcpy(d + g * L, v + g * run, (size_t)run * sizeof(int16_t));
                        d[g * L + L - 1] = 0;
                    }
                }
            }
            free(row);
        }
        if (failed) {
            rc = AXS_ENOMEM;
            break;
        }
        /* the chunk's rows: its output and window sums start at image n0 */
        axs_dequant dqc;
        if (dq) {
            dqc = *dq;
            if (dqc.sumx)
                dqc.sumx += n0 * OH * OW * dq->groups;   /* the window sums' groups */
        }
        /* NHWC and NCHW outputs alike hold an image in P * COUT elements of 4 bytes */
        xproblem pbm;
        axs_xconv_problem(&pbm, nn, OH, OW, Hp * Wp, Wp, px, sh, sw, OG, groups, L,
                          (char *)out + n0 * OH * OW * COUT * 4, dq ? &dqc : NULL, path);
        rc = frun(&pbm, S, toff, ntap, L, Bp, NULL, 0, &fv, nt, path);
    }
    free(pad);
    free(padv);
    axs_free64(S);
    if (owned)
        axs_free64(Bp);
    free(toff);
    return rc;
}

/* Depthwise filters (groups == C == COUT) of tables with r <= 2 factors: output channel c of
 * a pixel is sum_t sum_q U[x_t][q] * V[w_t,c][q], the products of the values of each tap's
 * code and filter code. The values image holds a pair of int16 per channel and pixel, so
 * that one vpmaddwd gives 8 channels' (NHWC) or 8 pixels' (NCHW planes) products of a pair:
 * with r = 2 the code's two values, with r = 1 the values of the pixel and of the one dw
 * columns on, which meet the filter columns kx and kx + 1 (the taps of a filter row in
 * pairs, a last odd one paired with 0: 6 products for 3 x 3 instead of 9 with a zero in
 * every pair). */
typedef struct {
    int r;
    int64_t N, H, W, C, Hp, Wp, OH, OW, ntap;
    int64_t krows;          /* input rows a filter spans: (KH - 1) dh + 1 */
    int sh, sw, pt, pl, dw;
    const int16_t *Wv;      /* (ntap, C) pairs of the filters' values */
    const ptrdiff_t *toff;  /* (ntap) offsets of the taps' pairs, in pairs */
    const int16_t *padv;    /* (C * r) values of the padding code */
    const fvals *fv;
    void (*pairs)(const int16_t *, int64_t, ptrdiff_t, uint32_t *);
} fdwproblem;

/* The padded row of pairs d (Wp pixels of px pairs) from the row of values v (Wp pixels of
 * px * r values): r = 2, the values are the pairs; r = 1, pairs of the value at p and the
 * value at p + dw (zero partners for the last dw pixels, which no pair of taps reaches). */
static void fdw_pairs(const fdwproblem *q, const int16_t *v, int64_t px, uint32_t *d)
{
    if (q->r == 2) {
        if ((const void *)v != (const void *)d)
            memcpy(d, v, (size_t)(q->Wp * px) * sizeof(uint32_t));
        return;
    }
    int64_t np = q->Wp > q->dw ? (q->Wp - q->dw) * px : 0;
    q->pairs(v, np, (ptrdiff_t)(q->dw * px), d);
    for (int64_t e = np; e < q->Wp * px; e++)
        d[e] = (uint16_t)v[e];
}

/* NHWC codes: units of a band of output rows of one image; each thread builds the pairs of
 * its band's input rows (pixels of C pairs) in its own buffer, of at most 256 KiB (or the
 * chunk size the tests set) or the rows one output row needs, then runs tiles of the
 * band's pixels by all channels (axs_fdwkern_*) and stores them through axs_xstore. (A
 * values image of whole batches, freed on every call, came back as fresh pages on every
 * call: 1 x 112 x 112 x 32 spent 60% of its time in page faults.) */
static int fdw_nhwc(const fdwproblem *q, const uint8_t *x, void *out, const axs_dequant *dq,
                    int nt, int path)
{
    const int64_t C = q->C, Hp = q->Hp, Wp = q->Wp, OH = q->OH, OW = q->OW, px = C;
    const int64_t KHd = q->krows;
    const int64_t row_bytes = Wp * px * (int64_t)sizeof(uint32_t);
    const int64_t budget = fchunk_bytes < ((int64_t)256 << 10) ? fchunk_bytes
                                                                 : ((int64_t)256 << 10);
    int64_t B = budget / row_bytes >= KHd ? (budget / row_bytes - KHd) / q->sh + 1 : 1;
    B = B < OH ? B : OH;
    if (q->N * ((OH + B - 1) / B) < nt) {
        /* fewer bands than threads (a batch of one or two small images ran on one thread):
         * thinner bands, one per thread at least (their edge rows are built twice) */
        const int64_t per_image = (nt + q->N - 1) / q->N, thin = (OH + per_image - 1) / per_image;
        B = thin < B ? thin : B;
    }
    const int64_t in_rows = (B - 1) * q->sh + KHd, nbands = (OH + B - 1) / B;
    const int64_t units = q->N * nbands;
    ptrdiff_t *toff = (ptrdiff_t *)malloc((size_t)q->ntap * sizeof(ptrdiff_t));
    if (!toff)
        return AXS_ENOMEM;
    for (int64_t t = 0; t < q->ntap; t++)   /* in int16 */
        toff[t] = q->toff[t] * 2 * px;
    /* the store's view of the output: rows (n, oy, ox), C columns */
    xproblem pbm;
    axs_xconv_problem(&pbm, q->N, OH, OW, Hp * Wp, Wp, 2 * px, q->sh, q->sw, C, 1, 0, out, dq,
                      path);
    axs_xdeq dd;
    if (axs_xdeq_init(dq, C, pbm.rows, &dd)) {
        free(toff);
        return AXS_ENOMEM;
    }
    /* tiles of pixels whose sums (ms * C) take about 32 KiB */
    int64_t ms_max = 8192 / C;
    ms_max = ms_max < 4 ? 4 : (ms_max + 3) & ~(int64_t)3;
    const axs_fdwkern_fn kern = path == AXS_PATH_SCALAR ? axs_fdwkern_scalar
                                : path == AXS_PATH_AVX512_VBMI ? axs_fdwkern_avx512
                                                               : axs_fdwkern_avx2;
    int failed = 0;
#pragma omp parallel num_threads(units < nt ? (int)units : nt)
    {
        uint32_t *band = (uint32_t *)axs_alloc64((size_t)(in_rows * Wp * px) * sizeof(uint32_t)
                                                 + 64);
        /* r = 1: a padded row's values before pairing */
        int16_t *row = q->r == 1 ? (int16_t *)malloc((size_t)(Wp * C) * sizeof(int16_t))
                                 : NULL;
        uint32_t *acc = (uint32_t *)axs_alloc64((size_t)(ms_max * C) * sizeof(uint32_t));
        ptrdiff_t *roff = (ptrdiff_t *)malloc((size_t)ms_max * sizeof(ptrdiff_t));
        int ok = band && acc && roff && (row || q->r != 1);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            if (!ok)
                continue;
            const int64_t n = u / nbands, y0 = (u % nbands) * B;
            const int64_t nb = OH - y0 < B ? OH - y0 : B;
            for (int64_t j = 0; j < (nb - 1) * q->sh + KHd; j++) {
                const int64_t iy = y0 * q->sh + j;   /* padded input row */
                const int inside = iy >= q->pt && iy < q->pt + q->H;
                uint32_t *d = band + j * Wp * px;
                int16_t *v = q->r == 2 ? (int16_t *)d : row;
                frow_whole(inside ? x + (n * q->H + iy - q->pt) * q->W * C : NULL, q->W, C,
                           Wp, q->pl, C * q->r, q->padv, q->fv, v);
                fdw_pairs(q, v, px, d);
            }
            for (int64_t i0 = 0; i0 < nb * OW; i0 += ms_max) {
                const int ms = (int)(nb * OW - i0 < ms_max ? nb * OW - i0 : ms_max);
                /* a running row and column: a division per pixel cost the call 2% */
                for (int64_t k = 0, oy = i0 / OW, ox = i0 % OW; k < ms; k++) {
                    roff[k] = (ptrdiff_t)((oy * q->sh * Wp + ox * q->sw) * 2 * px);
                    if (++ox == OW)
                        ox = 0, oy++;
                }
                kern((const int16_t *)band, roff, ms, toff, (int)q->ntap, C, 0, q->Wv, acc,
                     (ptrdiff_t)C);
                axs_xstore(&pbm, &dd, (xword *)acc, (ptrdiff_t)C, (n * OH + y0) * OW + i0, ms,
                           0, (int)C, 0, NULL);
            }
        }
        axs_free64(band);
        free(row);
        axs_free64(acc);
        free(roff);
    }
    free(dd.corr);
    free(toff);
    return failed ? AXS_ENOMEM : AXS_OK;
}

/* NCHW codes to an NCHW float32 output (stride 1 across, no window sums, every term of the
 * dequantization exact in float64): each unit is one channel of one image, its plane of
 * pairs built in the thread's buffer and its sums dequantized as one run into the output
 * plane (axs_fdwplane_*: 8 pixels per vpmaddwd). AXS_NEED_NHWC otherwise. */
static int fdw_planar(const fdwproblem *q, const uint8_t *x, void *out, const axs_dequant *dq,
                      int nt, int path)
{
    const int64_t C = q->C, Hp = q->Hp, Wp = q->Wp, P = q->OH * q->OW, HW = q->H * q->W;
    if (!dq || !dq->nchw || dq->zw || q->sw != 1)
        return AXS_NEED_NHWC;
    axs_xdeq dd;
    if (axs_xdeq_init(dq, C, q->N * P, &dd))
        return AXS_ENOMEM;
    if (!dd.exact) {
        free(dd.corr);
        return AXS_NEED_NHWC;
    }
    const axs_fdwplane_fn kern =
        path == AXS_PATH_SCALAR ? axs_fdwplane_scalar : axs_fdwplane_avx2;
    /* a padded position's pair: its two values (r = 2), or the value twice (r = 1: its
     * partner dw columns on is padding too, on the border rows) */
    const uint32_t padpair = (uint32_t)(uint16_t)q->padv[0] |
                             (uint32_t)(uint16_t)q->padv[q->r == 2 ? 1 : 0] << 16;
    int failed = 0;
    const int64_t units = q->N * C;
#pragma omp parallel num_threads(units < nt ? (int)units : nt)
    {
        /* + 8 pairs: the last vector of a row reads on */
        uint32_t *pl = (uint32_t *)axs_alloc64((size_t)(Hp * Wp + 8) * sizeof(uint32_t));
        int16_t *vals = (int16_t *)malloc((size_t)(HW * q->r) * sizeof(int16_t));
        int16_t *row = (int16_t *)malloc((size_t)(Wp * q->r) * sizeof(int16_t));
        uint32_t *sums = (uint32_t *)axs_alloc64((size_t)P * sizeof(uint32_t));
        uint32_t *wp = (uint32_t *)malloc((size_t)q->ntap * sizeof(uint32_t));
        int ok = pl && vals && row && sums && wp;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(pl + Hp * Wp, 0, 8 * sizeof(uint32_t));
        }
        /* static: the units cost the same, and handed out one at a time (dynamic, 1) the
         * thousands of small planes of a batch took 1.1 - 2.2 times as long (two threads,
         * paired; the hand-out costs about 0.1 us a plane on these VMs) */
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; u++) {
            if (!ok)
                continue;
            const int64_t n = u / C, c = u % C, r = q->r;
            for (int64_t t = 0; t < q->ntap; t++) {
                const int16_t *f = q->Wv + (t * C + c) * 2;
                wp[t] = (uint32_t)(uint16_t)f[0] | (uint32_t)(uint16_t)f[1] << 16;
            }
            fvalues(x + (n * C + c) * HW, HW, q->fv, vals);
            for (int64_t y = 0; y < Hp; y++) {
                uint32_t *d = pl + y * Wp;
                if (y < q->pt || y >= q->pt + q->H) {   /* a border row: pairs of padding */
                    for (int64_t xq = 0; xq < Wp; xq++)
                        d[xq] = padpair;
                    continue;
                }
                const int16_t *v = vals + (y - q->pt) * q->W * r;
                if (r == 2) {
                    for (int64_t xq = 0; xq < q->pl; xq++)
                        d[xq] = padpair;
                    memcpy(d + q->pl, v, (size_t)q->W * sizeof(uint32_t));
                    for (int64_t xq = q->pl + q->W; xq < Wp; xq++)
                        d[xq] = padpair;
                    continue;
                }
                for (int64_t xq = 0; xq < q->pl; xq++)
                    row[xq] = q->padv[0];
                memcpy(row + q->pl, v, (size_t)q->W * sizeof(int16_t));
                for (int64_t xq = q->pl + q->W; xq < Wp; xq++)
                    row[xq] = q->padv[0];
                fdw_pairs(q, row, 1, d);
            }
            kern(pl, (ptrdiff_t)Wp, q->sh, q->OH, q->OW, q->toff, (int)q->ntap, wp, sums);
            axs_dequant_run(sums, P, 0, dd.scale[c], dd.corr[c],
                            dd.corr32 ? dd.corr32 + c : NULL, dd.bias ? dd.bias + c : NULL,
                            (float *)out + (n * C + c) * P);
        }
        axs_free64(pl);
        free(vals);
        free(row);
        axs_free64(sums);
        free(wp);
    }
    free(dd.corr);
    return failed ? AXS_ENOMEM : AXS_OK;
}

/* x: NHWC codes, or NCHW codes (in_nchw: planes when fdw_planar serves, else AXS_NEED_NHWC,
 * for the caller to transpose them). */
int axs_fdwconv2d(const uint8_t *x, const uint8_t *w, const axs_factors *fac, int64_t N,
                  int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int sh, int sw,
                  int pt, int pb_, int pl, int pr, int dh, int dw, int pad_code, void *out,
                  const axs_dequant *dq, int nt, int path, int in_nchw)
{
    fdwproblem q;
    q.r = fac->r;
    q.N = N, q.H = H, q.W = W, q.C = C;
    q.Hp = H + pt + pb_, q.Wp = W + pl + pr;
    q.OH = (q.Hp - (int64_t)dh * (KH - 1) - 1) / sh + 1;
    q.OW = (q.Wp - (int64_t)dw * (KW - 1) - 1) / sw + 1;
    q.sh = sh, q.sw = sw, q.pt = pt, q.pl = pl, q.dw = dw;
    const int r = q.r;
    const int64_t kxp = r == 2 ? KW : (KW + 1) / 2;   /* pairs per filter row */
    q.ntap = KH * kxp;
    q.krows = (KH - 1) * dh + 1;
    int16_t *Wv = (int16_t *)malloc((size_t)(q.ntap * C * 2) * sizeof(int16_t));
    int16_t *padv = (int16_t *)malloc((size_t)(C * r) * sizeof(int16_t));
    uint8_t *pad = (uint8_t *)malloc((size_t)C);
    ptrdiff_t *toff = (ptrdiff_t *)malloc((size_t)q.ntap * sizeof(ptrdiff_t));
    if (!Wv || !padv || !pad || !toff) {
        free(Wv);
        free(padv);
        free(pad);
        free(toff);
        return AXS_ENOMEM;
    }
    /* HWIO filters of one input channel: tap (ky, kx) of channel c at w[(ky KW + kx) C + c] */
    for (int64_t ky = 0; ky < KH; ky++)
        for (int64_t j = 0; j < kxp; j++) {
            const int64_t t = ky * kxp + j, kx = r == 2 ? j : 2 * j;
            toff[t] = (ptrdiff_t)(ky * dh * q.Wp + kx * dw);
            for (int64_t c = 0; c < C; c++) {
                int16_t *d = Wv + (t * C + c) * 2;
                const uint8_t *f = w + (ky * KW + kx) * C + c;
                d[0] = fac->V[(ptrdiff_t)f[0] * r];
                d[1] = r == 2 ? fac->V[(ptrdiff_t)f[0] * 2 + 1]
                              : kx + 1 < KW ? fac->V[f[C]] : 0;
            }
        }
    fvals fv;
    fvals_init(&fv, fac, path);
    memset(pad, pad_code, (size_t)C);
    fvalues(pad, C, &fv, padv);
    q.Wv = Wv, q.toff = toff, q.padv = padv, q.fv = &fv;
    q.pairs = path == AXS_PATH_SCALAR ? axs_fpairs_scalar : axs_fpairs_avx2;
    int rc = in_nchw ? fdw_planar(&q, x, out, dq, nt, path) : fdw_nhwc(&q, x, out, dq, nt, path);
    free(Wv);
    free(padv);
    free(pad);
    free(toff);
    return rc;
}
