#!/usr/bin/env python
"""Benchmark axconv2d on the 3x3 SAME layers of ResNet-8 for CIFAR-10 (NHWC, batch 32).

For each layer (16->16 at 32x32, 32->32 at 16x16, 64->64 at 8x8) prints, from one run:
GMAC/s of ``axconv2d`` on the chosen backends (float in, float out: quantization, table
lookups and the exact zero-point correction included), GMAC/s of ``lut_conv2d`` on integer
codes (no quantization; code validation and conversion included), GMAC/s of a float32 NumPy matmul (BLAS) on the same im2col GEMM shape
(M = N*OH*OW, K = 9*Cin, N = Cout; im2col not timed), the ratios, and the kernel's GMAC per
second of process CPU time (throughput per busy core, which other jobs on a shared machine
disturb much less than the wall-time figures).

Usage::

    python tools/bench_conv.py [--backends cpu reference] [--threads 2] [--repeat 5]
                               [--reference-batch 2]

The reference backend is slow; it runs on ``--reference-batch`` images and its GMAC/s is
computed for that batch.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

import axkern
from axkern.backends import BACKENDS, available_backends
from axkern.bench import positive_int, run_tool, thread_count

LAYERS = [(32, 16, 16), (16, 32, 32), (8, 64, 64)]  # (H = W, Cin, Cout)


def best_time(fn, repeat):
    """(best wall time, CPU time of that run) over ``repeat`` runs after a warm-up."""
    fn()  # warm-up (table cache, thread pool, page faults)
    best, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if t < best:
            best, cpu = t, c
    return best, cpu


def im2col(x, kh, kw):
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = [xp[:, ky:ky + h, kx:kx + w, :] for ky in range(kh) for kx in range(kw)]
    return np.concatenate(cols, axis=-1).reshape(n * h * w, kh * kw * c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["cpu", "reference"],
                    help=f"backend names, from {', '.join(BACKENDS)} (default: cpu reference); "
                         "one not available here gets a line that says so")
    ap.add_argument("--threads", type=thread_count, default=None,
                    help="num_threads for the CPU kernels (default: OpenMP's / OMP_NUM_THREADS)")
    ap.add_argument("--batch", type=positive_int, default=32, help="images per call (default 32)")
    ap.add_argument("--reference-batch", type=positive_int, default=2,
                    help="images per call of the reference backend (default 2)")
    ap.add_argument("--repeat", type=positive_int, default=5,
                    help="timed runs, the best counts (default 5; the reference backend: 1)")
    ap.add_argument("--multiplier", default=None,
                    help="name of a shipped multiplier (default: a random 8-bit unsigned table)")
    args = ap.parse_args(argv)
    backends = list(dict.fromkeys(args.backends))   # duplicates dropped
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        ap.error(f"--backends: unknown backend {bad[0]!r}: expected some of {', '.join(BACKENDS)}")
    usable = set(available_backends())
    if not usable.intersection(backends):
        ap.error(f"--backends: none of {', '.join(backends)} is available here (available: "
                 f"{', '.join(sorted(usable))})")

    rng = np.random.default_rng(0)
    if args.multiplier:
        try:
            m = axkern.load_multiplier(args.multiplier)
        except (ValueError, OSError) as e:
            ap.error(f"--multiplier: {e}")
    else:  # the kernels' speed does not depend on the table's contents
        m = axkern.Multiplier(rng.integers(0, 65536, (256, 256)), name="random8u")
    return run_tool(ap.prog, _run, args, backends, usable, m, rng)


def _run(args, backends, usable, m, rng):
    from axkern import _fast
    threads = args.threads or _fast.max_threads()
    print(f"axkern {axkern.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, CPU kernels on {threads} thread(s), multiplier {m.name}, "
          f"'cpu' = {BACKENDS['cpu']}")
    print(f"{'layer':<18}{'backend':<11}{'batch':>6}{'axconv2d':>11}{'kernel':>10}{'BLAS f32':>11}"
          f"{'ratio':>8}{'kern.ratio':>11}{'kern/CPU-s':>12}")
    print("  (GMAC/s of wall time; ratio = axconv2d / BLAS; kern/CPU-s = kernel GMAC per second of "
          "process CPU time,\n   i.e. per busy core: a machine shared with other jobs lowers the "
          "wall-time figures but not this one)")
    for hw, cin, cout in LAYERS:
        x_full = rng.random((max(args.batch, args.reference_batch), hw, hw, cin),
                            dtype=np.float32)
        w = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
        for backend in backends:
            if backend not in usable:
                print(f"{hw}x{hw} {cin}->{cout:<8}{backend:<11}  (not available here)")
                continue
            batch = args.reference_batch if backend == "reference" else args.batch
            x = x_full[:batch]
            macs = batch * hw * hw * 9 * cin * cout
            xq = rng.integers(0, 256, x.shape)
            wq = rng.integers(0, 256, w.shape)
            be = backend
            t_ax, _ = best_time(lambda: axkern.axconv2d(x, w, m, padding="SAME", backend=be,
                                                     num_threads=args.threads),
                             args.repeat if backend != "reference" else 1)
            t_k, c_k = best_time(lambda: axkern.lut_conv2d(xq, wq, m, padding="SAME", backend=be,
                                                      num_threads=args.threads),
                            args.repeat if backend != "reference" else 1)
            A = im2col(x, 3, 3)
            B = w.reshape(9 * cin, cout)
            t_blas, _ = best_time(lambda: A @ B, args.repeat)
            g_ax, g_k, g_b = macs / t_ax / 1e9, macs / t_k / 1e9, macs / t_blas / 1e9
            g_cpu = macs / c_k / 1e9 if c_k > 0 else float("nan")   # a coarse CPU clock
            print(f"{hw}x{hw} {cin}->{cout:<8}{backend:<11}{batch:>6}{g_ax:>11.2f}{g_k:>10.2f}"
                  f"{g_b:>11.2f}{g_ax / g_b:>8.3f}{g_k / g_b:>11.3f}{g_cpu:>12.2f}")


if __name__ == "__main__":
    sys.exit(main())
