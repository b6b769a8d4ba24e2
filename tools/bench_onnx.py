"""Time axkern's ONNX engine on a CIFAR-10-shaped ResNet-8 next to onnxruntime.

The graph (written with onnx.helper, random weights, BatchNormalization after every Conv,
residual Add, GlobalAveragePool, Flatten, Gemm) is what torch.onnx.export writes for the seeds'
ResNet-8. Printed, each the best of ``--repeat`` runs on one batch:

- onnxruntime, float32 (the whole graph in ORT's own kernels);
- axkern's engine in float (every layer ``multiplier=None``);
- axkern's engine with a multiplier in every layer;
- the approximate layers alone: ``axkern.axconv2d`` / ``axkern.axdense`` called directly on each
  layer's traced input, i.e. the part of the previous line that the engine cannot avoid;
- the share of the engine's approximate run spent inside those calls (median of the runs).

Usage: ``python tools/bench_onnx.py [--batch 32] [--repeat 5] [--multiplier mul8u_trunc8]``
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np


def resnet8(path, seed=0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def add(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def conv_bn(x, cin, cout, k, stride, name, relu=True):
        w = add(f"{name}.w", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k)))
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.c"], name=f"{name}/Conv",
                                      pads=[p, p, p, p], strides=[stride, stride]))
        bn = [add(f"{name}.{s}", v) for s, v in (
            ("g", 1 + 0.1 * rng.standard_normal(cout)), ("b", 0.1 * rng.standard_normal(cout)),
            ("m", 0.1 * rng.standard_normal(cout)), ("v", 1 + 0.1 * rng.random(cout)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.c"] + bn, [f"{name}.bn"]))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.r"]))
        return f"{name}.r"

    x = conv_bn("x", 3, 16, 3, 1, "stem")
    cin = 16
    for i, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        y = conv_bn(x, cin, cout, 3, stride, f"s{i}a")
        y = conv_bn(y, cout, cout, 3, 1, f"s{i}b", relu=False)
        short = x if (cin == cout and stride == 1) else conv_bn(x, cin, cout, 1, stride,
                                                                  f"s{i}sc", relu=False)
        nodes.append(helper.make_node("Add", [y, short], [f"s{i}.add"]))
        nodes.append(helper.make_node("Relu", [f"s{i}.add"], [f"s{i}.out"]))
        x, cin = f"s{i}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    nodes.append(helper.make_node("Gemm", ["flat", add("fc.w", rng.standard_normal((10, 64)) * 0.1),
                                           add("fc.b", np.zeros(10))], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "resnet8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def approx_share(model, x, repeat):
    """Share of an approximate forward pass spent inside axconv2d / axdense (timed per call by
    wrappers around them, in the same runs)."""
    import axkern.conv
    import axkern.matmul

    spent = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t
        return wrapper

    saved = axkern.conv.axconv2d, axkern.matmul.axdense
    axkern.conv.axconv2d, axkern.matmul.axdense = timed(saved[0]), timed(saved[1])
    try:
        shares = []
        for _ in range(repeat):
            spent[0] = 0.0
            t = time.perf_counter()
            model.forward(x)
            shares.append(spent[0] / (time.perf_counter() - t))
    finally:
        axkern.conv.axconv2d, axkern.matmul.axdense = saved
    return float(np.median(shares))


def main(argv=None):
    from axkern.bench import positive_int, run_tool

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=positive_int, default=32, help="images (default 32)")
    ap.add_argument("--repeat", type=positive_int, default=5,
                    help="timed runs, the best counts (default 5)")
    ap.add_argument("--multiplier", default="mul8u_trunc8",
                    help="shipped name or file (default mul8u_trunc8)")
    args = ap.parse_args(argv)

    import axkern

    try:
        mult = axkern.load_multiplier(args.multiplier)
    except (ValueError, OSError) as e:
        ap.error(f"--multiplier: {e}")
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as e:
        print(f"{ap.prog}: error: needs onnx and onnxruntime ({e}): "
              'pip install "axkern[onnx]" onnxruntime', file=sys.stderr)
        return 1
    return run_tool(ap.prog, _run, args, mult, ort)


def _run(args, mult, ort):
    import axkern
    from axkern.bench import best_time as best
    from axkern.onnx import load_model

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "resnet8.onnx")
        resnet8(path)
        x = np.random.default_rng(1).random((args.batch, 3, 32, 32), dtype=np.float32)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        model = load_model(path)
        rows = []
        sess.run(None, {"x": x})
        rows.append(("onnxruntime float32", best(lambda: sess.run(None, {"x": x}), args.repeat)))
        model.forward(x)
        rows.append(("axkern engine, float", best(lambda: model.forward(x), args.repeat)))
        model.configure(multiplier=mult)
        model.forward(x)
        rows.append((f"axkern engine, {mult.name}", best(lambda: model.forward(x), args.repeat)))
        infos = {n: model.layer_info(n) for n in model.compute_layers}
        vals = model.trace(x, [i["input"] for i in infos.values()])

        def layers_alone():
            for i in infos.values():
                if i["op"] == "Conv":
                    t, l, b, r = i["pads"]
                    axkern.axconv2d(vals[i["input"]], i["weight"], mult, bias=i["bias"],
                                    stride=i["stride"], padding=((t, b), (l, r)),
                                    dilation=i["dilation"], groups=i["groups"], data_format="NCHW")
                else:
                    axkern.axdense(vals[i["input"]], i["weight"], mult, bias=i["bias"])

        rows.append(("the approximate layers alone", best(layers_alone, args.repeat)))
        share = approx_share(model, x, args.repeat)
    print(f"ResNet-8 (CIFAR-10 shape), batch {args.batch}, best of {args.repeat}, "
          f"{os.cpu_count()} CPUs")
    for name, t in rows:
        print(f"{name:42s} {1000 * t:9.1f} ms")
    print(f"share of the engine's time inside axconv2d/axdense: {100 * share:.1f}% "
          "(measured in the same runs, so robust to a busy machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
