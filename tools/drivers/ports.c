/* Throughput of the vector instructions the kernels are built from, in core cycles
 * (docs/performance.md, "A fifth session on Zen 4").
 *
 *   gcc -O2 -o ports tools/drivers/ports.c
 *   ./ports [iterations]
 *
 * Each figure is the time of eight independent chains of one instruction, per instruction,
 * over the time of one dependent vpaddd (one cycle on every x86-64 core), best of five
 * rounds: 1.00 means one instruction a cycle, 0.50 two. Each chain runs `iterations` times
 * (default 20000000). Exits 2 on a CPU without AVX-512 F, BW, VBMI and VNNI (the timed
 * functions alone are compiled for them, so main runs anywhere). */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 5

static long N = 20000000L;

#define ISA __attribute__((target("avx2,avx512f,avx512bw,avx512vbmi,avx512vnni")))

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* the compiler may neither merge nor drop the chains */
#define KEEP8 __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), \
                               "+v"(a6), "+v"(a7), "+v"(t), "+v"(u))
#define CHAINS(T, OP, XOR)                                                                    \
    T a0 = t, a1 = u, a2 = t, a3 = u, a4 = t, a5 = u, a6 = t, a7 = u;                         \
    for (long i = 0; i < N; i++) {                                                            \
        a0 = OP(a0); a1 = OP(a1); a2 = OP(a2); a3 = OP(a3);                                   \
        a4 = OP(a4); a5 = OP(a5); a6 = OP(a6); a7 = OP(a7);                                   \
        KEEP8;                                                                                \
    }                                                                                         \
    *o = XOR(XOR(XOR(a0, a1), XOR(a2, a3)), XOR(XOR(a4, a5), XOR(a6, a7)))

/* one cycle per vpaddd: a single chain, kept from being merged */
static ISA __attribute__((noinline)) void chain(__m512i t, __m512i *o)
{
    __m512i a = t;
    for (long i = 0; i < N; i++)
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            a = _mm512_add_epi32(a, t);
            __asm__ volatile("" : "+v"(a));
        }
    *o = a;
}

#define P2B(x) _mm512_permutex2var_epi8(t, x, u)
#define PB(x) _mm512_permutexvar_epi8(x, t)
#define DPB(x) _mm512_dpbusd_epi32(x, t, u)
#define MADZ(x) _mm512_madd_epi16(x, t)
#define ADDZ(x) _mm512_add_epi16(x, t)
#define MADY(x) _mm256_madd_epi16(x, t)
#define ADDY(x) _mm256_add_epi16(x, t)
#define SHUFY(x) _mm256_shuffle_epi8(t, x)
static ISA __attribute__((noinline)) void p2b(__m512i t, __m512i u, __m512i *o) { CHAINS(__m512i, P2B, _mm512_xor_si512); }
static ISA __attribute__((noinline)) void pb(__m512i t, __m512i u, __m512i *o) { CHAINS(__m512i, PB, _mm512_xor_si512); }
static ISA __attribute__((noinline)) void dpb(__m512i t, __m512i u, __m512i *o) { CHAINS(__m512i, DPB, _mm512_xor_si512); }
static ISA __attribute__((noinline)) void madz(__m512i t, __m512i u, __m512i *o) { CHAINS(__m512i, MADZ, _mm512_xor_si512); }
static ISA __attribute__((noinline)) void addz(__m512i t, __m512i u, __m512i *o) { CHAINS(__m512i, ADDZ, _mm512_xor_si512); }
static ISA __attribute__((noinline)) void mady(__m256i t, __m256i u, __m256i *o) { CHAINS(__m256i, MADY, _mm256_xor_si256); }
static ISA __attribute__((noinline)) void addy(__m256i t, __m256i u, __m256i *o) { CHAINS(__m256i, ADDY, _mm256_xor_si256); }
static ISA __attribute__((noinline)) void shufy(__m256i t, __m256i u, __m256i *o) { CHAINS(__m256i, SHUFY, _mm256_xor_si256); }

static ISA __attribute__((noinline)) int measure(void)
{
    const char *name[] = {"vpaddd zmm (dependent)", "vpermi2b zmm", "vpermb zmm", "vpdpbusd zmm",
                          "vpmaddwd zmm", "vpaddw zmm", "vpmaddwd ymm", "vpaddw ymm",
                          "vpshufb ymm"};
    double best[9];
    __m512i t = _mm512_set1_epi8(3), u = _mm512_set1_epi8(5), o;
    __m256i ty = _mm256_set1_epi8(3), uy = _mm256_set1_epi8(5), oy;
    for (int k = 0; k < 9; k++)
        best[k] = 1e30;
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < 9; k++) {
            double s = now();
            switch (k) {
            case 0: chain(t, &o); break;
            case 1: p2b(t, u, &o); break;
            case 2: pb(t, u, &o); break;
            case 3: dpb(t, u, &o); break;
            case 4: madz(t, u, &o); break;
            case 5: addz(t, u, &o); break;
            case 6: mady(ty, uy, &oy); break;
            case 7: addy(ty, uy, &oy); break;
            default: shufy(ty, uy, &oy); break;
            }
            s = now() - s;
            best[k] = s < best[k] ? s : best[k];
        }
    const double cycle = best[0] / (8.0 * N);
    printf("clock %.2f GHz (a dependent vpaddd a cycle)\n", 1e-9 / cycle);
    for (int k = 1; k < 9; k++)
        printf("  %-14s %.2f cycles\n", name[k], best[k] / (8.0 * N) / cycle);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (N = strtol(argv[1], NULL, 10)) < 1)) {
        fprintf(stderr, "usage: %s [iterations >= 1]\n", argv[0]);
        return 2;
    }
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vbmi") || !__builtin_cpu_supports("avx512vnni")) {
        fprintf(stderr, "%s: this CPU lacks AVX-512 F, BW, VBMI or VNNI\n", argv[0]);
        return 2;
    }
    return measure();
}
