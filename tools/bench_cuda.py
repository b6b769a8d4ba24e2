#!/usr/bin/env python3
"""GMAC/s of the CUDA backend on the ResNet-8 CIFAR-10 convolutions at batch 256.

For every layer, from one run: the approximate kernel (table lookups, the path ``lut_conv2d``
and ``axconv2d`` use with ``backend="cuda"``) next to the exact-product kernel of the same
structure (same tiling, same implicit-GEMM gathers, ``a * b`` instead of the lookup), both on
data already on the device, timed with CUDA events. Design target: >= 1 TMAC/s on an
H100-class GPU. Needs PyCUDA and a CUDA device; exits with a clear message otherwise.

Usage::

    python tools/bench_cuda.py [--batch 256] [--repeat 20] [--multiplier NAME] [--mode smem16|ldg32]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

# ResNet-8 for CIFAR-10 (He et al.'s 6n+2 family, n = 1), NHWC, 3x3 SAME convolutions and the
# 1x1 stride-2 projection shortcuts: (name, H, W, Cin, Cout, kernel, stride).
LAYERS = [
    ("conv1 3->16", 32, 32, 3, 16, 3, 1),
    ("s1 16->16", 32, 32, 16, 16, 3, 1),
    ("s2 16->32 /2", 32, 32, 16, 32, 3, 2),
    ("s2 32->32", 16, 16, 32, 32, 3, 1),
    ("s2 proj 1x1 /2", 32, 32, 16, 32, 1, 2),
    ("s3 32->64 /2", 16, 16, 32, 64, 3, 2),
    ("s3 64->64", 8, 8, 64, 64, 3, 1),
    ("s3 proj 1x1 /2", 16, 16, 32, 64, 1, 2),
]


def same_padding(size, k, s):
    """TensorFlow's SAME split (top/left gets the smaller half)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=20, help="timed launches per kernel")
    p.add_argument("--multiplier", default=None,
                   help="a shipped multiplier name (default: a perturbed exact 8-bit table)")
    p.add_argument("--mode", choices=("smem16", "ldg32"), default=None,
                   help="force the table path (default: chosen per device)")
    args = p.parse_args(argv)

    import axkern.cuda as axcuda

    ok, reason = axcuda.is_available()
    if not ok:
        sys.exit(f"bench_cuda: no CUDA here, nothing to measure: {reason}")
    import pycuda.driver as drv
    import pycuda.gpuarray as gpuarray

    dev = axcuda._device()
    rng = np.random.default_rng(0)
    if args.multiplier:
        import axkern
        from axkern.backends import table256

        table = table256(axkern.load_multiplier(args.multiplier))
        tname = args.multiplier
    else:
        a = np.arange(256)
        table = (np.outer(a, a) + rng.integers(-64, 64, (256, 256))).clip(0, 65535).astype(np.int32)
        tname = "perturbed exact 8x8 unsigned"
    print(f"device: {reason}; table: {tname}; batch {args.batch}; {args.repeat} timed runs per kernel")
    print(f"{'layer':18s} {'MMAC':>8s} {'kernel':24s} {'approx ms':>9s} {'GMAC/s':>8s} "
          f"{'exact ms':>9s} {'GMAC/s':>8s} {'ratio':>6s}")

    def timed(fn):
        fn()  # warm-up: compilation, table upload, pool allocation
        start, end = drv.Event(), drv.Event()
        start.record()
        for _ in range(args.repeat):
            fn()
        end.record()
        end.synchronize()
        return start.time_till(end) / args.repeat

    tot_macs = tot_approx = tot_exact = 0.0
    for name, H, W, C, O, k, s in LAYERS:
        x = gpuarray.to_gpu(rng.integers(0, 256, (args.batch, H, W, C), dtype=np.uint8))
        w = gpuarray.to_gpu(rng.integers(0, 256, (k, k, C, O), dtype=np.uint8))
        padding = (*same_padding(H, k, s), *same_padding(W, k, s))
        OH, OW = -(-H // s), -(-W // s)
        K = k * k * C
        out_dtype = np.int32 if K * int(np.abs(table).max()) < 2**31 else np.int64
        macs = args.batch * OH * OW * O * K

        def approx():
            return axcuda.conv2d_on(dev, x, w, table, (s, s), padding, (1, 1), 1, 0, out_dtype,
                                    mode=args.mode)

        def exact():
            return axcuda.conv2d_on(dev, x, w, table, (s, s), padding, (1, 1), 1, 0, np.int32,
                                    mode="exact")

        ms_a, ms_e = timed(approx), timed(exact)
        kernel = axcuda.plan_igemm(args.batch * OH * OW, O, 1, out_dtype, table, dev.limits, True,
                                   mode=args.mode).kernel
        tot_macs += macs
        tot_approx += ms_a
        tot_exact += ms_e
        print(f"{name:18s} {macs / 1e6:8.1f} {kernel:24s} {ms_a:9.3f} {macs / ms_a / 1e6:8.1f} "
              f"{ms_e:9.3f} {macs / ms_e / 1e6:8.1f} {ms_e / ms_a:6.2f}")
    print(f"{'total':18s} {tot_macs / 1e6:8.1f} {'':24s} {tot_approx:9.3f} "
          f"{tot_macs / tot_approx / 1e6:8.1f} {tot_exact:9.3f} {tot_macs / tot_exact / 1e6:8.1f} "
          f"{tot_exact / tot_approx:6.2f}")
    print("GMAC/s = multiply-accumulates per second / 1e9; ratio = exact time / approximate time")


if __name__ == "__main__":
    main()
