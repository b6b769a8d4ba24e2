#!/usr/bin/env python3
"""Paired timings of two kernel methods of axkern._fast on the shapes of ``axkern bench``.

The two methods alternate call by call in one process (each figure the best of 3 calls,
then the median over the rounds), so that the drifting speed of a shared machine hits both
alike. Prints GMAC/s of each method (integer kernel alone, int32 sums) and their ratio, per
shape and dispatch path; a shape that either method cannot serve is skipped, with a line
that says why.

Examples::

    python tools/bench_methods.py --methods direct,expand --paths avx2
    python tools/bench_methods.py --methods direct,expand --paths avx512_vbmi  # AVX-512 VBMI CPUs
    python tools/bench_methods.py --shapes "depthwise 64 @16x16" --rounds 15
    python tools/bench_methods.py --depthwise 8,56,56,32   # another depthwise 3x3 layer
    python tools/bench_methods.py --methods depthwise,factored --shapes "depthwise 64 @16x16" \
        --multiplier mul8u_drum4   # a shipped table, by its factors

The table is synthetic (an exact product plus noise: no factors) unless ``--multiplier``
names a shipped multiplier or a file, whose own table the kernels take as the float-level
layers do (frozen, by its factors where it has them).
"""
import argparse
import sys

import numpy as np

import axkern
from axkern import _fast
from axkern.backends import table256
from axkern.bench import SHAPES, _table, conv_geometry, positive_int, split_names, thread_count
from axkern.bench import best_time as _best


def _kernel(kind, prm, table, rng, threads):
    """(MAC count, f(path, method)) for one shape of axkern.bench.SHAPES."""
    if kind == "conv":
        N, H, W, C, COUT, k, g = (prm[x] for x in ("N", "H", "W", "C", "COUT", "k", "groups"))
        s, pad, OH, OW = conv_geometry(prm)
        x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
        w = rng.integers(0, 256, (k, k, C // g, COUT), dtype=np.uint8)
        return N * OH * OW * COUT * k * k * (C // g), lambda path, m: _fast.conv2d(
            x, w, table, (s, s), pad, (1, 1), g, 0, np.int32, threads, path=path, method=m)
    M, K, N = prm["M"], prm["K"], prm["N"]
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(0, 256, (K, N), dtype=np.uint8)
    return M * K * N, lambda path, m: _fast.gemm(a, b, table, np.int32, threads, path=path,
                                                 method=m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s[0] for s in SHAPES]
    ap.add_argument("--shapes", default=None,
                    help=f"comma-separated names from {names} (default: all)")
    ap.add_argument("--depthwise", default=None, metavar="N,H,W,C",
                    help="instead of --shapes: one depthwise 3x3 SAME layer of this input")
    ap.add_argument("--methods", default="direct,depthwise",
                    help=f"two different methods to compare, comma-separated, from "
                         f"{', '.join(_fast.METHODS)} (default: direct,depthwise)")
    ap.add_argument("--paths", default=None,
                    help=f"comma-separated dispatch paths (default: all this CPU runs: "
                         f"{', '.join(_fast.available_paths())})")
    ap.add_argument("--rounds", type=positive_int, default=15,
                    help="rounds; each figure is the median over them (default 15)")
    ap.add_argument("--threads", type=thread_count, default=None,
                    help="threads of the kernels (default: OpenMP's)")
    ap.add_argument("--multiplier", default=None,
                    help="a shipped multiplier or file instead of the synthetic table")
    args = ap.parse_args(argv)
    methods = split_names(args.methods)
    if len(methods) != 2:
        ap.error(f"--methods: expected two different comma-separated methods, got "
                 f"{args.methods!r}")
    bad = [m for m in methods if m not in _fast.METHODS]
    if bad:
        ap.error(f"--methods: unknown kernel method {bad[0]!r}: expected some of "
                 f"{', '.join(_fast.METHODS)}")
    m0, m1 = methods
    avail = _fast.available_paths()
    paths = avail if args.paths is None else split_names(args.paths)
    if not paths:
        ap.error(f"--paths names nothing: got {args.paths!r}")
    for p in paths:
        if p not in _fast.PATHS:
            ap.error(f"--paths: unknown CPU path {p!r}: expected some of {', '.join(_fast.PATHS)}")
        if p not in avail:
            ap.error(f"--paths: CPU path {p!r} is not supported by this CPU: available "
                     f"{', '.join(avail)}")
    if args.depthwise:
        if args.shapes is not None:
            ap.error("--depthwise and --shapes exclude each other")
        try:
            N, H, W, C = (int(v) for v in args.depthwise.split(","))
        except ValueError:
            ap.error(f"--depthwise: expected four comma-separated integers N,H,W,C, got "
                     f"{args.depthwise!r}")
        if min(N, H, W, C) < 1:
            ap.error(f"--depthwise: N, H, W and C must be >= 1, got {args.depthwise!r}")
        chosen = [(f"depthwise {C} @{H}x{W}, batch {N}", "conv",
                   dict(N=N, H=H, W=W, C=C, COUT=C, k=3, groups=C))]
    else:
        want = names if args.shapes is None else split_names(args.shapes)
        if not want:
            ap.error(f"--shapes names nothing: got {args.shapes!r}")
        bad = [s for s in want if s not in names]
        if bad:
            ap.error(f"unknown shapes {bad}: expected some of {names}")
        chosen = [s for s in SHAPES if s[0] in want]
    rng = np.random.default_rng(0)
    try:
        table = (table256(axkern.load_multiplier(args.multiplier)) if args.multiplier
                 else _table(rng))
    except (ValueError, OSError) as e:
        ap.error(f"--multiplier: {e}")
    what = f"table of {args.multiplier}" if args.multiplier else "synthetic table"
    print(f"{m1} against {m0}, int32 sums, {what}, median of {args.rounds} rounds")
    timed = 0
    try:
        for name, kind, prm in chosen:
            macs, f = _kernel(kind, prm, table, rng, args.threads)
            for path in paths:
                cannot = []
                for m in (m0, m1):
                    try:
                        f(path, m)
                    except ValueError as e:   # this method cannot serve this shape
                        cannot.append(f"{m} cannot serve it ({e})")
                if cannot:
                    print(f"{name:22s} {path:12s} skipped: " + "; ".join(cannot), flush=True)
                    continue
                times = {m0: [], m1: []}
                for r in range(args.rounds):
                    for m in ((m0, m1) if r % 2 == 0 else (m1, m0)):
                        times[m].append(_best(lambda m=m: f(path, m)))
                t0, t1 = np.median(times[m0]), np.median(times[m1])
                timed += 1
                print(f"{name:22s} {path:12s} {m0} {macs / t0 / 1e9:6.2f} GMAC/s, "
                      f"{m1} {macs / t1 / 1e9:6.2f} GMAC/s, {m1} / {m0} speed {t0 / t1:.2f}",
                      flush=True)
    except KeyboardInterrupt:
        print(f"{ap.prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, MemoryError) as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    if not timed:
        print(f"{ap.prog}: error: nothing timed: {m0} and {m1} cannot both serve any chosen "
              f"shape on any chosen path (see the lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
