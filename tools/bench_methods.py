#!/usr/bin/env python3
"""Paired timings of two kernel methods of axkern._fast on the shapes of ``axkern bench``.

The two methods alternate call by call in one process (each figure the best of 3 calls,
then the median over the rounds), so that the drifting speed of a shared machine hits both
alike. Prints GMAC/s of each method (integer kernel alone, int32 sums) and their ratio, per
shape and dispatch path; a method that cannot serve a shape is left out.

Examples::

    python tools/bench_methods.py --methods direct,expand --paths avx512_vbmi
    python tools/bench_methods.py --shapes "depthwise 64 @16x16" --rounds 15
    python tools/bench_methods.py --depthwise 8,56,56,32   # another depthwise 3x3 layer
"""
import argparse
import sys

import numpy as np

from axkern import _fast
from axkern.bench import SHAPES, _table
from axkern.bench import best_time as _best


def _kernel(kind, prm, table, rng, threads):
    """(MAC count, f(path, method)) for one shape of axkern.bench.SHAPES."""
    if kind == "conv":
        N, H, W, C, COUT, k, g = (prm[x] for x in ("N", "H", "W", "C", "COUT", "k", "groups"))
        x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
        w = rng.integers(0, 256, (k, k, C // g, COUT), dtype=np.uint8)
        p = k // 2
        return N * H * W * COUT * k * k * (C // g), lambda path, m: _fast.conv2d(
            x, w, table, (1, 1), (p, p, p, p), (1, 1), g, 0, np.int32, threads,
            path=path, method=m)
    M, K, N = prm["M"], prm["K"], prm["N"]
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(0, 256, (K, N), dtype=np.uint8)
    return M * K * N, lambda path, m: _fast.gemm(a, b, table, np.int32, threads, path=path,
                                                 method=m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [s[0] for s in SHAPES]
    ap.add_argument("--shapes", default=None,
                    help=f"comma-separated names from {names} (default: all)")
    ap.add_argument("--depthwise", default=None, metavar="N,H,W,C",
                    help="instead of --shapes: one depthwise 3x3 SAME layer of this input")
    ap.add_argument("--methods", default="direct,depthwise", help="two methods to compare")
    ap.add_argument("--paths", default=None, help="paths (default: all this CPU runs)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    m0, m1 = args.methods.split(",")
    paths = args.paths.split(",") if args.paths else _fast.available_paths()
    if args.depthwise:
        N, H, W, C = (int(v) for v in args.depthwise.split(","))
        chosen = [(f"depthwise {C} @{H}x{W}, batch {N}", "conv",
                   dict(N=N, H=H, W=W, C=C, COUT=C, k=3, groups=C))]
    else:
        want = names if args.shapes is None else args.shapes.split(",")
        bad = [s for s in want if s not in names]
        if bad:
            ap.error(f"unknown shapes {bad}: expected some of {names}")
        chosen = [s for s in SHAPES if s[0] in want]
    rng = np.random.default_rng(0)
    table = _table(rng)
    print(f"{m1} against {m0}, int32 sums, median of {args.rounds} rounds")
    for name, kind, prm in chosen:
        macs, f = _kernel(kind, prm, table, rng, args.threads)
        for path in paths:
            try:
                f(path, m0), f(path, m1)
            except ValueError:
                continue   # a method that cannot serve this shape
            times = {m0: [], m1: []}
            for r in range(args.rounds):
                for m in ((m0, m1) if r % 2 == 0 else (m1, m0)):
                    times[m].append(_best(lambda m=m: f(path, m)))
            t0, t1 = np.median(times[m0]), np.median(times[m1])
            print(f"{name:22s} {path:12s} {m0} {macs / t0 / 1e9:6.2f} GMAC/s, "
                  f"{m1} {macs / t1 / 1e9:6.2f} GMAC/s, {m1} / {m0} speed {t0 / t1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
