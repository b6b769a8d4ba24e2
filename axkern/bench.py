"""``axkern bench``: speed of the fast CPU kernels against float32 BLAS, from one run.

For each shape (the ResNet-8 CIFAR-10 convolutions at batch 32, NHWC, 3x3 SAME; the GEMM
M=8192, K=576, N=64; a depthwise convolution and a small GEMM) and each dispatch path of
:mod:`axkern._fast` the table gives

* ``kernel``: GMAC/s of the integer kernel alone (uint8 codes in, int32 sums out);
* ``api``: GMAC/s of the float-level call (``axconv2d`` / ``axmatmul``: quantization,
  kernel and zero-point corrections), when that layer is installed;
* ``blas``: GMAC/s of float32 NumPy matmul on the same im2col GEMM shape
  (M = N*OH*OW, K = KH*KW*Cin/groups, N = Cout; depthwise: one GEMM per channel group is not
  what BLAS would do, so the dense im2col shape of the same MAC count is used);
* ``kernel / BLAS`` and ``api / BLAS``: time of the kernel and of the float-level call
  divided by the time of the BLAS matmul, measured in the same run. Lower is better; 1.0
  would match float32 BLAS.

Every figure is the best of ``--repeat`` timed calls, each right after an untimed one; the
calls of a shape are timed in rounds (one of each per round), so that all its figures come
from the same stretch of time.
"""
from __future__ import annotations

import time

import numpy as np

from . import _json

__all__ = ["add_parser", "run_bench", "format_table", "SHAPES", "main"]

# name, kind, parameters
SHAPES = (
    ("conv 16->16 @32x32", "conv", dict(N=32, H=32, W=32, C=16, COUT=16, k=3, groups=1)),
    ("conv 32->32 @16x16", "conv", dict(N=32, H=16, W=16, C=32, COUT=32, k=3, groups=1)),
    ("conv 64->64 @8x8", "conv", dict(N=32, H=8, W=8, C=64, COUT=64, k=3, groups=1)),
    ("gemm 8192x576x64", "gemm", dict(M=8192, K=576, N=64)),
    ("depthwise 64 @16x16", "conv", dict(N=32, H=16, W=16, C=64, COUT=64, k=3, groups=64)),
    ("gemm 8x2048x1024", "gemm", dict(M=8, K=2048, N=1024)),
)


class _ForcedPath:
    """A backend object for axkern.backends.get_backend that runs one dispatch path (and,
    with ``method``, one kernel method: see axkern._fast)."""

    SUPPORTS_OUT = True  # forwards out= and dequant= (see axkern._fast)
    SUPPORTS_DEQUANT = True

    def __init__(self, fast, path, method=None):
        self._fast, self.path, self.method = fast, path, method

    def gemm(self, *args, **kw):
        return self._fast.gemm(*args, path=self.path, method=self.method, **kw)

    def conv2d(self, *args, **kw):
        return self._fast.conv2d(*args, path=self.path, method=self.method, **kw)


def _timed(f):
    """Seconds of one call of f, right after an untimed one (thread pools awake: a pool that
    has gone to sleep takes a while to wake up, which would be timed instead)."""
    f()
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _settle(seconds=0.3):
    """Let worker threads that spin after a call go to sleep: OpenBLAS's keep spinning for a
    while after a matmul and would compete with the next kernel for the same cores."""
    time.sleep(seconds)


def _table(rng):
    # Exact 8-bit unsigned product plus noise: the 16-bit table class of real circuits.
    t = np.outer(np.arange(256), np.arange(256)) + rng.integers(-64, 65, (256, 256))
    return np.clip(t, 0, 65535).astype(np.int32)


def run_bench(paths=None, repeat=3, num_threads=None, shapes=None, api=True, seed=0,
              methods=None):
    """Time every shape on every path.

    Parameters
    ----------
    paths : sequence of str, optional
        Dispatch paths (default: all that this CPU supports).
    repeat : int
        Timed calls per measurement (the best one counts).
    num_threads : int, optional
        OpenMP threads for the kernels (default: OMP_NUM_THREADS or all cores). BLAS uses
        its own default.
    shapes : sequence of str, optional
        Names from :data:`SHAPES` (default: all).
    api : bool
        Also time the float-level ``axconv2d``/``axmatmul`` calls when available.
    seed : int
    methods : sequence of str, optional
        Kernel methods to force, each timed on every path (default: the automatic choice
        only); a method that cannot serve a shape (``"depthwise"`` on a dense layer, say)
        is left out for that shape.

    Returns
    -------
    list of dict
        One record per (shape, path, method): ``shape, path, method, macs, kernel_s,
        kernel_gmacs, api_s, api_gmacs, blas_s, blas_gmacs, kernel_ratio, api_ratio``
        (``method`` None for the automatic choice; ``api_*`` None when the float-level call
        was not timed).
    """
    from . import _fast

    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    avail = _fast.available_paths()
    paths = list(avail if paths is None else paths)
    for p in paths:
        if p not in _fast.PATHS:
            raise ValueError(f"unknown CPU path {p!r}: expected some of {_fast.PATHS}")
        if p not in avail:
            raise ValueError(f"CPU path {p!r} is not supported by this CPU: available {avail}")
    methods = [None] if methods is None else list(methods)
    for m in methods:
        if m is not None and m not in _fast.METHODS:
            raise ValueError(f"unknown kernel method {m!r}: expected some of {_fast.METHODS}")
    names = [s[0] for s in SHAPES]
    if shapes is not None:
        bad = [s for s in shapes if s not in names]
        if bad:
            raise ValueError(f"unknown shapes {bad}: expected some of {names}")
    chosen = [s for s in SHAPES if shapes is None or s[0] in shapes]
    rng = np.random.default_rng(seed)
    table = _table(rng)
    mult = None
    if api:
        try:
            from .lut import Multiplier
            from .conv import axconv2d
            from .matmul import axmatmul
            mult = Multiplier(table, name="bench")
        except ImportError:  # the float-level layer is not there: kernel figures only
            mult = None
    records = []
    for name, kind, prm in chosen:
        if kind == "conv":
            N, H, W, C, COUT, k, g = (prm[x] for x in ("N", "H", "W", "C", "COUT", "k", "groups"))
            macs = N * H * W * COUT * k * k * (C // g)
            bm, bk, bn = N * H * W, k * k * (C // g), COUT
            if g > 1:  # same MAC count as a dense GEMM with one output column per channel
                bm, bk, bn = N * H * W, k * k, COUT
            x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
            w = rng.integers(0, 256, (k, k, C // g, COUT), dtype=np.uint8)
            xf = rng.standard_normal((N, H, W, C)).astype(np.float32)
            wf = rng.standard_normal((k, k, C // g, COUT)).astype(np.float32)
            pad = (k // 2, k // 2, k // 2, k // 2)

            def kern(p, m, x=x, w=w, pad=pad, g=g):
                return _fast.conv2d(x, w, table, (1, 1), pad, (1, 1), g, 0, np.int32,
                                    num_threads, path=p, method=m)

            def call(p, m, xf=xf, wf=wf, g=g):
                return axconv2d(xf, wf, mult, padding="SAME", groups=g,
                                backend=_ForcedPath(_fast, p, m), num_threads=num_threads)
        else:
            M, K, N = prm["M"], prm["K"], prm["N"]
            macs, (bm, bk, bn) = M * K * N, (M, K, N)
            a = rng.integers(0, 256, (M, K), dtype=np.uint8)
            b = rng.integers(0, 256, (K, N), dtype=np.uint8)
            af = rng.standard_normal((M, K)).astype(np.float32)
            bf = rng.standard_normal((K, N)).astype(np.float32)

            def kern(p, m, a=a, b=b):
                return _fast.gemm(a, b, table, np.int32, num_threads, path=p, method=m)

            def call(p, m, af=af, bf=bf):
                return axmatmul(af, bf, mult, backend=_ForcedPath(_fast, p, m),
                                num_threads=num_threads)
        A = rng.standard_normal((bm, bk)).astype(np.float32)
        B = rng.standard_normal((bk, bn)).astype(np.float32)
        # Rounds of one timed call of each (every path's kernel and float-level call, then
        # BLAS), so that every figure's best comes from the same stretch of time: on a
        # shared machine the speed swings by tens of percent from second to second.
        variants = []
        for p in paths:
            for m in methods:
                try:
                    kern(p, m)   # warm-up (page faults, caches), and can m serve it?
                except ValueError:
                    if m is None:
                        raise
                    continue
                variants.append((p, m))
        fns = [(v, "kernel", lambda v=v: kern(*v)) for v in variants]
        if mult is not None:
            fns += [(v, "api", lambda v=v: call(*v)) for v in variants]
        best = {}
        for f in [g for _, _, g in fns] + [lambda: A @ B]:
            f()   # warm-up: page faults, caches
        _settle()
        for _ in range(repeat):
            for p, what, f in fns:
                best[p, what] = min(best.get((p, what), np.inf), _timed(f))
            _settle(0.02)   # OpenMP workers spin briefly after a call: not on BLAS's time
            best["blas"] = min(best.get("blas", np.inf), _timed(lambda: A @ B))
            _settle()
        blas_s = best["blas"]
        timed = [(v, best[v, "kernel"], best.get((v, "api"))) for v in variants]
        for (p, m), ks, api_s in timed:
            records.append(dict(
                shape=name, path=p, method=m, macs=macs, kernel_s=ks,
                kernel_gmacs=macs / ks / 1e9,
                api_s=api_s, api_gmacs=None if api_s is None else macs / api_s / 1e9,
                blas_s=blas_s, blas_gmacs=macs / blas_s / 1e9, kernel_ratio=ks / blas_s,
                api_ratio=None if api_s is None else api_s / blas_s))
    return records


def format_table(records):
    """Markdown table of :func:`run_bench` records."""
    lines = ["| shape | path | kernel GMAC/s | api GMAC/s | float32 BLAS GMAC/s | "
             "kernel / BLAS | api / BLAS |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        api = "-" if r["api_gmacs"] is None else f"{r['api_gmacs']:.1f}"
        apir = "-" if r["api_ratio"] is None else f"{r['api_ratio']:.2f}"
        path = r["path"] if r.get("method") is None else f"{r['path']} ({r['method']})"
        lines.append(f"| {r['shape']} | {path} | {r['kernel_gmacs']:.1f} | {api} | "
                     f"{r['blas_gmacs']:.1f} | {r['kernel_ratio']:.2f} | {apir} |")
    return "\n".join(lines)


def _cmd(args):
    if args.networks is not None:   # whole networks in PyTorch: axkern.netbench
        from . import netbench

        depths = netbench._depths(args.networks)
        try:
            netbench.report(depths, batch=args.batch, multiplier=args.multiplier,
                            repeat=args.repeat, num_threads=args.threads, as_json=args.json)
        except ImportError as e:   # PyTorch missing: the extra to install, no traceback
            print(f"axkern bench: {e}", file=__import__("sys").stderr)
            return 2
        return 0
    from . import _fast

    paths = None if not args.paths else [p.strip() for p in args.paths.split(",") if p.strip()]
    shapes = None if not args.shapes else [s.strip() for s in args.shapes.split(",")]
    methods = None if not args.methods else [m.strip() for m in args.methods.split(",")
                                             if m.strip()]
    recs = run_bench(paths=paths, repeat=args.repeat, num_threads=args.threads, shapes=shapes,
                     api=not args.kernel_only, methods=methods)
    if args.json:
        print(_json.dumps(recs, indent=2))
    else:
        import os

        print(f"axkern bench: paths available {_fast.available_paths()}, default "
              f"{_fast.default_path()}, {os.cpu_count()} CPUs, "
              f"threads {args.threads or 'default'}, best of {args.repeat}")
        print(format_table(recs))
    return 0


def add_parser(subparsers):
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "bench", help="GMAC/s of the fast CPU kernels on every dispatch path vs float32 BLAS",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", default=None,
                   help="comma-separated dispatch paths (default: all this CPU supports)")
    p.add_argument("--shapes", default=None,
                   help="comma-separated shape names (default: all): "
                        + "; ".join(s[0] for s in SHAPES))
    p.add_argument("--methods", default=None,
                   help="comma-separated kernel methods to force, each on every path "
                        "(default: the automatic choice), e.g. direct,expand")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per figure (best counts)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for the kernels")
    p.add_argument("--kernel-only", action="store_true",
                   help="skip the float-level axconv2d/axmatmul timings")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--networks", nargs="?", const="8,20,32,50,62", default=None,
                   metavar="DEPTHS",
                   help="instead: whole CIFAR ResNets (default depths 8,20,32,50,62), float32 "
                        "PyTorch against axkern.torch (tools/bench_networks.py has more options)")
    p.add_argument("--batch", type=int, default=128, help="with --networks: images per call")
    p.add_argument("--multiplier", default="mul8u_drum4", help="with --networks: the multiplier")
    p.set_defaults(func=_cmd)
    return p


def main(argv=None):
    """Run ``axkern bench`` as a standalone program (tools/bench_cpu.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="bench_cpu")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["bench", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)
