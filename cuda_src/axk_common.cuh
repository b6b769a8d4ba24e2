// Shared definitions of the axkern CUDA kernels (axk_gemm.cu, axk_depthwise.cu).
//
// Every kernel follows the internal kernel contract of axkern.backends: operands are uint8
// table INDICES, out[...] = sum of table entries, exact in int32 or int64. The Python side
// (axkern/cuda.py) prepares the table and computes the launch configuration; the layout
// formulas below (shared-memory sizes, tile shapes) are mirrored there and must stay equal.
//
// Table access: why shared memory, and why 16 bits
// ------------------------------------------------
// Every multiply-accumulate is one data-dependent gather from a 256x256 table, so the table's
// read path bounds the kernel. Through the read-only cache (__ldg) an int32 table is 256 KiB:
// it does not fit in L1 next to anything else, so most gathers are separate 32-byte L2 sector
// reads; at ~5 TB/s of L2 bandwidth that caps an H100 near 150 G lookups/s, far below the
// 1 TMAC/s target. Shared memory serves 32 lanes per clock per SM (random indices cost a few
// bank conflicts: ~3.5-way on average for 32 random words), i.e. several TMAC/s over 132 SMs.
// The int32 table (256 KiB) does not fit in a block's shared memory (227 KiB max on sm_90,
// 163 KiB on sm_80), but every real 8-bit multiplier table spans fewer than 2^16 values, so
// the host stores T - min(T) as uint16 (128 KiB) and adds K * min(T) back at the end; sums
// are done modulo 2^32 / 2^64, which is exact because the true result fits the output type.
// That needs the opt-in large dynamic shared memory (one block per SM). Staging only the
// columns a tile needs was rejected: every (k, n) of a tile has its own weight code, so a
// 16x64 tile would need 1024 distinct 512-byte columns, more than the whole table.
// Where the table spans 2^16 values or more, or the device has too little shared memory
// (sm_75: 64 KiB, sm_86/89: ~100 KiB), the same kernels read an int32 table through __ldg
// (MODE_LDG32): correct everywhere, slower.
//
// Both table images have 257 rows: row 256 is all zeros. Reduction steps past K (the last,
// partial K tile) point their activation index at row 256, so they add exactly 0 without a
// branch in the inner loop (T[0][0] is not 0 for many approximate multipliers).
#ifndef AXK_COMMON_CUH
#define AXK_COMMON_CUH

#ifdef AXK_HOST_EMU
#include "cuda_host_emu.h"
#else
#define AXK_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define AXK_CHECK_SMEM(bytes) ((void)0)
#endif

typedef unsigned char axk_u8;
typedef unsigned short axk_u16;
typedef unsigned int axk_u32;
typedef unsigned long long axk_u64;
typedef long long axk_i64;

// Implicit-GEMM tiling: 256 threads as (bx, by) with bx*by == 256, each thread owns a 4x4
// register tile of outputs, so a block tile is BM x BN = (4*by) x (4*bx). The host picks bx in
// {4, 8, 16} from the number of output columns (16, 32, 64) so narrow layers waste no lanes.
#define AXK_THREADS 256
#define AXK_TM 4
#define AXK_TN 4
#define AXK_BK 16
#define AXK_TABLE_ROWS 257
#define AXK_TABLE_ENTRIES (AXK_TABLE_ROWS * 256)
#define AXK_SENTINEL (256u << 8)  // start of the zero row 256

#define AXK_MODE_SMEM16 0  // uint16 table (T - base) staged in shared memory
#define AXK_MODE_LDG32 1   // int32 table read through the read-only data cache
#define AXK_MODE_EXACT 2   // no table: the exact product of the codes (benchmark baseline)

__device__ __forceinline__ unsigned int axk_align16(unsigned int n) { return (n + 15u) & ~15u; }

// Bytes of dynamic shared memory of the implicit-GEMM kernels (mirrored in axkern/cuda.py).
__device__ __forceinline__ unsigned int axk_igemm_smem_bytes(int mode, int bm, int bn, bool conv)
{
    unsigned int total = 0;
    if (mode == AXK_MODE_SMEM16) total += axk_align16(AXK_TABLE_ENTRIES * 2u);
    total += axk_align16(AXK_BK * (unsigned int)(bm + 1) * 4u);  // A tile, one padding column
    total += axk_align16(AXK_BK * (unsigned int)bn * 4u);        // B tile
    if (conv) total += axk_align16(3u * (unsigned int)bm * 4u);  // per-row input origins
    return total;
}

// Accumulator types: sums are kept in unsigned integers (wrap-around is defined behaviour) and
// reinterpreted as the signed output at the end; exact whenever the true sum fits OutT.
template <typename OutT> struct AxkAcc;
template <> struct AxkAcc<int> { typedef axk_u32 type; };
template <> struct AxkAcc<long long> { typedef axk_u64 type; };

// Per-K-tile partial sums: 16 uint16 entries (or 16 products of 8-bit codes) cannot overflow
// 32 bits, so int64 outputs still add in 32 bits and widen once per tile. Raw int32 entries
// (MODE_LDG32) can, so with int64 outputs they are widened at every step.
template <int MODE, typename AccT> struct AxkPart { typedef axk_u32 type; };
template <> struct AxkPart<AXK_MODE_LDG32, axk_u64> { typedef axk_u64 type; };

// Table access. `a` is the activation operand: its row offset (code << 8, or AXK_SENTINEL)
// for the table modes, the code itself (or 0) for MODE_EXACT; `b` is the weight code.
template <int MODE> struct AxkLut;

template <> struct AxkLut<AXK_MODE_SMEM16> {
    const axk_u16* t;  // shared memory
    __device__ __forceinline__ AxkLut(const axk_u16* staged, const void*) : t(staged) {}
    __device__ __forceinline__ axk_i64 get(axk_u32 a, axk_u32 b) const { return (axk_i64)t[a + b]; }
};

template <> struct AxkLut<AXK_MODE_LDG32> {
    const int* t;  // global memory
    __device__ __forceinline__ AxkLut(const axk_u16*, const void* table) : t((const int*)table) {}
    __device__ __forceinline__ axk_i64 get(axk_u32 a, axk_u32 b) const { return (axk_i64)__ldg(t + (a + b)); }
};

template <> struct AxkLut<AXK_MODE_EXACT> {
    __device__ __forceinline__ AxkLut(const axk_u16*, const void*) {}
    __device__ __forceinline__ axk_i64 get(axk_u32 a, axk_u32 b) const { return (axk_i64)(a * b); }
};

template <int MODE> struct AxkOperand {
    static __device__ __forceinline__ axk_u32 from_code(axk_u32 code) { return code << 8; }
    static __device__ __forceinline__ axk_u32 masked() { return AXK_SENTINEL; }
};
template <> struct AxkOperand<AXK_MODE_EXACT> {
    static __device__ __forceinline__ axk_u32 from_code(axk_u32 code) { return code; }
    static __device__ __forceinline__ axk_u32 masked() { return 0u; }
};

// Copy the prepared uint16 table (AXK_TABLE_ENTRIES entries, 4-byte aligned) into shared
// memory, two entries per 32-bit word. Callers synchronize before the first lookup.
__device__ __forceinline__ void axk_stage_table16(axk_u16* dst, const void* src, int tid, int nthreads)
{
    const axk_u32* s = (const axk_u32*)src;
    axk_u32* d = (axk_u32*)dst;
    for (int i = tid; i < AXK_TABLE_ENTRIES / 2; i += nthreads) d[i] = __ldg(s + i);
}

#endif  // AXK_COMMON_CUH
