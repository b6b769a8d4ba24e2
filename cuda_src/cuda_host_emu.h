// Host emulation of the CUDA execution model, so that the very same kernel sources
// (axk_gemm.cu, axk_depthwise.cu) compile with a host C++17 compiler (g++ -fopenmp) and run on
// the CPU. Used by the test suite to check the kernels' logic bit for bit without a GPU.
//
// How it emulates
// ---------------
// * A launch runs the blocks of the grid one after another (x fastest, then y, then z).
// * The threads of a block are the threads of one OpenMP parallel region of exactly
//   blockDim.x*blockDim.y*blockDim.z threads (dynamic adjustment off; a smaller team is an error,
//   never a silent fallback). They run truly concurrently, so a missing barrier shows up as a
//   race, not as a lucky sequential order.
// * __syncthreads() is an OpenMP barrier of that team.
// * threadIdx is thread-local (linear thread id t -> x = t % bx, y = t / bx % by, z = t / (bx*by),
//   CUDA's numbering); blockIdx, blockDim and gridDim are per launch/block globals.
// * Dynamic shared memory (AXK_DYNAMIC_SMEM) is one buffer of exactly the launch's byte count,
//   filled with the byte 0xA5 before every block, so a kernel that reads shared memory it did
//   not write in this block gets garbage, as on a GPU. AXK_CHECK_SMEM(bytes) returns from the
//   kernel and records an error when the kernel's own layout needs more than was launched.
// * __ldg(p) is *p; __forceinline__, __launch_bounds__, __align__ map to host equivalents.
//
// The honest subset (what kernels may use so that this emulation means something)
// ---------------------------------------------------------------------------------
// * __global__/__device__ functions, threadIdx/blockIdx/blockDim/gridDim, __syncthreads()
//   reached by every thread of the block (no barrier inside divergent code: undefined on a GPU,
//   a deadlock here), dynamic shared memory through AXK_DYNAMIC_SMEM only (no static
//   __shared__ variables), __ldg, plain loads and stores to global memory.
// * Not emulated (and not used by the kernels): warp-synchronous code and warp intrinsics
//   (__shfl*, __ballot*, cooperative groups), atomics, static __shared__, textures/surfaces,
//   streams, dynamic parallelism, memory-model subtleties beyond "a barrier orders shared and
//   global memory within a block". Blocks never communicate, as CUDA guarantees nothing there.
// * Integer arithmetic is the same on both sides: int 32-bit, long long 64-bit, two's
//   complement conversions from unsigned to signed (GCC and NVCC both define them so).
#ifndef AXK_CUDA_HOST_EMU_H
#define AXK_CUDA_HOST_EMU_H

#include <omp.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace axk_emu {
inline thread_local uint3 thread_idx = {0, 0, 0};
inline uint3 block_idx = {0, 0, 0};
inline dim3 block_dim;
inline dim3 grid_dim;
inline unsigned char* dynamic_smem = nullptr;
inline std::size_t dynamic_smem_bytes = 0;
inline int error = 0;  // set under `omp critical`, read after the launch
inline std::string error_message;

inline void fail(const std::string& msg)
{
#pragma omp critical(axk_emu_error)
    {
        if (!error) {
            error = 1;
            error_message = msg;
        }
    }
}

inline bool smem_ok(std::size_t needed)
{
    if (needed <= dynamic_smem_bytes) return true;
    fail("kernel needs " + std::to_string(needed) + " bytes of dynamic shared memory, launched with " +
         std::to_string(dynamic_smem_bytes));
    return false;
}
}  // namespace axk_emu

#define threadIdx (axk_emu::thread_idx)
#define blockIdx (axk_emu::block_idx)
#define blockDim (axk_emu::block_dim)
#define gridDim (axk_emu::grid_dim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

inline void __syncthreads()
{
#pragma omp barrier
}

template <typename T>
inline T __ldg(const T* p)
{
    return *p;
}

#define AXK_DYNAMIC_SMEM(name) unsigned char* name = axk_emu::dynamic_smem
#define AXK_CHECK_SMEM(bytes)                                  \
    do {                                                       \
        if (!axk_emu::smem_ok((std::size_t)(bytes))) return;   \
    } while (0)

namespace axk_emu {

// Run `body` (one call per emulated thread) over the grid. Returns 0, or 1 with error_message.
template <typename Body>
int run_grid(dim3 grid, dim3 block, std::size_t smem_bytes, Body body)
{
    error = 0;
    error_message.clear();
    const long long nthreads = (long long)block.x * block.y * block.z;
    if (nthreads < 1 || nthreads > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.y > 65535 || grid.z > 65535) {
        fail("invalid launch configuration: grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
             ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) + ", " +
             std::to_string(block.y) + ", " + std::to_string(block.z) + ")");
        return error;
    }
    const std::size_t alloc = (smem_bytes + 63) / 64 * 64 + 64;
    unsigned char* buffer = static_cast<unsigned char*>(std::aligned_alloc(64, alloc));
    if (!buffer) {
        fail("out of host memory for the shared-memory buffer");
        return error;
    }
    dynamic_smem = buffer;
    dynamic_smem_bytes = smem_bytes;
    grid_dim = grid;
    block_dim = block;
    omp_set_dynamic(0);
    for (unsigned int bz = 0; bz < grid.z && !error; ++bz)
        for (unsigned int by = 0; by < grid.y && !error; ++by)
            for (unsigned int bx = 0; bx < grid.x && !error; ++bx) {
                block_idx = {bx, by, bz};
                std::memset(buffer, 0xA5, alloc);
#pragma omp parallel num_threads((int)nthreads)
                {
                    if (omp_get_num_threads() != nthreads) {
                        // Every thread takes this branch, so no barrier is left waiting.
                        fail("OpenMP gave a team of " + std::to_string(omp_get_num_threads()) + " threads, the block needs " +
                             std::to_string(nthreads) + " (check OMP_THREAD_LIMIT)");
                    } else {
                        const unsigned int t = (unsigned int)omp_get_thread_num();
                        thread_idx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
                        body();
                    }
                }
            }
    std::free(buffer);
    dynamic_smem = nullptr;
    dynamic_smem_bytes = 0;
    return error;
}

// Argument types as one letter each: p pointer, i int, q long long (what ctypes must pass).
template <typename T>
constexpr char arg_code()
{
    return std::is_pointer<T>::value ? 'p' : std::is_same<T, int>::value ? 'i' : std::is_same<T, long long>::value ? 'q' : '?';
}

template <typename... Args>
struct Signature {
    static const char* str()
    {
        static const char s[] = {arg_code<Args>()..., '\0'};
        return s;
    }
};

// Launch a kernel with cuLaunchKernel-style parameters: params[i] points at argument i.
template <typename... Args, std::size_t... I>
void call_kernel(void (*kernel)(Args...), void** params, std::index_sequence<I...>)
{
    kernel(*static_cast<typename std::remove_reference<Args>::type*>(params[I])...);
}

template <typename... Args>
int launch(void (*kernel)(Args...), dim3 grid, dim3 block, std::size_t smem_bytes, void** params)
{
    return run_grid(grid, block, smem_bytes, [&]() { call_kernel(kernel, params, std::index_sequence_for<Args...>{}); });
}

template <typename... Args>
const char* signature(void (*)(Args...))
{
    return Signature<Args...>::str();
}

}  // namespace axk_emu

// A launcher library: AXK_EMU_EXPORT_BEGIN, one AXK_EMU_KERNEL(name) per entry point,
// AXK_EMU_EXPORT_END. It exports (extern "C"):
//   int axk_emu_launch(const char* name, unsigned gx, gy, gz, bx, by, bz, size_t smem, void** params)
//   const char* axk_emu_signature(const char* name)   (NULL for an unknown kernel)
//   const char* axk_emu_kernel_name(int i)            (NULL past the last kernel)
//   const char* axk_emu_last_error(void)
#define AXK_EMU_EXPORT_BEGIN                                                                    \
    namespace axk_emu {                                                                         \
    struct Entry {                                                                              \
        const char* name;                                                                       \
        int (*launch)(dim3, dim3, std::size_t, void**);                                         \
        const char* (*signature)();                                                             \
    };                                                                                          \
    static const Entry entries[] = {
#define AXK_EMU_KERNEL(k)                                                                       \
    {#k, [](dim3 g, dim3 b, std::size_t s, void** p) { return axk_emu::launch(&k, g, b, s, p); }, \
     []() { return axk_emu::signature(&k); }},
#define AXK_EMU_EXPORT_END                                                                      \
    {nullptr, nullptr, nullptr}};                                                               \
    }                                                                                           \
    extern "C" const char* axk_emu_last_error(void) { return axk_emu::error_message.c_str(); }    \
    extern "C" const char* axk_emu_kernel_name(int i)                                           \
    {                                                                                           \
        int n = 0;                                                                              \
        while (axk_emu::entries[n].name) ++n;                                                   \
        return (i >= 0 && i < n) ? axk_emu::entries[i].name : nullptr;                          \
    }                                                                                           \
    extern "C" const char* axk_emu_signature(const char* name)                                  \
    {                                                                                           \
        for (int i = 0; axk_emu::entries[i].name; ++i)                                          \
            if (!std::strcmp(axk_emu::entries[i].name, name)) return axk_emu::entries[i].signature(); \
        return nullptr;                                                                         \
    }                                                                                           \
    extern "C" int axk_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz,       \
                                  unsigned bx, unsigned by, unsigned bz, std::size_t smem,       \
                                  void** params)                                                \
    {                                                                                           \
        for (int i = 0; axk_emu::entries[i].name; ++i)                                          \
            if (!std::strcmp(axk_emu::entries[i].name, name))                                   \
                return axk_emu::entries[i].launch(dim3(gx, gy, gz), dim3(bx, by, bz), smem, params); \
        axk_emu::error_message = std::string("unknown kernel ") + name;                         \
        return 2;                                                                               \
    }

#endif  // AXK_CUDA_HOST_EMU_H
