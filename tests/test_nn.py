"""axkern.nn: the graph against an independent float implementation, npz round trip,
BatchNorm folding, weight import from PyTorch/Keras layouts, bad input."""
import json

import numpy as np
import pytest

from axkern import Multiplier
from axkern.nn import (AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential,
                       load)


# ------------------------------------------------------------------ independent references
def ref_conv(x, w, stride, dilation, pads, groups):
    """Direct loops in float64: NHWC input, HWIO weights, explicit (top, bottom, left, right)."""
    n, h, wd, c = x.shape
    kh, kw, cg, o = w.shape
    sh, sw = stride
    dh, dw = dilation
    t, b, l, r = pads
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, oh, ow, o))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                iy = oy * sh + ky * dh - t
                if not 0 <= iy < h:
                    continue
                for kx in range(kw):
                    ix = ox * sw + kx * dw - l
                    if not 0 <= ix < wd:
                        continue
                    for oc in range(o):
                        g = oc // og
                        out[:, oy, ox, oc] += x[:, iy, ix, g * cg:(g + 1) * cg] @ w[ky, kx, :, oc]
    return out


def ref_pool(x, k, s, pads, mode):
    """Pooling by loops; padded cells are skipped (never the max, not counted in the mean)."""
    n, h, wd, c = x.shape
    t, b, l, r = pads
    oh = (h + t + b - k) // s + 1
    ow = (wd + l + r - k) // s + 1
    out = np.zeros((n, oh, ow, c))
    for oy in range(oh):
        for ox in range(ow):
            cells = [x[:, iy, ix, :] for iy in range(oy * s - t, oy * s - t + k)
                     for ix in range(ox * s - l, ox * s - l + k) if 0 <= iy < h and 0 <= ix < wd]
            st = np.stack(cells)
            out[:, oy, ox, :] = st.max(0) if mode == "max" else st.mean(0)
    return out


def rng_arr(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ graph vs reference
@pytest.mark.parametrize("case", [
    # (input HxWxC, kernel, cout, stride, dilation, padding, groups, expected pads for SAME)
    dict(hw=(7, 6), c=3, k=(3, 3), o=4, stride=1, dil=1, pad="SAME", groups=1),
    dict(hw=(8, 8), c=2, k=(2, 2), o=3, stride=1, dil=1, pad="SAME", groups=1),  # odd split
    dict(hw=(9, 7), c=4, k=(3, 2), o=6, stride=2, dil=1, pad="SAME", groups=2),
    dict(hw=(9, 9), c=3, k=(3, 3), o=2, stride=(2, 1), dil=2, pad="VALID", groups=1),
    dict(hw=(6, 5), c=4, k=(3, 3), o=4, stride=1, dil=1, pad=((1, 0), (2, 1)), groups=4),
    dict(hw=(5, 5), c=2, k=(1, 1), o=3, stride=1, dil=1, pad=1, groups=1),
])
def test_conv_float_mode_matches_loops(case):
    rng = np.random.default_rng(1)
    h, w = case["hw"]
    x = rng_arr(rng, 2, h, w, case["c"])
    wt = rng_arr(rng, *case["k"], case["c"] // case["groups"], case["o"])
    bias = rng_arr(rng, case["o"])
    layer = Conv2D(wt, bias, stride=case["stride"], dilation=case["dil"], padding=case["pad"],
                   groups=case["groups"])
    stride = (case["stride"],) * 2 if isinstance(case["stride"], int) else case["stride"]
    dil = (case["dil"],) * 2
    pad = case["pad"]
    if pad == "SAME":  # TensorFlow's rule, worked out independently here
        pads = []
        for n, k, s, d in zip((h, w), case["k"], stride, dil):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
    elif pad == "VALID":
        pads = [0, 0, 0, 0]
    elif isinstance(pad, int):
        pads = [pad] * 4
    else:
        pads = [pad[0][0], pad[0][1], pad[1][0], pad[1][1]]
    want = ref_conv(x.astype(np.float64), wt.astype(np.float64), stride, dil, pads,
                    case["groups"]) + bias
    got = layer.forward(x)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert layer.output_shape((h, w, case["c"])) == want.shape[1:]


def test_sequential_matches_independent_forward():
    rng = np.random.default_rng(2)
    w1, b1 = rng_arr(rng, 3, 3, 2, 5), rng_arr(rng, 5)
    w2, b2 = rng_arr(rng, 2, 2, 5, 6), rng_arr(rng, 6)
    wd, bd = rng_arr(rng, 3 * 3 * 6, 4), rng_arr(rng, 4)
    model = Sequential([
        Conv2D(w1, b1, padding="SAME"), ReLU(), MaxPool2D(2, padding="SAME"),
        Conv2D(w2, b2, padding="VALID"), ReLU(), AvgPool2D(2, strides=1, padding="SAME"),
        Flatten(), Dense(wd, bd),
    ], input_shape=(7, 7, 2))
    x = rng_arr(rng, 3, 7, 7, 2)
    h = ref_conv(x.astype(np.float64), w1, (1, 1), (1, 1), (1, 1, 1, 1), 1) + b1
    h = ref_pool(np.maximum(h, 0), 2, 2, (0, 1, 0, 1), "max")       # 7 -> 4, pad at the end
    h = np.maximum(ref_conv(h, w2, (1, 1), (1, 1), (0, 0, 0, 0), 1) + b2, 0)  # 4 -> 3
    h = ref_pool(h, 2, 1, (0, 1, 0, 1), "avg")                      # 3 -> 3
    want = h.reshape(3, -1) @ wd + bd                                # (H, W, C) flatten order
    shapes = dict(model.shapes())
    assert shapes["maxpool1"] == (4, 4, 5) and shapes["conv2"] == (3, 3, 6)
    assert shapes["avgpool1"] == (3, 3, 6) and shapes["dense1"] == (4,)
    got = model(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.predict(x), np.argmax(want, axis=1))
    # chunked evaluation is the same computation in float mode
    np.testing.assert_allclose(model(x, batch_size=2), got, rtol=1e-6, atol=1e-6)


def test_avgpool_same_excludes_padding():
    x = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    got = AvgPool2D(2, padding="SAME").forward(x)
    np.testing.assert_allclose(got, ref_pool(x.astype(np.float64), 2, 2, (0, 1, 0, 1), "avg"),
                               rtol=1e-6)
    # bottom-right window holds only x[:, 2, 2, :]
    np.testing.assert_array_equal(got[:, 1, 1, :], x[:, 2, 2, :])


# ------------------------------------------------------------------ npz round trip
def _small_model(rng, with_bn=False):
    layers = [Conv2D(rng_arr(rng, 3, 3, 1, 4), rng_arr(rng, 4), padding=((1, 1), (0, 2)),
                     name="c1")]
    if with_bn:
        layers.append(BatchNorm(rng.uniform(0.5, 2, 4), rng_arr(rng, 4), rng_arr(rng, 4),
                                rng.uniform(0.1, 2, 4), eps=1e-3, name="bn_c1"))
    layers += [ReLU(), Conv2D(rng_arr(rng, 2, 2, 4, 3), None, stride=2, dilation=1, groups=1,
                              padding="VALID", name="c2"),
               ReLU(), Flatten(), Dense(rng_arr(rng, 3 * 3 * 3, 5), rng_arr(rng, 5), name="fc")]
    if with_bn:
        layers.append(BatchNorm(rng.uniform(0.5, 2, 5), rng_arr(rng, 5), rng_arr(rng, 5),
                                rng.uniform(0.1, 2, 5), eps=1e-5, name="bn_fc"))
    return Sequential(layers, input_shape=(6, 6, 1), name="small",
                      metadata={"note": "test", "test_indices": [3, 1, 4]})


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    model = _small_model(rng)
    path = tmp_path / "m.npz"
    model.save(path)
    assert path.exists()
    back = load(path)
    assert [l.name for l in back] == [l.name for l in model]
    assert [l.kind for l in back] == [l.kind for l in model]
    assert back.input_shape == (6, 6, 1) and back.name == "small"
    assert back.metadata == {"note": "test", "test_indices": [3, 1, 4]}
    for a, b in zip(model, back):
        assert a.config() == b.config()
        for k, v in a.arrays().items():
            np.testing.assert_array_equal(v, b.arrays()[k])
    assert back["c2"].bias is None
    x = rng_arr(rng, 4, 6, 6, 1)
    np.testing.assert_array_equal(model(x), back(x))
    # the documented layout: a JSON header plus '<layer>/<array>' float32 entries
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(str(f["__axkern__"][()]))
        assert header["format"] == "axkern.nn.Sequential" and header["version"] == 1
        assert header["layers"][0] == {"type": "Conv2D", "name": "c1", "stride": [1, 1],
                                       "padding": [[1, 1], [0, 2]], "dilation": [1, 1],
                                       "groups": 1}
        assert set(f.files) == {"__axkern__", "c1/weight", "c1/bias", "c2/weight", "fc/weight",
                                "fc/bias"}
        assert f["c1/weight"].dtype == np.float32 and f["c1/weight"].shape == (3, 3, 1, 4)


def test_npz_round_trip_keeps_batchnorm_unless_folded(tmp_path):
    rng = np.random.default_rng(4)
    model = _small_model(rng, with_bn=True)
    path = tmp_path / "bn.npz"
    model.save(path)
    raw = load(path, fold_bn=False)
    assert [l.kind for l in raw].count("BatchNorm") == 2
    assert raw["bn_fc"].eps == 1e-5
    folded = load(path)
    assert "BatchNorm" not in [l.kind for l in folded]
    x = rng_arr(rng, 5, 6, 6, 1)
    np.testing.assert_allclose(folded(x), raw(x), rtol=1e-4, atol=1e-5)


def test_batchnorm_folding_matches_unfolded_computation():
    rng = np.random.default_rng(5)
    model = _small_model(rng, with_bn=True)
    x = rng_arr(rng, 6, 6, 6, 1)
    # unfolded, computed independently: conv, then (x - mean) / sqrt(var + eps) * gamma + beta
    c1, bn1, c2, fc, bn2 = (model[n] for n in ("c1", "bn_c1", "c2", "fc", "bn_fc"))
    h = ref_conv(x.astype(np.float64), c1.weight, (1, 1), (1, 1), (1, 1, 0, 2), 1) + c1.bias
    h = (h - bn1.mean) / np.sqrt(bn1.var.astype(np.float64) + 1e-3) * bn1.gamma + bn1.beta
    h = np.maximum(h, 0)
    h = np.maximum(ref_conv(h, c2.weight, (2, 2), (1, 1), (0, 0, 0, 0), 1), 0)
    h = h.reshape(6, -1) @ fc.weight + fc.bias
    want = (h - bn2.mean) / np.sqrt(bn2.var.astype(np.float64) + 1e-5) * bn2.gamma + bn2.beta
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4)
    model.fold_batchnorm()
    assert [l.name for l in model] == ["c1", "relu1", "c2", "relu2", "flatten1", "fc"]
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4)
    # folding gave c2-less-bias layers a bias only where a BN followed
    assert model["c2"].bias is None and model["c1"].bias is not None


def test_batchnorm_not_after_compute_layer_stays():
    rng = np.random.default_rng(6)
    bn = BatchNorm(np.ones(2), np.zeros(2) + 1, np.zeros(2), np.ones(2), eps=0.0)
    model = Sequential([ReLU(), bn, Flatten(), Dense(rng_arr(rng, 8, 3))], input_shape=(2, 2, 2))
    model.fold_batchnorm()
    assert [l.kind for l in model] == ["ReLU", "BatchNorm", "Flatten", "Dense"]
    x = rng_arr(rng, 2, 2, 2, 2)
    np.testing.assert_allclose(model(x), (np.maximum(x, 0) + 1).reshape(2, -1) @ model[3].weight,
                               rtol=1e-5)


# ------------------------------------------------------------------ importing weights
def test_from_torch_layouts_match_nchw_reference():
    rng = np.random.default_rng(7)
    c, h, w, o = 3, 5, 4, 6
    x_nchw = rng.standard_normal((2, c, h, w))
    w_oihw = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    # NCHW/OIHW reference by loops: y[n, o, i, j] = sum x[n, c, i+ky-1, j+kx-1] w[o, c, ky, kx]
    xp = np.pad(x_nchw, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y_nchw = np.zeros((2, o, h, w))
    for i in range(h):
        for j in range(w):
            y_nchw[:, :, i, j] = np.einsum("nck,ock->no", xp[:, :, i:i + 3, j:j + 3].reshape(2, c, 9),
                                           w_oihw.reshape(o, c, 9))
    conv = Conv2D.from_torch(w_oihw, padding=1)
    got = conv.forward(x_nchw.transpose(0, 2, 3, 1).astype(np.float32))
    np.testing.assert_allclose(got, y_nchw.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    # Linear after torch.flatten of NCHW: rows must be permuted to axkern's NHWC flatten
    lin_w = rng.standard_normal((7, o * h * w)).astype(np.float32)
    lin_b = rng.standard_normal(7).astype(np.float32)
    want = y_nchw.reshape(2, -1) @ lin_w.T + lin_b
    dense = Dense.from_torch(lin_w, lin_b, input_shape=(o, h, w))
    np.testing.assert_allclose(dense.forward(got.reshape(2, -1)), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="input_shape"):
        Dense.from_torch(lin_w, lin_b, input_shape=(o, h, w + 1))


class _T:  # duck-typed stand-in of a torch tensor
    def __init__(self, a):
        self.a = np.asarray(a, dtype=np.float32)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def _mod(kind, **attrs):
    cls = type(kind, (), {"children": lambda self: iter(attrs.get("_kids", []))})
    m = cls()
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def test_sequential_from_torch_module():
    rng = np.random.default_rng(8)
    cw = rng.standard_normal((4, 2, 3, 3))
    cb = rng.standard_normal(4)
    g, b, mu, var = rng.uniform(0.5, 2, 4), rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0.2, 2, 4)
    lw = rng.standard_normal((3, 4 * 3 * 3))
    lb = rng.standard_normal(3)
    inner = _mod("Sequential", _kids=[
        _mod("Conv2d", weight=_T(cw), bias=_T(cb), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
             groups=1, padding_mode="zeros"),
        _mod("BatchNorm2d", weight=_T(g), bias=_T(b), running_mean=_T(mu), running_var=_T(var),
             eps=1e-5, num_features=4),
        _mod("ReLU"),
        _mod("MaxPool2d", kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False),
    ])
    net = _mod("Sequential", _kids=[inner, _mod("Dropout"),
                                    _mod("Flatten", start_dim=1, end_dim=-1),
                                    _mod("Linear", weight=_T(lw), bias=_T(lb))])
    model = Sequential.from_torch(net, (2, 6, 6))
    assert [l.kind for l in model] == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense"]
    assert model.input_shape == (6, 6, 2)
    # NCHW reference
    x = rng.standard_normal((2, 2, 6, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((2, 4, 6, 6))
    for i in range(6):
        for j in range(6):
            y[:, :, i, j] = np.einsum("ncyx,ocyx->no", xp[:, :, i:i + 3, j:j + 3], cw) + cb
    y = (y - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
    y = np.maximum(y, 0).reshape(2, 4, 3, 2, 3, 2).max(axis=(3, 5))
    want = y.reshape(2, -1) @ lw.T + lb
    got = model(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not supported"):
        Sequential.from_torch(_mod("Sequential", _kids=[_mod("GELU")]), (2, 6, 6))


def test_keras_helpers_keep_hwio():
    rng = np.random.default_rng(9)
    k = rng_arr(rng, 3, 3, 2, 4)
    layer = Conv2D.from_keras(k, None, strides=2, padding="same")
    np.testing.assert_array_equal(layer.weight, k)
    assert layer.stride == (2, 2) and layer.padding == "SAME"
    d = Dense.from_keras(rng_arr(rng, 5, 3))
    assert d.weight.shape == (5, 3)
    bn = BatchNorm.from_keras(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    assert bn.eps == 1e-3


# ------------------------------------------------------------------ configuration
def test_configure_and_settings():
    rng = np.random.default_rng(10)
    model = _small_model(rng)
    assert model.compute_layers == ["c1", "c2", "fc"]
    m = Multiplier.exact(8)
    model.configure(multiplier=m, tune=True)
    assert all(v[0] == m.name and v[2] is True for v in model.settings().values())
    model.configure(["c1"], multiplier=None)
    assert model.settings()["c1"][0] is None and model.settings()["c2"][0] == m.name
    model.assign({"fc": None})
    assert model["fc"].multiplier is None
    with pytest.raises(ValueError, match="only Conv2D and Dense"):
        model.configure(["relu1"], multiplier=m)
    with pytest.raises(KeyError, match="no layer named"):
        model.configure(["nope"], multiplier=m)
    with pytest.raises(TypeError, match="multiplier"):
        model.configure(multiplier=3.5)
    cp = model.copy()
    assert cp.settings() == model.settings()
    cp["c2"].weight[...] = 0
    assert np.any(model["c2"].weight != 0)
    text = model.summary()
    assert "c1" in text and "fc" in text and "MACs" in text


def test_exact_multiplier_close_to_float():
    rng = np.random.default_rng(11)
    model = _small_model(rng)
    x = np.abs(rng_arr(rng, 8, 6, 6, 1))
    ref = model(x)
    for m in (Multiplier.exact(8, signed=False), Multiplier.exact(8, signed=True)):
        model.configure(multiplier=m)
        got = model(x)
        # 8-bit quantization of inputs and weights: a few percent of the output range
        assert np.max(np.abs(got - ref)) < 0.05 * np.max(np.abs(ref))
    model.configure(multiplier=None)
    np.testing.assert_array_equal(model(x), ref)


def test_layers_pass_their_settings_to_the_kernels():
    import axkern

    rng = np.random.default_rng(13)
    m = axkern.Multiplier.from_function(lambda a, b: (a * b) >> 6 << 6, 8, name="t6")
    conv = Conv2D(rng_arr(rng, 3, 2, 2, 4), rng_arr(rng, 4), stride=(2, 1), dilation=(1, 2),
                  groups=2, padding=((1, 0), (2, 1)), multiplier=m, tune=True)
    x = np.abs(rng_arr(rng, 2, 7, 8, 4))
    want = axkern.axconv2d(x, conv.weight, m, bias=conv.bias, stride=(2, 1), dilation=(1, 2),
                           groups=2, padding=((1, 0), (2, 1)), tune=True)
    np.testing.assert_array_equal(conv.forward(x), want)
    ms = axkern.Multiplier.from_function(lambda a, b: (a * b) >> 4 << 4, 8, signed=True)
    dense = Dense(rng_arr(rng, 6, 3), None, multiplier=ms, quant="symmetric-per-channel")
    xd = rng_arr(rng, 5, 6)
    np.testing.assert_array_equal(dense.forward(xd), axkern.axdense(
        xd, dense.weight, ms, quant="symmetric-per-channel"))


# ------------------------------------------------------------------ bad input
def test_bad_input_errors(tmp_path):
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="4 dimensions"):
        Conv2D(rng_arr(rng, 3, 3, 2))
    with pytest.raises(ValueError, match="groups"):
        Conv2D(rng_arr(rng, 3, 3, 2, 5), groups=2)
    with pytest.raises(ValueError, match="padding"):
        Conv2D(rng_arr(rng, 3, 3, 2, 4), padding="FULL")
    with pytest.raises(ValueError, match="stride"):
        Conv2D(rng_arr(rng, 3, 3, 2, 4), stride=0)
    with pytest.raises(ValueError, match="one per output channel"):
        Conv2D(rng_arr(rng, 3, 3, 2, 4), rng_arr(rng, 3))
    with pytest.raises(ValueError, match="NaN"):
        Dense(np.full((2, 2), np.nan))
    with pytest.raises(TypeError, match="numeric"):
        Dense(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="layer name"):
        ReLU(name="bad name")
    with pytest.raises(ValueError, match="used twice"):
        Sequential([ReLU(name="a"), ReLU(name="a")])
    with pytest.raises(TypeError, match="axkern.nn.Layer"):
        Sequential([np.zeros(3)])
    conv = Conv2D(rng_arr(rng, 3, 3, 2, 4), name="k")
    with pytest.raises(ValueError, match="2 input channels"):
        conv.forward(rng_arr(rng, 1, 5, 5, 3))
    with pytest.raises(ValueError, match="Flatten"):
        Sequential([Dense(rng_arr(rng, 4, 2))]).forward(rng_arr(rng, 2, 2, 2))
    model = Sequential([Flatten(), Dense(rng_arr(rng, 4, 2))], input_shape=(2, 2, 1))
    with pytest.raises(ValueError, match="per-sample shape"):
        model(rng_arr(rng, 3, 2, 3, 1))
    with pytest.raises(ValueError, match="one entry per sample"):
        model.accuracy(rng_arr(rng, 3, 2, 2, 1), [0, 1])
    with pytest.raises(ValueError, match="smaller than"):
        Sequential([Conv2D(rng_arr(rng, 5, 5, 1, 1), padding="VALID")], input_shape=(3, 3, 1))
    # files
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="npz"):
        load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ValueError, match="__axkern__"):
        load(other)
    bad = tmp_path / "bad.npz"
    np.savez(bad, __axkern__=np.array(json.dumps(
        {"format": "axkern.nn.Sequential", "version": 1, "layers": [{"type": "Softmax"}]})))
    with pytest.raises(ValueError, match="unknown layer"):
        load(bad)
    np.savez(bad, __axkern__=np.array(json.dumps(
        {"format": "axkern.nn.Sequential", "version": 1,
         "layers": [{"type": "Dense", "name": "d"}]})))
    with pytest.raises(ValueError, match="lacks its array 'weight'"):
        load(bad)
    np.savez(bad, __axkern__=np.array(json.dumps({"format": "axkern.nn.Sequential", "version": 9})))
    with pytest.raises(ValueError, match="version"):
        load(bad)


def _random_batchnorm_statistics(torch, net):
    """Non-trivial statistics and affine parameters for the BatchNorm layers; eval mode."""
    with torch.no_grad():
        for m in net:
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    net.eval()


def test_from_real_torch_module():
    torch = pytest.importorskip("torch")  # a development-only check; CI may not have torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 8, 3, stride=1, padding="valid", groups=2, dilation=1),
        torch.nn.AvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.5),
        torch.nn.Linear(8 * 2 * 2, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
        torch.nn.Linear(5, 3))
    _random_batchnorm_statistics(torch, net)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = net(x).numpy()
    model = Sequential.from_torch(net, (3, 8, 8))
    assert dict(model.shapes())["flatten1"] == (32,)  # a (C, H, W) -> (H, W, C) permutation
    assert "BatchNorm" not in [l.kind for l in model]
    got = model(x.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_from_torch_batchnorm1d_after_flatten_follows_the_permutation():
    # BatchNorm1d over flattened image features holds its statistics in PyTorch's (C, H, W)
    # order; axkern flattens (H, W, C), so they must be permuted as the Linear's rows are
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.ReLU(),
                              torch.nn.BatchNorm1d(2 * 6 * 6), torch.nn.Linear(72, 3))
    _random_batchnorm_statistics(torch, net)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        want = net(x).numpy()
    model = Sequential.from_torch(net, (1, 8, 8))
    np.testing.assert_allclose(model(x.numpy().transpose(0, 2, 3, 1)), want, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="divisor_override"):
        Sequential.from_torch(torch.nn.Sequential(torch.nn.AvgPool2d(2, divisor_override=1)),
                              (1, 4, 4))


def test_layer_error_names_the_layer():
    # 3e38 in the first weight matrix: its output overflows float32 (with a warning), and the
    # next layer's refusal of the inf it receives must say which layer that was
    w1 = np.full((4, 3), 0.5, np.float32)
    w1[0, 0] = 3e38
    model = Sequential([Dense(w1, name="d1"), Dense(np.ones((3, 2), np.float32), name="d2")])
    model.configure(multiplier=Multiplier.exact(8))
    x = np.full((5, 4), 2e38, np.float32)
    with pytest.warns(Warning), pytest.raises(ValueError, match="^layer 'd2': .*NaN or Inf"):
        model(x)
