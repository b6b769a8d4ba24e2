"""``axkern bench --networks``: whole CIFAR ResNets, float32 PyTorch against the same model
approximated through :mod:`axkern.torch`, in one run.

For each depth (ResNet-8, 20, 32, 50, 62 of :mod:`axkern.resnet`, random weights, BatchNorm
not folded, eval mode, 32x32x3 NCHW inputs, PyTorch's default layout):

* ``float``: images/s of the float32 model; ``approx``: of the same model after
  ``axkern.torch.approximate(model, multiplier)`` (every Conv2d and Linear through the
  multiplier's table, default quantization); their time ratio; seconds per 10,000 images,
  printed beside TFApprox's published CPU figures for the same networks (a different,
  unknown machine: the unit, not a like-for-like comparison).
* Fairness: PyTorch's float convolution time depends on where its input buffer lies (the
  same call ran 2.5x slower on some copies), so both models are timed on several freshly
  allocated copies of the input batch, in rounds that alternate the two models, and each
  figure is the best call.
* ``overhead``: the approximated layers' own time, each layer's module called on the
  activation it received inside the network (captured with forward hooks), against the
  bare NumPy-level call (``axkern.axconv2d`` / ``axkern.axdense`` on the same arrays, same
  multiplier and quantization), summed over the layers: the adapter's cost over the kernels.
* ``alloc``: whether the float part of the approximated model (BatchNorm, ReLU, additions,
  pooling: everything outside the approximated layers, timed with forward hooks) runs at a
  different speed when the approximated layers hand on tensors that wrap NumPy memory or
  tensors that PyTorch allocated (each output copied into one or the other in the hook;
  the copies themselves fall inside the layers' time, not the float part's).

Thread count: ``torch.set_num_threads(T)`` and axkern's OpenMP threads are the same ``T``
(default: axkern's OpenMP default, all cores or ``OMP_NUM_THREADS``).
"""
from __future__ import annotations

import gc
import time

import numpy as np

__all__ = ["run_networks", "format_networks", "TFAPPROX_CPU_S", "DEPTHS"]

DEPTHS = (8, 20, 32, 50, 62)
# TFApprox's README table: seconds for 10,000 CIFAR-10 images on its test machine's CPU, the
# accurate Conv2D graph and the approximate AxConv2D graph (from which the 8-bit approximate
# layers' overhead, 337 s for ResNet-8, was computed).
TFAPPROX_CPU_S = {8: (4.4, 341), 14: (7.4, 724), 20: (10.4, 1105), 26: (13.4, 1489),
                  32: (16.3, 1876), 38: (19.3, 2259), 44: (22.3, 2640), 50: (25.2, 3025),
                  56: (28.1, 3409), 62: (31.1, 3796)}


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError('axkern bench --networks needs PyTorch: pip install "axkern[torch]"') \
            from exc
    return torch


def _best_alternating(fns, inputs, repeat):
    """Best seconds of each function over ``repeat`` rounds; in each round every function
    runs once on every input (alternating functions, so all see the same stretch of time).
    One untimed call of each first (allocator, page faults, thread pools)."""
    best = [np.inf] * len(fns)
    for f in fns:
        f(inputs[0])
    for _ in range(repeat):
        for x in inputs:
            for i, f in enumerate(fns):
                t0 = time.perf_counter()
                f(x)
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _layer_args(mod):
    """axconv2d/axdense geometry of an nn.Conv2d / nn.Linear."""
    from torch import nn

    if isinstance(mod, nn.Conv2d):
        pad = mod.padding
        if isinstance(pad, str):
            pad = pad.upper()
        return dict(stride=mod.stride, padding=pad, dilation=mod.dilation, groups=mod.groups)
    return {}


def _bare_call(mod, x, multiplier, quant, num_threads):
    """The NumPy-level call that the approximated layer ``mod`` stands for, on ``x``."""
    from torch import nn
    from .conv import axconv2d
    from .matmul import axdense

    w = mod.weight.detach().numpy()
    b = None if mod.bias is None else mod.bias.detach().numpy()
    xn = x.numpy()
    if isinstance(mod, nn.Conv2d):
        return lambda: axconv2d(xn, w, multiplier, bias=b, data_format="NCHW", quant=quant,
                                backend="cpu", num_threads=num_threads, **_layer_args(mod))
    wt = np.ascontiguousarray(w.T)   # (in, out), as a caller of axdense would hold it
    return lambda: axdense(xn, wt, multiplier, b, quant=quant, backend="cpu",
                           num_threads=num_threads)


def _approx_layers(model):
    from .torch import ApproxConv2d, ApproxLinear

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (ApproxConv2d, ApproxLinear)) and m.multiplier is not None]


def _capture_inputs(model, layers, x):
    torch = _torch()
    seen = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].detach().clone()))
        for name, m in layers]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _overhead(model, layers, x, multiplier, quant, num_threads, repeat):
    """Per layer: best time of the adapter module and of the bare call on the activation it
    received in the network."""
    torch = _torch()
    acts = _capture_inputs(model, layers, x)
    rows = []
    for name, mod in layers:
        a = acts[name]
        bare = _bare_call(mod, a, multiplier, quant, num_threads)
        with torch.inference_mode():
            same = np.array_equal(mod(a).numpy(), bare())

        def adapter(_, mod=mod, a=a):
            with torch.inference_mode():
                mod(a)

        t_mod, t_bare = _best_alternating([adapter, lambda _: bare()], [None], repeat)
        rows.append(dict(layer=name, kind=type(mod).__name__, adapter_s=t_mod, bare_s=t_bare,
                         same_output=same))
    return rows


def _float_part(model, layers, inputs, repeat, wrap):
    """Best seconds of the approximated model outside its approximated layers, when each
    layer's output is handed on as a tensor over NumPy memory (``wrap="numpy"``) or over
    memory PyTorch allocated (``wrap="torch"``)."""
    torch = _torch()
    state = {"inside": 0.0, "t0": 0.0}

    def pre(mod, inp):
        state["t0"] = time.perf_counter()

    def post(mod, inp, out):
        if wrap == "numpy":
            out = torch.from_numpy(np.array(out.numpy(), copy=True))
        else:
            out = torch.empty_like(out).copy_(out)
        state["inside"] += time.perf_counter() - state["t0"]
        return out

    hooks = []
    for _, m in layers:
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    best = np.inf
    try:
        with torch.inference_mode():
            model(inputs[0])
            for _ in range(repeat):
                for x in inputs:
                    state["inside"] = 0.0
                    t0 = time.perf_counter()
                    model(x)
                    best = min(best, time.perf_counter() - t0 - state["inside"])
    finally:
        for h in hooks:
            h.remove()
    return best


def _check_args(batch, repeat, copies, num_threads):
    """ValueError unless batch, repeat and copies are integers >= 1 and num_threads is None
    or a thread count."""
    for name, v in (("batch", batch), ("repeat", repeat), ("copies", copies)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if num_threads is not None:
        from .backends import _check_threads

        _check_threads(num_threads)


def run_networks(depths=DEPTHS, *, batch=128, multiplier="mul8u_drum4", quant="auto",
                 repeat=3, copies=3, num_threads=None, overhead=True, alloc=True,
                 channels_last=False, profile=False, seed=0, progress=None):
    """Time float32 PyTorch against the approximated model for each CIFAR ResNet depth.

    Parameters
    ----------
    depths : sequence of int
        ResNet depths (6n + 2).
    batch : int
        Images per call.
    multiplier : str or Multiplier
        Passed to ``axkern.torch.approximate`` for every layer.
    quant : str
        Quantization mode of the approximated layers.
    repeat, copies : int
        Timing rounds, and freshly allocated copies of the input batch per round; every
        figure is the best call.
    num_threads : int, optional
        Threads for both PyTorch and axkern (default: axkern's OpenMP default).
    overhead, alloc : bool
        Also measure the adapter overhead and the NumPy-vs-PyTorch memory effect.
    channels_last : bool
        Also time the approximated model on ``channels_last`` inputs (model and input
        converted with ``.to(memory_format=torch.channels_last)``: NHWC memory, which the
        kernels read and write without transposing).
    profile : bool
        Also split each approximated convolution's time into phases (:func:`profile_layers`).
    seed : int
    progress : callable, optional
        Called with a line of text as each network finishes.

    Returns
    -------
    list of dict
        One record per depth: ``depth, batch, macs, float_s, approx_s, ratio, float_ips,
        approx_ips, float_10k_s, approx_10k_s, tfapprox_float_10k_s, tfapprox_approx_10k_s``,
        with ``overhead`` (``adapter_s, bare_s, ratio, layers``: per layer records) and
        ``float_part_numpy_s, float_part_torch_s`` when asked for.
    """
    torch = _torch()
    from . import _fast
    from . import torch as axtorch
    from .library import load_multiplier
    from .lut import Multiplier
    from .resnet import resnet_cifar

    _check_args(batch, repeat, copies, num_threads)
    threads = _fast.max_threads() if num_threads is None else int(num_threads)
    torch.set_num_threads(threads)
    if _fast.max_threads() != threads:
        # PyTorch and axkern share one OpenMP runtime when torch is imported first (both
        # load libgomp.so.1); otherwise the adapter's kernels would run with other threads.
        raise RuntimeError(f"axkern's OpenMP runtime uses {_fast.max_threads()} threads after "
                           f"torch.set_num_threads({threads}): set OMP_NUM_THREADS={threads}")
    mult = multiplier if isinstance(multiplier, Multiplier) else load_multiplier(multiplier)
    records = []
    for depth in depths:
        torch.manual_seed(seed)
        net = resnet_cifar(depth).eval()
        # random BatchNorm statistics, so that the activations are not trivially scaled
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        approx = axtorch.approximate(net, mult, quant=quant, inplace=False).eval()
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, 3, 32, 32, generator=g)
        inputs = [x.clone() for _ in range(copies)]
        macs = sum(r["macs"] for r in axtorch.layers(net, input_shape=tuple(x.shape[1:])))

        def run(model):
            def f(xx):
                with torch.inference_mode():
                    model(xx)
            return f

        gc.collect()
        fns = [run(net), run(approx)]
        if channels_last:
            cl = torch.channels_last
            approx_cl = axtorch.approximate(net, mult, quant=quant).eval().to(memory_format=cl)
            fns.append(lambda xx, f=run(approx_cl): f(xx.to(memory_format=cl)))
        t_float, t_approx, *t_cl = _best_alternating(fns, inputs, repeat)
        rec = dict(depth=depth, batch=batch, threads=threads, macs=macs, float_s=t_float,
                   approx_s=t_approx, ratio=t_approx / t_float, float_ips=batch / t_float,
                   approx_ips=batch / t_approx, float_10k_s=1e4 * t_float / batch,
                   approx_10k_s=1e4 * t_approx / batch,
                   tfapprox_float_10k_s=TFAPPROX_CPU_S.get(depth, (None, None))[0],
                   tfapprox_approx_10k_s=TFAPPROX_CPU_S.get(depth, (None, None))[1])
        if channels_last:
            # (includes converting the NCHW input batch to channels_last)
            rec["approx_cl_s"] = t_cl[0]
            rec["approx_cl_ips"] = batch / t_cl[0]
        layers = _approx_layers(approx)
        if profile:
            rec["profile"] = profile_layers(approx, layers, x, repeat)
        if overhead:
            rows = _overhead(approx, layers, x, mult, quant, num_threads, repeat)
            a, b = sum(r["adapter_s"] for r in rows), sum(r["bare_s"] for r in rows)
            rec["overhead"] = dict(adapter_s=a, bare_s=b, ratio=a / b, layers=rows,
                                   same_output=all(r["same_output"] for r in rows))
        if alloc:
            rec["float_part_numpy_s"] = _float_part(approx, layers, inputs, repeat, "numpy")
            rec["float_part_torch_s"] = _float_part(approx, layers, inputs, repeat, "torch")
        records.append(rec)
        if progress is not None:
            progress(_line(rec))
        del net, approx, inputs
    return records


def profile_layers(model, layers, x, repeat=3):
    """Where an approximated NCHW convolution's time goes, per layer, on the activations it
    receives in the network (best of ``repeat`` calls each, milliseconds).

    ``module``: the adapter's forward; ``range``: ``torch.aminmax`` of the input;
    ``quantize_nchw``: float32 -> uint8 table indices read through the NCHW -> NHWC view (what
    an NCHW call does); ``quantize_nhwc``: the same from NHWC memory (no transpose), for
    comparison; ``kernel``: the integer LUT convolution with the correction and the
    dequantization fused in its stores (NHWC out); ``transpose_out``: the NHWC result copied
    to NCHW memory; ``weights``: the weight preparation (quantization, index conversion,
    column sums, zero-point folded table) when the weight cache misses, as it does every call
    in a network of more convolutions than the cache holds (``axkern.conv._WEIGHTS``).
    """
    torch = _torch()
    from . import _fast
    from . import conv as C
    from .backends import get_backend

    acts = _capture_inputs(model, layers, x)
    be = get_backend("cpu")

    def best(f):
        f()
        b = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            b = min(b, time.perf_counter() - t0)
        return 1e3 * b

    rows = []
    for name, mod in layers:
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        a = acts[name]
        m = mod.multiplier
        xv = a.numpy().transpose(0, 2, 3, 1)
        xc = np.ascontiguousarray(xv)
        w = mod.weight.detach().numpy().transpose(2, 3, 1, 0)
        spec = C.resolve_quant(mod.quant, m)
        xp = C.checked_params(xc, spec.input, m, "x", fast=_fast)
        pw = C._prepare_weights(w, spec.weight, m, None, _fast, fold=True)
        (pt, pb), (pl, pr) = mod._explicit_padding()
        sx, zx = C.scale_and_zp(xp)
        zx = int(zx)
        xi = _fast.quantize_indices(xc, xp, index_mask=(1 << m.bits) - 1)
        pad_index = int(C._to_index(zx, m))
        dq, _ = pw.dequant(sx, zx, None if mod.bias is None else mod.bias.detach().numpy())
        with torch.inference_mode():
            y = mod(a)
        y_nhwc = np.empty((y.shape[0], y.shape[2], y.shape[3], y.shape[1]), np.float32)
        y_nchw = np.empty(tuple(y.shape), np.float32)
        buf = np.empty(xv.shape, np.uint8)

        def module():
            with torch.inference_mode():
                mod(a)

        class _Miss:   # a weight cache that never hits
            def get(self, *args):
                return None

            def put(self, *args):
                pass

        def weights():
            saved, C._WEIGHTS = C._WEIGHTS, _Miss()
            try:
                C._prepare_weights(w, spec.weight, m, None, _fast, fold=True)
            finally:
                C._WEIGHTS = saved

        mask = (1 << m.bits) - 1
        rows.append(dict(
            layer=name, module=best(module), range=best(lambda: torch.aminmax(a)),
            quantize_nchw=best(lambda: _fast.quantize_indices(xv, xp, index_mask=mask, out=buf)),
            quantize_nhwc=best(lambda: _fast.quantize_indices(xc, xp, index_mask=mask, out=buf)),
            kernel=best(lambda: be.conv2d(xi, pw.wi, pw.table, mod.stride, (pt, pb, pl, pr),
                                          mod.dilation, mod.groups, pad_index, pw.dtype, None,
                                          dequant=dq, out=y_nhwc)),
            transpose_out=best(lambda: np.copyto(y_nchw, y_nhwc.transpose(0, 3, 1, 2))),
            weights=best(weights)))
    return rows


def _line(r):
    s = (f"ResNet-{r['depth']}: float {r['float_ips']:.0f} img/s, approx {r['approx_ips']:.0f} "
         f"img/s, ratio {r['ratio']:.2f}")
    if "overhead" in r:
        s += f", adapter/bare {r['overhead']['ratio']:.3f}"
    return s


def format_networks(records, per_layer=False):
    """Markdown table(s) of :func:`run_networks` records."""
    def opt(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| network | MMAC/img | float32 img/s | approx img/s | approx / float | "
             "float s/10k | approx s/10k | TFApprox CPU s/10k (float, approx) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        tf = (f"{opt(r['tfapprox_float_10k_s'], '.1f')}, {opt(r['tfapprox_approx_10k_s'], '.0f')}"
              if r["tfapprox_approx_10k_s"] is not None else "-")
        lines.append(f"| ResNet-{r['depth']} | {r['macs'] / 1e6:.1f} | {r['float_ips']:.0f} | "
                     f"{r['approx_ips']:.0f} | {r['ratio']:.2f} | {r['float_10k_s']:.2f} | "
                     f"{r['approx_10k_s']:.2f} | {tf} |")
    if any("overhead" in r or "float_part_numpy_s" in r for r in records):
        lines += ["", "| network | approx layers: adapter ms | bare axconv2d/axdense ms | "
                  "adapter / bare | float part, NumPy-backed ms | float part, torch-allocated ms |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in records:
            o = r.get("overhead")
            lines.append(
                f"| ResNet-{r['depth']} | {opt(o and o['adapter_s'] * 1e3, '.1f')} | "
                f"{opt(o and o['bare_s'] * 1e3, '.1f')} | {opt(o and o['ratio'], '.3f')} | "
                f"{opt(r.get('float_part_numpy_s') and r['float_part_numpy_s'] * 1e3, '.1f')} | "
                f"{opt(r.get('float_part_torch_s') and r['float_part_torch_s'] * 1e3, '.1f')} |")
    if any("approx_cl_ips" in r for r in records):
        lines += ["", "| network | approx NCHW img/s | approx channels_last img/s | "
                  "channels_last / float32 NCHW time |", "|---|---:|---:|---:|"]
        for r in records:
            if "approx_cl_ips" in r:
                lines.append(f"| ResNet-{r['depth']} | {r['approx_ips']:.0f} | "
                             f"{r['approx_cl_ips']:.0f} | {r['approx_cl_s'] / r['float_s']:.2f} |")
    keys = ("module", "range", "quantize_nchw", "quantize_nhwc", "kernel", "transpose_out",
            "weights")
    for r in records:
        if "profile" not in r:
            continue
        lines += ["", f"ResNet-{r['depth']}, approximated convolutions, phases (ms, best of "
                      f"each; they overlap: see profile_layers):", "",
                  "| layer | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        rows = r["profile"] + [dict(layer="**sum**", **{k: sum(x[k] for x in r["profile"])
                                                         for k in keys})]
        for row in rows:
            lines.append(f"| {row['layer']} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    if per_layer:
        for r in records:
            if "overhead" not in r:
                continue
            lines += ["", f"ResNet-{r['depth']} per layer:", "",
                      "| layer | kind | adapter ms | bare ms | adapter / bare |",
                      "|---|---|---:|---:|---:|"]
            for row in r["overhead"]["layers"]:
                lines.append(f"| {row['layer']} | {row['kind']} | {row['adapter_s'] * 1e3:.2f} | "
                             f"{row['bare_s'] * 1e3:.2f} | {row['adapter_s'] / row['bare_s']:.2f} |")
    return "\n".join(lines)


def _describe_cpu():
    """'model name' of /proc/cpuinfo (Linux), else the platform's processor string."""
    import platform

    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                if not line.strip() and info:
                    break
    except OSError:
        pass
    if "model name" not in info:
        return platform.processor() or "unknown CPU"
    s = info["model name"]
    if "cpu family" in info and "model" in info:
        s += f" (family {info['cpu family']}, model {info['model']})"
    return s


def report(depths=DEPTHS, *, batch=128, multiplier="mul8u_drum4", repeat=3, copies=3,
           num_threads=None, overhead=True, alloc=True, channels_last=False, profile=False,
           per_layer=False, as_json=False):
    """Run :func:`run_networks` and print its table (or JSON records); returns the records."""
    import json
    import os

    from .library import load_multiplier
    from .lut import Multiplier

    # every argument checked (and the multiplier loaded) before the header is printed
    _check_args(batch, repeat, copies, num_threads)
    depths = list(depths)
    if not depths:
        raise ValueError("depths is empty: name at least one ResNet depth")
    torch = _torch()
    mult = multiplier if isinstance(multiplier, Multiplier) else load_multiplier(multiplier)
    progress = None if as_json else (lambda s: print(s, flush=True))
    if not as_json:
        print(f"axkern bench --networks: {_describe_cpu()}, {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}, batch {batch}, multiplier {mult.name}, best of "
              f"{repeat} rounds x {copies} input copies", flush=True)
    recs = run_networks(depths, batch=batch, multiplier=mult, repeat=repeat,
                        copies=copies, num_threads=num_threads, overhead=overhead, alloc=alloc,
                        channels_last=channels_last, profile=profile, progress=progress)
    if as_json:
        print(json.dumps(recs, indent=2))
    else:
        print(f"threads: {recs[0]['threads']} (torch.set_num_threads and axkern's OpenMP)\n")
        print(format_networks(recs, per_layer=per_layer))
    return recs


def _depths(text):
    try:
        depths = list(dict.fromkeys(int(d) for d in text.split(",") if d.strip()))
    except ValueError:
        raise ValueError(f"depths must be comma-separated integers, got {text!r}") from None
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad or not depths:
        raise ValueError(f"depths must be 6n + 2 (8, 14, 20, ...), got {text!r}")
    return depths


def main(argv=None):
    """``python tools/bench_networks.py``: see the module docstring. User errors print one
    ``bench_networks: error: ...`` line (exit status 2 for usage errors, 1 for others)."""
    import argparse

    from .bench import positive_int, run_tool, thread_count

    p = argparse.ArgumentParser(prog="bench_networks", description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default=",".join(map(str, DEPTHS)),
                   help="comma-separated ResNet depths (default: 8,20,32,50,62)")
    p.add_argument("--batch", type=positive_int, default=128,
                   help="images per call (default 128)")
    p.add_argument("--multiplier", default="mul8u_drum4",
                   help="shipped name or file (default mul8u_drum4)")
    p.add_argument("--repeat", type=positive_int, default=3, help="timing rounds (default 3)")
    p.add_argument("--copies", type=positive_int, default=3,
                   help="fresh input copies per round (default 3)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for PyTorch and axkern (default: OpenMP's default)")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the adapter-overhead and memory measurements")
    p.add_argument("--channels-last", action="store_true",
                   help="also time the approximated model on channels_last (NHWC) tensors")
    p.add_argument("--profile", action="store_true",
                   help="also split each approximated convolution's time into phases")
    p.add_argument("--per-layer", action="store_true", help="also print the per-layer table")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    args = p.parse_args(argv)
    try:
        depths = _depths(args.depths)
    except ValueError as e:
        p.error(str(e))
    def work():   # (the records are printed, not an exit status)
        report(depths, batch=args.batch, multiplier=args.multiplier, repeat=args.repeat,
               copies=args.copies, num_threads=args.threads, overhead=not args.no_overhead,
               alloc=not args.no_overhead, channels_last=args.channels_last,
               profile=args.profile, per_layer=args.per_layer, as_json=args.json)

    return run_tool(p.prog, work)
