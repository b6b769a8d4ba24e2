/* axsimd drivers: table preparation, CPU feature detection, tiling, packing and OpenMP
 * parallelism around the micro-kernels (see axsimd.h for the arithmetic). */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "axsimd.h"
#include "axs_internal.h"

/* ------------------------------------------------------------------------ dispatch */

int axs_path_supported(int path)
{
    if (path == AXS_PATH_SCALAR)
        return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (path == AXS_PATH_AVX2)
        return __builtin_cpu_supports("avx2") != 0;
    if (path == AXS_PATH_AVX512_VBMI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vbmi");
#endif
    return 0;
}

int axs_has_vnni(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
#else
    return 0;
#endif
}

int axs_best_path(void)
{
    for (int p = AXS_NPATHS - 1; p > 0; p--)
        if (axs_path_supported(p))
            return p;
    return AXS_PATH_SCALAR;
}

static axs_kern16_fn kern16_for(int path)
{
    switch (path) {
    case AXS_PATH_AVX512_VBMI: return axs_kern16_avx512;
    case AXS_PATH_AVX2: return axs_kern16_avx2;
    default: return axs_kern16_scalar;
    }
}

/* ------------------------------------------------------------------------ tables */

/* 64-byte aligned blocks (zmm loads) from plain malloc, so that the code stays portable:
 * the original pointer is kept just below the aligned one. Free with axs_free64. */
void *axs_alloc64(size_t n)
{
    void *raw = malloc(n + 64 + sizeof(void *));
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)p)[-1] = raw;
    return (void *)p;
}

void axs_free64(void *p)
{
    if (p)
        free(((void **)p)[-1]);
}

/* Everything a call needs for one orientation. transpose = 0: the fixed code indexes the
 * table's columns (weight operand b fixed, activations streamed); 1: its rows. */
typedef struct {
    axs_fixed_table t;
    const void *key;  /* the table in row-major order: biased uint16 (16-bit class) or int32 */
    void *mem, *keymem, *rmem;
} prepared;

/* The residual bytes res8 and least residuals lo_f of t16 for values v (sg: int8 bit
 * patterns) and z, or 0 where some fixed code's residuals span more than 255. */
static int residual_fits(const uint16_t *t16, int sg, int32_t z, uint8_t *res8, int32_t *lo_f)
{
    for (int f = 0; f < 256; f++) {
        const int32_t vf = (sg ? (int8_t)f : f) - z;
        int32_t lo = 0, hi = 0;
        for (int s = 0; s < 256; s++) {
            const int32_t r = (int32_t)t16[f * 256 + s] - (sg ? (int8_t)s : s) * vf;
            lo = s == 0 || r < lo ? r : lo;
            hi = s == 0 || r > hi ? r : hi;
        }
        if (hi - lo > 255)
            return 0;
        for (int s = 0; s < 256; s++)
            res8[s * 256 + f] =
                (uint8_t)((int32_t)t16[f * 256 + s] - (sg ? (int8_t)s : s) * vf - lo);
        lo_f[f] = lo;
    }
    return 1;
}

/* The byte-residual form of a 16-bit-class table (axs_fixed_table.res8): the entries less
 * v(s) * (v(f) - z), v the codes' values (unsigned, tried first, or int8 bit patterns), must
 * span at most 255 for every fixed code f, for some integer z (nonzero where the weights'
 * zero point was folded into the table: T'[a, b] = T[a, b] - zw * v(a)). The exact part is
 * summed by vpdpbusd on the fixed code and the streamed code XOR 0x80: unsigned, f * (s -
 * 128), which wants 128 f back; signed, (s + 128) * f, which wants -128 f; and the kernel
 * takes z times the sum of its row's v(s) off (the AVX2 form multiplies v(s) by v(f) - z
 * in int16 and takes the correction off rcc). Leaves pr->t.res8 NULL when nothing fits,
 * or on a failed allocation (the 16-bit form serves then). */
static void prepare_residual(prepared *pr)
{
    const uint16_t *t16 = pr->t.tab16;
    uint8_t *mem = (uint8_t *)axs_alloc64(2 * 65536 + 256 * sizeof(int32_t));
    if (!mem)
        return;
    uint8_t *res8 = mem;
    int32_t *rcc = (int32_t *)(mem + 65536);
    for (int sg = 0; sg < 2; sg++) {
        /* z from the column of the fixed code of value 0, whose entries are -z v(s) plus the
         * residual: the slope between the smallest and the largest value, and its neighbours
         * (the residual moves it by at most 1) */
        const int s0 = sg ? 128 : 0, s1 = sg ? 127 : 255;
        const int32_t dv = (sg ? 127 : 255) - (sg ? -128 : 0);
        const int32_t dt = (int32_t)t16[s1] - (int32_t)t16[s0];
        const int32_t z0 = -(int32_t)((dt >= 0 ? dt + dv / 2 : dt - dv / 2) / dv);
        for (int32_t z = z0 - 1; z <= z0 + 1; z++) {
            if (!residual_fits(t16, sg, z, res8, rcc))
                continue;
            for (int f = 0; f < 256; f++) {
                const int32_t vf = sg ? (int8_t)f : f;
                /* modulo 2^32, as the sums are */
                rcc[f] = (int32_t)((uint32_t)rcc[f] - pr->t.bias +
                                   (uint32_t)(sg ? -128 * vf : 128 * vf));
            }
            pr->t.res8 = res8;
            pr->t.rcc = rcc;
            uint8_t *res8d = mem + 65536 + 256 * sizeof(int32_t);
            for (int s = 0; s < 256; s++)
                for (int f = 0; f < 256; f++)
                    res8d[f * 256 + s] = res8[s * 256 + f];
            pr->t.res8d = res8d;
            pr->t.rsigned = sg;
            pr->t.rz = z;
            pr->rmem = mem;
            return;
        }
    }
    axs_free64(mem);
}

/* The least and greatest entries of a table. */
static void table_range(const int32_t *table, int32_t *lo_out, int32_t *hi_out)
{
    int32_t lo = table[0], hi = table[0];
    for (int i = 1; i < 65536; i++) {
        lo = table[i] < lo ? table[i] : lo;
        hi = table[i] > hi ? table[i] : hi;
    }
    *lo_out = lo;
    *hi_out = hi;
}

static int prepare(const int32_t *table, int transpose, int path, prepared *pr)
{
    int32_t lo, hi;
    table_range(table, &lo, &hi);
    memset(pr, 0, sizeof(*pr));
    if ((int64_t)hi - (int64_t)lo > 65535) {
        int32_t *t32 = (int32_t *)axs_alloc64(65536 * sizeof(int32_t));
        if (!t32)
            return AXS_ENOMEM;
        for (int f = 0; f < 256; f++)
            for (int s = 0; s < 256; s++)
                t32[f * 256 + s] = transpose ? table[f * 256 + s] : table[s * 256 + f];
        pr->t.generic = 1;
        pr->t.tab32 = t32;
        pr->mem = t32;
        pr->key = t32;
        if (!transpose) {
            pr->keymem = axs_alloc64(65536 * sizeof(int32_t));
            if (!pr->keymem) {
                axs_free64(t32);
                return AXS_ENOMEM;
            }
            memcpy(pr->keymem, table, 65536 * sizeof(int32_t));
            pr->key = pr->keymem;
        }
        return AXS_OK;
    }
    /* 16-bit class: 128 KiB of biased entries (+64 bytes: the AVX2 gathers read 4 bytes at
     * the last entry), then 128 KiB of byte planes for the VBMI path. */
    size_t n16 = 65536 * sizeof(uint16_t) + 64;
    int want_planes = path == AXS_PATH_AVX512_VBMI, want_xtab = path == AXS_PATH_AVX2;
    uint8_t *mem = (uint8_t *)axs_alloc64(n16 + (want_planes ? 131072 : 0) +
                                              (want_xtab ? 262144 : 0));
    if (!mem)
        return AXS_ENOMEM;
    uint16_t *t16 = (uint16_t *)mem;
    uint32_t bias = (uint32_t)(-(int64_t)lo);
    for (int f = 0; f < 256; f++)
        for (int s = 0; s < 256; s++) {
            int32_t v = transpose ? table[f * 256 + s] : table[s * 256 + f];
            t16[f * 256 + s] = (uint16_t)((uint32_t)v + bias);
        }
    memset(mem + 65536 * sizeof(uint16_t), 0, 64);
    if (want_planes) {
        uint8_t *pl = mem + n16;
        for (int f = 0; f < 256; f++)
            for (int s = 0; s < 256; s++) {
                pl[f * 512 + s] = (uint8_t)(t16[f * 256 + s] & 255);
                pl[f * 512 + 256 + s] = (uint8_t)(t16[f * 256 + s] >> 8);
            }
        pr->t.planes = pl;
    }
    if (want_xtab) {
        /* vpshufb chunks, XOR-chained so that a prefix XOR gives the chunk (kern_avx2.c) */
        uint8_t *xt = mem + n16;
        for (int f = 0; f < 256; f++)
            for (int p = 0; p < 2; p++)
                for (int hb = 0; hb < 2; hb++)
                    for (int h = 0; h < 8; h++)
                        for (int l = 0; l < 16; l++) {
                            int e = hb * 128 + h * 16 + l;
                            uint8_t v = (uint8_t)(t16[f * 256 + e] >> (8 * p));
                            if (h > 0)
                                v ^= (uint8_t)(t16[f * 256 + e - 16] >> (8 * p));
                            uint8_t *d = xt + (size_t)f * 1024 + ((p * 16 + hb * 8 + h) * 32);
                            d[l] = d[l + 16] = v;
                        }
        pr->t.xtab = xt;
    }
    pr->t.generic = 0;
    pr->t.bias = bias;
    pr->t.bias64 = -(int64_t)lo;
    pr->t.tab16 = t16;
    pr->mem = mem;
    pr->key = t16;
    if (!transpose) {
        uint16_t *k16 = (uint16_t *)axs_alloc64(65536 * sizeof(uint16_t));
        if (!k16) {
            axs_free64(mem);
            return AXS_ENOMEM;
        }
        for (int i = 0; i < 65536; i++)
            k16[i] = (uint16_t)((uint32_t)table[i] + bias);
        pr->keymem = k16;
        pr->key = k16;
    }
    /* the expanded tables' entry (key AXS_NPATHS: try_expand) for the AVX2 form and the
     * AVX-512 one, the VBMI entry for the direct kernel's */
    if ((path == AXS_NPATHS && axs_path_supported(AXS_PATH_AVX2)) ||
        ((path == AXS_NPATHS || path == AXS_PATH_AVX512_VBMI) &&
         axs_path_supported(AXS_PATH_AVX512_VBMI) && axs_has_vnni()))
        prepare_residual(pr);
    return AXS_OK;
}

/* Prepared tables are cached across calls (a network calls the kernels layer after layer
 * with the same table): a few slots, each keyed by orientation and path and compared in full
 * with the table asked for, so a changed table is never served stale. The key is the table
 * in row-major order, as biased uint16 in the 16-bit class (half the size of a copy; the
 * prepared entries themselves when they are row-major). Entries in use are reference
 * counted; an evicted entry is freed by its last user. */
#define AXS_SIG 64
typedef struct {
    int transpose, path, refs, evicted;
    uint64_t token;         /* of the frozen table it was prepared from (0: none) */
    int32_t sig[AXS_SIG];   /* the table's entries at AXS_SIG spread positions */
    prepared pr;
} cache_entry;

/* A sample of the table: a slot whose sample differs cannot hold it, so only the slot that
 * matches is compared in full (a full comparison of 65536 entries costs about 10 us; a
 * miss compared every slot). */
static void table_sig(const int32_t *table, int32_t *sig)
{
    for (int i = 0; i < AXS_SIG; i++)
        sig[i] = table[(i * 40503u + 7u) & 65535u];
}

/* Whether pr was prepared from exactly this table. The biased uint16 key minus the bias is
 * the entry modulo 2^32, and both are int32: equal bits mean equal entries. */
static int same_table(const prepared *pr, const int32_t *table)
{
    if (pr->t.generic)
        return memcmp(pr->key, table, 65536 * sizeof(int32_t)) == 0;
    const uint16_t *k = (const uint16_t *)pr->key;
    const uint32_t bias = pr->t.bias;
    uint32_t diff = 0;
    for (int i = 0; i < 65536; i++)
        diff |= ((uint32_t)k[i] - bias) ^ (uint32_t)table[i];
    return diff == 0;
}

/* One slot per layer of a network: the float layer folds each layer's weight zero point
 * into its table, so a network alternates between that many tables on every batch (with 16
 * slots ResNet-20's 20 layers missed on every call, round robin). An entry holds 256 KiB
 * (the biased table and its key; the direct method's AVX2 entries 512 KiB with their
 * vpshufb chunks): 16 to 32 MB for networks of 64 layers or more. */
#define AXS_CACHE_SLOTS 64
static cache_entry *cache_slots[AXS_CACHE_SLOTS];
static int cache_next;

static void entry_free(cache_entry *e)
{
    axs_free64(e->pr.mem);
    axs_free64(e->pr.keymem);
    axs_free64(e->pr.rmem);
    free(e);
}

/* token: nonzero for a table the caller froze for good (axkern.backends.freeze_table; never
 * reused for another table), which an entry carrying the same token holds without a
 * comparison. A matching entry found by comparison takes the token over. */
static cache_entry *acquire(const int32_t *table, uint64_t token, int transpose, int path,
                            int *err)
{
    cache_entry *hit = NULL;
    int32_t sig[AXS_SIG];
    if (token) {
#pragma omp critical(axs_table_cache)
        for (int i = 0; i < AXS_CACHE_SLOTS && !hit; i++) {
            cache_entry *e = cache_slots[i];
            if (e && e->token == token && e->transpose == transpose &&
                (e->path == path || e->pr.t.generic)) {
                e->refs++;
                hit = e;
            }
        }
        if (hit)
            return hit;
    }
    table_sig(table, sig);
#pragma omp critical(axs_table_cache)
    for (int i = 0; i < AXS_CACHE_SLOTS && !hit; i++) {
        cache_entry *e = cache_slots[i];
        /* a generic-class entry is the same for every path (only the int32 entries) */
        if (e && e->transpose == transpose && (e->path == path || e->pr.t.generic) &&
            memcmp(e->sig, sig, sizeof(sig)) == 0 && same_table(&e->pr, table)) {
            e->refs++;
            if (token)
                e->token = token;
            hit = e;
        }
    }
    if (hit)
        return hit;
    cache_entry *e = (cache_entry *)malloc(sizeof(cache_entry));
    if (!e) {
        *err = AXS_ENOMEM;
        return NULL;
    }
    *err = prepare(table, transpose, path, &e->pr);
    if (*err) {
        free(e);
        return NULL;
    }
    e->transpose = transpose;
    e->path = path;
    e->token = token;
    e->refs = 1;
    e->evicted = 0;
    memcpy(e->sig, sig, sizeof(sig));
    cache_entry *old = NULL;
#pragma omp critical(axs_table_cache)
    {
        old = cache_slots[cache_next];
        cache_slots[cache_next] = e;
        cache_next = (cache_next + 1) % AXS_CACHE_SLOTS;
        if (old) {
            old->evicted = 1;
            if (old->refs > 0)
                old = NULL; /* its last user frees it */
        }
    }
    if (old)
        entry_free(old);
    return e;
}

static void release(cache_entry *e)
{
    int last = 0;
#pragma omp critical(axs_table_cache)
    {
        e->refs--;
        last = e->evicted && e->refs == 0;
    }
    if (last)
        entry_free(e);
}

static volatile int forked_child = 0;

void axs_forked_child(void)
{
    forked_child = 1;
}

int axs_threads(int nthreads)
{
#ifdef _OPENMP
    if (forked_child)
        return 1;
    return nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    (void)nthreads;
    return 1;
#endif
}

int axs_threads_for(int nthreads, int64_t elements)
{
    return elements < 65536 ? 1 : axs_threads(nthreads);
}

/* Rows per tile when `rows` streamed rows (times `fblocks` blocks of fixed codes) are
 * shared by nt threads: AXS_MB, or two thirds of it when that evens out the last round of
 * tiles (e.g. 2048 rows on 2 threads: 11 tiles of 192 leave one thread a tile behind,
 * 16 of 128 do not). A 128-row tile reuses each loaded table column for 2 blocks of 64 rows
 * instead of 3: about 5% slower per row. */
static int tile_rows(int64_t rows, int64_t fblocks, int nt)
{
    const int64_t big = AXS_MB, small = 2 * AXS_MB / 3;
    int64_t rounds_big = ((rows + big - 1) / big * fblocks + nt - 1) / nt;
    int64_t rounds_small = ((rows + small - 1) / small * fblocks + nt - 1) / nt;
    return rounds_small * small * 105 < rounds_big * big * 100 ? (int)small : (int)big;
}

/* Parts of the fixed-code blocks (groups times blocks of AXS_NB filters) that the direct
 * convolution's units of work also split, when its row tiles give the threads too few
 * units (a batch-1 layer of 7 x 7 pixels is one tile: it ran on one thread). */
static int64_t direct_fparts(int64_t rowunits, int64_t nblk, int nt)
{
    if (rowunits >= nt)
        return 1;
    int64_t want = (nt + rowunits - 1) / rowunits;
    want = want < nblk ? want : nblk;
    int64_t per = (nblk + want - 1) / want;
    return (nblk + per - 1) / per;
}

/* ------------------------------------------------------------------------ tile compute */

/* Per-thread scratch for one tile of up to AXS_MB streamed rows by AXS_NB fixed codes:
 * uint32 sums of the 16-bit kernels, int64 sums (generic class, or chunked int64 totals). */
typedef struct {
    uint32_t *c32;
    int64_t *c64;
    uint32_t *rt;   /* c32 transposed, row-major, for the row stores (see rowstore) */
} scratch;

static int scratch_init(scratch *sc, int generic, int out64)
{
    size_t n = (size_t)AXS_NB * AXS_MB;
    sc->c32 = generic ? NULL : (uint32_t *)axs_alloc64(2 * n * sizeof(uint32_t));
    sc->rt = sc->c32 ? sc->c32 + n : NULL;
    sc->c64 = generic || out64 ? (int64_t *)axs_alloc64(n * sizeof(int64_t)) : NULL;
    return (generic || sc->c32) && (!(generic || out64) || sc->c64);
}

static void scratch_free(scratch *sc)
{
    axs_free64(sc->c32);
    axs_free64(sc->c64);
}

/* Where the sums of a tile go: element orow[i] + j * osj of out for streamed row i and
 * fixed code j (rows with orow[i] < 0 are dropped); with dq that element is float32 and
 * belongs to output row orid[i] + j * orj, column col0 + ocol[i] + j * ocj. */
typedef struct {
    void *out;
    int out64;
    const axs_dequant *dq;
    const ptrdiff_t *orow;
    ptrdiff_t osj;
    const int64_t *orid, *ocol;
    int64_t orj, ocj, col0;
    /* Row stores (rowstore): rows 1 where the tile's rows are output rows orid[i] of ldo
     * columns and its fixed codes columns col0 + j (orj 0, ocj 1); rows 2 where, swapped,
     * fixed code j is output row orid[0] + j of ldo columns (NHWC or a GEMM's; an NCHW
     * output's ldo planes) and the streamed rows are its columns ocol[0] + i (orj 1, ocj 0);
     * base the whole output, dd the per-column terms of dq (axs_xdeq_init); rows 0:
     * element stores only. */
    int rows;
    void *base;
    int64_t ldo;
    const axs_xdeq *dd;
    int path;
} sink;

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
/* Dequantized stores of one fixed code j whose column o is the same for every row (the
 * usual orientation): the per-column terms are loaded once. */
static void store_column(const sink *sk, const int32_t *v32, const int64_t *v64, int ms,
                         int64_t o, float *y)
{
    const axs_dequant *dq = sk->dq;
    const double s = dq->scale[o];
    const int64_t c = dq->corr ? dq->corr[o] : 0, z = dq->zw ? dq->zw[o] : 0;
    const int64_t *sx = dq->zw ? dq->sumx + dq->gcol[o] : NULL, G = dq->groups;
    const int hasb = dq->bias != NULL;
    const float bb = hasb ? dq->bias[o] : 0.0f;
    for (int i = 0; i < ms; i++) {
        if (sk->orow[i] < 0)
            continue;
        int64_t x = (v64 ? v64[i] : (int64_t)v32[i]) + c;
        if (sx)
            x -= z * sx[sk->orid[i] * G];
        float f = (float)((double)x * s);
        y[sk->orow[i]] = hasb ? f + bb : f;
    }
}

/* Store values v(i, j) = vals[j * AXS_MB + i] (int32 or int64) into the sink. */
static void store_tile(const sink *sk, const void *vals, int vals64, int ms, int nf)
{
    const ptrdiff_t *orow = sk->orow;
    for (int j = 0; j < nf; j++) {
        const int32_t *v32 = (const int32_t *)vals + (ptrdiff_t)j * AXS_MB;
        const int64_t *v64 = (const int64_t *)vals + (ptrdiff_t)j * AXS_MB;
        ptrdiff_t oj = j * sk->osj;
        if (sk->dq && sk->ocj == 1 && sk->orj == 0) {
            store_column(sk, vals64 ? NULL : v32, vals64 ? v64 : NULL, ms, sk->col0 + j,
                         (float *)sk->out + oj);
        } else if (sk->dq) {
            float *y = (float *)sk->out + oj;
            for (int i = 0; i < ms; i++)
                if (orow[i] >= 0)
                    y[orow[i]] = axs_dequant_one(sk->dq, vals64 ? v64[i] : (int64_t)v32[i],
                                             sk->orid[i] + j * sk->orj,
                                             sk->col0 + sk->ocol[i] + j * sk->ocj);
        } else if (sk->out64) {
            int64_t *o = (int64_t *)sk->out + oj;
            if (vals64) {
                for (int i = 0; i < ms; i++)
                    if (orow[i] >= 0)
                        o[orow[i]] = v64[i];
            } else {
                for (int i = 0; i < ms; i++)
                    if (orow[i] >= 0)
                        o[orow[i]] = v32[i];
            }
        } else {
            int32_t *o = (int32_t *)sk->out + oj;
            if (vals64) {
                for (int i = 0; i < ms; i++)
                    if (orow[i] >= 0)
                        o[orow[i]] = (int32_t)v64[i];
            } else {
                for (int i = 0; i < ms; i++)
                    if (orow[i] >= 0)
                        o[orow[i]] = v32[i];
            }
        }
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* Int32 totals c[j * AXS_MB + i] of a tile stored a run of output rows at a time on the
 * AVX-512 path: transposed by 16 x 16 blocks in registers into rt (row-major, AXS_NB
 * columns), then copied or dequantized by the expanded method's row routines. store_tile
 * writes a column at a time, one element per cache line of an NHWC output, and dequantizes
 * element by element: with the dequantizing store the direct method ran 1.03 - 1.07 times
 * as fast this way (paired, Zen 4: 16 -> 16 and 16 -> 8 layers, a 128 x 256 x 64 GEMM).
 * Returns 0 where the element stores must serve (inexact float64 terms, the NCHW cases
 * axs_dqscatter_nchw does not take). */
static int rowstore(const sink *sk, const uint32_t *c, int ms, int nf, uint32_t *rt)
{
    const axs_dequant *dq = sk->dq;
    const axs_xdeq *dd = sk->dd;
    if (sk->rows == 2 && !sk->out64) {
        /* swapped: fixed code j's streamed rows are a run of output row orid[0] + j, so the
         * tile is row-major as it is (row j at c + j * AXS_MB), on every path (dequantized
         * element by element, its store took as many samples as the lookups of a batch-1
         * 1 x 1 convolution of 64 -> 384 channels at 14 x 14); an NCHW output's planes take
         * the rows through axs_scatter_nchw */
        const int64_t r0 = sk->orid[0], o0 = sk->ocol[0];
        if (!dq) {
            for (int j = 0; j < nf; j++)
                memcpy((int32_t *)sk->base + (r0 + j) * sk->ldo + o0, c + (ptrdiff_t)j * AXS_MB,
                       (size_t)ms * sizeof(int32_t));
            return 1;
        }
        if (!dd || !dd->exact)
            return 0;
        if (dq->nchw) {
            /* dequantized in place, then each channel's run of pixels into its plane */
            float *ft = (float *)c;
            axs_dequant_cols(dq, dd, c, AXS_MB, r0, nf, o0, ms, ft, AXS_MB);
            axs_scatter_nchw(ft, AXS_MB, nf, ms, r0, o0, dq->nchw, sk->ldo, (float *)sk->base,
                             sk->path);
            return 1;
        }
        axs_dequant_cols(dq, dd, c, AXS_MB, r0, nf, o0, ms,
                         (float *)sk->base + r0 * sk->ldo + o0, (ptrdiff_t)sk->ldo);
        return 1;
    }
    if (sk->rows != 1 || sk->path != AXS_PATH_AVX512_VBMI || sk->out64 || !rt)
        return 0;
    if (dq && !(dd && dd->exact && (!dq->nchw || (!dq->zw && dd->corr32))))
        return 0;
    for (int i0 = 0; i0 < ms; i0 += 16)   /* c and rt hold whole blocks: AXS_MB x AXS_NB */
        for (int j0 = 0; j0 < nf; j0 += 16)
            axs_tr16_avx512(c + (ptrdiff_t)j0 * AXS_MB + i0, AXS_MB, rt + i0 * AXS_NB + j0,
                            AXS_NB);
    for (int i = 0; i < ms;) {
        if (sk->orow[i] < 0) {
            i++;
            continue;
        }
        int i1 = i + 1;
        while (i1 < ms && sk->orow[i1] >= 0 && sk->orid[i1] == sk->orid[i] + (i1 - i))
            i1++;
        const uint32_t *r = rt + i * AXS_NB;
        const int64_t r0 = sk->orid[i];
        if (!dq) {
            int32_t *o = (int32_t *)sk->base + r0 * sk->ldo + sk->col0;
            for (int e = 0; e < i1 - i; e++)
                memcpy(o + e * sk->ldo, r + e * AXS_NB, (size_t)nf * sizeof(int32_t));
        } else if (dq->nchw) {
            axs_dqscatter_nchw(dq, dd, r, AXS_NB, i1 - i, nf, r0, sk->col0, sk->ldo,
                               (float *)sk->base);
        } else {
            axs_dequant_cols(dq, dd, r, AXS_NB, r0, i1 - i, sk->col0, nf,
                             (float *)sk->base + r0 * sk->ldo + sk->col0, (ptrdiff_t)sk->ldo);
        }
        i = i1;
    }
    return 1;
}

/* Sums over the whole reduction for ms streamed rows and nf fixed codes (streamed row i of
 * reduction step k is S[soff[k] + i]), stored into the sink. int32 sums wrap exactly like
 * any int32 sum, so they are exact whenever the result fits; for int64 sums the reduction
 * is cut into chunks whose biased uint32 sums cannot wrap. */
static void tile(const prepared *pr, axs_kern16_fn kern, const uint8_t *S,
                 const ptrdiff_t *soff, int ms, const uint8_t *F, ptrdiff_t ldF, int nf,
                 int64_t K, scratch *sc, const sink *sk)
{
    const axs_fixed_table *t = &pr->t;
    if (t->generic) {
        /* int64 sums of at most 2^31 int32 entries cannot overflow: one pass. */
        axs_kern_generic(S, soff, ms, F, ldF, nf, (int)K, t, sc->c64);
        store_tile(sk, sc->c64, 1, ms, nf);
        return;
    }
    uint32_t *c = sc->c32;
    if (!sk->out64) {
        kern(S, soff, ms, F, ldF, nf, (int)K, t, c);
        uint32_t corr = (uint32_t)((uint64_t)t->bias * (uint64_t)K);
        for (int j = 0; j < nf; j++) {
            uint32_t *cj = c + (ptrdiff_t)j * AXS_MB;
            for (int i = 0; i < ms; i++)  /* in place: the int32 value (two's complement) */
                cj[i] -= corr;
        }
        if (!rowstore(sk, c, ms, nf, sc->rt))
            store_tile(sk, c, 0, ms, nf);
        return;
    }
    int64_t *acc = sc->c64;
    for (int64_t k0 = 0; k0 < K; k0 += AXS_KCHUNK) {
        int kc = (int)(K - k0 < AXS_KCHUNK ? K - k0 : AXS_KCHUNK);
        kern(S, soff + k0, ms, F + k0, ldF, nf, kc, t, c);
        int64_t corr = t->bias64 * kc;
        for (int j = 0; j < nf; j++) {
            const uint32_t *cj = c + (ptrdiff_t)j * AXS_MB;
            int64_t *aj = acc + (ptrdiff_t)j * AXS_MB;
            for (int i = 0; i < ms; i++)
                aj[i] = (k0 ? aj[i] : 0) + ((int64_t)cj[i] - corr);
        }
    }
    store_tile(sk, acc, 1, ms, nf);
}

/* ------------------------------------------------------------------------ gemm */

/* 8 x 8 byte transpose in 64-bit words (little-endian byte order): rows r[0..7] in,
 * columns out: byte i of r[c] afterwards is byte c of row i before. */
static inline void transpose8x8(uint64_t r[8])
{
    const uint64_t m8 = 0x00FF00FF00FF00FFull, m16 = 0x0000FFFF0000FFFFull;
    uint64_t t[8], u[8];
    for (int p = 0; p < 8; p += 2) { /* bytes of row pairs: even and odd columns */
        t[p] = (r[p] & m8) | ((r[p + 1] & m8) << 8);
        t[p + 1] = ((r[p] >> 8) & m8) | (r[p + 1] & ~m8);
    }
    for (int q = 0; q < 2; q++)
        for (int e = 0; e < 2; e++) { /* 16-bit pairs of row pairs */
            int x = 4 * q + e, y = 4 * q + 2 + e;
            u[x] = (t[x] & m16) | ((t[y] & m16) << 16);
            u[y] = ((t[x] >> 16) & m16) | (t[y] & ~m16);
        }
    /* u[0]: cols 0,4 (rows 0-3); u[1]: cols 1,5; u[2]: cols 2,6; u[3]: cols 3,7; u[4..7]
     * the same for rows 4-7 */
    for (int c = 0; c < 4; c++) {
        r[c] = (u[c] & 0xFFFFFFFFull) | (u[c + 4] << 32);
        r[c + 4] = (u[c] >> 32) | (u[c + 4] & 0xFFFFFFFF00000000ull);
    }
}

/* Transpose rows [m0, m0 + ms) of a (M, K) into pack[k * AXS_MB + i]: 8 x 8 blocks in
 * registers, a scalar loop for the edges. */
static void pack_rows(const uint8_t *a, int64_t K, int64_t m0, int ms, uint8_t *pack)
{
    int i8 = ms & ~7;
    int64_t k8 = K & ~(int64_t)7;
    for (int i = 0; i < i8; i += 8) {
        const uint8_t *row = a + (m0 + i) * K;
        for (int64_t k = 0; k < k8; k += 8) {
            uint64_t r[8];
            for (int q = 0; q < 8; q++)
                memcpy(&r[q], row + q * K + k, 8);
            transpose8x8(r);
            for (int c = 0; c < 8; c++)
                memcpy(pack + (k + c) * AXS_MB + i, &r[c], 8);
        }
        for (int64_t k = k8; k < K; k++)
            for (int q = 0; q < 8; q++)
                pack[k * AXS_MB + i + q] = row[q * K + k];
    }
    for (int i = i8; i < ms; i++) {
        const uint8_t *row = a + (m0 + i) * K;
        for (int64_t k = 0; k < K; k++)
            pack[k * AXS_MB + i] = row[k];
    }
}

/* Outputs of an empty reduction (all sums 0): rows x cols. */
static void store_zeros(void *out, int out64, const axs_dequant *dq, int64_t rows, int64_t cols)
{
    if (!dq) {
        memset(out, 0, (size_t)(rows * cols) * (out64 ? 8 : 4));
        return;
    }
    int64_t P = dq->nchw;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < cols; o++)
            ((float *)out)[P ? (r / P * cols + o) * P + r % P : r * cols + o] =
                axs_dequant_one(dq, 0, r, o);
}

/* The expanded-table method, when it is forced or (AXS_METHOD_AUTO) cheaper than direct
 * lookups: AXS_OK with the table prepared in *ce (transpose: fixed codes index the table's
 * rows), an error code, or -1 when the direct method should run. Expanded tables take the
 * 16-bit class and int32 sums only. */
static int try_expand(const int32_t *table, uint64_t token, int method, int out64,
                      double direct, double expand, int transpose, cache_entry **ce)
{
    *ce = NULL;
    if (method == AXS_METHOD_DIRECT)
        return -1;
    if (out64)
        return method == AXS_METHOD_EXPAND ? AXS_EMETHOD : -1;
    if (method == AXS_METHOD_AUTO && direct <= expand)
        return -1;
    int err = AXS_OK;
    /* key AXS_NPATHS: the biased 16-bit columns only, no byte planes */
    *ce = acquire(table, token, transpose, AXS_NPATHS, &err);
    if (!*ce)
        return err;
    if ((*ce)->pr.t.generic) {
        release(*ce);
        *ce = NULL;
        return method == AXS_METHOD_EXPAND ? AXS_EMETHOD : -1;
    }
    return AXS_OK;
}

/* Whether the expanded tables' entry of this table and orientation has the byte-residual
 * form (prepared now if it is not cached, as try_expand would); -1 when it cannot be. */
static int entry_residual(const int32_t *table, uint64_t token, int transpose)
{
    int err = AXS_OK;
    cache_entry *e = acquire(table, token, transpose, AXS_NPATHS, &err);
    if (!e)
        return -1;
    const int res = e->pr.t.res8 != NULL;
    release(e);
    return res;
}

/* Whether the expanded tables of this table, in this orientation, take the byte-residual
 * form on this path for cols columns (for the cost model; not looked up where the form
 * could not run). */
static int residual_form(const int32_t *table, uint64_t token, int transpose, int path,
                         int method, int out64, int64_t cols)
{
    if (out64 || (method != AXS_METHOD_AUTO && method != AXS_METHOD_EXPAND) ||
        !axs_xresidual_runs(path, cols))
        return 0;
    return entry_residual(table, token, transpose) == 1;
}

/* Whether the cost model counts the byte-residual direct kernel for K steps and cols fixed
 * codes in the swapped orientation (AXS_DIRECT_R8): the path runs it for this table (the
 * VBMI entry prepares res8d exactly when the expanded entry has res8) and the call is long
 * and wide enough. The table's entry is looked up only then. */
static int direct_residual(const int32_t *table, uint64_t token, int path, int64_t K,
                           int64_t cols)
{
    return path == AXS_PATH_AVX512_VBMI && K >= AXS_R8MINK && cols >= AXS_R8MINF &&
           axs_has_vnni() && entry_residual(table, token, 1) == 1;
}

int axs_byte_residual(const int32_t *table, uint64_t token, int path)
{
    const int runs = path == AXS_PATH_AVX2 || (path == AXS_PATH_AVX512_VBMI && axs_has_vnni());
    if (!runs || !axs_path_supported(path))
        return 0;
    return entry_residual(table, token, 0);
}

/* The factored method: AXS_OK when it is forced or (AXS_METHOD_AUTO) cheaper than the other
 * two, -1 when another method should run, AXS_EMETHOD when it is forced without factors or
 * for int64 sums. */
static int try_factored(const axs_factors *fac, int method, int out64, double direct,
                        double expand, double factored)
{
    if (method == AXS_METHOD_FACTORED)
        return fac && !out64 ? AXS_OK : AXS_EMETHOD;
    if (method != AXS_METHOD_AUTO || !fac || out64)
        return -1;
    return factored < direct && factored < expand ? AXS_OK : -1;
}

/* Whether a forced method can serve a call of this table and sum width (dw_shape: the
 * depthwise method serves the layer's shape; dw_wide: its filters are wider than its rows
 * of E, so only a 16-bit-class table serves; 0 for a GEMM), by the rules of the dispatch;
 * for the calls it skips (empty outputs and reductions), so that a forced method refuses a
 * call whatever its size (an empty batch used to pass). */
static int forced_serves(const int32_t *table, const axs_factors *fac, int method, int out64,
                         int dw_shape, int dw_wide)
{
    int sixteen = 1;   /* the 16-bit class: entries span at most 65535 */
    if (method == AXS_METHOD_EXPAND ||
        (method == AXS_METHOD_DEPTHWISE && (out64 || dw_wide))) {
        int32_t lo, hi;
        table_range(table, &lo, &hi);
        sixteen = (int64_t)hi - (int64_t)lo <= 65535;
    }
    switch (method) {
    case AXS_METHOD_EXPAND:
        return !out64 && sixteen;
    case AXS_METHOD_FACTORED:
        return fac && !out64;
    case AXS_METHOD_DEPTHWISE:
        return dw_shape && (sixteen || (!out64 && !dw_wide));
    default:
        return 1;
    }
}

int axs_gemm(const uint8_t *a, const uint8_t *b, const int32_t *table, uint64_t token,
             const axs_factors *fac, int64_t M, int64_t K, int64_t N, int out64, void *out,
             const axs_dequant *dq, int nthreads, int path, int method)
{
    if (path < 0 || path >= AXS_NPATHS || !axs_path_supported(path))
        return AXS_EPATH;
    if (M < 0 || K < 0 || N < 0 || K > 0x7fffffff || method < 0 ||
        method > AXS_METHOD_FACTORED || (fac && (fac->r < 1 || fac->r > AXS_FMAXRANK)))
        return AXS_EARG;
    if (method == AXS_METHOD_DEPTHWISE)
        return AXS_EMETHOD;
    /* the shortcuts skip the dispatch, which refuses what a forced method cannot serve */
    if ((M == 0 || N == 0 || K == 0) && !forced_serves(table, fac, method, out64, 0, 0))
        return AXS_EMETHOD;
    if (M == 0 || N == 0)
        return AXS_OK;
    if (K == 0) {
        store_zeros(out, out64, dq, M, N);
        return AXS_OK;
    }
    /* The direct method streams the longer operand past fixed codes of the shorter one:
     * swapped = 1 streams the columns of b (fixed: rows of a), which needs no packing. Its
     * threads share whole row tiles (each packed once). */
    int swapped = N > M;
    int nt = axs_threads(nthreads);
    int64_t nfb = swapped ? (M + AXS_NB - 1) / AXS_NB : (N + AXS_NB - 1) / AXS_NB;
    int mb = tile_rows(swapped ? N : M, nfb, nt);
    int64_t nst = swapped ? (N + mb - 1) / mb : (M + mb - 1) / mb;
    {
        /* factored, or expanded tables streaming the rows of a or (swapped) the columns of
         * b, against the direct method */
        double direct = axs_direct_cost(path, swapped ? N : M, K, swapped ? M : N,
                                        nst < nt ? nst : nt,
                                        swapped && direct_residual(table, token, path, K, M));
        double cost = axs_xcost(path, M, K, N, 1, nt,
                                residual_form(table, token, 0, path, method, out64, N));
        double cost_sw = axs_xcost(path, N, K, M, 1, nt,
                                   residual_form(table, token, 1, path, method, out64, M));
        int sw = cost_sw < cost;
        int rc = try_factored(fac, method, out64, direct, sw ? cost_sw : cost,
                              fac ? axs_fcost(path, M, K, K, N, 1, fac->r, M * K,
                                              fac->packed != NULL, nt) : 0.0);
        if (rc == AXS_OK)
            return axs_fgemm(a, b, fac, M, K, N, out, dq, nt, path);
        if (rc != -1)
            return rc;
        cache_entry *xe;
        rc = try_expand(table, token, method, out64, direct, sw ? cost_sw : cost, sw, &xe);
        if (xe) {
            rc = axs_xgemm(a, b, &xe->pr.t, sw, M, K, N, out, dq, nt, path);
            release(xe);
        }
        if (rc >= 0)
            return rc;
    }
    int err = AXS_OK;
    cache_entry *ce = acquire(table, token, swapped, path, &err);
    if (!ce)
        return err;
    const prepared *pr = &ce->pr;
    axs_kern16_fn kern = kern16_for(path);
    uint8_t *bt = NULL;
    ptrdiff_t *soff = (ptrdiff_t *)malloc((size_t)K * sizeof(ptrdiff_t));
    if (!swapped)  /* fixed codes: columns of b, contiguous along k */
        bt = (uint8_t *)malloc((size_t)(N * K));
    if (!soff || (!swapped && !bt)) {
        free(soff);
        free(bt);
        release(ce);
        return AXS_ENOMEM;
    }
    for (int64_t k = 0; k < K; k++)
        soff[k] = (ptrdiff_t)(k * (swapped ? N : AXS_MB));
    if (!swapped)
        axs_transpose_u8(b, K, N, bt, nt);
    axs_xdeq dd;   /* the row stores' terms (rowstore: swapped, or the AVX-512 path) */
    if (axs_xdeq_init(!out64 && (swapped || path == AXS_PATH_AVX512_VBMI) ? dq : NULL, N, M,
                      &dd)) {
        free(soff);
        free(bt);
        release(ce);
        return AXS_ENOMEM;
    }
    int failed = 0;
    int64_t units = nst * nfb;
    if (nt > units)
        nt = (int)units;
#pragma omp parallel num_threads(nt)
    {
        scratch sc;
        uint8_t *pack = swapped ? NULL : (uint8_t *)axs_alloc64((size_t)(K * AXS_MB));
        int ok = scratch_init(&sc, pr->t.generic, out64) && (swapped || pack);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        int64_t packed = -1;
        ptrdiff_t orow[AXS_MB];
        int64_t orid[AXS_MB], ocol[AXS_MB];
        sink sk = {out, out64, dq, orow, 1, orid, ocol, 0, 1, 0,
                   swapped ? 2 : 1, out, N, dd.corr ? &dd : NULL, path};
        /* dynamic (the machine may be shared: a busy core must not hold everyone up), in
         * chunks of whole row tiles so that each tile is packed once */
#pragma omp for schedule(dynamic, 1)
        for (int64_t uc = 0; uc < nst; uc++)
        for (int64_t u = uc * nfb; u < (uc + 1) * nfb; u++) {
            if (!ok)
                continue;
            int64_t st = u / nfb, fb = u % nfb;
            int64_t s0 = st * mb, f0 = fb * AXS_NB;
            if (swapped) {
                /* streamed i = column s0 + i of b, fixed j = row f0 + j of a */
                int ms = (int)(N - s0 < mb ? N - s0 : mb);
                int nf = (int)(M - f0 < AXS_NB ? M - f0 : AXS_NB);
                for (int i = 0; i < ms; i++) {
                    orow[i] = (ptrdiff_t)(f0 * N + s0 + i);
                    orid[i] = f0;
                    ocol[i] = s0 + i;
                }
                sk.osj = (ptrdiff_t)N;
                sk.orj = 1;
                sk.ocj = 0;
                tile(pr, kern, b + s0, soff, ms, a + f0 * K, (ptrdiff_t)K, nf, K, &sc, &sk);
            } else {
                int ms = (int)(M - s0 < mb ? M - s0 : mb);
                int nf = (int)(N - f0 < AXS_NB ? N - f0 : AXS_NB);
                if (packed != st) {
                    pack_rows(a, K, s0, ms, pack);
                    packed = st;
                }
                for (int i = 0; i < ms; i++) {
                    orow[i] = (ptrdiff_t)((s0 + i) * N + f0);
                    orid[i] = s0 + i;
                    ocol[i] = 0;
                }
                sk.col0 = f0;
                tile(pr, kern, pack, soff, ms, bt + f0 * K, (ptrdiff_t)K, nf, K, &sc, &sk);
            }
        }
        scratch_free(&sc);
        axs_free64(pack);
    }
    free(dd.corr);
    free(soff);
    free(bt);
    release(ce);
    return failed ? AXS_ENOMEM : AXS_OK;
}

/* ------------------------------------------------------------------------ conv2d */

void axs_to_planar(const uint8_t *xn, int64_t H, int64_t W, int64_t C, int64_t c0, int64_t c1,
                   int pt, int pl, int64_t Hp, int64_t Wp, int pad_code, uint8_t *dst)
{
    const int64_t plane = Hp * Wp, Cn = c1 - c0;   /* channels c0 .. c1 - 1 */
    xn += c0;
    dst += c0 * plane;
    /* the border: one fill of everything (a memset per row and channel, of a byte or two
     * each, took a third of this function on depthwise layers) */
    if (Hp != H || Wp != W)
        memset(dst, pad_code, (size_t)(Cn * plane));
    int64_t w8 = W & ~(int64_t)7, c8 = Cn & ~(int64_t)7, c16 = 0;
#if defined(__SSE2__)
    /* rows of at least 16 padded columns: each block of 16 channels by 16 x 16 transposes
     * over the whole row, the last block of a row stepped back to end at its last pixel
     * (or, on images narrower than 16, starting in the left padding, whose pixels read a
     * row of pad codes); the 8 x 8 blocks and the byte loop below copied the columns past
     * the last whole block (a tenth of a one-thread depthwise call of 32 x 14 x 14 x 256) */
    if (Wp >= 16)
        c16 = Cn & ~(int64_t)15;
    uint8_t padrow[16];
    memset(padrow, pad_code, sizeof padrow);
#endif
    for (int64_t y = 0; y < H; y++) {
        const uint8_t *srow = xn + y * W * C;
        uint8_t *drow = dst + (y + pt) * Wp + pl;
#if defined(__SSE2__)
        for (int64_t xx = 0; xx < W && c16; xx += 16) {
            int64_t x0 = xx + 16 <= W ? xx : W - 16 > -(int64_t)pl ? W - 16 : -(int64_t)pl;
            if (x0 >= 0 && x0 + 16 <= W) {
                for (int64_t c = 0; c < c16; c += 16)
                    axs_tr16x16_u8(srow + x0 * C + c, (ptrdiff_t)C, drow + c * plane + x0,
                                   (ptrdiff_t)plane);
                continue;
            }
            /* pixels outside the image: the pad row, the same for every channel */
            const uint8_t *src[16];
            int64_t step[16];
            for (int q = 0; q < 16; q++) {
                int in = x0 + q >= 0 && x0 + q < W;
                src[q] = in ? srow + (x0 + q) * C : padrow;
                step[q] = in;
            }
            for (int64_t c = 0; c < c16; c += 16) {
                __m128i a[16];
                for (int q = 0; q < 16; q++)
                    a[q] = _mm_loadu_si128((const __m128i *)(src[q] + c * step[q]));
                axs_tr16x16_regs(a);
                for (int q = 0; q < 16; q++)
                    _mm_storeu_si128((__m128i *)(drow + (c + q) * plane + x0), a[q]);
            }
        }
#endif
        /* 8 pixels x 8 channels at a time through registers */
        for (int64_t xx = 0; xx < w8; xx += 8)
            for (int64_t c = c16; c < c8; c += 8) {
                uint64_t r[8];
                for (int q = 0; q < 8; q++)
                    memcpy(&r[q], srow + (xx + q) * C + c, 8);
                transpose8x8(r);
                for (int q = 0; q < 8; q++)
                    memcpy(drow + (c + q) * plane + xx, &r[q], 8);
            }
        for (int64_t xx = 0; xx < W; xx++) {
            const uint8_t *src = srow + xx * C;
            uint8_t *o = drow + xx;
            for (int64_t c = xx < w8 ? (c8 > c16 ? c8 : c16) : c16; c < Cn; c++)
                o[c * plane] = src[c];
        }
    }
}

static int conv2d_body(const uint8_t *x, const uint8_t *xn, const uint8_t *w,
                       const int32_t *table, uint64_t token, const axs_factors *fac,
                       int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW,
                       int64_t COUT, int sh, int sw, int pt, int pb, int pl, int pr_, int dh,
                       int dw, int64_t groups, int pad_code, int out64, void *out,
                       const axs_dequant *dq, int nthreads, int path, int method);

int axs_conv2d(const uint8_t *x, const uint8_t *w, const int32_t *table, uint64_t token,
               const axs_factors *fac, int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH,
               int64_t KW, int64_t COUT, int sh, int sw, int pt, int pb, int pl, int pr_, int dh,
               int dw, int64_t groups, int pad_code, int out64, void *out,
               const axs_dequant *dq, int nthreads, int path, int method, int in_nchw)
{
    if (!in_nchw)
        return conv2d_body(x, NULL, w, table, token, fac, N, H, W, C, KH, KW, COUT, sh, sw,
                           pt, pb, pl, pr_, dh, dw, groups, pad_code, out64, out, dq, nthreads,
                           path, method);
    int rc = conv2d_body(NULL, x, w, table, token, fac, N, H, W, C, KH, KW, COUT, sh, sw, pt,
                         pb, pl, pr_, dh, dw, groups, pad_code, out64, out, dq, nthreads, path,
                         method);
    if (rc != AXS_NEED_NHWC)
        return rc;
    uint8_t *xt = (uint8_t *)malloc((size_t)(N * H * W * C));
    if (!xt)
        return AXS_ENOMEM;
    /* each image's (C, H W) planes transposed into (H W, C) by 16 x 16 blocks over all
     * threads (a byte at a time, C apart, on one thread per image, this took 0.8 ms of a
     * batch-1 112 x 112 x 96 call, 13 times PyTorch's time) */
    const int64_t HW = H * W;
    for (int64_t n = 0; n < N; n++)
        axs_transpose_u8(x + n * C * HW, C, HW, xt + n * HW * C, axs_threads(nthreads));
    rc = conv2d_body(xt, NULL, w, table, token, fac, N, H, W, C, KH, KW, COUT, sh, sw, pt, pb,
                     pl, pr_, dh, dw, groups, pad_code, out64, out, dq, nthreads, path, method);
    free(xt);
    return rc;
}

/* Bytes of the im2col copy the swapped convolutions may make (N * OH * OW rows of
 * KH * KW * C codes). */
#define AXS_SWAP_BYTES ((int64_t)32 << 20)

/* The codes of the N * OH * OW output pixels' receptive fields, A[m][g * K + (ky * KW + kx)
 * * CG + c] (K = KH * KW * CG, padded positions pad_code), in a new buffer (NULL: out of
 * memory). */
static uint8_t *im2col_codes(const uint8_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                             int64_t KH, int64_t KW, int sh, int sw, int pt, int pl, int dh,
                             int dw, int64_t groups, int pad_code, int64_t OH, int64_t OW,
                             int nt)
{
    const int64_t CG = C / groups, K = KH * KW * CG, P = OH * OW, KA = groups * K;
    uint8_t *A = (uint8_t *)malloc((size_t)(N * P * KA));
    if (!A)
        return NULL;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < N * P; m++) {
        const int64_t n = m / P, oy = m % P / OW, ox = m % OW;
        uint8_t *a = A + m * KA;
        for (int64_t ky = 0; ky < KH; ky++)
            for (int64_t kx = 0; kx < KW; kx++) {
                const int64_t iy = oy * sh + ky * dh - pt, ix = ox * sw + kx * dw - pl;
                const int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                for (int64_t g = 0; g < groups; g++) {
                    uint8_t *d = a + g * K + (ky * KW + kx) * CG;
                    if (inside)
                        memcpy(d, x + ((n * H + iy) * W + ix) * C + g * CG, (size_t)CG);
                    else
                        memset(d, pad_code, (size_t)CG);
                }
            }
    }
    return A;
}

/* The direct method with the roles swapped, for convolutions of few output pixels (batch-1
 * layers of small images): the output pixels' codes become the fixed codes (their im2col
 * copy), and the filters' HWIO rows (each step's COUT codes contiguous) are streamed, as
 * the GEMM's swapped orientation does (axs_gemm). The direct kernels round the streamed
 * rows up to whole vectors (64 on the AVX-512 path): 7 x 7 or 2 x 2 pixels streamed past
 * 512 filters wasted most of them, 512 filters streamed past 49 or 4 pixels waste none.
 * Fixed blocks stay within one image, so that an NCHW output's rows are runs. */
static int conv_swapped(const uint8_t *x, const uint8_t *w, const int32_t *table,
                        uint64_t token, int64_t N, int64_t H, int64_t W, int64_t C,
                        int64_t KH, int64_t KW, int64_t COUT, int sh, int sw, int pt, int pl,
                        int dh, int dw, int64_t groups, int pad_code, int out64, void *out,
                        const axs_dequant *dq, int nt, int path, int64_t OH, int64_t OW)
{
    const int64_t CG = C / groups, OG = COUT / groups, K = KH * KW * CG, P = OH * OW;
    const int64_t KA = groups * K;   /* a row of A */
    int err = AXS_OK;
    cache_entry *ce = acquire(table, token, 1, path, &err);
    if (!ce)
        return err;
    uint8_t *A = im2col_codes(x, N, H, W, C, KH, KW, sh, sw, pt, pl, dh, dw, groups, pad_code,
                              OH, OW, nt);
    ptrdiff_t *soff = (ptrdiff_t *)malloc((size_t)K * sizeof(ptrdiff_t));
    if (!A || !soff) {
        free(A);
        free(soff);
        release(ce);
        return AXS_ENOMEM;
    }
    for (int64_t k = 0; k < K; k++)   /* HWIO: step k's filters are a row of COUT codes */
        soff[k] = (ptrdiff_t)(k * COUT);
    const prepared *pr = &ce->pr;
    axs_kern16_fn kern = kern16_for(path);
    const int64_t nbi = (P + AXS_NB - 1) / AXS_NB, nfb = N * nbi;   /* fixed blocks */
    const int mb = tile_rows(OG, nfb * groups, nt);
    const int64_t nst = (OG + mb - 1) / mb, units = groups * nst * nfb;
    const int nchw = dq && dq->nchw;
    axs_xdeq dd;   /* the row stores' terms (rowstore) */
    if (axs_xdeq_init(!out64 ? dq : NULL, COUT, N * P, &dd)) {
        free(A);
        free(soff);
        release(ce);
        return AXS_ENOMEM;
    }
    int failed = 0;
#pragma omp parallel num_threads(units < nt ? (int)units : nt)
    {
        scratch sc;
        int ok = scratch_init(&sc, pr->t.generic, out64);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        ptrdiff_t orow[AXS_MB];
        int64_t orid[AXS_MB], ocol[AXS_MB];
        sink sk = {out, out64, dq, orow, nchw ? 1 : (ptrdiff_t)COUT, orid, ocol, 1, 0, 0,
                   2, out, COUT, dd.corr ? &dd : NULL, path};
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            if (!ok)
                continue;
            const int64_t g = u / (nst * nfb), st = u / nfb % nst, b = u % nfb;
            const int64_t n = b / nbi, p0 = b % nbi * AXS_NB, f0 = n * P + p0;
            const int64_t s0 = st * mb;
            const int ms = (int)(OG - s0 < mb ? OG - s0 : mb);
            const int nf = (int)(P - p0 < AXS_NB ? P - p0 : AXS_NB);
            for (int i = 0; i < ms; i++) {
                const int64_t o = g * OG + s0 + i;
                orow[i] = nchw ? (ptrdiff_t)((n * COUT + o) * P + p0) : (ptrdiff_t)(f0 * COUT + o);
                orid[i] = f0;
                ocol[i] = o;
            }
            tile(pr, kern, w + g * OG + s0, soff, ms, A + f0 * KA + g * K, (ptrdiff_t)KA, nf,
                 K, &sc, &sk);
        }
        scratch_free(&sc);
    }
    free(dd.corr);
    free(A);
    free(soff);
    release(ce);
    return failed ? AXS_ENOMEM : AXS_OK;
}

/* The expanded tables in the swapped orientation (groups 1): the GEMM of the pixels' im2col
 * copy by the HWIO filters, the filters streamed (axs_xgemm swapped). A block of R is built
 * per step for every code and fixed column: a batch-1 layer of 49 pixels builds 256 entries
 * for each of them, where the usual orientation builds them for each of its 512 filters.
 * An NCHW output goes through an NHWC buffer (few pixels: a small copy). */
static int conv_swapped_expand(const uint8_t *x, const uint8_t *w, const axs_fixed_table *t,
                               int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH,
                               int64_t KW, int64_t COUT, int sh, int sw, int pt, int pl,
                               int dh, int dw, int pad_code, void *out,
                               const axs_dequant *dq, int nt, int path, int64_t OH,
                               int64_t OW)
{
    const int64_t K = KH * KW * C, P = OH * OW;
    uint8_t *A = im2col_codes(x, N, H, W, C, KH, KW, sh, sw, pt, pl, dh, dw, 1, pad_code,
                              OH, OW, nt);
    if (!A)
        return AXS_ENOMEM;
    if (!(dq && dq->nchw)) {
        int rc = axs_xgemm(A, w, t, 1, N * P, K, COUT, out, dq, nt, path);
        free(A);
        return rc;
    }
    float *tmp = (float *)malloc((size_t)(N * P * COUT) * sizeof(float));
    if (!tmp) {
        free(A);
        return AXS_ENOMEM;
    }
    axs_dequant d = *dq;
    d.nchw = 0;
    int rc = axs_xgemm(A, w, t, 1, N * P, K, COUT, tmp, &d, nt, path);
    free(A);
    if (rc == AXS_OK) {
        float *y = (float *)out;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t no = 0; no < N * COUT; no++) {
            const int64_t n = no / COUT, o = no % COUT;
            const float *s = tmp + n * P * COUT + o;
            for (int64_t p = 0; p < P; p++)
                y[no * P + p] = s[p * COUT];
        }
    }
    free(tmp);
    return rc;
}

/* x: NHWC codes, or NULL with xn: NCHW codes (read by the depthwise method, and by the
 * factored one on depthwise layers where its planes serve). */
static int conv2d_body(const uint8_t *x, const uint8_t *xn, const uint8_t *w,
                       const int32_t *table, uint64_t token, const axs_factors *fac,
                       int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW,
                       int64_t COUT, int sh, int sw, int pt, int pb, int pl, int pr_, int dh,
                       int dw, int64_t groups, int pad_code, int out64, void *out,
                       const axs_dequant *dq, int nthreads, int path, int method)
{
    if (method < 0 || method > AXS_METHOD_FACTORED ||
        (fac && (fac->r < 1 || fac->r > AXS_FMAXRANK)))
        return AXS_EARG;
    if (path < 0 || path >= AXS_NPATHS || !axs_path_supported(path))
        return AXS_EPATH;
    if (groups < 1 || C % groups || COUT % groups || sh < 1 || sw < 1 || dh < 1 || dw < 1 ||
        pt < 0 || pb < 0 || pl < 0 || pr_ < 0 || KH < 1 || KW < 1)
        return AXS_EARG;
    int64_t Hp = H + pt + pb, Wp = W + pl + pr_;
    int64_t OH = (Hp - (int64_t)dh * (KH - 1) - 1), OW = (Wp - (int64_t)dw * (KW - 1) - 1);
    OH = OH < 0 ? 0 : OH / sh + 1;
    OW = OW < 0 ? 0 : OW / sw + 1;
    int64_t CG = C / groups, OG = COUT / groups, K = KH * KW * CG, P = OH * OW;
    /* the depthwise method's shapes: filters wider than its rows of E (4 columns) with a
     * 16-bit-class table only (checked when the table is at hand), through its VBMI variant
     * or its uint16 rows of E group by group of 4 columns; not on the scalar path */
    const int dw_wide = !axs_dw_rows(KW);
    const int dw_shape = axs_dw_serves(C, COUT, groups, KH, KW, dw) &&
                         (!dw_wide || path != AXS_PATH_SCALAR);
    /* the shortcuts skip the dispatch, which refuses what a forced method cannot serve */
    if ((N == 0 || P == 0 || COUT == 0 || K == 0) &&
        !forced_serves(table, fac, method, out64, dw_shape, dw_wide))
        return AXS_EMETHOD;
    if (N == 0 || P == 0 || COUT == 0)
        return AXS_OK;
    if (K > 0x7fffffff)
        return AXS_EARG;
    if (K == 0) {
        store_zeros(out, out64, dq, N * P, COUT);
        return AXS_OK;
    }
    /* depthwise layers of a table with r <= 2 factors: products of the factors' values, one
     * vpmaddwd per tap (r = 2) or pair of taps (r = 1) for 8 channels or pixels
     * (axs_fdwconv2d); automatic on the AVX2 path, where int32 sums ran 1.1 - 2.0 times as
     * fast as the depthwise method and NCHW planes 0.8 - 1.4 (paired; docs/performance.md),
     * and on the AVX-512 path (Zen 4: NHWC 1.5 - 2.6 times as fast as the automatic choice
     * before, NCHW codes without the float epilogue 0.6 - 1.7) */
    if (groups == C && COUT == C && fac && !out64 && fac->r <= 2 &&
        (method == AXS_METHOD_FACTORED ||
         (method == AXS_METHOD_AUTO && path != AXS_PATH_SCALAR)))
        return axs_fdwconv2d(xn ? xn : x, w, fac, N, H, W, C, KH, KW, sh, sw, pt, pb, pl, pr_,
                             dh, dw, pad_code, out, dq, axs_threads(nthreads), path, xn != NULL);
    /* depthwise layers: the depthwise method, wherever it serves. On the AVX-512 path its
     * variant over the direct kernel at strides 1 and 2 (16-bit class: 1.07 to 2.1 times the
     * direct method at stride 1, paired; at stride 2 1.2 - 1.55 times the rows of E), and its
     * rows of E elsewhere (Zen 4, int32 sums, two threads, stride 2: tables of the generic
     * class 1.6 - 2.8 times as fast as the direct method on MobileNet's layers, 112 x 112 x
     * 96 to 14 x 14 x 576, except where a few outputs per channel do not repay building E:
     * 1 x 14 x 14 x 576, 49 outputs, 0.57, so those keep the direct method below 128
     * outputs) */
    if (method == AXS_METHOD_DEPTHWISE && !dw_shape)
        return AXS_EMETHOD;
    if (method == AXS_METHOD_DEPTHWISE || (method == AXS_METHOD_AUTO && dw_shape)) {
        int err = AXS_OK;
        /* the AVX-512 path's variant looks up in the byte planes (the direct method's entry) */
        int vbmi = path == AXS_PATH_AVX512_VBMI;
        cache_entry *de = acquire(table, token, 0, vbmi ? path : AXS_NPATHS, &err);
        if (!de)
            return err;
        const axs_fixed_table *dt = &de->pr.t;
        if (!(dt->generic && (out64 || dw_wide)) &&
            (method == AXS_METHOD_DEPTHWISE || !vbmi || !dt->generic || N * P >= 128)) {
            int rc = axs_dwconv2d(xn ? xn : x, w, dt, N, H, W, C, KH, KW, sh, sw, pt, pb,
                                  pl, pr_, dh, pad_code, out64, out, dq, axs_threads(nthreads),
                                  path, xn != NULL);
            release(de);
            return rc;
        }
        release(de);
        if (method == AXS_METHOD_DEPTHWISE)
            return AXS_EMETHOD;
    }
    if (!x)
        return AXS_NEED_NHWC;
    /* Two ways to stream output pixels past the filter codes, both reading a planar copy
     * img[c][Hp][Wp] of each padded image:
     *  - "wide" (stride 1): stream positions q = oy * Wp + ox over the padded width;
     *    for a fixed tap and channel those codes are contiguous in img, so no packing at
     *    all; the (Wp - OW) columns per row computed past the edge, and the rows of a
     *    per-image tile's last 64-row block past Q, are dropped.
     *  - "packed": an implicit im2col tile pack[k][i], copied in runs along output rows:
     *    no wasted rows, but a copy of K bytes per row, which costs about 2.5 / OG of the
     *    row's lookups (OG filters per group; measured on the VBMI path, 16->16 @32x32).
     * The cheaper one in rows computed (wide) or rows times (1 + 2.5 / OG) (packed).
     * Threads share whole images (wide) or row tiles (packed). */
    int nt = axs_threads(nthreads);
    int64_t Qw = (OH - 1) * Wp + OW;
    int64_t wide_rows = Qw / AXS_MB * AXS_MB + (Qw % AXS_MB + 63) / 64 * 64;
    int wide = sh == 1 && sw == 1 && 2 * wide_rows * OG < P * (2 * OG + 5);
    int64_t ofb = (OG + AXS_NB - 1) / AXS_NB * groups; /* fixed-code blocks per row tile */
    int mb = wide ? AXS_MB : tile_rows(N * P, ofb, nt);
    /* units of work: wide mode hands out whole images (each thread then builds an image's
     * planar copy once), or its row tiles when the images are fewer than the threads; the
     * row tiles times parts of the filter blocks when even they are too few */
    int64_t nbpg = (OG + AXS_NB - 1) / AXS_NB;
    int64_t ntile = wide ? (Qw + AXS_MB - 1) / AXS_MB : (N * P + mb - 1) / mb;
    int64_t chunk = wide && N >= nt ? ntile : 1;
    int64_t rowunits = wide ? N * ntile : ntile;
    int64_t fparts = chunk > 1 ? 1 : direct_fparts(rowunits, groups * nbpg, nt);
    int64_t dunits = rowunits * fparts / chunk;
    int swapped = 0;
    {
        /* wide mode computes the dropped columns and rows too */
        double direct = (double)groups * axs_direct_cost(path, wide ? N * wide_rows : N * P,
                                                         K, OG, dunits < nt ? dunits : nt, 0);
        /* the swapped orientation (conv_swapped), its im2col copy counted as 2 lookups a
         * byte */
        if (N * P <= AXS_SWAP_BYTES / (groups * K)) {
            const int64_t nfb = N * ((P + AXS_NB - 1) / AXS_NB);
            const int mbs = tile_rows(OG, nfb * groups, nt);
            const int64_t us = groups * ((OG + mbs - 1) / mbs) * nfb;
            const double sw_cost =
                (double)groups * axs_direct_cost(path, OG, K, N * P, us < nt ? us : nt,
                                                 direct_residual(table, token, path, K,
                                                                 N * P)) +
                2.0 * (double)(N * P * groups * K) / nt;
            if (sw_cost < direct) {
                direct = sw_cost;
                swapped = 1;
            }
        }
        /* the byte-residual form wants consecutive codes in each block of 16 steps, as
         * expand.c checks: the steps of a tap are, and with one group and no horizontal
         * dilation so are the taps of a filter row; the swapped orientation below streams a
         * transposed copy */
        const int64_t run = groups == 1 && dw == 1 ? (KH == 1 ? K : KW * CG)
                                                   : (KH * KW == 1 ? K : CG);
        const int res = residual_form(table, token, 0, path, method, out64, OG);
        double expand = axs_xcost(path, N * P, K, OG, groups, nt,
                                  res && (run == K || run % AXS_RSTEPS == 0));
        /* expanded tables in the swapped orientation (conv_swapped_expand), with the copy */
        int xswap = 0;
        if (groups == 1 && N * P <= AXS_SWAP_BYTES / K) {
            const double sw_cost =
                axs_xcost(path, COUT, K, N * P, 1, nt,
                          residual_form(table, token, 1, path, method, out64, N * P)) +
                2.0 * (double)(N * P * K) / nt;
            if (sw_cost < expand) {
                expand = sw_cost;
                xswap = 1;
            }
        }
        int rc = try_factored(fac, method, out64, direct, expand,
                              fac ? axs_fcost(path, N * P, K, CG, OG, groups, fac->r,
                                              N * Hp * Wp * C, fac->packed != NULL, nt)
                                  : 0.0);
        if (rc == AXS_OK)
            return axs_fconv2d(x, w, fac, N, H, W, C, KH, KW, COUT, sh, sw, pt, pb, pl, pr_, dh,
                               dw, groups, pad_code, out, dq, nt, path);
        if (rc != -1)
            return rc;
        cache_entry *xe;
        rc = try_expand(table, token, method, out64, direct, expand, xswap, &xe);
        if (xe) {
            rc = xswap ? conv_swapped_expand(x, w, &xe->pr.t, N, H, W, C, KH, KW, COUT, sh, sw,
                                             pt, pl, dh, dw, pad_code, out, dq, nt, path, OH,
                                             OW)
                       : axs_xconv2d(x, w, &xe->pr.t, N, H, W, C, KH, KW, COUT, sh, sw, pt, pb,
                                     pl, pr_, dh, dw, groups, pad_code, out, dq, nt, path);
            release(xe);
        }
        if (rc >= 0)
            return rc;
    }
    if (swapped)
        return conv_swapped(x, w, table, token, N, H, W, C, KH, KW, COUT, sh, sw, pt, pl, dh,
                            dw, groups, pad_code, out64, out, dq, nt, path, OH, OW);
    int64_t Q = wide ? Qw : P; /* streamed positions per image */
    int64_t plane = Hp * Wp;
    /* wide mode reads up to Wp + dw * (KW - 1) bytes past the last plane (dropped columns) */
    size_t img_bytes = (size_t)(C * plane + Wp + (int64_t)dw * KW + 64);
    int err = AXS_OK;
    cache_entry *ce = acquire(table, token, 0, path, &err);
    if (!ce)
        return err;
    const prepared *pr = &ce->pr;
    axs_kern16_fn kern = kern16_for(path);
    /* Filters as fixed codes: wt[o][k], k = (c * KH + ky) * KW + kx within the group. */
    uint8_t *wt = (uint8_t *)malloc((size_t)(COUT * K));
    ptrdiff_t *soff = (ptrdiff_t *)malloc((size_t)K * sizeof(ptrdiff_t));
    if (!wt || !soff) {
        free(wt);
        free(soff);
        release(ce);
        return AXS_ENOMEM;
    }
    for (int64_t ky = 0; ky < KH; ky++)
        for (int64_t kx = 0; kx < KW; kx++)
            for (int64_t c = 0; c < CG; c++) {
                int64_t k = (c * KH + ky) * KW + kx;
                soff[k] = wide ? (ptrdiff_t)(c * plane + ky * dh * Wp + kx * dw)
                               : (ptrdiff_t)(k * AXS_MB);
                for (int64_t o = 0; o < COUT; o++)
                    wt[o * K + k] = w[((ky * KW + kx) * CG + c) * COUT + o];
            }
    /* wide: tiles within one image (per-thread planar copy of that image);
     * packed: tiles over the flattened (image, pixel) index of the whole batch, read from a
     * shared planar copy of the batch (uint8: a quarter of the float32 input), so that
     * small images still fill whole tiles. */
    int64_t fper = (groups * nbpg + fparts - 1) / fparts;  /* filter blocks per part */
    int64_t units = rowunits * fparts;
    size_t batch_bytes = (size_t)(N * C * plane);
    uint8_t *xp = wide ? NULL : (uint8_t *)malloc(batch_bytes + 8);
    axs_xdeq dd;   /* the row stores' terms (rowstore) */
    int dd_err = axs_xdeq_init(!out64 && path == AXS_PATH_AVX512_VBMI ? dq : NULL, COUT, N * P,
                               &dd);
    if ((!wide && !xp) || dd_err) {
        free(dd.corr);
        free(xp);
        free(wt);
        free(soff);
        release(ce);
        return AXS_ENOMEM;
    }
    int failed = 0;
#pragma omp parallel num_threads(nt)
    {
        scratch sc;
        uint8_t *img = wide ? (uint8_t *)malloc(img_bytes) : NULL;
        uint8_t *pack = wide ? NULL : (uint8_t *)axs_alloc64((size_t)(K * AXS_MB + 8));
        int ok = scratch_init(&sc, pr->t.generic, out64) &&
                 (wide ? img != NULL : pack != NULL);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        if (!wide) {
            const int64_t cp = axs_planar_parts(N, C, nt);
#pragma omp for schedule(static)
            for (int64_t u = 0; u < N * cp; u++)
                axs_to_planar_unit(x, u, cp, H, W, C, pt, pl, Hp, Wp, pad_code, xp);
        }
        int64_t loaded = -1;
        ptrdiff_t orow[AXS_MB], run_src[AXS_MB];
        int run_dst[AXS_MB], run_len[AXS_MB];
        int64_t orid[AXS_MB], ocol[AXS_MB];
        for (int i = 0; i < AXS_MB; i++)
            ocol[i] = 0;
        /* NCHW output (dq->nchw): output row r = n * P + p of column o at
         * (n * COUT + o) * P + p, so fixed code j of a tile steps by P */
        const int nchw = dq && dq->nchw;
        sink sk = {out, out64, dq, orow, nchw ? (ptrdiff_t)P : 1, orid, ocol, 0, 1, 0,
                   1, out, COUT, dd.corr ? &dd : NULL, path};
        size_t esize = dq ? sizeof(float) : out64 ? sizeof(int64_t) : sizeof(int32_t);
        /* dynamic: a busy core must not hold everyone up */
#pragma omp for schedule(dynamic, 1)
        for (int64_t uc = 0; uc < (units + chunk - 1) / chunk; uc++)
        for (int64_t u = uc * chunk; u < (uc + 1) * chunk && u < units; u++) {
            if (!ok)
                continue;
            int64_t ru = u / fparts, b0 = (u % fparts) * fper, b1 = b0 + fper;
            int64_t n = wide ? ru / ntile : 0;
            int64_t q0 = wide ? (ru % ntile) * AXS_MB : ru * mb;
            int64_t qend = wide ? Q : N * P;
            int ms = (int)(qend - q0 < mb ? qend - q0 : mb);
            int nrun = 0;
            const uint8_t *base;
            if (wide) {
                if (loaded != n) {
                    memset(img + C * plane, pad_code, img_bytes - (size_t)(C * plane));
                    axs_to_planar(x + n * H * W * C, H, W, C, 0, C, pt, pl, Hp, Wp, pad_code,
                                  img);
                    loaded = n;
                }
                for (int i = 0; i < ms; i++) {
                    int64_t q = q0 + i, oy = q / Wp, r = q % Wp;
                    orid[i] = (n * OH + oy) * OW + r;
                    orow[i] = r >= OW ? -1
                            : nchw ? (ptrdiff_t)(n * COUT * P + oy * OW + r)
                                   : (ptrdiff_t)(orid[i] * COUT);
                }
                base = img + q0;
            } else {
                /* runs of consecutive output pixels of one output row within the tile */
                for (int i = 0; i < ms;) {
                    int64_t p = q0 + i, nn = p / P, pi = p % P, oy = pi / OW, ox = pi % OW;
                    int len = (int)(OW - ox < ms - i ? OW - ox : ms - i);
                    run_src[nrun] = (ptrdiff_t)(nn * C * plane + oy * sh * Wp + ox * sw);
                    run_dst[nrun] = i;
                    run_len[nrun++] = len;
                    for (int r = 0; r < len; r++) {
                        orid[i + r] = p + r;
                        orow[i + r] = nchw ? (ptrdiff_t)(nn * COUT * P + pi + r)
                                           : (ptrdiff_t)((p + r) * COUT);
                    }
                    i += len;
                }
                base = pack;
            }
            for (int64_t g = 0; g < groups; g++) {
                if ((g + 1) * nbpg <= b0 || g * nbpg >= b1)   /* none of its blocks here */
                    continue;
                const uint8_t *S = base + (wide ? g * CG * plane : 0);
                if (!wide) {
                    /* implicit im2col of this tile: pack[k][i] for output pixel q0 + i */
                    for (int64_t c = 0; c < CG; c++)
                        for (int64_t ky = 0; ky < KH; ky++)
                            for (int64_t kx = 0; kx < KW; kx++) {
                                uint8_t *dst = pack + ((c * KH + ky) * KW + kx) * AXS_MB;
                                const uint8_t *src0 = xp + (g * CG + c) * plane + ky * dh * Wp + kx * dw;
                                for (int r = 0; r < nrun; r++) {
                                    const uint8_t *src = src0 + run_src[r];
                                    uint8_t *d = dst + run_dst[r];
                                    int len = run_len[r];
                                    if (sw == 1) /* whole words: may run 7 bytes past
                                                   * both ends (slack, or overwritten next) */
                                        for (int e = 0; e < len; e += 8)
                                            memcpy(d + e, src + e, 8);
                                    else
                                        for (int e = 0; e < len; e++)
                                            d[e] = src[(ptrdiff_t)e * sw];
                                }
                            }
                }
                for (int64_t f0 = 0; f0 < OG; f0 += AXS_NB) {
                    int64_t b = g * nbpg + f0 / AXS_NB;
                    if (b < b0 || b >= b1)
                        continue;
                    int nf = (int)(OG - f0 < AXS_NB ? OG - f0 : AXS_NB);
                    int64_t o0 = g * OG + f0;
                    sk.out = (char *)out + o0 * (nchw ? P : 1) * esize;
                    sk.col0 = o0;
                    tile(pr, kern, S, soff, ms, wt + o0 * K, (ptrdiff_t)K, nf, K, &sc, &sk);
                }
            }
        }
        scratch_free(&sc);
        free(img);
        axs_free64(pack);
    }
    free(dd.corr);
    free(xp);
    free(wt);
    free(soff);
    release(ce);
    return failed ? AXS_ENOMEM : AXS_OK;
}
