// Approximate GEMM and implicit-GEMM convolution over uint8 table indices.
//
//   gemm:   out[m, n] = sum_k T[a[m, k], b[k, n]]                     a (M, K), b (K, N)
//   conv2d: out[n, oy, ox, o] = sum_{ky, kx, c} T[xpad[...], w[ky, kx, c, o]]   NHWC x HWIO
//
// The convolution is a GEMM with M = N*OH*OW rows (output pixels), K = KH*KW*Cg reduction
// steps (taps, channel fastest: the HWIO filter is then a row-major (K, COUT) matrix) and the
// output channels of one group as columns. Its A operand is never materialized: each A tile is
// gathered from the NHWC input on the fly, and positions outside the input read `pad_code`,
// which is looked up like any other index. Groups are tiles of their own (a tile never spans
// two groups, since its columns read other input channels).
//
// Blocks are persistent: with the 128 KiB table in shared memory only one block fits per SM,
// so each block stages the table once and then walks over tiles t = blockIdx.x, +gridDim.x...
// The zero-point correction (docs/conventions.md) is not applied here: the kernels return the exact
// integer sums of table entries and the float-level layer adds the corrections exactly.
//
// Entry points (extern "C", for pycuda SourceModule(no_extern_c=True)):
//   axk_gemm_{i32,i64}_{smem16,ldg32}, axk_gemm_i32_exact
//   axk_conv2d_{i32,i64}_{smem16,ldg32}, axk_conv2d_i32_exact
#include "axk_common.cuh"

struct AxkGeom {
    int M, K;         // GEMM rows and reduction length
    int ncols;        // valid output columns of one group (N for gemm, COUT/groups for conv)
    int ldb;          // row stride of B and of out (N for gemm, COUT for conv)
    int groups;
    // convolution only
    int H, W, C, KW, Cg, OH, OW, sh, sw, dh, dw, pt, pl, pad_code;
};

template <int MODE, typename OutT, bool CONV>
__device__ __forceinline__ void axk_igemm(const axk_u8* __restrict__ A, const axk_u8* __restrict__ B,
                                          const void* __restrict__ table, OutT* __restrict__ out,
                                          const AxkGeom& g, axk_i64 base)
{
    typedef typename AxkAcc<OutT>::type AccT;
    typedef typename AxkPart<MODE, AccT>::type PartT;

    const int bx = (int)blockDim.x, by = (int)blockDim.y;
    const int nthreads = bx * by;  // AXK_THREADS, a multiple of AXK_BK
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int tid = ty * bx + tx;
    const int BM = AXK_TM * by, BN = AXK_TN * bx;

    AXK_DYNAMIC_SMEM(smem);
    unsigned char* p = smem;
    axk_u16* tbl = 0;
    if (MODE == AXK_MODE_SMEM16) {
        tbl = (axk_u16*)p;
        p += axk_align16(AXK_TABLE_ENTRIES * 2u);
    }
    axk_u32* As = (axk_u32*)p;  // [AXK_BK][BM + 1]: the padding column avoids bank conflicts on store
    p += axk_align16(AXK_BK * (unsigned int)(BM + 1) * 4u);
    axk_u32* Bs = (axk_u32*)p;  // [AXK_BK][BN]
    p += axk_align16(AXK_BK * (unsigned int)BN * 4u);
    int* rowN = (int*)p;        // conv: n * H, and the input origin (y, x) of each tile row
    int* rowY = rowN + BM;
    int* rowX = rowY + BM;
    AXK_CHECK_SMEM(axk_igemm_smem_bytes(MODE, BM, BN, CONV));
    // Ordered before the first lookup by the tile loop's first barrier.
    if (MODE == AXK_MODE_SMEM16) axk_stage_table16(tbl, table, tid, nthreads);
    const AxkLut<MODE> lut(tbl, table);

    // Tile counts in unsigned arithmetic: M + BM - 1 overflows int within BM of 2**31 (no
    // tile would run), not unsigned. The K loop below (k0 += AXK_BK up to K + AXK_BK - 1) stays
    // int: axkern/cuda.py keeps every size at most 2**31 - 257 (SIZE_LIMIT).
    const int mtiles = (int)(((unsigned int)g.M + (unsigned int)(BM - 1)) / (unsigned int)BM);
    const int ntiles = (int)(((unsigned int)g.ncols + (unsigned int)(BN - 1)) / (unsigned int)BN);
    const axk_i64 total = (axk_i64)mtiles * ntiles * g.groups;
    const AccT basek = (AccT)(base * (axk_i64)g.K);

    // The A loader gives each thread a fixed reduction step within the tile (nthreads is a
    // multiple of AXK_BK), so the tap/channel decode of k costs one division per K tile.
    const int lk = tid % AXK_BK;
    const int lm0 = tid / AXK_BK, lmstep = nthreads / AXK_BK;

    for (axk_i64 t = blockIdx.x; t < total; t += gridDim.x) {
        const int mt = (int)(t % mtiles);
        const axk_i64 rest = t / mtiles;
        const int nt = (int)(rest % ntiles);
        const int grp = (int)(rest / ntiles);
        const int m0 = mt * BM, n0 = nt * BN;
        const int col0 = grp * g.ncols;  // first output column (and B column) of the group

        if (CONV) {
            for (int i = tid; i < BM; i += nthreads) {
                const int m = m0 + i;
                if (m < g.M) {
                    const int ox = m % g.OW, r = m / g.OW;
                    rowN[i] = (r / g.OH) * g.H;
                    rowY[i] = (r % g.OH) * g.sh - g.pt;
                    rowX[i] = ox * g.sw - g.pl;
                } else {  // rows past M: any valid index will do, their sums are not stored
                    rowN[i] = 0;
                    rowY[i] = -(1 << 30);
                    rowX[i] = 0;
                }
            }
        }
        // Also orders this tile's first smem writes after the previous tile's last reads and,
        // on the first tile, the table staging before any lookup.
        __syncthreads();

        AccT acc[AXK_TM][AXK_TN];
#pragma unroll
        for (int i = 0; i < AXK_TM; ++i)
#pragma unroll
            for (int j = 0; j < AXK_TN; ++j) acc[i][j] = 0;

        for (int k0 = 0; k0 < g.K; k0 += AXK_BK) {
            // A tile: the activation operand of rows m0.., steps k0..
            {
                const int k = k0 + lk;
                const bool kvalid = k < g.K;
                int dy = 0, dx = 0, cin = 0;
                if (CONV && kvalid) {
                    const int tap = k / g.Cg;
                    cin = grp * g.Cg + (k - tap * g.Cg);
                    dy = (tap / g.KW) * g.dh;
                    dx = (tap % g.KW) * g.dw;
                }
                for (int mm = lm0; mm < BM; mm += lmstep) {
                    axk_u32 v = AxkOperand<MODE>::masked();
                    if (kvalid) {
                        axk_u32 code = 0;
                        if (CONV) {
                            const int iy = rowY[mm] + dy, ix = rowX[mm] + dx;
                            code = (axk_u32)g.pad_code;
                            if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
                                code = A[(((axk_i64)rowN[mm] + iy) * g.W + ix) * g.C + cin];
                        } else {
                            const int m = m0 + mm;
                            if (m < g.M) code = A[(axk_i64)m * g.K + k];
                        }
                        v = AxkOperand<MODE>::from_code(code);
                    }
                    As[lk * (BM + 1) + mm] = v;
                }
            }
            // B tile: weight codes of steps k0.., columns n0.. of the group.
            for (int e = tid; e < AXK_BK * BN; e += nthreads) {
                const int kk = e / BN, nn = e - kk * BN;
                const int k = k0 + kk, n = n0 + nn;
                axk_u32 code = 0;
                if (k < g.K && n < g.ncols) code = B[(axk_i64)k * g.ldb + col0 + n];
                Bs[e] = code;
            }
            __syncthreads();

            PartT part[AXK_TM][AXK_TN];
#pragma unroll
            for (int i = 0; i < AXK_TM; ++i)
#pragma unroll
                for (int j = 0; j < AXK_TN; ++j) part[i][j] = 0;
#pragma unroll 4
            for (int kk = 0; kk < AXK_BK; ++kk) {
                axk_u32 av[AXK_TM], bv[AXK_TN];
                // Rows ty, ty+by, ...: a warp reads a few words (broadcast); columns tx, tx+bx, ...:
                // consecutive lanes read consecutive words (no bank conflicts).
#pragma unroll
                for (int i = 0; i < AXK_TM; ++i) av[i] = As[kk * (BM + 1) + ty + i * by];
#pragma unroll
                for (int j = 0; j < AXK_TN; ++j) bv[j] = Bs[kk * BN + tx + j * bx];
#pragma unroll
                for (int i = 0; i < AXK_TM; ++i)
#pragma unroll
                    for (int j = 0; j < AXK_TN; ++j) part[i][j] += (PartT)lut.get(av[i], bv[j]);
            }
#pragma unroll
            for (int i = 0; i < AXK_TM; ++i)
#pragma unroll
                for (int j = 0; j < AXK_TN; ++j) acc[i][j] += (AccT)part[i][j];
            __syncthreads();  // the tiles are overwritten by the next K step
        }

#pragma unroll
        for (int i = 0; i < AXK_TM; ++i) {
            const int m = m0 + ty + i * by;
            if (m >= g.M) continue;
#pragma unroll
            for (int j = 0; j < AXK_TN; ++j) {
                const int n = n0 + tx + j * bx;
                if (n < g.ncols) out[(axk_i64)m * g.ldb + col0 + n] = (OutT)(acc[i][j] + basek);
            }
        }
    }
}

template <int MODE, typename OutT>
__device__ __forceinline__ void axk_gemm_entry(const axk_u8* A, const axk_u8* B, const void* table, OutT* out,
                                               int M, int N, int K, axk_i64 base)
{
    AxkGeom g = {};
    g.M = M;
    g.K = K;
    g.ncols = N;
    g.ldb = N;
    g.groups = 1;
    axk_igemm<MODE, OutT, false>(A, B, table, out, g, base);
}

template <int MODE, typename OutT>
__device__ __forceinline__ void axk_conv_entry(const axk_u8* X, const axk_u8* Wt, const void* table, OutT* out,
                                               int N, int H, int W, int C, int KH, int KW, int Cg,
                                               int COUT, int OH, int OW, int sh, int sw, int dh, int dw,
                                               int pt, int pl, int pad_code, axk_i64 base)
{
    AxkGeom g = {};
    g.M = N * OH * OW;
    g.K = KH * KW * Cg;
    g.groups = C / Cg;
    g.ncols = COUT / g.groups;
    g.ldb = COUT;
    g.H = H; g.W = W; g.C = C; g.KW = KW; g.Cg = Cg; g.OH = OH; g.OW = OW;
    g.sh = sh; g.sw = sw; g.dh = dh; g.dw = dw; g.pt = pt; g.pl = pl; g.pad_code = pad_code;
    axk_igemm<MODE, OutT, true>(X, Wt, table, out, g, base);
}

#define AXK_GEMM_ENTRY(NAME, MODE, OUTT)                                                           \
    extern "C" __global__ void __launch_bounds__(AXK_THREADS, 1)                                      \
    NAME(const axk_u8* A, const axk_u8* B, const void* table, OUTT* out, int M, int N, int K,      \
         axk_i64 base)                                                                             \
    {                                                                                              \
        axk_gemm_entry<MODE, OUTT>(A, B, table, out, M, N, K, base);                               \
    }

#define AXK_CONV_ENTRY(NAME, MODE, OUTT)                                                           \
    extern "C" __global__ void __launch_bounds__(AXK_THREADS, 1)                                      \
    NAME(const axk_u8* X, const axk_u8* Wt, const void* table, OUTT* out, int N, int H, int W,     \
         int C, int KH, int KW, int Cg, int COUT, int OH, int OW, int sh, int sw, int dh, int dw,  \
         int pt, int pl, int pad_code, axk_i64 base)                                               \
    {                                                                                              \
        axk_conv_entry<MODE, OUTT>(X, Wt, table, out, N, H, W, C, KH, KW, Cg, COUT, OH, OW, sh,    \
                                   sw, dh, dw, pt, pl, pad_code, base);                            \
    }

AXK_GEMM_ENTRY(axk_gemm_i32_smem16, AXK_MODE_SMEM16, int)
AXK_GEMM_ENTRY(axk_gemm_i64_smem16, AXK_MODE_SMEM16, long long)
AXK_GEMM_ENTRY(axk_gemm_i32_ldg32, AXK_MODE_LDG32, int)
AXK_GEMM_ENTRY(axk_gemm_i64_ldg32, AXK_MODE_LDG32, long long)
AXK_GEMM_ENTRY(axk_gemm_i32_exact, AXK_MODE_EXACT, int)

AXK_CONV_ENTRY(axk_conv2d_i32_smem16, AXK_MODE_SMEM16, int)
AXK_CONV_ENTRY(axk_conv2d_i64_smem16, AXK_MODE_SMEM16, long long)
AXK_CONV_ENTRY(axk_conv2d_i32_ldg32, AXK_MODE_LDG32, int)
AXK_CONV_ENTRY(axk_conv2d_i64_ldg32, AXK_MODE_LDG32, long long)
AXK_CONV_ENTRY(axk_conv2d_i32_exact, AXK_MODE_EXACT, int)
