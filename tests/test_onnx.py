"""ONNX models in the survey (axkern.onnx): round trips from PyTorch and Keras.

A small residual network is trained briefly in PyTorch on the shipped digits' training part and
exported with torch.onnx.export; the same architecture is built in Keras with the trained
weights and exported with Keras' own ONNX export. References: the framework's own float model,
onnxruntime on the same graph, and axkern's NumPy API (axconv2d / axdense / axmatmul) on each
approximated node's own input, with weights and attributes read from the file by the test.
"""
import json
import os
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import axkern  # noqa: E402
from axkern.cli import main  # noqa: E402
from axkern.onnx import load_model  # noqa: E402

HANDFUL = 5  # of 450 held-out digits


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    from axkern.survey import load_shipped_model

    meta = load_shipped_model().metadata
    d = datasets.load_digits()
    test = np.asarray(meta["test_indices"])
    train = np.setdiff1d(np.arange(len(d.target)), test)
    x = (d.images * float(meta.get("input_scale", 1 / 16))).astype(np.float32)
    return x[train], d.target[train], x[test], d.target[test]


# ------------------------------------------------------------------------------ PyTorch
def _torch_resnet():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = None if cin == cout and stride == 1 else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(self.b1(self.c1(x)).relu()))
            return (y + (x if self.short is None else self.short(x))).relu()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.block1 = Block(8, 8, 1)
            self.block2 = Block(8, 16, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.block2(self.block1(self.bn(self.stem(x)).relu()))
            return self.fc(self.pool(x).flatten(1))

    return Net()


@pytest.fixture(scope="module")
def torch_model(digits, tmp_path_factory):
    torch = pytest.importorskip("torch")
    xtr, ytr, xte, yte = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = _torch_resnet()
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        # A decaying rate: at a constant 1e-2 the last epoch's accuracy swung between 87% and
        # 96% with the CPU's float kernels (AVX-512 or AVX2); decayed, 98-99% on both.
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.6)
        xt, yt = torch.from_numpy(xtr[:, None]), torch.from_numpy(ytr)
        for _ in range(8):  # a few seconds
            perm = torch.randperm(len(yt))
            for i in range(0, len(yt), 32):
                b = perm[i:i + 32]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
                opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            logits = net(torch.from_numpy(xte[:, None])).numpy()
        d = tmp_path_factory.mktemp("torch")
        path = str(d / "resnet_torch.onnx")
        # BatchNormalization kept in the graph (PRESERVE, no constant folding): axkern folds it.
        # The TorchScript exporter (dynamo=False) needs no onnxscript; it warns that it is legacy.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
        torch.onnx.export(net, (xt[:2],), path, dynamo=False, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}})
    finally:
        torch.set_num_threads(threads)
    data = str(d / "digits_nchw.npz")
    np.savez(data, x=xte[:, None], y=yte)
    return {"net": net, "path": path, "x": xte[:, None], "y": yte, "logits": logits,
            "data": data, "dir": d}


def _ort(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def test_torch_export_keeps_batchnorm_and_axkern_folds_it(torch_model):
    g = onnx.load(torch_model["path"]).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("BatchNormalization") == 6 and "Add" in ops and "Gemm" in ops
    m = load_model(torch_model["path"])
    convs = [n.name for n in g.node if n.op_type == "Conv"]
    assert m.compute_layers == convs + [n.name for n in g.node if n.op_type == "Gemm"]
    # each Conv's layer now ends where its BatchNormalization ended
    bn_out = {n.input[0]: n.output[0] for n in g.node if n.op_type == "BatchNormalization"}
    for n in g.node:
        if n.op_type == "Conv" and n.output[0] in bn_out:
            assert m.layer_info(n.name)["output"] == bn_out[n.output[0]]


def test_torch_float_matches_onnxruntime_and_torch(torch_model):
    m = load_model(torch_model["path"])
    x = torch_model["x"]
    y = m.forward(x)
    _close(y, _ort(torch_model["path"], x))
    _close(y, torch_model["logits"], 1e-4)
    assert m.accuracy(x, torch_model["y"]) > 0.9


@pytest.mark.parametrize("mult, quant", [("mul8u_exact", "auto"), ("mul8s_exact", "symmetric")])
def test_torch_exact_multiplier_predicts_as_torch(torch_model, mult, quant):
    m = load_model(torch_model["path"]).configure(multiplier=mult, quant=quant)
    pred = m.predict(torch_model["x"])
    assert np.sum(pred != torch_model["logits"].argmax(1)) <= HANDFUL
    # the 8-bit arithmetic really ran: the logits are not the float ones
    assert not np.allclose(m.forward(torch_model["x"]), torch_model["logits"], atol=1e-5)


def _folded_reference(g, inits, conv):
    """Weight, bias and output name of a Conv node with what follows it folded in float64 (the
    test's own implementation): a BatchNormalization, a per-channel constant Mul or Add, each
    the only reader of the value before it."""
    w = inits[conv.input[1]].astype(np.float64)
    cout = w.shape[0]
    b = inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
        else np.zeros(cout)
    out = conv.output[0]
    while True:
        users = [n for n in g.node if out in n.input]
        if len(users) != 1:
            break
        u = users[0]
        if u.op_type == "BatchNormalization":
            gamma, beta, mean, var = (inits[k].astype(np.float64) for k in u.input[1:5])
            eps = next((a.f for a in u.attribute if a.name == "epsilon"), 1e-5)
            s = gamma / np.sqrt(var + eps)
            t = beta - mean * s
        elif u.op_type in ("Mul", "Add"):
            other = u.input[1] if u.input[0] == out else u.input[0]
            if other not in inits:
                break
            try:
                c = np.broadcast_to(inits[other].astype(np.float64), (1, cout, 1, 1)).ravel()
            except ValueError:
                break
            s, t = (c, 0.0) if u.op_type == "Mul" else (1.0, c)
        else:
            break
        w, b = w * np.reshape(s, (-1, 1, 1, 1)), b * s + t
        out = u.output[0]
    return w.astype(np.float32), b.astype(np.float32), out


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _initializers(g):
    """The stored arrays, also under the names Identity nodes give them (the TorchScript
    exporter shares equal BatchNorm parameters that way)."""
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    return inits


def _check_layers_against_api(path, x, mult, quant="auto", tune=False):
    """Every approximated node's output equals the NumPy API's on the node's own input."""
    g = onnx.load(path).graph
    inits = _initializers(g)
    model = load_model(path).configure(multiplier=mult, quant=quant, tune=tune)
    vals = model.trace(x)
    m = axkern.load_multiplier(mult)
    differs, checked = False, 0
    for n in g.node:
        a = _attrs(n)
        if n.op_type == "Conv":
            w, b, out = _folded_reference(g, inits, n)
            p = a.get("pads", [0, 0, 0, 0])
            assert a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            ref = axkern.axconv2d(vals[n.input[0]], w, m, bias=b, stride=a.get("strides", 1),
                                  padding=((p[0], p[2]), (p[1], p[3])),
                                  dilation=a.get("dilations", 1), groups=a.get("group", 1),
                                  data_format="NCHW", quant=quant, tune=tune, backend="reference")
        elif n.op_type == "Gemm" and n.input[1] in inits:
            w = inits[n.input[1]].T if a.get("transB", 0) else inits[n.input[1]]
            ref = axkern.axdense(vals[n.input[0]], w, m, bias=inits[n.input[2]], quant=quant,
                                 tune=tune, backend="reference")
            out = n.output[0]
        elif n.op_type == "MatMul" and n.input[1] in inits:
            ref = axkern.axmatmul(vals[n.input[0]], inits[n.input[1]], m, quant=quant, tune=tune, backend="reference")
            out = n.output[0]
        else:
            continue
        np.testing.assert_array_equal(vals[out], ref, err_msg=f"node {n.name}")
        checked += 1
        # the same node's input through the exact multiplier of the same kind, same quantization
        exact = axkern.Multiplier.exact(m.bits, m.signed)
        if n.op_type == "Conv":
            ref_exact = axkern.axconv2d(vals[n.input[0]], w, exact, bias=b,
                                        stride=a.get("strides", 1),
                                        padding=((p[0], p[2]), (p[1], p[3])),
                                        dilation=a.get("dilations", 1), groups=a.get("group", 1),
                                        data_format="NCHW", quant=quant, tune=tune,
                                        backend="reference")
        elif n.op_type == "Gemm":
            ref_exact = axkern.axdense(vals[n.input[0]], w, exact, bias=inits[n.input[2]],
                                       quant=quant, tune=tune, backend="reference")
        else:
            ref_exact = axkern.axmatmul(vals[n.input[0]], inits[n.input[1]], exact, quant=quant,
                                        tune=tune, backend="reference")
        differs |= not np.array_equal(vals[out], ref_exact)
    assert checked == len(model.compute_layers)
    assert differs  # the approximate multiplier changed some node's output


def test_torch_approximate_layers_equal_numpy_api(torch_model):
    _check_layers_against_api(torch_model["path"], torch_model["x"][:64], "mul8u_trunc8")
    _check_layers_against_api(torch_model["path"], torch_model["x"][:64], "mul8s_drum4",
                              quant="symmetric-per-channel", tune=True)


def test_torch_default_exporter(torch_model, tmp_path):
    """torch.onnx.export's default (dynamo) exporter: BN folded by the exporter, ReduceMean and
    Reshape instead of GlobalAveragePool and Flatten."""
    pytest.importorskip("onnxscript")
    import torch

    path = str(tmp_path / "resnet_dynamo.onnx")
    torch.onnx.export(torch_model["net"], (torch.from_numpy(torch_model["x"][:2]),), path,
                      dynamic_shapes=({0: torch.export.Dim("n")},), verbose=False)
    x = torch_model["x"]
    m = load_model(path)
    _close(m.forward(x), _ort(path, x))
    _close(m.forward(x), torch_model["logits"], 1e-4)
    m.configure(multiplier="mul8u_exact")
    assert np.sum(m.predict(x) != torch_model["logits"].argmax(1)) <= HANDFUL
    _check_layers_against_api(path, x[:64], "mul8u_drum4")


# ------------------------------------------------------------------------------ Keras
@pytest.fixture(scope="module")
def keras_model(torch_model, tmp_path_factory):
    """The PyTorch network's architecture in Keras (NHWC), with its trained weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    L = keras.layers
    net = torch_model["net"]
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    weights = []

    def conv(x, key, stride, pad, bias=False):
        w = sd[key + ".weight"]
        if pad:
            x = L.ZeroPadding2D(pad)(x)   # PyTorch's symmetric padding
        layer = L.Conv2D(w.shape[0], w.shape[2:], stride, padding="valid", use_bias=bias)
        weights.append((layer, [w.transpose(2, 3, 1, 0)] + ([sd[key + ".bias"]] if bias else [])))
        return layer(x)

    def bn(x, key):
        layer = L.BatchNormalization(epsilon=1e-5)
        weights.append((layer, [sd[key + s] for s in (".weight", ".bias", ".running_mean",
                                                      ".running_var")]))
        return layer(x)

    def block(x, key, stride, short):
        y = L.ReLU()(bn(conv(x, key + ".c1", stride, 1), key + ".b1"))
        y = bn(conv(y, key + ".c2", 1, 1), key + ".b2")
        s = bn(conv(x, key + ".short.0", stride, 0), key + ".short.1") if short else x
        return L.ReLU()(L.Add()([y, s]))

    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(bn(conv(inp, "stem", 1, 1, bias=True), "bn"))
    x = block(block(x, "block1", 1, False), "block2", 2, True)
    x = L.GlobalAveragePooling2D()(x)
    fc = L.Dense(10)
    weights.append((fc, [sd["fc.weight"].T, sd["fc.bias"]]))
    model = keras.Model(inp, fc(x))
    for layer, w in weights:
        layer.set_weights(w)
    x_nhwc = torch_model["x"].transpose(0, 2, 3, 1).copy()
    logits = model.predict(x_nhwc, verbose=0)
    d = tmp_path_factory.mktemp("keras")
    path = str(d / "resnet_keras.onnx")
    model.export(path, format="onnx", verbose=False)
    data = str(d / "digits_nhwc.npz")
    np.savez(data, x=x_nhwc, y=torch_model["y"])
    return {"path": path, "x": x_nhwc, "y": torch_model["y"], "logits": logits, "data": data}


def test_keras_float_matches_onnxruntime_and_keras(keras_model, torch_model):
    x = keras_model["x"]
    m = load_model(keras_model["path"])
    assert m.input_shape[1:] == (8, 8, 1)
    ops = {n.op_type for n in onnx.load(keras_model["path"]).graph.node}
    assert {"Conv", "Add", "MatMul"} <= ops
    y = m.forward(x)
    _close(y, _ort(keras_model["path"], x))
    _close(y, keras_model["logits"], 1e-4)
    # the same trained network as the PyTorch one
    assert np.sum(keras_model["logits"].argmax(1) != torch_model["logits"].argmax(1)) <= 1


def test_keras_exact_multiplier_predicts_as_keras(keras_model):
    m = load_model(keras_model["path"]).configure(multiplier="mul8u_exact")
    assert np.sum(m.predict(keras_model["x"]) != keras_model["logits"].argmax(1)) <= HANDFUL


def test_keras_approximate_layers_equal_numpy_api(keras_model):
    # tf2onnx writes the BatchNorm after the stem's biased convolution as Mul and Add: folded
    g = onnx.load(keras_model["path"]).graph
    stem = next(n for n in g.node if n.op_type == "Conv")
    (mul,) = [n for n in g.node if stem.output[0] in n.input]
    (add,) = [n for n in g.node if mul.output[0] in n.input]
    assert (mul.op_type, add.op_type) == ("Mul", "Add")
    assert load_model(keras_model["path"]).layer_info(stem.name)["output"] == add.output[0]
    _check_layers_against_api(keras_model["path"], keras_model["x"][:64], "mul8u_drum4",
                              tune=True)


# ------------------------------------------------------------------------------ command line
def test_survey_cli_on_onnx(torch_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["survey", "--model", torch_model["path"], "--data", torch_model["data"],
               "--multipliers", "mul8u_exact", "mul8u_trunc8", "--per-layer", "--tune", "no",
               "--no-progress",
               "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    for f in ("results.csv", "results.json", "accuracy_vs_mae.png", "per_layer.csv",
              "per_layer.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "results.json").read_text())
    torch_acc = 100 * np.mean(torch_model["logits"].argmax(1) == torch_model["y"])
    assert abs(res["float_accuracy"] - torch_acc) <= 100 / 450 + 1e-9
    rows = {r["multiplier"]: r for r in res["rows"]}
    assert abs(rows["mul8u_exact"]["accuracy"] - torch_acc) <= 100 * HANDFUL / 450
    model = load_model(torch_model["path"])
    assert res["per_layer"]["layers"] == model.compute_layers
    # the table's figure is the API's for the same configuration
    acc = model.configure(multiplier="mul8u_trunc8").accuracy(torch_model["x"], torch_model["y"])
    assert rows["mul8u_trunc8"]["accuracy"] == pytest.approx(100 * acc)
    assert "resnet_torch" in text and "mul8u_trunc8" in text


def test_eval_cli_assign_on_onnx(keras_model, capsys):
    model = load_model(keras_model["path"])
    first, last = model.compute_layers[0], model.compute_layers[-1]
    rc = main(["eval", keras_model["path"], "--data", keras_model["data"], "--assign",
               f"{first}=mul8u_drum4,{last}=float", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings"][first]["multiplier"] == "mul8u_drum4"
    assert r["settings"][last]["multiplier"] is None
    assert r["settings"][model.compute_layers[1]]["multiplier"] == axkern.Multiplier.exact(8).name
    model.configure(multiplier=axkern.Multiplier.exact(8)).configure([first], multiplier="mul8u_drum4")
    model.configure([last], multiplier=None)
    assert r["accuracy"] == pytest.approx(100 * model.accuracy(keras_model["x"], keras_model["y"]))


# ------------------------------------------------------------------------------ the op subset
def _model(nodes, inits, inp, out, opset=13, name="g"):
    g = helper.make_graph(nodes, name, [inp], [out],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _save(model, tmp_path, name="g.onnx"):
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def test_op_subset_matches_onnxruntime(tmp_path):
    """Ops the exports above do not emit, on one graph, against onnxruntime."""
    rng = np.random.default_rng(1)
    f = np.float32
    inits = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(f), "b1": rng.standard_normal(4).astype(f),
        "wd": rng.standard_normal((4, 1, 3, 3)).astype(f),
        "g": rng.random(3).astype(f) + f(.5), "be": rng.standard_normal(3).astype(f),
        "mu": rng.standard_normal(3).astype(f), "var": rng.random(3).astype(f) + f(.5),
        "w2": rng.standard_normal((4, 3, 3, 3)).astype(f),
        "lo": np.array(-0.5, f), "hi": np.array(0.75, f), "two": np.array(2.0, f),
        "half": np.array(0.5, f), "ax0": np.array([0], np.int64), "m1": np.array([-1], np.int64),
        "st": np.array([1], np.int64), "en": np.array([3], np.int64), "ax1": np.array([1], np.int64),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "wg": rng.standard_normal((5, 66)).astype(f), "cg": rng.standard_normal(5).astype(f),
        "wm": rng.standard_normal((5, 3)).astype(f), "sq": np.array([2, 3], np.int64),
    }
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv_a", pads=[1, 1, 1, 1]),
        N("Conv", ["c1", "wd"], ["c1d"], name="depthwise", group=4, pads=[1, 0, 1, 0],
          strides=[1, 1], dilations=[1, 2]),
        N("BatchNormalization", ["x", "g", "be", "mu", "var"], ["xb"], epsilon=1e-3),
        N("Conv", ["xb", "w2"], ["c2"], name="conv_b", auto_pad="SAME_UPPER", strides=[2, 2]),
        N("MaxPool", ["c1"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        N("AveragePool", ["c1d"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        N("AveragePool", ["c1"], ["ap2"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
          count_include_pad=1),
        N("Add", ["mp", "c2"], ["s"]),
        N("Clip", ["s", "lo", "hi"], ["cl"]),
        N("Sigmoid", ["ap"], ["sg"]),
        N("Mul", ["sg", "two"], ["sg2"]),
        N("Sub", ["cl", "sg2"], ["d1"]),
        N("Div", ["d1", "two"], ["d2"]),
        N("LeakyRelu", ["d2"], ["lr"], alpha=0.1),
        N("Concat", ["lr", "ap2"], ["cat"], axis=1),                       # (N, 8, 3, 3)
        N("Pad", ["cat", "pads"], ["pd"], mode="constant"),                 # (N, 8, 5, 5)
        N("Slice", ["pd", "st", "en", "ax1"], ["sl"]),                      # (N, 2, 5, 5)
        N("Transpose", ["sl"], ["tr"], perm=[0, 2, 3, 1]),
        N("Shape", ["tr"], ["shp"]),
        N("Gather", ["shp", "ax0"], ["nb"], axis=0),
        N("Concat", ["nb", "m1"], ["newshape"], axis=0),
        N("Reshape", ["tr", "newshape"], ["flat"]),                          # (N, 50)
        N("Unsqueeze", ["flat", "sq"], ["u"]),
        N("Squeeze", ["u", "sq"], ["sq_out"]),
        N("GlobalAveragePool", ["c2"], ["gap"]),
        N("Flatten", ["gap"], ["gf"]),                                       # (N, 4)
        N("ReduceMean", ["c1d"], ["rm"], axes=[2, 3], keepdims=0),           # (N, 4)
        N("Concat", ["sq_out", "gf", "rm", "gf", "rm"], ["feat"], axis=1),   # (N, 66)
        N("Gemm", ["feat", "wg", "cg"], ["gm"], name="fc", transB=1, alpha=0.5, beta=2.0),
        N("Relu", ["gm"], ["r"]),
        N("MatMul", ["r", "wm"], ["mm"], name="head"),
        N("Softmax", ["mm"], ["y"], axis=-1),
    ]
    model = _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]))
    onnx.checker.check_model(model)
    path = _save(model, tmp_path)
    x = rng.standard_normal((7, 3, 6, 6)).astype(f)
    m = load_model(path)
    assert m.compute_layers == ["conv_a", "depthwise", "conv_b", "fc", "head"]
    _close(m.forward(x), _ort(path, x))
    # every intermediate value, not only the softmax at the end
    names = ["c1d", "c2", "mp", "ap", "ap2", "cl", "lr", "pd", "flat", "gm", "mm"]
    ours = m.trace(x, names)
    for name in names:
        mod = onnx.load(path)
        mod.graph.output.extend([helper.make_tensor_value_info(name, TensorProto.FLOAT, None)])
        ref = ort.InferenceSession(mod.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [name], {"x": x})[0]
        _close(ours[name], ref)
    # approximated: the depthwise and dilated conv and the scaled Gemm through the NumPy API
    m.configure(multiplier="mul8u_trunc6")
    v = m.trace(x, ["c1", "c1d", "feat", "gm", "r", "mm"])
    mult = axkern.load_multiplier("mul8u_trunc6")
    ref = axkern.axconv2d(v["c1"], inits["wd"], mult, padding=((1, 1), (0, 0)), dilation=(1, 2),
                          groups=4, data_format="NCHW", backend="reference")
    np.testing.assert_array_equal(v["c1d"], ref)
    ref = axkern.axdense(v["feat"], inits["wg"].T * np.float32(0.5), mult, bias=2 * inits["cg"], backend="reference")
    np.testing.assert_array_equal(v["gm"], ref)
    np.testing.assert_array_equal(v["mm"], axkern.axmatmul(v["r"], inits["wm"], mult, backend="reference"))


def test_folding_only_what_alone_follows_a_conv_per_channel(tmp_path):
    rng = np.random.default_rng(2)
    f = np.float32
    inits = {"w": rng.standard_normal((2, 1, 3, 3)).astype(f), "g": np.array([2, 3], f),
             "b": np.array([.1, .2], f), "mu": np.array([.3, -.1], f), "v": np.array([1, 2], f)}
    N = helper.make_node
    inits["sp"] = rng.standard_normal((1, 1, 5, 5)).astype(f)    # not one value per channel
    inits["pc"] = rng.standard_normal((2, 1, 1)).astype(f)       # one value per channel
    nodes = [N("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             N("BatchNormalization", ["c", "g", "b", "mu", "v"], ["bn"]),
             N("Add", ["c", "bn"], ["s"]),
             N("Conv", ["x", "w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             N("Mul", ["c2", "sp"], ["m2"]),
             N("Add", ["s", "m2"], ["s2"]),
             N("Conv", ["x", "w"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
             N("Mul", ["pc", "c3"], ["m3"]),
             N("Add", ["s2", "m3"], ["y"])]
    model = _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 5, 5]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    path = _save(model, tmp_path)
    x = rng.standard_normal((3, 1, 5, 5)).astype(f)
    m = load_model(path)
    assert m.layer_info("conv")["output"] == "c"
    np.testing.assert_array_equal(m.layer_info("conv")["weight"], inits["w"])
    assert m.layer_info("conv2")["output"] == "c2"
    assert m.layer_info("conv3")["output"] == "m3"   # the per-channel Mul is folded
    np.testing.assert_array_equal(m.layer_info("conv3")["weight"], (
        inits["w"].astype(np.float64) * inits["pc"].astype(np.float64)[:, :, :, None]
    ).astype(np.float32))
    _close(m.forward(x), _ort(path, x))


# ------------------------------------------------------------------------------ bad input
def _tiny(tmp_path, extra_nodes=(), weight_as_input=False, pool_attrs=None, name="t.onnx"):
    f = np.float32
    inits = {} if weight_as_input else {"w": np.ones((2, 1, 3, 3), f)}
    N = helper.make_node
    nodes = [N("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1])]
    last = "c"
    if pool_attrs is not None:
        nodes.append(N("MaxPool", ["c"], ["p"], name="pool1", **pool_attrs))
        last = "p"
    for n in extra_nodes:
        n.input[0] = last
        nodes.append(n)
        last = n.output[0]
    nodes.append(N("Identity", [last], ["y"]))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 4, 4])]
                          + ([helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 3, 3])]
                             if weight_as_input else []),
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return _save(m, tmp_path, name)


def test_not_onnx_file(tmp_path, capsys):
    for i, content in enumerate([b"hello, not a model\n", np.random.default_rng(0).bytes(300), b""]):
        p = tmp_path / f"bad{i}.onnx"
        p.write_bytes(content)
        with pytest.raises(ValueError, match="not an ONNX model"):
            load_model(p)
    assert main(["eval", str(tmp_path / "bad0.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("axkern: error:") and "not an ONNX model" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.onnx")


def test_unsupported_op_named_with_its_node(tmp_path):
    lrn = helper.make_node("LRN", ["?"], ["n"], name="norm7", size=3)
    path = _tiny(tmp_path, [lrn])
    with pytest.raises(ValueError, match=r"LRN \(node 'norm7'\)"):
        load_model(path)
    custom = helper.make_node("FusedConv", ["?"], ["n"], name="fc9", domain="com.microsoft")
    path = _tiny(tmp_path, [custom], name="c.onnx")
    with pytest.raises(ValueError, match=r"com.microsoft::FusedConv \(node 'fc9'\)"):
        load_model(path)


def test_weights_as_graph_inputs(tmp_path):
    path = _tiny(tmp_path, weight_as_input=True)
    with pytest.raises(ValueError, match=r"weights are graph inputs rather than initializers: 'w' "
                                         r"\(Conv node 'conv1'\)"):
        load_model(path)


def test_refused_pool_attributes_at_load(tmp_path):
    path = _tiny(tmp_path, pool_attrs={"kernel_shape": [2, 2], "ceil_mode": 1})
    with pytest.raises(ValueError, match="MaxPool node 'pool1': ceil_mode=1"):
        load_model(path)


def test_input_shape_mismatch_names_both_shapes(torch_model, tmp_path, capsys):
    m = load_model(torch_model["path"])
    x_nhwc = torch_model["x"][:5].transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"has shape \('N', 1, 8, 8\), the data has shape "
                                         r"\(5, 8, 8, 1\)"):
        m.forward(x_nhwc)
    data = tmp_path / "nhwc.npz"
    np.savez(data, x=x_nhwc, y=torch_model["y"][:5])
    assert main(["eval", torch_model["path"], "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "(5, 8, 8, 1)" in err and "NCHW" in err


def test_assign_unknown_layer_lists_valid_ones(torch_model, capsys):
    m = load_model(torch_model["path"])
    rc = main(["eval", torch_model["path"], "--data", torch_model["data"], "--assign",
               "/nope/Conv=mul8u_exact"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "/nope/Conv" in err and all(n in err for n in m.compute_layers)
    with pytest.raises(ValueError, match="not an approximable layer"):
        m.configure(["/nope/Conv"], multiplier="mul8u_exact")


def test_copy_is_independent_and_picklable(torch_model):
    import pickle

    m = load_model(torch_model["path"])
    c = m.copy().configure(multiplier="mul8u_trunc8", tune=True)
    assert all(v == (None, "auto", False) for v in m.settings().values())
    p = pickle.loads(pickle.dumps(c))
    assert p.settings() == c.settings()
    x = torch_model["x"][:50]
    np.testing.assert_array_equal(p.forward(x), c.forward(x))


def test_missing_onnx_package_names_the_extra(tmp_path, monkeypatch, capsys):
    from axkern.survey import MissingDependency

    path = _tiny(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)   # as if not installed
    with pytest.raises(MissingDependency, match=r'pip install "axkern\[onnx\]"'):
        load_model(path)
    assert main(["eval", path]) == 2
    assert 'axkern[onnx]' in capsys.readouterr().err


def test_labels_checked_on_a_fixed_batch_export(tmp_path):
    # an export without dynamic axes runs batches of its own size only: the labels' check
    # probes one batch of batch_size samples (it refused such models with one sample), and
    # still refuses labels beyond the model's classes
    torch = pytest.importorskip("torch")
    from axkern import survey as S

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).reshape(x.shape[0], -1))

    torch.manual_seed(0)
    net = Net().eval()
    path = str(tmp_path / "fixed_batch.onnx")
    torch.onnx.export(net, torch.rand(8, 1, 6, 6), path, input_names=["x"],
                      output_names=["y"], dynamo=False)
    x = np.random.default_rng(0).random((16, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy().argmax(1)
    assert S.evaluate(path, "mul8u_exact", data=(x, y), batch_size=8)["float_accuracy"] == 100.0
    with pytest.raises(ValueError, match="3 scores per sample"):
        S.evaluate(path, "mul8u_exact", data=(x, y + 3), batch_size=8)
