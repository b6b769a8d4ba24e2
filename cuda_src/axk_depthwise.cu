// Depthwise (and channel-multiplier) convolution over uint8 table indices.
//
// For groups == C (one input channel per group, Cg == 1) an implicit GEMM would have a
// reduction of only KH*KW steps and 1..few columns per group, wasting most of its 4x4 register
// tiles. Here every thread computes whole outputs directly:
//   out[n, oy, ox, o] = sum_{ky, kx} T[xpad[n, oy*sh + ky*dh, ox*sw + kx*dw, o / Og], w[ky, kx, 0, o]]
// with Og = COUT / groups output channels per input channel. Consecutive threads take
// consecutive output channels, so reads of the NHWC input and HWIO filter and the writes are
// coalesced. Positions outside the input read `pad_code` and are looked up like any other.
// Blocks are persistent (grid-stride loop) so that the shared-memory table is staged once per
// block (see axk_common.cuh for the table formats).
//
// Entry points (extern "C"): axk_dwconv2d_{i32,i64}_{smem16,ldg32}.
#include "axk_common.cuh"

// Bytes of dynamic shared memory (mirrored in axkern/cuda.py).
__device__ __forceinline__ unsigned int axk_dw_smem_bytes(int mode)
{
    return mode == AXK_MODE_SMEM16 ? axk_align16(AXK_TABLE_ENTRIES * 2u) : 0u;
}

template <int MODE, typename OutT>
__device__ __forceinline__ void axk_dwconv(const axk_u8* __restrict__ X, const axk_u8* __restrict__ Wt,
                                           const void* __restrict__ table, OutT* __restrict__ out,
                                           int N, int H, int W, int C, int KH, int KW, int COUT,
                                           int OH, int OW, int sh, int sw, int dh, int dw, int pt,
                                           int pl, int pad_code, axk_i64 base)
{
    typedef typename AxkAcc<OutT>::type AccT;
    const int nthreads = (int)(blockDim.x * blockDim.y * blockDim.z);
    const int tid = (int)threadIdx.x;  // launched with a 1-D block

    AXK_DYNAMIC_SMEM(smem);
    AXK_CHECK_SMEM(axk_dw_smem_bytes(MODE));
    axk_u16* tbl = 0;
    if (MODE == AXK_MODE_SMEM16) {
        tbl = (axk_u16*)smem;
        axk_stage_table16(tbl, table, tid, nthreads);
        __syncthreads();
    }
    const AxkLut<MODE> lut(tbl, table);

    const int og = COUT / C;  // output channels per input channel (groups == C)
    const AccT basek = (AccT)(base * (axk_i64)(KH * KW));
    const axk_i64 total = (axk_i64)N * OH * OW * COUT;
    const axk_i64 stride = (axk_i64)gridDim.x * nthreads;
    for (axk_i64 idx = (axk_i64)blockIdx.x * nthreads + tid; idx < total; idx += stride) {
        const int o = (int)(idx % COUT);
        axk_i64 r = idx / COUT;
        const int ox = (int)(r % OW);
        r /= OW;
        const int oy = (int)(r % OH);
        const axk_i64 n = r / OH;
        const int c = o / og;
        AccT acc = 0;
        for (int ky = 0; ky < KH; ++ky) {
            const int iy = oy * sh - pt + ky * dh;
            const bool yin = iy >= 0 && iy < H;
            for (int kx = 0; kx < KW; ++kx) {
                const int ix = ox * sw - pl + kx * dw;
                axk_u32 code = (axk_u32)pad_code;
                if (yin && ix >= 0 && ix < W) code = X[((n * H + iy) * W + ix) * C + c];
                const axk_u32 wcode = Wt[(axk_i64)(ky * KW + kx) * COUT + o];
                acc += (AccT)lut.get(AxkOperand<MODE>::from_code(code), wcode);
            }
        }
        out[idx] = (OutT)(acc + basek);
    }
}

#define AXK_DW_ENTRY(NAME, MODE, OUTT)                                                             \
    extern "C" __global__ void __launch_bounds__(AXK_THREADS, 1)                                      \
    NAME(const axk_u8* X, const axk_u8* Wt, const void* table, OUTT* out, int N, int H, int W,     \
         int C, int KH, int KW, int COUT, int OH, int OW, int sh, int sw, int dh, int dw, int pt,  \
         int pl, int pad_code, axk_i64 base)                                                       \
    {                                                                                              \
        axk_dwconv<MODE, OUTT>(X, Wt, table, out, N, H, W, C, KH, KW, COUT, OH, OW, sh, sw, dh,    \
                               dw, pt, pl, pad_code, base);                                        \
    }

AXK_DW_ENTRY(axk_dwconv2d_i32_smem16, AXK_MODE_SMEM16, int)
AXK_DW_ENTRY(axk_dwconv2d_i64_smem16, AXK_MODE_SMEM16, long long)
AXK_DW_ENTRY(axk_dwconv2d_i32_ldg32, AXK_MODE_LDG32, int)
AXK_DW_ENTRY(axk_dwconv2d_i64_ldg32, AXK_MODE_LDG32, long long)
