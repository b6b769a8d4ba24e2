"""``axkern bench``: speed of the fast CPU kernels against float32 PyTorch and BLAS, from one run.

For each shape (the ResNet-8 CIFAR-10 convolutions at batch 32, 3x3 SAME; the GEMM
M=8192, K=576, N=64; a depthwise convolution, a small GEMM and a 256 x 1024 -> 1024 linear
layer) and each dispatch path of :mod:`axkern._fast` the table gives

* ``kernel``: GMAC/s of the integer kernel alone (uint8 codes in, int32 sums out);
* ``api``: GMAC/s of the float-level call (``axconv2d`` / ``axmatmul``: quantization,
  kernel and zero-point corrections), when that layer is installed; for convolutions in
  both layouts (``NHWC`` with HWIO filters, ``NCHW`` with OIHW filters). The input's range
  changes before every call (its first value raised), as a layer's does batch after batch,
  so that each call computes its quantization parameters;
* ``torch``: GMAC/s of float32 PyTorch (``torch.nn.functional.conv2d`` / ``linear``, same
  thread count) when torch is installed, convolutions in NCHW (its default) and
  ``channels_last``; PyTorch's time depends on where its buffers land (the same call can
  take 2.5 times as long on another copy of the input), so every round times it on fresh
  copies of the input and the best counts;
* ``api / torch``: time of the float-level call divided by PyTorch's best time (the faster
  of its two layouts), per layout of the call;
* ``blas``: GMAC/s of float32 NumPy matmul on the same im2col GEMM shape
  (M = N*OH*OW, K = KH*KW*Cin/groups, N = Cout; depthwise: one GEMM per channel group is not
  what BLAS would do, so the dense im2col shape of the same MAC count is used);
* ``kernel / BLAS`` and ``api / BLAS``: time of the kernel and of the float-level call
  divided by the time of the BLAS matmul, measured in the same run. Lower is better; 1.0
  would match float32 BLAS.

Every figure is the best of ``--repeat`` timed calls, each right after an untimed one; the
calls of a shape are timed in rounds (one of each per round), so that all its figures come
from the same stretch of time. ``--runs N`` repeats the whole benchmark and prints the
median of every figure over the runs (each ratio taken within its run), with the range of
the ratios to PyTorch: on a machine whose speed drifts by tens of percent from minute to
minute, one run can flatter or wrong either side.
"""
from __future__ import annotations

import sys
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
    ("linear 256x1024->1024", "gemm", dict(M=256, K=1024, N=1024)),
    # ResNet-18's last stage on one image: few pixels by many filters
    ("conv 512->512 @7x7 N1", "conv", dict(N=1, H=7, W=7, C=512, COUT=512, k=3, groups=1)),
    # MobileNet's first stride-2 depthwise layer and an EfficientNet 5 x 5 one, on one image
    ("depthwise 96 @112x112 stride 2 N1", "conv",
     dict(N=1, H=112, W=112, C=96, COUT=96, k=3, groups=96, stride=2)),
    ("depthwise 5x5 240 @28x28 N1", "conv",
     dict(N=1, H=28, W=28, C=240, COUT=240, k=5, groups=240)),
)


def conv_geometry(prm):
    """``(stride, (top, bottom, left, right), OH, OW)`` of a conv entry of :data:`SHAPES`:
    SAME padding at the entry's stride (1 unless it says), as ``axconv2d`` resolves it."""
    from .backends import conv_output_size
    from .conv import resolve_padding

    s, k, H, W = prm.get("stride", 1), prm["k"], prm["H"], prm["W"]
    pads = resolve_padding("SAME", H, W, k, k, (s, s), (1, 1))
    return (s, pads) + conv_output_size(H, W, k, k, (s, s), pads, (1, 1))


#: Fresh copies of the input PyTorch is timed on in each round (its best counts); every
#: other figure gets as many timed calls per round.
TORCH_COPIES = 3


class _ForcedPath:
    """A backend object for axkern.backends.get_backend that runs one dispatch path (and,
    with ``method``, one kernel method: see axkern._fast)."""

    SUPPORTS_OUT = True  # forwards out= and dequant= (see axkern._fast)
    SUPPORTS_DEQUANT = True
    SUPPORTS_NCHW = True
    SUPPORTS_NCHW_IN = True

    def __init__(self, fast, path, method=None):
        self._fast, self.path, self.method = fast, path, method

    SUPPORTS_PACKED = True

    def factored_weights(self, *args, **kw):
        return self._fast.factored_weights(*args, **kw)

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


def best_time(f, repeat=3):
    """The shortest of ``repeat`` timed calls of ``f``, in seconds (the benchmark tools')."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


class _NewRange:
    """A float input whose range changes before every use, as a layer's input does batch
    after batch: its first value set a little above the largest (a new maximum each time),
    so that every call computes its quantization parameters, as it would on new data,
    instead of finding them remembered for the bench's one input."""

    def __init__(self, x):
        self.x, self.top, self.n = x, float(np.max(np.abs(x))), 0

    def __call__(self):
        self.n += 1
        self.x.flat[0] = self.top * (1.0 + self.n * 2.0 ** -20)
        return self.x


def _settle(seconds=0.3):
    """Let worker threads that spin after a call go to sleep: OpenBLAS's keep spinning for a
    while after a matmul and would compete with the next kernel for the same cores."""
    time.sleep(seconds)


def _table(rng, signed=False):
    # Exact 8-bit product plus noise within +-64: a near-exact circuit of the 16-bit table
    # class, without factors (in the byte-residual class of the expanded tables). Signed
    # tables are indexed by the codes' two's-complement bit patterns, as a signed
    # Multiplier's.
    if signed:
        from .lut import operand_values

        v = operand_values(8, True).astype(np.int64)
        return (np.outer(v, v) + rng.integers(-64, 65, (256, 256))).astype(np.int32)
    t = np.outer(np.arange(256), np.arange(256)) + rng.integers(-64, 65, (256, 256))
    return np.clip(t, 0, 65535).astype(np.int32)


def _torch():
    """torch and torch.nn.functional, or (None, None) when torch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None
    return torch, F


def run_bench(paths=None, repeat=3, num_threads=None, shapes=None, api=True, seed=0,
              methods=None, torch=True, signed=False, multiplier=None, skipped=None):
    """Time every shape on every path.

    Parameters
    ----------
    paths : sequence of str, optional
        Dispatch paths (default: all that this CPU supports).
    repeat : int
        Timed rounds (the best call of each figure counts).
    num_threads : int, optional
        OpenMP threads for the kernels and for PyTorch (default: OMP_NUM_THREADS or all
        cores). BLAS uses its own default.
    shapes : sequence of str, optional
        Names from :data:`SHAPES` (default: all).
    api : bool
        Also time the float-level ``axconv2d``/``axmatmul`` calls when available
        (convolutions in NHWC and in NCHW).
    seed : int
    methods : sequence of str, optional
        Kernel methods to force, each timed on every path (default: the automatic choice
        only); a method that cannot serve a shape (``"depthwise"`` on a dense layer, say)
        is left out for that shape.
    torch : bool
        Also time float32 PyTorch when it is installed.
    signed : bool
        A signed multiplier's table (and so symmetric quantization in the float-level
        calls) instead of an unsigned one.
    multiplier : str or Multiplier, optional
        Time this multiplier's table (a shipped name, a path, or a
        :class:`~axkern.lut.Multiplier`) instead of the synthetic one: an exact product plus
        noise within +-64, a near-exact 16-bit table without factors (the expanded tables'
        speed; on AVX2, and on AVX-512 with VNNI, their byte-residual form, see
        :func:`axkern._fast.byte_residual`, which tables of larger errors do not take).
        Tables with exact low-rank factors (DRUM, perforated, exact, some truncated ones;
        see :mod:`axkern.lowrank`) take the factored method, much faster.
    skipped : list, optional
        Where to append ``(shape, path, method, reason)`` for every forced method that
        cannot serve a shape (and so has no record).

    Returns
    -------
    list of dict
        One record per (shape, path, method): ``shape, path, method, macs, kernel_s,
        kernel_gmacs, api_s, api_gmacs, blas_s, blas_gmacs, kernel_ratio, api_ratio``,
        ``api_nchw_s`` (convolutions), ``torch_s`` (NCHW or linear), ``torch_cl_s``
        (``channels_last``), ``torch_best_s`` (the faster), ``api_torch`` and
        ``api_nchw_torch`` (api times over ``torch_best_s``). ``method`` is None for the
        automatic choice; figures that were not timed are None.
    """
    from . import _fast

    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    if num_threads is not None:
        from .backends import _check_threads

        _check_threads(num_threads)
    avail = _fast.available_paths()
    paths = list(dict.fromkeys(avail if paths is None else paths))   # duplicates dropped
    if not paths:
        raise ValueError("paths is empty: name at least one dispatch path (or None for all)")
    for p in paths:
        if p not in _fast.PATHS:
            raise ValueError(f"unknown CPU path {p!r}: expected some of {_fast.PATHS}")
        if p not in avail:
            raise ValueError(f"CPU path {p!r} is not supported by this CPU: available {avail}")
    methods = [None] if methods is None else list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("methods is empty: name at least one kernel method (or None)")
    for m in methods:
        if m is not None and m not in _fast.METHODS:
            raise ValueError(f"unknown kernel method {m!r}: expected some of {_fast.METHODS}")
    names = [s[0] for s in SHAPES]
    if shapes is not None:
        bad = [s for s in shapes if s not in names]
        if bad:
            raise ValueError(f"unknown shapes {bad}: expected some of {names}")
    chosen = [s for s in SHAPES if shapes is None or s[0] in shapes]
    if not chosen:
        raise ValueError("shapes is empty: name at least one shape (or None for all)")
    rng = np.random.default_rng(seed)
    if multiplier is not None:
        from .backends import as_multiplier, table256
        from .library import load_multiplier

        if signed:
            raise ValueError("signed and multiplier exclude each other: a multiplier's "
                             "signedness is its own")
        mult = (load_multiplier(multiplier) if isinstance(multiplier, str)
                else as_multiplier(multiplier))
        table = table256(mult)   # the frozen table: the kernels see its factors
        if not api:
            mult = None
    else:
        table = _table(rng, signed)
        mult = None
    if api and mult is None:
        try:
            from .lut import Multiplier
            mult = Multiplier(table, signed=signed, name="bench")
        except ImportError:  # the float-level layer is not there: kernel figures only
            mult = None
    th, F = _torch() if torch else (None, None)
    threads_before = None
    if th is not None:
        threads_before = th.get_num_threads()
        th.set_num_threads(num_threads or _fast.max_threads())
    try:
        records = []
        for shape in chosen:
            records += _bench_shape(shape, paths, methods, repeat, num_threads, rng, table,
                                    mult, th, F, _fast, skipped)
    finally:
        if threads_before is not None:
            th.set_num_threads(threads_before)
    return records


def _bench_shape(shape, paths, methods, repeat, num_threads, rng, table, mult, th, F, _fast,
                 skipped=None):
    from .conv import axconv2d
    from .matmul import axmatmul

    name, kind, prm = shape
    tfn = None   # PyTorch on a fresh copy of the input: f(layout) -> a timed callable
    if kind == "conv":
        N, H, W, C, COUT, k, g = (prm[x] for x in ("N", "H", "W", "C", "COUT", "k", "groups"))
        s, pad, OH, OW = conv_geometry(prm)
        macs = N * OH * OW * COUT * k * k * (C // g)
        bm, bk, bn = N * OH * OW, k * k * (C // g), COUT
        if g > 1:  # same MAC count as a dense GEMM with one output column per channel
            bm, bk, bn = N * OH * OW, k * k, COUT
        x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
        w = rng.integers(0, 256, (k, k, C // g, COUT), dtype=np.uint8)
        xf = rng.standard_normal((N, H, W, C)).astype(np.float32)
        wf = rng.standard_normal((k, k, C // g, COUT)).astype(np.float32)
        # the same tensors in PyTorch's layouts (NCHW input, OIHW filters)
        xf_nchw = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
        wf_oihw = np.ascontiguousarray(wf.transpose(3, 2, 0, 1))

        def kern(p, m, x=x, w=w, pad=pad, g=g, s=s):
            return _fast.conv2d(x, w, table, (s, s), pad, (1, 1), g, 0, np.int32,
                                num_threads, path=p, method=m)

        def call(p, m, xf=_NewRange(xf.copy()), wf=wf, g=g, s=s):
            return axconv2d(xf(), wf, mult, padding="SAME", stride=s, groups=g,
                            backend=_ForcedPath(_fast, p, m), num_threads=num_threads)

        def call_nchw(p, m, xf=_NewRange(xf_nchw.copy()), wf=wf_oihw, g=g, s=s):
            return axconv2d(xf(), wf, mult, padding="SAME", stride=s, groups=g,
                            data_format="NCHW", backend=_ForcedPath(_fast, p, m),
                            num_threads=num_threads)

        if th is not None:
            tw = th.from_numpy(wf_oihw)
            tx = th.from_numpy(xf_nchw)

            def tfn(layout, tx=tx, tw=tw, g=g, k=k, s=s):
                fmt = th.channels_last if layout == "cl" else th.contiguous_format
                xc = tx.clone().contiguous(memory_format=fmt)   # a fresh buffer
                wc = tw.contiguous(memory_format=fmt)
                # (padding k // 2 on both sides: the same output size as SAME, the same
                # work; no autograd: plain tensors)
                return lambda: F.conv2d(xc, wc, stride=s, padding=k // 2, groups=g)
    else:
        M, K, N = prm["M"], prm["K"], prm["N"]
        macs, (bm, bk, bn) = M * K * N, (M, K, N)
        a = rng.integers(0, 256, (M, K), dtype=np.uint8)
        b = rng.integers(0, 256, (K, N), dtype=np.uint8)
        af = rng.standard_normal((M, K)).astype(np.float32)
        bf = rng.standard_normal((K, N)).astype(np.float32)

        def kern(p, m, a=a, b=b):
            return _fast.gemm(a, b, table, np.int32, num_threads, path=p, method=m)

        def call(p, m, af=_NewRange(af.copy()), bf=bf):
            return axmatmul(af(), bf, mult, backend=_ForcedPath(_fast, p, m),
                            num_threads=num_threads)

        call_nchw = None
        if th is not None:
            ta, tb = th.from_numpy(af), th.from_numpy(np.ascontiguousarray(bf.T))

            def tfn(layout, ta=ta, tb=tb):
                ac = ta.clone()
                return lambda: F.linear(ac, tb)
    A = rng.standard_normal((bm, bk)).astype(np.float32)
    B = rng.standard_normal((bk, bn)).astype(np.float32)
    # Rounds of one timed call of each (every path's kernel and float-level calls, PyTorch,
    # then BLAS), so that every figure's best comes from the same stretch of time: on a
    # shared machine the speed swings by tens of percent from second to second.
    variants = []
    for p in paths:
        for m in methods:
            try:
                kern(p, m)   # warm-up (page faults, caches), and can m serve it?
            except ValueError as e:
                if m is None:
                    raise
                if skipped is not None:
                    skipped.append((name, p, m, str(e)))
                continue
            variants.append((p, m))
    if not variants:   # no forced method serves this shape: nothing to time it against
        return []
    fns = [(v, "kernel", lambda v=v: kern(*v)) for v in variants]
    if mult is not None:
        fns += [(v, "api", lambda v=v: call(*v)) for v in variants]
        if call_nchw is not None:
            fns += [(v, "api_nchw", lambda v=v: call_nchw(*v)) for v in variants]
    layouts = () if tfn is None else (("nchw", "cl") if kind == "conv" else ("nchw",))
    best = {}
    for f in [g for _, _, g in fns] + [lambda: A @ B] + [tfn(lay) for lay in layouts]:
        f()   # warm-up: page faults, caches
    _settle()
    for _ in range(repeat):
        for p, what, f in fns:
            # as many timed calls as PyTorch gets per round: the best of more samples is
            # lower on a noisy machine, whatever is timed
            for _c in range(TORCH_COPIES):
                best[p, what] = min(best.get((p, what), np.inf), _timed(f))
        for lay in layouts:
            for _c in range(TORCH_COPIES):   # fresh buffers: PyTorch's best placement
                best[lay] = min(best.get(lay, np.inf), _timed(tfn(lay)))
        _settle(0.02)   # OpenMP workers spin briefly after a call: not on BLAS's time
        best["blas"] = min(best.get("blas", np.inf), _timed(lambda: A @ B))
        _settle()
    blas_s = best["blas"]
    torch_s, torch_cl_s = best.get("nchw"), best.get("cl")
    torch_best = min(t for t in (torch_s, torch_cl_s, np.inf) if t is not None)
    torch_best = None if torch_best == np.inf else torch_best

    def over(t, base):
        return None if t is None or base is None else t / base

    residual = {p: _fast.byte_residual(table, p) for p in paths}
    records = []
    for p, m in variants:
        ks, api_s, nchw_s = best[(p, m), "kernel"], best.get(((p, m), "api")), \
            best.get(((p, m), "api_nchw"))
        records.append(dict(
            shape=name, path=p, method=m, macs=macs, byte_residual=residual[p], kernel_s=ks,
            kernel_gmacs=macs / ks / 1e9,
            api_s=api_s, api_gmacs=None if api_s is None else macs / api_s / 1e9,
            blas_s=blas_s, blas_gmacs=macs / blas_s / 1e9, kernel_ratio=ks / blas_s,
            api_ratio=over(api_s, blas_s), api_nchw_s=nchw_s, torch_s=torch_s,
            torch_cl_s=torch_cl_s, torch_best_s=torch_best,
            api_torch=over(api_s, torch_best), api_nchw_torch=over(nchw_s, torch_best)))
    return records


_TIMES = ("kernel_s", "api_s", "api_nchw_s", "blas_s", "torch_s", "torch_cl_s", "torch_best_s")
_RATIOS = ("kernel_ratio", "api_ratio", "api_torch", "api_nchw_torch")


def combine_runs(runs):
    """The median of several :func:`run_bench` results, figure by figure.

    Parameters
    ----------
    runs : sequence of lists of records
        Results of repeated :func:`run_bench` calls with the same arguments.

    Returns
    -------
    list of dict
        One record per (shape, path, method): every time and every ratio the median over
        the runs (each ratio taken within its own run, then the median), the GMAC/s from
        the median times, ``runs`` the number of runs and, for ``api_torch`` and
        ``api_nchw_torch``, ``*_range`` = (lowest, highest) over the runs.
    """
    runs = [list(r) for r in runs]
    if not runs:
        raise ValueError("combine_runs needs at least one run")
    keys = [(r["shape"], r["path"], r["method"]) for r in runs[0]]
    for run in runs[1:]:
        if [(r["shape"], r["path"], r["method"]) for r in run] != keys:
            raise ValueError("combine_runs: the runs time different shapes, paths or methods")

    def median(vals):
        vals = [v for v in vals if v is not None]
        return float(np.median(vals)) if vals else None

    out = []
    for i, first in enumerate(runs[0]):
        rec = {k: first[k] for k in ("shape", "path", "method", "macs")}
        rec["byte_residual"] = first.get("byte_residual", False)
        for k in _TIMES + _RATIOS:
            rec[k] = median(run[i].get(k) for run in runs)
        for k, t in (("kernel_gmacs", "kernel_s"), ("api_gmacs", "api_s"),
                     ("blas_gmacs", "blas_s")):
            rec[k] = None if rec[t] is None else rec["macs"] / rec[t] / 1e9
        for k in ("api_torch", "api_nchw_torch"):
            vals = [run[i].get(k) for run in runs if run[i].get(k) is not None]
            rec[k + "_range"] = (min(vals), max(vals)) if vals else None
        rec["runs"] = len(runs)
        out.append(rec)
    return out


def format_table(records):
    """Markdown table of :func:`run_bench` records: GMAC/s, then times over BLAS's and
    PyTorch's (lower is better); records of :func:`combine_runs` also get the range of the
    ratios to PyTorch over the runs."""
    def g(r, key):
        t = r.get(key)
        return "-" if t is None else f"{r['macs'] / t / 1e9:.1f}"

    def q(v):
        return "-" if v is None else f"{v:.2f}"

    def rng(v):
        return "-" if v is None else f"{v[0]:.2f} - {v[1]:.2f}"

    ranged = any("api_torch_range" in r for r in records)
    lines = ["| shape | path | kernel | api NHWC | api NCHW | torch NCHW | torch NHWC | "
             "BLAS | kernel / BLAS | api / BLAS | api NHWC / torch | api NCHW / torch |"
             + (" range NHWC / torch | range NCHW / torch |" if ranged else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             + ("---|---|" if ranged else "")]
    for r in records:
        path = r["path"] if r.get("method") is None else f"{r['path']} ({r['method']})"
        lines.append(f"| {r['shape']} | {path} | {g(r, 'kernel_s')} | {g(r, 'api_s')} | "
                     f"{g(r, 'api_nchw_s')} | {g(r, 'torch_s')} | {g(r, 'torch_cl_s')} | "
                     f"{g(r, 'blas_s')} | {q(r['kernel_ratio'])} | {q(r['api_ratio'])} | "
                     f"{q(r.get('api_torch'))} | {q(r.get('api_nchw_torch'))} |"
                     + (f" {rng(r.get('api_torch_range'))} | {rng(r.get('api_nchw_torch_range'))} |"
                        if ranged else ""))
    return "\n".join(lines)


def positive_int(text):
    """argparse ``type``: an integer >= 1 (the option's name is added by argparse)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def thread_count(text):
    """argparse ``type``: a thread count, 1 to :data:`axkern.backends.MAX_THREADS`."""
    import argparse

    from .backends import _check_threads

    try:
        return _check_threads(positive_int(text))   # the kernels' own bound
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def split_names(text):
    """The names of a comma-separated option value: stripped, empty ones and duplicates
    dropped (first occurrence kept)."""
    return list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))


# options of the kernel benchmark that do not apply with --networks: (attribute, option)
_NOT_WITH_NETWORKS = (("paths", "--paths"), ("shapes", "--shapes"), ("methods", "--methods"),
                      ("runs", "--runs"), ("kernel_only", "--kernel-only"),
                      ("signed", "--signed"), ("no_torch", "--no-torch"))


def _usage_error(args, message):
    print(f"{getattr(args, '_prog', 'axkern bench')}: error: {message}", file=sys.stderr)
    return 2


def _skip_notes(skipped):
    """One line per (shape, method, reason) of run_bench's ``skipped``, naming the paths."""
    groups = {}
    for shape, path, method, reason in skipped:
        paths = groups.setdefault((shape, method, reason), [])
        if path not in paths:
            paths.append(path)
    return [f"method {m!r} cannot serve shape {s!r} (path{'s' if len(ps) > 1 else ''} "
            f"{', '.join(ps)}), skipped: {reason}" for (s, m, reason), ps in groups.items()]


def _cmd(args):
    prog = getattr(args, "_prog", "axkern bench")
    if args.networks is not None:   # whole networks in PyTorch: axkern.netbench
        from . import netbench

        given = [opt for attr, opt in _NOT_WITH_NETWORKS
                 if getattr(args, attr) not in (None, False)]
        if given:
            return _usage_error(args, f"{', '.join(given)}: not with --networks (it takes "
                                      "--batch, --repeat, --threads, --multiplier and --json; "
                                      "tools/bench_networks.py has more options)")
        depths = netbench._depths(args.networks)
        try:
            netbench.report(depths, batch=128 if args.batch is None else args.batch,
                            multiplier=args.multiplier or "mul8u_drum4",
                            repeat=args.repeat, num_threads=args.threads, as_json=args.json)
        except ImportError as e:   # PyTorch missing: the extra to install, no traceback
            return _usage_error(args, str(e))
        return 0
    if args.batch is not None:
        return _usage_error(args, "--batch applies only with --networks")
    from . import _fast

    lists = {}
    for attr, opt in (("paths", "--paths"), ("shapes", "--shapes"), ("methods", "--methods")):
        text = getattr(args, attr)
        lists[attr] = None if text is None else split_names(text)
        if lists[attr] == []:
            return _usage_error(args, f"{opt} names nothing: got {text!r}")
    paths, shapes, methods = lists["paths"], lists["shapes"], lists["methods"]
    avail = _fast.available_paths()
    for p in paths or ():
        if p not in _fast.PATHS:
            return _usage_error(args, f"--paths: unknown CPU path {p!r}: expected some of "
                                      f"{', '.join(_fast.PATHS)}")
        if p not in avail:
            return _usage_error(args, f"--paths: CPU path {p!r} is not supported by this CPU: "
                                      f"available {', '.join(avail)}")
    bad = [m for m in methods or () if m not in _fast.METHODS]
    if bad:
        return _usage_error(args, f"--methods: unknown kernel method{'s' if len(bad) > 1 else ''}"
                                  f" {', '.join(bad)}: expected some of {', '.join(_fast.METHODS)}")
    names = [s[0] for s in SHAPES]
    bad = [s for s in shapes or () if s not in names]
    if bad:
        return _usage_error(args, f"--shapes: unknown shape{'s' if len(bad) > 1 else ''} "
                                  f"{bad}: expected some of {names}")
    runs_n = 1 if args.runs is None else args.runs
    if args.signed and args.multiplier:
        return _usage_error(args, "--signed and --multiplier exclude each other (a "
                                  "multiplier's signedness is its own)")
    skipped = []
    runs = [run_bench(paths=paths, repeat=args.repeat, num_threads=args.threads, shapes=shapes,
                      api=not args.kernel_only, methods=methods, torch=not args.no_torch,
                      signed=args.signed, multiplier=args.multiplier, skipped=skipped)
            for _ in range(runs_n)]
    notes = _skip_notes(skipped)
    if not runs[0]:
        print(f"{prog}: error: nothing to time: " + "; ".join(notes), file=sys.stderr)
        return 1
    for n in notes:
        print(f"{prog}: note: {n}", file=sys.stderr)
    recs = runs[0] if runs_n == 1 else combine_runs(runs)
    if args.json:
        print(_json.dumps(recs, indent=2))
    else:
        import os

        print(f"axkern bench: paths available {_fast.available_paths()}, default "
              f"{_fast.default_path()}, {os.cpu_count()} CPUs, "
              f"threads {args.threads or 'default'}, best of {args.repeat}"
              + (f"; the median of {runs_n} runs" if runs_n > 1 else "")
              + ("; a signed multiplier (symmetric quantization)" if args.signed else "")
              + (f"; the table of {args.multiplier}" if args.multiplier else
                 "; a synthetic 16-bit table (exact product plus noise)")
              + _residual_note(recs))
        th, _ = _torch() if not args.no_torch else (None, None)
        print("GMAC/s; torch: float32 PyTorch " + (th.__version__ if th is not None else
              "not timed") + " (NHWC: channels_last), best of fresh input copies; "
              "ratios are times, PyTorch's the faster of its layouts")
        print(format_table(recs))
    return 0


def _residual_note(recs):
    """Where the table's expanded tables take the byte-residual form (say so: its figures
    are those of near-exact tables, not of every 16-bit table)."""
    paths = sorted({r["path"] for r in recs if r.get("byte_residual")})
    return f"; byte-residual expanded tables on {', '.join(paths)}" if paths else ""


def _add_arguments(p):
    """The options of ``axkern bench`` (and of tools/bench_cpu.py) on parser ``p``."""
    p.add_argument("--paths", default=None,
                   help="comma-separated dispatch paths (default: all this CPU supports)")
    p.add_argument("--shapes", default=None,
                   help="comma-separated shape names (default: all): "
                        + "; ".join(s[0] for s in SHAPES))
    p.add_argument("--methods", default=None,
                   help="comma-separated kernel methods to force, each on every path "
                        "(default: the automatic choice), e.g. direct,expand; a method that "
                        "cannot serve a shape is skipped for it, with a note")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="timed calls per figure, the best counts (default 3); with --networks "
                        "the timing rounds")
    p.add_argument("--runs", type=positive_int, default=None,
                   help="whole benchmark runs (default 1); with more than one, every figure is "
                        "the median over the runs and the ratios to PyTorch get their range")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="OpenMP threads for the kernels and PyTorch (default: OMP_NUM_THREADS "
                        "or all cores)")
    p.add_argument("--kernel-only", action="store_true",
                   help="skip the float-level axconv2d/axmatmul timings")
    p.add_argument("--signed", action="store_true",
                   help="a signed multiplier's table (symmetric quantization) instead of an "
                        "unsigned one")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the float32 PyTorch baseline (timed when torch is installed)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--networks", nargs="?", const="8,20,32,50,62", default=None,
                   metavar="DEPTHS",
                   help="instead: whole CIFAR ResNets (default depths 8,20,32,50,62), float32 "
                        "PyTorch against axkern.torch; takes --batch, --repeat, --threads, "
                        "--multiplier and --json only (tools/bench_networks.py has more options)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="with --networks only: images per call (default 128)")
    p.add_argument("--multiplier", default=None,
                   help="time this multiplier's table (shipped name or file) instead of the "
                        "synthetic one; with --networks the multiplier (default mul8u_drum4)")


def add_parser(subparsers):
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "bench", help="GMAC/s of the fast CPU kernels on every dispatch path vs float32 PyTorch and BLAS",
        description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_cmd, _prog=p.prog)
    return p


def main(argv=None):
    """Run ``axkern bench`` as a standalone program (tools/bench_cpu.py): the same options,
    the same one-line errors (exit status 2 for usage errors, 1 for others)."""
    import argparse

    parser = argparse.ArgumentParser(prog="bench_cpu", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    parser.set_defaults(_prog=parser.prog)
    args = parser.parse_args(argv)
    return run_tool(parser.prog, _cmd, args)


def run_tool(prog, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` as a benchmark script's main work: its return value (0 for
    None), or a user's error as one line ``prog: error: ...`` and status 1 (130 when
    interrupted), never a traceback."""
    try:
        r = fn(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ImportError, ValueError, TypeError, OSError, RuntimeError, MemoryError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0 if r is None else r
