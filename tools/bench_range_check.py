#!/usr/bin/env python3
"""Cost of the outlier check (axkern.quant.check_range) inside axkern.axconv2d.

Times axconv2d with the check and with it replaced by a no-op, alternately (best of several
runs each), and the check alone, for a small, a medium and a large input. Single-threaded
kernels so that the comparison is not dominated by thread scheduling. Examples::

    python tools/bench_range_check.py
    python tools/bench_range_check.py --cases digits,mid --rounds 5 --multiplier mul8u_exact
"""
import argparse
import sys

import numpy as np

import axkern
import axkern.conv as conv
from axkern.bench import best_time as best
from axkern.bench import positive_int, run_tool, split_names
from axkern.quant import check_range, tf_quant_params

# key: (description, input shape, filter shape)
CASES = {
    "digits": ("digits conv1 (450,8,8,1) x (3,3,1,16)", (450, 8, 8, 1), (3, 3, 1, 16)),
    "mid": ("mid (8,32,32,32) x (3,3,32,32)", (8, 32, 32, 32), (3, 3, 32, 32)),
    "large": ("large (32,56,56,64) x (3,3,64,64)", (32, 56, 56, 64), (3, 3, 64, 64)),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated inputs, from {', '.join(CASES)} (default: all)")
    ap.add_argument("--multiplier", default="mul8u_drum4",
                    help="shipped name or file (default mul8u_drum4)")
    ap.add_argument("--rounds", type=positive_int, default=3,
                    help="alternating rounds with and without the check, the best counts "
                         "(default 3)")
    args = ap.parse_args(argv)
    cases = split_names(args.cases)
    if not cases:
        ap.error(f"--cases names nothing: got {args.cases!r}")
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"--cases: unknown case {bad[0]!r}: expected some of {', '.join(CASES)}")
    try:
        m = axkern.load_multiplier(args.multiplier)
    except (ValueError, OSError) as e:
        ap.error(f"--multiplier: {e}")
    return run_tool(ap.prog, _run, m, cases, args.rounds)


def _run(m, cases, rounds):
    rng = np.random.default_rng(0)
    real = conv.check_range
    for key in cases:
        name, xs, ws = CASES[key]
        x = rng.random(xs, dtype=np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        n = 5 if x.size > 1e6 else 30
        run = lambda: axkern.axconv2d(x, w, m, num_threads=1)  # noqa: E731
        run()
        res = {True: [], False: []}
        try:
            for _ in range(rounds):
                for on in (True, False):
                    conv.check_range = real if on else (lambda *a, **k: False)
                    res[on].append(best(run, n))
        finally:
            conv.check_range = real
        p = tf_quant_params(float(x.min()), float(x.max()))
        alone = best(lambda: check_range(x, p, "x"), 200)
        print(f"{name}: axconv2d {min(res[True]) * 1e3:.3f} ms with the check, "
              f"{min(res[False]) * 1e3:.3f} ms without; the check alone {alone * 1e6:.1f} us")


if __name__ == "__main__":
    sys.exit(main())
