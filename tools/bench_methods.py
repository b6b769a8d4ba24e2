#!/usr/bin/env python3
"""Paired timings of two kernel methods of axkern._fast on a depthwise 3x3 SAME layer.

The two methods alternate call by call in one process (each figure the best of 3 calls,
then the median over the rounds), so that the drifting speed of a shared machine hits both
alike. Prints GMAC/s of each method and their ratio, per dispatch path.

Example: ``python tools/bench_methods.py --shape 32,16,16,64 --rounds 15``.
"""
import argparse
import sys
import time

import numpy as np

from axkern import _fast
from axkern.bench import _table


def _best(f, n=3):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="32,16,16,64", help="N,H,W,C of the input")
    ap.add_argument("--methods", default="direct,depthwise", help="two methods to compare")
    ap.add_argument("--paths", default=None, help="paths (default: all this CPU runs)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    N, H, W, C = (int(v) for v in args.shape.split(","))
    m0, m1 = args.methods.split(",")
    paths = args.paths.split(",") if args.paths else _fast.available_paths()
    rng = np.random.default_rng(0)
    table = _table(rng)
    x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 3, 1, C), dtype=np.uint8)
    macs = N * H * W * C * 9
    print(f"depthwise 3x3 SAME, input {N}x{H}x{W}x{C}, int32 sums, {args.rounds} rounds")
    for path in paths:
        times = {m0: [], m1: []}
        for r in range(args.rounds):
            for m in ((m0, m1) if r % 2 == 0 else (m1, m0)):
                times[m].append(_best(lambda m=m: _fast.conv2d(
                    x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), C, 0, np.int32, args.threads,
                    path=path, method=m)))
        t0, t1 = np.median(times[m0]), np.median(times[m1])
        print(f"{path:12s} {m0} {macs / t0 / 1e9:.2f} GMAC/s, {m1} {macs / t1 / 1e9:.2f} "
              f"GMAC/s, {m1} / {m0} speed {t0 / t1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
