#!/usr/bin/env python3
"""Where the time of a float-level call goes: each stage of ``axconv2d`` / ``axmatmul`` on the
fast CPU path timed on its own, next to the whole call, in both layouts.

For each shape of ``axkern bench`` (the linear layer and the convolutions): the input's
range (``min_max``), its quantization to table indices (``quantize_indices``; NCHW: planar
to NHWC in the same pass), the kernel with integer sums, the kernel with the dequantizing
store (NHWC and NCHW outputs), and the whole call (``api``, NHWC and NCHW). The weight side
is prepared once, as in a network run batch after batch. All of them alternate call by call
in one process (each figure the best of 3 calls, then the median over the rounds), so that
the drifting speed of a shared machine hits all alike. ``api - parts`` is the median of the
call minus range, quantization and dequantizing kernel, round by round: the Python work and
the small C passes around the kernel.

Examples::

    python tools/bench_stages.py --threads 2 --rounds 15
    python tools/bench_stages.py --shapes "depthwise 64 @16x16" --threads 1
    python tools/bench_stages.py --small --threads 1     # the fixed cost of a call
    python tools/bench_stages.py --multiplier mul8u_drum4  # a shipped table (factored)

With ``--multiplier`` a table whose weight zero point is not folded (a factored table that
folding would give one more factor) also shows its ``window`` sums, counted among the parts.
"""
import argparse
import sys

import numpy as np

import axkern
from axkern import _fast
from axkern.bench import (SHAPES, _NewRange, _table, conv_geometry, positive_int, run_tool,
                          split_names, thread_count)
from axkern.bench import best_time as _best
from axkern.conv import _prepare_weights, checked_params, resolve_quant, scale_and_zp


def _conv_stages(prm, m, rng, T):
    N, H, W, C, COUT, k, g = (prm[x] for x in ("N", "H", "W", "C", "COUT", "k", "groups"))
    s, pad, OH, OW = conv_geometry(prm)
    xf = rng.standard_normal((N, H, W, C)).astype(np.float32)
    wf = rng.standard_normal((k, k, C // g, COUT)).astype(np.float32)
    xn = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
    wn = np.ascontiguousarray(wf.transpose(3, 2, 0, 1))
    spec = resolve_quant("auto", m)
    xp = checked_params(xf, spec.input, m, "x", fast=_fast)
    pw = _prepare_weights(wf, spec.weight, m, None, _fast, fold=True)
    sx, zx = scale_and_zp(xp)
    K = k * k * (C // g)
    dq = pw.dequant(sx, int(zx), None)[0]
    xi = _fast.quantize_indices(xf, xp)
    geo = ((s, s), pad, (1, 1), g, int(zx) & 255, pw.dtype, T)
    window = not pw.folded and pw.zw_any
    if window:   # the correction the fold would have carried, as axconv2d adds it
        dq["zw"] = pw.zw
        dq["sumx"] = _fast.window_sums(xi, m.values(), (k, k), (s, s), geo[1], (1, 1), g,
                                       geo[4], T)
    # the calls' inputs take a new range every call, as in axkern bench (the parts above
    # work on the first one's parameters)
    xf_new, xn_new = _NewRange(xf.copy()), _NewRange(xn.copy())
    stages = {
        "range": lambda: _fast.min_max(xf, T),
        "quant": lambda: _fast.quantize_indices(xf, xp, num_threads=T),
        "quant NCHW": lambda: _fast.quantize_indices(xn, xp, num_threads=T, from_nchw=True),
        "kernel int": lambda: _fast.conv2d(xi, pw.wi, pw.table, *geo),
        "kernel dq": lambda: _fast.conv2d(xi, pw.wi, pw.table, *geo, dequant=dq),
        "kernel dq NCHW": lambda: _fast.conv2d(xi, pw.wi, pw.table, *geo, dequant=dq,
                                               out_format="NCHW"),
        "api": lambda: axkern.axconv2d(xf_new(), wf, m, stride=s, groups=g, num_threads=T),
        "api NCHW": lambda: axkern.axconv2d(xn_new(), wn, m, stride=s, groups=g,
                                            num_threads=T, data_format="NCHW"),
    }
    parts = ("range", "quant", "kernel dq")
    if window:
        stages["window"] = lambda: _fast.window_sums(xi, m.values(), (k, k), (s, s), geo[1],
                                                     (1, 1), g, geo[4], T)
        parts += ("window",)
    return N * OH * OW * COUT * K, stages, parts


def _gemm_stages(prm, m, rng, T):
    M, K, N = prm["M"], prm["K"], prm["N"]
    af = rng.standard_normal((M, K)).astype(np.float32)
    bf = rng.standard_normal((K, N)).astype(np.float32)
    spec = resolve_quant("auto", m)
    ap = checked_params(af, spec.input, m, "a", fast=_fast)
    pb = _prepare_weights(bf, spec.weight, m, None, _fast, fold=False, name="b")
    sa, za = scale_and_zp(ap)
    ai, sum_a = _fast.quantize_indices(af, ap, row_sums=True)
    dq = dict(pb.dequant(sa, int(za), None)[0], zw=pb.zw, sumx=sum_a.reshape(-1, 1))
    af_new = _NewRange(af.copy())
    stages = {
        "range": lambda: _fast.min_max(af, T),
        "quant": lambda: _fast.quantize_indices(af, ap, row_sums=True, num_threads=T),
        "kernel int": lambda: _fast.gemm(ai, pb.wi, table_of(m), np.int32, T),
        "kernel dq": lambda: _fast.gemm(ai, pb.wi, table_of(m), np.int32, T, dequant=dq),
        "api": lambda: axkern.axmatmul(af_new(), bf, m, num_threads=T),
    }
    return M * K * N, stages, ("range", "quant", "kernel dq")


def table_of(m):
    from axkern.backends import table256
    return table256(m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s[0] for s in SHAPES if s[1] == "conv" or s[0].startswith("linear")]
    ap.add_argument("--shapes", default=None,
                    help=f"comma-separated names from {names} (default: all)")
    ap.add_argument("--rounds", type=positive_int, default=15,
                    help="rounds; each figure is the median over them (default 15)")
    ap.add_argument("--threads", type=thread_count, default=None,
                    help="threads of every stage (default: OpenMP's)")
    ap.add_argument("--multiplier", default=None,
                    help="a shipped multiplier or file instead of the synthetic table")
    ap.add_argument("--small", action="store_true",
                    help="the fixed cost of a call: each layer on one 4 x 4 image (the linear "
                         "layer on one row)")
    args = ap.parse_args(argv)
    want = names if args.shapes is None else split_names(args.shapes)
    if not want:
        ap.error(f"--shapes names nothing: got {args.shapes!r}")
    bad = [s for s in want if s not in names]
    if bad:
        ap.error(f"unknown shapes {bad}: expected some of {names}")
    rng = np.random.default_rng(0)
    try:
        m = (axkern.load_multiplier(args.multiplier) if args.multiplier
             else axkern.Multiplier(_table(rng), name="bench"))
    except (ValueError, OSError) as e:
        ap.error(f"--multiplier: {e}")
    return run_tool(ap.prog, _run, args, want, m, rng)


def _run(args, want, m, rng):
    T = args.threads
    print(f"path {_fast.default_path()}, threads {T or _fast.max_threads()}, ms (median of "
          f"{args.rounds} rounds of best-of-3)")
    for name, kind, prm in SHAPES:
        if name not in want:
            continue
        if args.small:
            prm = dict(prm, N=1, H=4, W=4) if kind == "conv" else dict(prm, M=1)
        macs, stages, parts = (_conv_stages if kind == "conv" else _gemm_stages)(prm, m, rng, T)
        for f in stages.values():
            f()
        times = {s: [] for s in stages}
        for _ in range(args.rounds):
            for s, f in stages.items():
                times[s].append(_best(f))
        t = {s: np.array(v) for s, v in times.items()}
        rest = np.median(t["api"] - sum(t[s] for s in parts))
        cols = "  ".join(f"{s} {np.median(v) * 1e3:.3f}" for s, v in t.items())
        print(f"{name}: {cols}  api - parts {rest * 1e3:.3f}; api "
              f"{macs / np.median(t['api']) / 1e9:.1f} GMAC/s, kernel dq "
              f"{macs / np.median(t['kernel dq']) / 1e9:.1f} GMAC/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
