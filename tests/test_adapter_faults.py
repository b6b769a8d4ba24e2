"""Faults found in the PyTorch and Keras adapters: shared modules, tracing, subclasses with
their own forward, unbatched Linear gradients, layers that never run, parametrized and lazy
layers, settings validated at construction, the Keras signedness message; keyword inputs,
hooks carried over, partial checkpoints and calibration histograms of a tiny first batch."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import axkern  # noqa: E402
import axkern.torch as at  # noqa: E402

U = axkern.load_multiplier("mul8u_drum4")        # unsigned, visibly approximate
UEXACT = axkern.load_multiplier("mul8u_exact")


def conv_reference(layer, x, m):
    """An approximate Conv2d's output (int padding, NCHW) by axkern's NumPy API on the
    reference backend."""
    xn = np.ascontiguousarray(x.detach().numpy())
    return axkern.axconv2d(xn, layer.weight.detach().numpy(), m,
                           bias=None if layer.bias is None else layer.bias.detach().numpy(),
                           stride=layer.stride, padding=tuple((p, p) for p in layer.padding),
                           dilation=layer.dilation, groups=layer.groups, data_format="NCHW",
                           quant="tfapprox", backend="reference")


def shared_net():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    return nn.Sequential(conv, nn.ReLU(), conv).eval()


# ------------------------------------------------------------------ 1. shared modules
@pytest.mark.parametrize("inplace", [False, True])
def test_shared_module_is_approximated_everywhere(inplace):
    net = shared_net()
    a = at.approximate(net, U, inplace=inplace)
    assert isinstance(a[0], at.ApproxConv2d) and a[2] is a[0]      # still one shared module
    assert (a is net) == inplace
    assert a[0].weight is (net[0].weight if inplace else a[0].weight)
    x = torch.rand(2, 3, 6, 7)
    with torch.no_grad():
        y = a(x).numpy()
    h = np.maximum(conv_reference(a[0], x, U), 0)
    ref = conv_reference(a[0], torch.from_numpy(h), U)
    np.testing.assert_array_equal(y, ref)
    # listed once, under its first name; MACs count both calls
    rows = at.layers(a, (3, 6, 7))
    assert [r["name"] for r in rows] == ["0"]
    assert rows[0]["macs"] == 2 * a[0].macs((3, 6, 7)) == 2 * 6 * 7 * 3 * 3 * 9


def test_shared_module_names():
    net = shared_net()
    with pytest.raises(ValueError, match=r"'2' is the same module as '0'"):
        at.approximate(net, {"2": U})
    with pytest.raises(ValueError, match=r"'2' is the same module as '0'"):
        at.approximate(net, U, skip=["2"])
    a = at.approximate(net, {"0": U})
    assert a[2] is a[0] and a[0].multiplier is U
    kept = at.approximate(net, U, skip=["0"])
    assert type(kept[0]) is nn.Conv2d and kept[2] is kept[0]


def test_shared_module_in_survey_model():
    sm = at.as_survey_model(shared_net())
    assert sm.compute_layers == ["0"]
    assert isinstance(sm.module[0], at.ApproxConv2d) and sm.module[2] is sm.module[0]
    sm.configure(multiplier=U)
    x = np.random.default_rng(0).random((2, 3, 5, 5), dtype=np.float32)
    h = np.maximum(conv_reference(sm.module[0], torch.from_numpy(x), U), 0)
    np.testing.assert_array_equal(sm.forward(x),
                                  conv_reference(sm.module[0], torch.from_numpy(h), U))
    assert sm.layer_macs((3, 5, 5)) == {"0": 2 * 5 * 5 * 3 * 3 * 9}


# ------------------------------------------------------------------ 2. trace / compile / script
def traced_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2)).eval()
    return at.approximate(net, "mul8u_trunc8")


@pytest.mark.parametrize("grad", [False, True])
def test_jit_trace_is_a_clear_error(grad):
    a = traced_net()
    x = torch.rand(2, 3, 8, 8)
    with torch.set_grad_enabled(grad):
        with pytest.raises(RuntimeError, match=r"ApproxConv2d '0': torch.jit.trace: .*NumPy"):
            torch.jit.trace(a, x)
    # float layers (multiplier None) trace as their parents do
    at.approximate(a, None, inplace=True)
    with torch.no_grad():
        tr = torch.jit.trace(a, x)
        x2 = torch.rand(2, 3, 8, 8) * 3
        torch.testing.assert_close(tr(x2), a(x2))


def test_jit_script_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"ApproxConv2d '0': torch.jit.script: .*NumPy"):
        torch.jit.script(traced_net())


def test_torch_compile_and_export_are_clear_errors():
    a = traced_net()
    x = torch.rand(2, 3, 8, 8)
    try:
        torch._dynamo.reset()
        with pytest.raises(RuntimeError, match=r"ApproxConv2d '0': torch.compile.*NumPy"):
            torch.compile(a, backend="eager")(x)
        with pytest.raises(RuntimeError, match=r"ApproxConv2d '0': torch.compile.*NumPy"):
            torch.export.export(a, (x,))
    finally:
        torch._dynamo.reset()
    with torch.no_grad():                          # eager calls are unaffected
        np.testing.assert_array_equal(a[0](x).numpy(), conv_reference(a[0], x, a[0].multiplier))


# ------------------------------------------------------------------ 3. subclasses with a forward
class WSConv2d(nn.Conv2d):
    """Weight-standardized convolution: its own forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias)


class PaddedConv(nn.Conv2d):
    """Overrides _conv_forward only."""

    def _conv_forward(self, x, weight, bias):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), weight, bias)


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class PlainSub(nn.Conv2d):
    """A subclass without its own forward: converted."""


def test_subclass_with_own_forward_stays_float():
    torch.manual_seed(0)
    net = nn.Sequential(WSConv2d(3, 4, 3), PaddedConv(4, 4, 3), PlainSub(4, 4, 1), nn.Flatten(),
                        ScaledLinear(144, 6), nn.Linear(6, 2)).eval()
    with pytest.warns(UserWarning, match=r"'0' \(WSConv2d\), '1' \(PaddedConv\), "
                                         r"'4' \(ScaledLinear\) stay float"):
        a = at.approximate(net, UEXACT)
    assert [type(a[i]).__name__ for i in range(6)] == [
        "WSConv2d", "PaddedConv", "ApproxConv2d", "Flatten", "ScaledLinear", "ApproxLinear"]
    assert [r["name"] for r in at.layers(a)] == ["2", "5"]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        yf, ya = net(x), a(x)
    # the float layers keep their own forward: only 8-bit quantization error remains
    assert (ya - yf).abs().max() < 0.05 * yf.abs().max()
    with pytest.raises(TypeError, match=r"WSConv2d overrides nn.Conv2d's forward"):
        at.ApproxConv2d.from_float(WSConv2d(3, 4, 3))
    with pytest.raises(TypeError, match=r"ScaledLinear overrides nn.Linear's forward"):
        at.ApproxLinear.from_float(ScaledLinear(3, 4))
    with pytest.raises(ValueError, match=r"'0' stays float: its class WSConv2d"):
        at.approximate(net, {"0": U})
    # survey models leave them float too (with the same warning)
    with pytest.warns(UserWarning, match="WSConv2d"):
        assert at.as_survey_model(net).compute_layers == ["2", "5"]


# ------------------------------------------------------------------ 4. unbatched Linear grads
@pytest.mark.parametrize("grad", ["ste", "table"])
def test_unbatched_linear_backward(grad):
    torch.manual_seed(0)
    layer = at.ApproxLinear(6, 5, multiplier=U, grad=grad)
    x = torch.randn(6, requires_grad=True)
    g = torch.randn(5)
    y = layer(x)
    assert y.shape == (5,)
    y.backward(g)
    got = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    # the same as a batch of one
    layer.zero_grad()
    xb = x.detach().clone()[None].requires_grad_(True)
    yb = layer(xb)
    torch.testing.assert_close(yb[0], y, rtol=0, atol=0)
    yb.backward(g[None])
    for a, b in zip(got, (xb.grad[0], layer.weight.grad, layer.bias.grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(got[2], g, rtol=0, atol=0)     # d/d bias of y = g


def test_unbatched_linear_backward_close_to_float():
    torch.manual_seed(0)
    ref = nn.Linear(6, 5)
    layer = at.ApproxLinear.from_float(copy_linear(ref), UEXACT)
    x = torch.randn(6)
    xa, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    layer(xa).sum().backward()
    ref(xr).sum().backward()
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=0, atol=0)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=0.02, atol=0.02)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=0.02, atol=0.02)


def copy_linear(layer):
    new = nn.Linear(layer.in_features, layer.out_features)
    new.load_state_dict(layer.state_dict())
    return new


# ------------------------------------------------------------------ 5. layers that never run
def test_multihead_attention_projections_stay_float():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    with pytest.warns(UserWarning, match=r"MultiheadAttention layers \['self_attn'\].*float"):
        a = at.approximate(enc, U)
    assert type(a.self_attn.out_proj) is type(enc.self_attn.out_proj)   # not converted
    assert [r["name"] for r in at.layers(a, (5, 8))] == ["linear1", "linear2"]
    with pytest.raises(ValueError, match=r"'self_attn.out_proj' stays float: the out_proj of "
                                         r"nn.MultiheadAttention 'self_attn'"):
        at.approximate(enc, {"self_attn.out_proj": U})
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        sm = at.as_survey_model(enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # every layer runs: no warning
        assert sm.layer_macs((5, 8)) == {"linear1": 5 * 8 * 16, "linear2": 5 * 16 * 8}
    # the output: attention in float, the feed-forward through the table
    x = torch.rand(2, 5, 8)
    with torch.no_grad():
        h = enc.norm1(x + enc.self_attn(x, x, x, need_weights=False)[0])
        f1 = np.maximum(axkern.axdense(h.numpy(), enc.linear1.weight.detach().numpy().T, U,
                                       enc.linear1.bias.detach().numpy(), quant="tfapprox",
                                       backend="reference"), 0)
        f2 = axkern.axdense(f1, enc.linear2.weight.detach().numpy().T, U,
                            enc.linear2.bias.detach().numpy(), quant="tfapprox",
                            backend="reference")
        ref = enc.norm2(h + torch.from_numpy(f2))
        for layer in (a.linear1, a.linear2):
            layer.backend = "reference"
        # eval mode without gradients: PyTorch's fused fast path would read linear1.weight and
        # linear2.weight directly (float); the approximate layers must run instead
        torch.testing.assert_close(a(x), ref, rtol=1e-5, atol=1e-5)
        assert (a(x) - enc(x)).abs().max() > 1e-3


def test_transformer_encoder_runs_the_approximate_layers():
    torch.manual_seed(0)
    te = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                          batch_first=True), 2).eval()
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        a = at.approximate(te, U)
    x = torch.rand(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])

    def by_hand(src, key_padding_mask):
        for layer in a.layers:
            h = layer.norm1(src + layer._sa_block(src, None, key_padding_mask))
            src = layer.norm2(h + layer._ff_block(h))
        return src

    with torch.no_grad():
        for m in (None, mask):
            torch.testing.assert_close(a(x, src_key_padding_mask=m), by_hand(x, m),
                                       rtol=1e-5, atol=1e-5)
            assert (a(x, src_key_padding_mask=m) - te(x, src_key_padding_mask=m)).abs().max() > 1e-3
    restored = at.as_survey_model(a).module                # the copy keeps it
    with torch.no_grad():
        torch.testing.assert_close(restored(x), a(x), rtol=0, atol=0)


class AuxNet(nn.Module):
    """A training-only auxiliary head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)
        self.aux = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


def test_layer_that_never_runs_counts_zero_macs(tmp_path):
    torch.manual_seed(0)
    net = AuxNet()
    net.train()(torch.rand(2, 4))                   # a training step ran the aux head once
    sm = at.as_survey_model(at.approximate(net, None))
    assert at.layers(sm.module, (4,))[2] == {"name": "aux", "type": "ApproxLinear",
                                             "multiplier": None, "quant": None,
                                             "calibrated": False, "macs": None}
    with pytest.warns(UserWarning, match=r"\['aux'\] do not run in the model's eval-mode"):
        assert sm.layer_macs((4,)) == {"body": 24, "head": 18, "aux": 0}
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    with torch.no_grad():
        y = net.eval()(torch.from_numpy(x)).argmax(1).numpy()
    with pytest.warns(UserWarning, match=r"\['aux'\]"):
        r = axkern.search(model=net, data=(x, y), multipliers=["mul8u_exact", "mul8u_trunc8"],
                          population=4, generations=1, seed=1, workers=1, output=str(tmp_path),
                          progress=False, plot=False, verbose=False)
    assert r["layers"] == ["body", "head", "aux"]
    assert r["macs"] == {"body": 24, "head": 18, "aux": 0}


# ------------------------------------------------------------------ 6. parametrized and lazy
@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm", "old_weight_norm", "prune"])
def test_computed_weights_are_a_clear_error(wrap):
    import torch.nn.utils.parametrizations as P
    import torch.nn.utils.prune as prune

    conv = nn.Conv2d(3, 4, 3)
    if wrap == "weight_norm":
        conv = P.weight_norm(conv)
    elif wrap == "spectral_norm":
        conv = P.spectral_norm(conv)
    elif wrap == "old_weight_norm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            conv = nn.utils.weight_norm(conv)
    else:
        conv = prune.l1_unstructured(conv, "weight", 0.5)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(TypeError, match=r"layer '0': .*weight is computed, not a Parameter.*"
                                        r"not supported; remove it first"):
        at.approximate(net, U)
    with pytest.raises(TypeError, match=r"weight is computed"):
        at.ApproxConv2d.from_float(conv, U)
    # skipped: the rest is approximated (in place: PyTorch cannot deep-copy the older hooks)
    a = at.approximate(net, U, skip=["0"], inplace=True)
    assert a[0] is conv and isinstance(a[2], at.ApproxLinear)


def test_lazy_layers_must_run_first():
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"layer '0': .*lazy layer.*run the model once"):
        at.approximate(net, U)
    x = torch.rand(2, 3, 8, 8)
    net(x)                                          # materialized: plain Conv2d / Linear
    a = at.approximate(net, U)
    assert isinstance(a[0], at.ApproxConv2d) and isinstance(a[2], at.ApproxLinear)
    with torch.no_grad():
        np.testing.assert_array_equal(a[0](x).numpy(), conv_reference(a[0], x, U))


# ------------------------------------------------------------------ 7. settings at construction
def test_backend_validated_at_construction():
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'.*'reference', 'cpu', 'cuda'"):
        at.ApproxLinear(3, 4, multiplier=U, backend="gpu")
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'"):
        at.ApproxConv2d(3, 4, 3, backend="gpu")
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'"):
        at.approximate(nn.Linear(3, 4), U, backend="gpu")
    layer = at.approximate(nn.Sequential(nn.Linear(3, 4)), U)[0]
    with pytest.raises(TypeError, match=r"ApproxLinear '0': backend must be a name"):
        layer.backend = 3
    assert layer.backend == "cpu"
    layer.backend = "reference"
    with torch.no_grad():
        x = torch.rand(2, 3)
        np.testing.assert_array_equal(
            layer(x).numpy(), axkern.axdense(x.numpy(), layer.weight.detach().numpy().T, U,
                                             layer.bias.detach().numpy(), quant="tfapprox",
                                             backend="reference"))


def test_keras_signedness_error_names_the_layer():
    keras = pytest.importorskip("keras")
    import axkern.keras as axk

    signed = axkern.load_multiplier("mul8s_drum4")
    with pytest.raises(ValueError, match=r"^layer 'c1': .*is signed: use quant='symmetric' "
                                         r"or an unsigned multiplier$"):
        axk.ApproxConv2D(2, 3, name="c1", multiplier=signed, quant="tfapprox")
    with pytest.raises(ValueError, match=r"^layer 'd1': .*is unsigned: use quant='tfapprox' "
                                         r"or a signed multiplier$"):
        axk.ApproxDense(2, name="d1", multiplier=U, quant="symmetric")
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, name="conv1")])
    with pytest.raises(ValueError, match=r"^layer 'conv1': .*an unsigned multiplier$"):
        axk.approximate(model, signed, quant="tfapprox")


def test_keras_multiplier_errors_name_the_layer(tmp_path):
    """A missing or unreadable multiplier named no layer (docs/keras.md says they do)."""
    pytest.importorskip("keras")
    import axkern.keras as axk

    with pytest.raises(ValueError, match=r"^layer 'c1': unknown multiplier 'no_such_mult'"):
        axk.ApproxConv2D(4, 3, name="c1", multiplier="no_such_mult")
    missing = tmp_path / "none.bin"
    with pytest.raises(FileNotFoundError, match=r"^layer 'd1': multiplier file not found"):
        axk.ApproxDense(4, name="d1", multiplier=str(missing))
    bad = tmp_path / "odd.bin"
    bad.write_bytes(b"\0" * 7)
    with pytest.raises(ValueError, match=r"^layer 'dw': "):
        axk.ApproxDepthwiseConv2D(3, name="dw", multiplier=str(bad))


# ------------------------------------------------- keyword inputs, hooks, checkpoints
def test_forward_takes_the_parents_keyword():
    """layer(input=x), as on nn.Conv2d / nn.Linear (the subclasses' forward named it x)."""
    torch.manual_seed(0)
    lin, conv = nn.Linear(4, 3), nn.Conv2d(2, 3, 3, padding=1)
    alin = at.ApproxLinear.from_float(lin, U).eval()
    aconv = at.ApproxConv2d.from_float(conv, U).eval()
    x, xc = torch.randn(5, 4), torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        assert torch.equal(alin(input=x), alin(x))
        assert torch.equal(aconv(input=xc), aconv(xc))
        want = torch.from_numpy(conv_reference(aconv, xc, U))
        assert torch.equal(aconv(input=xc), want)


def test_layers_counts_layers_called_by_keyword():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(input=self.conv(input=x).flatten(1))

    model = at.approximate(M(), U)
    rows = {r["name"]: r["macs"] for r in at.layers(model, (3, 8, 8))}
    assert rows == {"conv": 6 * 6 * 4 * 3 * 3 * 3, "fc": 4 * 6 * 6 * 2}


@pytest.mark.parametrize("inplace", [False, True])
def test_hooks_carried_over(inplace):
    """Forward, forward pre- and backward hooks of a float layer fire on its approximate
    replacement (with the approximate module and output), as after a torch.ao module swap."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(("fwd", type(m).__name__, o)))
    net[3].register_forward_pre_hook(lambda m, a, k: seen.append(("pre", k)),
                                     with_kwargs=True)
    net[3].register_full_backward_hook(lambda m, gi, go: seen.append(("bwd",)))
    a = at.approximate(net, U, inplace=inplace)
    x = torch.rand(2, 3, 8, 8)
    a(x).sum().backward()
    kinds = [e[0] for e in seen]
    assert kinds == ["fwd", "pre", "bwd"]
    assert seen[0][1] == "ApproxConv2d"
    with torch.no_grad():
        assert torch.equal(seen[0][2], a[0](x))   # the approximate layer's own output


def test_partial_checkpoint_keeps_other_layers_calibrated():
    torch.manual_seed(0)
    a = at.approximate(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
                       "mul8s_exact")
    with at.calibrate(a):
        a(torch.randn(16, 4))
    r0 = a[0].input_range.clone()
    a.load_state_dict({"2.weight": torch.zeros(2, 4), "2.bias": torch.zeros(2)}, strict=False)
    assert a[0].calibrated and torch.equal(a[0].input_range, r0)
    assert not a[2].calibrated   # its float weights came without a range


@pytest.mark.parametrize("method", ["percentile", "mse"])
@pytest.mark.parametrize("first", [1e-5, 1e-3])
def test_calibration_after_a_tiny_first_batch(method, first):
    """The histogram's bins are set by the first batch; a wide batch after a tiny one merged
    nothing and asked for billions of bins (an allocation error, or seconds of work)."""
    torch.manual_seed(0)
    big = torch.rand(4000, 4) * 10 - 2
    ref = at.ApproxLinear(4, 2, multiplier="mul8s_exact")
    with at.calibrate(ref, method=method):
        ref(big)
    lin = at.ApproxLinear(4, 2, multiplier="mul8s_exact")
    with at.calibrate(lin, method=method):
        lin(torch.full((2, 4), first))
        lin(big)
    obs = at._RangeObserver(2048, True)
    obs.observe(torch.full((2, 4), first))
    obs.observe(big)
    assert 2 * obs.half <= 2 * 2048 * at._MAX_GROWTH
    assert obs.counts.sum().item() == 8 + big.numel()   # every value still counted
    # the same range up to the coarser bins (a bin of the merged histogram is 10 / 2048 wide
    # at most twice over)
    np.testing.assert_allclose(lin.input_range.numpy(), ref.input_range.numpy(),
                               atol=2 * obs.width + 1e-6)


def test_histogram_merge_sums_counts_into_covering_bins():
    """An independent check of the merge: every value's bin after merging covers it."""
    obs = at._RangeObserver(8, True)
    vals = torch.tensor([-0.9, -0.4, -0.01, 0.0, 0.01, 0.3, 0.99])
    obs.observe(vals)
    before = obs.counts.clone()
    obs._merge(3)
    assert obs.counts.sum().item() == before.sum().item()
    edges = (np.arange(-obs.half, obs.half + 1)) * obs.width
    for v in vals.tolist():
        i = int(np.searchsorted(edges, v, side="right")) - 1
        assert edges[i] <= v < edges[i + 1]
        assert obs.counts[i] > 0
    want = np.histogram(vals.numpy().astype(np.float64), bins=edges)[0]
    np.testing.assert_array_equal(obs.counts.numpy(), want)
