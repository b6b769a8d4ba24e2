"""axkern.torch: approximate PyTorch layers against axkern's NumPy API, float PyTorch and
direct NumPy computations of the gradients."""
import io
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import axkern  # noqa: E402
import axkern.torch as at  # noqa: E402
from axkern.quant import dequantize, quantize, symmetric_params, tf_quant_params  # noqa: E402

# F.conv2d's own note on even kernels with padding='same' (the shape check below)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

U = axkern.load_multiplier("mul8u_drum4")        # unsigned, visibly approximate
S = axkern.load_multiplier("mul8s_drum4")        # signed
UEXACT = axkern.load_multiplier("mul8u_exact")
SEXACT = axkern.load_multiplier("mul8s_exact")


class Net(nn.Module):
    """A residual network with every Conv2d feature and a Linear on 3-D input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)                                  # int padding
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, (4, 2), padding="same", groups=2),                    # even kernel 'same'
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False),      # depthwise, dilated
        )
        self.down = nn.Conv2d(8, 12, (3, 2), stride=(2, 1), padding=(1, 0))      # tuple padding
        self.valid = nn.Conv2d(12, 12, 2, padding="valid", dilation=(1, 2))
        self.fc1 = nn.Linear(12, 16)                                               # (N, L, 12) input
        self.head = nn.ModuleList([nn.Linear(16, 5)])

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.body(x)                                                       # residual
        x = F.relu(self.valid(F.relu(self.down(x))))
        t = x.flatten(2).transpose(1, 2)                                           # (N, L, 12)
        t = F.relu(self.fc1(t)).mean(dim=1)
        return self.head[0](t)


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net().eval()


def make_input(n=3, seed=1, h=9, w=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


def torch_same_pads(k, d):
    """PyTorch's own split of 'same' padding (extra at the end), from F.conv2d's output."""
    total = d * (k - 1)
    return total // 2, total - total // 2


def numpy_reference(layer, x, m):
    """The layer's output by axkern's NumPy API on the reference backend."""
    xn = x.detach().numpy()
    mode = "symmetric" if m.signed else "tfapprox"
    if isinstance(layer, nn.Linear):
        return axkern.axdense(xn, layer.weight.detach().numpy().T, m,
                              None if layer.bias is None else layer.bias.detach().numpy(),
                              quant=mode, backend="reference")
    if layer.padding == "same":
        pads = tuple(torch_same_pads(k, d) for k, d in zip(layer.kernel_size, layer.dilation))
    elif layer.padding == "valid":
        pads = 0
    else:
        pads = tuple((p, p) for p in layer.padding)
    return axkern.axconv2d(np.ascontiguousarray(xn), layer.weight.detach().numpy(), m,
                           bias=None if layer.bias is None else layer.bias.detach().numpy(),
                           stride=layer.stride, padding=pads, dilation=layer.dilation,
                           groups=layer.groups, data_format="NCHW", quant=mode, backend="reference")


def capture(model):
    """{layer name: [(input, output)]} recorded by forward hooks on every Conv2d/Linear."""
    seen = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.register_forward_hook(
                lambda mod, args, out, name=name: seen.setdefault(name, []).append(
                    (args[0].detach().clone(), out.detach().clone(), out.is_contiguous(
                        memory_format=torch.channels_last) and not out.is_contiguous())))
    return seen


# ------------------------------------------------------------------------------ import
def test_import_axkern_does_not_import_torch():
    code = ("import sys, axkern, axkern.survey, axkern.conv, axkern.nn; axkern.axconv2d; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    # without torch (None in sys.modules makes its import fail): the extra is named
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import axkern.torch\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert 'pip install "axkern[torch]"' in out.stdout


# ------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("m", [U, S], ids=["unsigned", "signed"])
@pytest.mark.parametrize("layout", ["NCHW", "channels_last"])
def test_layers_equal_numpy_api(m, layout):
    """Every layer's output equals axconv2d/axdense on the reference backend, bit for bit."""
    net = make_net()
    am = at.approximate(net, m)
    assert all(type(mod) in (at.ApproxConv2d, at.ApproxLinear)
               for mod in am.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    seen = capture(am)
    x = make_input()
    if layout == "channels_last":   # the input and the weights (as .to(channels_last) does)
        x = x.contiguous(memory_format=torch.channels_last)
        am = am.to(memory_format=torch.channels_last)
        assert not am.stem.weight.is_contiguous()
    with torch.no_grad():
        am(x)
    assert set(seen) == {"stem", "body.0", "body.2", "down", "valid", "fc1", "head.0"}
    for name, [(inp, out, cl)] in seen.items():
        layer = am.get_submodule(name)
        want = numpy_reference(layer, inp, m)
        np.testing.assert_array_equal(out.numpy(), want, err_msg=name)
        if isinstance(layer, nn.Conv2d):
            # same shape as PyTorch's float layer; channels_last in, channels_last out
            assert out.shape == F.conv2d(inp, layer.weight, None, layer.stride, layer.padding,
                                         layer.dilation, layer.groups).shape
            in_cl = inp.is_contiguous(memory_format=torch.channels_last) and not inp.is_contiguous()
            assert cl == in_cl, name
    assert seen["fc1"][0][0].dim() == 3


def test_exact_multiplier_close_to_float():
    net = make_net()
    x = make_input(8)
    with torch.no_grad():
        ref = net(x)
        for m in (UEXACT, SEXACT):
            got = at.approximate(net, m)(x)
            err = (got - ref).abs().max() / ref.abs().max()
            assert err < 0.03, (m.name, float(err))
        drum = at.approximate(net, U)(x)
        assert (drum - ref).abs().max() / ref.abs().max() > 0.03   # the multiplier shows


def test_none_keeps_float_and_mapping():
    net = make_net()
    x = make_input()
    am = at.approximate(net, {"stem": U, "head.0": "mul8u_trunc4"})
    assert am.stem.multiplier is U and am.head[0].multiplier.name == "mul8u_trunc4"
    assert am.down.multiplier is None and isinstance(am.down, at.ApproxConv2d)
    info = {r["name"]: r for r in at.layers(am, (3, 9, 10))}
    assert info["stem"]["multiplier"] == "mul8u_drum4" and info["fc1"]["multiplier"] is None
    # MACs per sample by hand: stem 9x10 outputs x 8 channels x 3*3*3
    assert info["stem"]["macs"] == 9 * 10 * 8 * 27
    assert info["body.2"]["macs"] == 9 * 10 * 8 * 9          # depthwise
    assert info["down"]["macs"] == 5 * 9 * 12 * 8 * 6        # (9+2-3)//2+1 = 5, 10-2+1 = 9
    assert info["fc1"]["macs"] == 4 * 7 * 12 * 16            # 28 positions of 12 features
    # float layers (None) equal nn.Conv2d exactly
    am2 = at.approximate(net, lambda name: None)
    with torch.no_grad():
        assert torch.equal(am2(x), net(x))
    # skip leaves the original module
    am3 = at.approximate(net, U, skip=["stem"])
    assert type(am3.stem) is nn.Conv2d and isinstance(am3.fc1, at.ApproxLinear)
    assert type(net.stem) is nn.Conv2d        # not in place by default
    assert at.approximate(net, U, inplace=True) is net and isinstance(net.stem, at.ApproxConv2d)


def test_same_padding_split_as_pytorch():
    """Even kernels: the exact multiplier follows F.conv2d's own 'same' output closely (a
    padding split differing by one row would shift whole rows)."""
    torch.manual_seed(8)
    x = torch.randn(2, 3, 8, 9)
    for k, d in (((4, 2), (1, 1)), ((2, 3), (3, 2))):
        conv = nn.Conv2d(3, 4, k, padding="same", dilation=d)
        with torch.no_grad():
            ref = conv(x)
            got = at.ApproxConv2d.from_float(conv, UEXACT)(x)
        assert got.shape == ref.shape == (2, 4, 8, 9)
        assert float((got - ref).abs().max()) < 0.03 * float(ref.abs().max())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_equal_pad_then_conv(mode):
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode)
    x = torch.randn(2, 2, 6, 7)
    ac = at.ApproxConv2d.from_float(conv, U)
    with torch.no_grad():
        got = ac(x)
        xp = F.pad(x, (2, 2, 1, 1), mode=mode).numpy()
    want = axkern.axconv2d(xp, conv.weight.detach().numpy(), U, bias=conv.bias.detach().numpy(),
                           padding=0, data_format="NCHW", backend="reference")
    np.testing.assert_array_equal(got.numpy(), want)
    assert got.shape == conv(x).shape


def test_quant_modes_and_tune():
    torch.manual_seed(4)
    lin = nn.Linear(6, 4)
    x = torch.randn(5, 6)
    for quant in ("tfapprox", "asymmetric"):
        for tune in (False, True):
            al = at.ApproxLinear.from_float(lin, U, quant=quant, tune=tune)
            with torch.no_grad():
                got = al(x).numpy()
            want = axkern.axdense(x.numpy(), lin.weight.detach().numpy().T, U,
                                  lin.bias.detach().numpy(), quant=quant, tune=tune,
                                  backend="reference")
            np.testing.assert_array_equal(got, want)
    al = at.ApproxLinear.from_float(lin, S, quant="symmetric-per-channel")
    with torch.no_grad():
        np.testing.assert_array_equal(
            al(x).numpy(), axkern.axdense(x.numpy(), lin.weight.detach().numpy().T, S,
                                          lin.bias.detach().numpy(), quant="symmetric-per-channel",
                                          backend="reference"))
    # unbatched inputs, as nn.Conv2d / nn.Linear take them
    conv = nn.Conv2d(2, 3, 3)
    ac = at.ApproxConv2d.from_float(conv, U)
    x3 = torch.rand(2, 5, 5)
    with torch.no_grad():
        assert torch.equal(ac(x3), ac(x3[None])[0])
        assert torch.equal(al(x[0]), al(x[:1])[0])


# ------------------------------------------------------------------------------ calibration
@pytest.mark.parametrize("method", ["max", "percentile", "mse"])
@pytest.mark.parametrize("m", [U, S], ids=["unsigned", "signed"])
def test_calibrate_and_state_dict_round_trip(method, m):
    net = make_net()
    x = make_input(6)
    am = at.approximate(net, m)
    float_keys = list(net.state_dict())
    assert list(am.state_dict()) == float_keys                 # uncalibrated: the same keys
    inputs = capture(am)
    with at.calibrate(am, method):
        am(x[:3])
        am(x[3:])
    ranges = {n: mod.input_range.clone() for n, mod in am.named_modules()
              if isinstance(mod, at._ApproxMixin)}
    assert len(ranges) == 7
    for name, r in ranges.items():
        seen = torch.cat([inp.reshape(-1) for inp, _, _ in inputs[name]])
        lo, hi = float(seen.min()), float(seen.max())
        if method == "max":
            if m.signed:
                amax = max(-lo, hi)
                assert r.tolist() == [np.float32(-amax), np.float32(amax)]
            else:
                assert r.tolist() == [np.float32(min(lo, 0)), np.float32(max(hi, 0))]
        elif m.signed:   # inside the observed range, and not degenerate
            assert -r[0] == r[1] and 0.3 * max(-lo, hi) < r[1] <= max(-lo, hi)
        else:
            assert min(lo, 0) <= r[0] <= 0 and 0.3 * max(hi, 0) < r[1] <= max(hi, 0)
    # frozen ranges: the layer's QuantParams are those of the range, every call
    sd = am.state_dict()
    assert [k for k in sd if k not in float_keys] == [n + ".input_range" for n in ranges]
    with torch.no_grad():
        want = am(x)
        y1 = am(x[:2])
        assert torch.equal(y1, want[:2])                       # no per-call ranges any more
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = at.approximate(make_net(seed=9), m)                # other weights, uncalibrated
    fresh.load_state_dict(torch.load(buf), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
    for n, r in ranges.items():
        assert torch.equal(fresh.get_submodule(n).input_range, r)
    # the layer output against the NumPy API with the frozen parameters
    layer = am.stem
    lo, hi = (float(v) for v in layer.input_range)
    if m.signed:
        xp = symmetric_params(np.float32([lo, hi]))
        wmode = "symmetric-per-channel"           # "auto" once calibrated (pytorch-quantization)
    else:
        xp = tf_quant_params(lo, hi)
        wmode = "tfapprox"
    with torch.no_grad():
        got = layer(x).numpy()
    ref = axkern.axconv2d(x.numpy(), layer.weight.detach().numpy(), m,
                          bias=layer.bias.detach().numpy(), padding=1, data_format="NCHW",
                          quant=(xp, wmode), backend="reference")
    np.testing.assert_array_equal(got, ref)
    # a float checkpoint loads strictly and resets the calibration; the other way needs strict=False
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert not fresh.stem.calibrated and list(fresh.state_dict()) == float_keys
    with pytest.raises(RuntimeError, match="input_range"):
        make_net().load_state_dict(sd, strict=True)
    make_net().load_state_dict(sd, strict=False)


def test_calibrate_signed_semantics():
    """Symmetric 8-bit: scale amax/127, clamp at +-127, round half to even."""
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    al = at.ApproxLinear.from_float(lin, SEXACT)
    with at.calibrate(al):
        al(torch.tensor([[-127.0], [20.0]]))
    assert al.input_range.tolist() == [-127.0, 127.0]
    with torch.no_grad():
        y = al(torch.tensor([[0.5], [1.5], [2.5], [-0.5], [300.0], [-300.0]]))
    # scale 1: half to even, clamped at +-127 (weight code 127, scale 1/127)
    np.testing.assert_allclose(y[:, 0].numpy(), [0.0, 2.0, 2.0, -0.0, 127.0, -127.0], rtol=1e-6)


# ------------------------------------------------------------------------------ gradients
def fake_quant_np(v, p, axis=-1):
    return dequantize(quantize(v, p, channel_axis=axis), p, channel_axis=axis)


STE_LAYERS = {
    "conv": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 7, 6)),
    "conv_same_even": (lambda: nn.Conv2d(4, 6, (4, 2), padding="same", dilation=(1, 2)),
                       (2, 4, 7, 6)),
    "linear_3d": (lambda: nn.Linear(4, 6), (2, 5, 4)),
}


@pytest.mark.parametrize("kind", list(STE_LAYERS))
@pytest.mark.parametrize("m", [U, S], ids=["unsigned", "signed"])
def test_ste_equals_float_autograd_on_fake_quantized(m, kind):
    torch.manual_seed(5)
    make, shape = STE_LAYERS[kind]
    layer = make()
    x = torch.randn(shape)
    conv = isinstance(layer, nn.Conv2d)
    approx = (at.ApproxConv2d if conv else at.ApproxLinear).from_float(layer, m)
    approx.set_input_range(-1.0, 1.5)          # some inputs clip: their gradient is 0
    xg = x.clone().requires_grad_()
    y = approx(xg)
    g = torch.randn(y.shape)
    y.backward(g)
    # the independent computation: NumPy fake quantization, then autograd of PyTorch's float layer
    xp = symmetric_params(np.float32([-1.0, 1.5])) if m.signed else tf_quant_params(-1.0, 1.5)
    w = layer.weight.detach().numpy()
    wlast = w.transpose(2, 3, 1, 0) if conv else w.T        # output channels last
    # calibrated signed "auto": weights per output channel; unsigned: the per-call range
    wp = symmetric_params(wlast, channel_axis=-1) if m.signed else tf_quant_params(w.min(), w.max())
    xq = torch.from_numpy(fake_quant_np(x.numpy(), xp)).requires_grad_()
    wq_last = fake_quant_np(wlast, wp)
    wq = torch.from_numpy(np.ascontiguousarray(wq_last.transpose(3, 2, 0, 1) if conv else wq_last.T))
    wq.requires_grad_()
    if conv:
        F.conv2d(xq, wq, None, layer.stride, layer.padding, layer.dilation, layer.groups).backward(g)
    else:
        F.linear(xq, wq).backward(g)
    if m.signed:            # |x| <= amax = 127 * scale
        inside = x.abs() <= np.float32(xp.scale) * np.float32(127)
    else:                   # the nudged range
        inside = (x >= float(xp.scale) * -xp.zero_point) & \
            (x <= float(xp.scale) * (255 - xp.zero_point))
    assert not inside.all() and inside.any()
    torch.testing.assert_close(xg.grad, xq.grad * inside, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, wq.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, g.sum(dim=(0, 2, 3) if conv else (0, 1)))


def test_training_reaches_every_parameter():
    net = make_net()
    am = at.approximate(net, U).train()
    x, y = make_input(6), torch.tensor([0, 1, 2, 3, 4, 0])
    before = {n: p.detach().clone() for n, p in am.named_parameters()}
    out0 = am(x).detach()
    loss = F.cross_entropy(am(x), y)
    loss.backward()
    for n, p in am.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    with torch.no_grad():   # an SGD step, in place as torch.optim does it (whose first
        for p in am.parameters():   # import costs seconds: not in a unit test)
            p.add_(p.grad, alpha=-0.05)
    for n, p in am.named_parameters():
        assert not torch.equal(p, before[n]), n
    with torch.no_grad():
        assert not torch.equal(am(x), out0)      # the new weights are used (no stale cache)
        seen = capture(am)
        am(x)
        np.testing.assert_array_equal(seen["stem"][0][1].numpy(),
                                      numpy_reference(am.stem, seen["stem"][0][0], U))


def _grad_tables_np(m):
    """dT/da and dT/db in value order, written out as loops (central, one-sided at the ends)."""
    v = m.values()
    order = np.argsort(v)
    t = np.asarray(m.table, np.float64)[np.ix_(order, order)]
    n = t.shape[0]
    da = np.empty_like(t)
    db = np.empty_like(t)
    for i in range(n):
        lo_i, hi_i = max(i - 1, 0), min(i + 1, n - 1)
        da[i, :] = (t[hi_i, :] - t[lo_i, :]) / (hi_i - lo_i)
        db[:, i] = (t[:, hi_i] - t[:, lo_i]) / (hi_i - lo_i)
    return da, db, int(v.min())


def _codes_np(v, p, axis=-1):
    return quantize(v, p, channel_axis=axis)


@pytest.mark.parametrize("m", [U, S], ids=["unsigned", "signed"])
def test_gradient_tables_linear_against_numpy(m):
    torch.manual_seed(6)
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    al = at.ApproxLinear.from_float(lin, m, grad="table")
    xg = x.clone().requires_grad_()
    g = torch.randn(4, 2)
    al(xg).backward(g)
    da, db, lo = _grad_tables_np(m)
    for got, want in zip(at.gradient_tables(m), (da, db)):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    xn, w = x.numpy(), lin.weight.detach().numpy().T           # (in, out)
    mode = "symmetric" if m.signed else "tfapprox"
    xp = axkern.conv.make_params(xn, mode, m)
    wp = axkern.conv.make_params(w, mode, m, 2)
    qa, qb = _codes_np(xn, xp), _codes_np(w, wp)
    sa, za, sb, zb = float(xp.scale), int(xp.zero_point), float(wp.scale), int(wp.zero_point)
    gx = np.zeros((4, 3))
    gw = np.zeros((3, 2))
    gn = g.numpy().astype(np.float64)
    for i in range(4):
        for k in range(3):
            for j in range(2):
                gx[i, k] += gn[i, j] * sb * (da[qa[i, k] - lo, qb[k, j] - lo] - zb)
                gw[k, j] += gn[i, j] * sa * (db[qa[i, k] - lo, qb[k, j] - lo] - za)
    np.testing.assert_allclose(xg.grad.numpy(), gx, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lin.weight.grad.numpy(), gw.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lin.bias.grad.numpy(), gn.sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("m", [U, S], ids=["unsigned", "signed"])
def test_gradient_tables_conv_against_numpy(m):
    torch.manual_seed(7)
    conv = nn.Conv2d(2, 2, (2, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    x = torch.randn(2, 2, 4, 5)
    ac = at.ApproxConv2d.from_float(conv, m, grad="table")
    xg = x.clone().requires_grad_()
    y = ac(xg)
    g = torch.randn(y.shape)
    y.backward(g)
    da, db, lo = _grad_tables_np(m)
    xn, w = x.numpy(), conv.weight.detach().numpy()             # OIHW
    mode = "symmetric" if m.signed else "tfapprox"
    xp = axkern.conv.make_params(xn, mode, m)
    wp = axkern.conv.make_params(w.transpose(2, 3, 1, 0), mode, m, 2)
    qa, qb = _codes_np(xn, xp), _codes_np(w, wp)
    sa, za, sb, zb = float(xp.scale), int(xp.zero_point), float(wp.scale), int(wp.zero_point)
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    gn = g.numpy().astype(np.float64)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    for n in range(N):
        for o in range(O):
            grp = o // (O // 2)
            for oy in range(gn.shape[2]):
                for ox in range(gn.shape[3]):
                    for c in range(Cg):
                        for ky in range(KH):
                            for kx in range(KW):
                                iy, ix = oy * 2 - 1 + ky, ox - 1 + kx * 2
                                inside = 0 <= iy < H and 0 <= ix < W
                                a = qa[n, grp * Cg + c, iy, ix] if inside else za
                                b = qb[o, c, ky, kx]
                                if inside:
                                    gx[n, grp * Cg + c, iy, ix] += gn[n, o, oy, ox] * sb * (
                                        da[a - lo, b - lo] - zb)
                                gw[o, c, ky, kx] += gn[n, o, oy, ox] * sa * (db[a - lo, b - lo] - za)
    np.testing.assert_allclose(xg.grad.numpy(), gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.weight.grad.numpy(), gw, rtol=1e-5, atol=1e-6)
    # an input that needs no gradient (a first layer): the weight gradient alone, the same
    conv.weight.grad = None
    ac(x).backward(g)
    np.testing.assert_allclose(conv.weight.grad.numpy(), gw, rtol=1e-5, atol=1e-6)


def test_outlier_range_warns_for_torch_layers():
    """A per-call input range set by one outlier warns as axconv2d's does, naming the layer
    and axkern.torch.calibrate; a calibrated (percentile) layer does not."""
    import warnings

    from axkern.quant import QuantizationRangeWarning, _WARNED

    _WARNED.clear()
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    am = at.approximate(net, U)
    x = torch.rand(2, 3, 8, 8) * 0.01
    x[0, 0, 0, 0] = 1000.0
    with pytest.warns(QuantizationRangeWarning, match=r"ApproxConv2d '0' input.*axkern\.torch\.calibrate"):
        am(x)
    with at.calibrate(am, "percentile", percentile=99.0):
        am(x)
    _WARNED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationRangeWarning)
        am(x)   # the frozen range: nothing to warn about


def test_im2col_codes_and_col2im_against_unfold_fold():
    """axkern._fast.im2col_codes / col2im_add (the gradient tables' im2col in C) against
    torch's unfold and fold, per group, with strides, dilation and asymmetric padding."""
    import torch.nn.functional as F

    from axkern import _fast

    rng = np.random.default_rng(9)
    N, C, H, W, G = 2, 6, 7, 9, 3
    Cg = C // G
    for (kh, kw), stride, (pt, pb, pl, pr), dil in [((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                                                     ((2, 3), (2, 1), (0, 2, 1, 0), (1, 2)),
                                                     ((1, 1), (3, 2), (0, 0, 0, 0), (1, 1))]:
        x = rng.integers(0, 256, (N, C, H, W), dtype=np.uint8)
        pad = 77
        xp = F.pad(torch.from_numpy(x).float(), (pl, pr, pt, pb), value=float(pad))
        cols = F.unfold(xp, (kh, kw), dilation=dil, stride=stride)   # (N, C*kh*kw, L)
        L, Kg = cols.shape[-1], Cg * kh * kw
        geo = dict(ksize=(kh, kw), stride=stride, padding=(pt, pb, pl, pr), dilation=dil)
        gx = np.zeros((N, C, H, W))
        gcols = torch.zeros_like(cols, dtype=torch.float64)
        for g in range(G):
            got = _fast.im2col_codes(x, G, g, pad_code=pad, **geo)
            want = cols[:, g * Kg:(g + 1) * Kg].permute(0, 2, 1).reshape(N * L, Kg)
            np.testing.assert_array_equal(got, want.numpy().astype(np.uint8))
            ga = rng.standard_normal((N * L, Kg))
            _fast.col2im_add(ga, gx, G, g, **geo)
            gcols[:, g * Kg:(g + 1) * Kg] = torch.from_numpy(ga).reshape(N, L, Kg).permute(0, 2, 1)
        full = F.fold(gcols, (H + pt + pb, W + pl + pr), (kh, kw), dilation=dil, stride=stride)
        np.testing.assert_allclose(gx, full[:, :, pt:pt + H, pl:pl + W].numpy(), rtol=1e-12,
                                   atol=1e-12)
    with pytest.raises(ValueError, match="geometry"):
        _fast.im2col_codes(x, 4, 0, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 0)
    with pytest.raises(ValueError, match="gx must be"):
        _fast.col2im_add(ga, gx.astype(np.float32), G, 0, **geo)


def test_gradient_table_products_compiled_and_torch_agree(monkeypatch):
    """The gathers of grad="table" in axkern._fast.table_grads and their PyTorch fallback
    (no compiled module): the same gradients of a grouped strided convolution."""
    from axkern import _torch_grad

    torch.manual_seed(8)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(3, 4, 9, 7)
    g = torch.randn(3, 6, 5, 4)
    grads = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(_torch_grad, "_fast", lambda: None)
        ac = at.ApproxConv2d.from_float(conv, U, grad="table")
        xg = x.clone().requires_grad_()
        conv.zero_grad()
        ac(xg).backward(g)
        grads.append((xg.grad.clone(), conv.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_gradient_tables_of_exact_multiplier_are_the_ste():
    net = make_net()
    x = make_input(2)
    grads = []
    for grad in ("ste", "table"):
        am = at.approximate(net, UEXACT, grad=grad)
        xg = x.clone().requires_grad_()
        am(xg).square().sum().backward()
        grads.append([xg.grad] + [p.grad.clone() for p in am.parameters()])
        net.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ survey
def test_survey_on_torch_model(tmp_path):
    net = make_net()
    x = make_input(24, seed=2)
    with torch.no_grad():
        y = net(x).argmax(1).numpy()
    direct = {}
    with torch.no_grad():
        for m in (U, UEXACT):
            direct[m.name] = 100.0 * float((at.approximate(net, m)(x).argmax(1).numpy() == y).mean())
    r = axkern.survey(model=net, data=(x.numpy(), y), multipliers=[U, UEXACT], per_layer=True,
                      tune=False, output=str(tmp_path), progress=False, verbose=False,
                      plot=False)   # (the plots are the survey's own code, tested there)
    assert r["float_accuracy"] == 100.0
    assert {row["multiplier"]: row["accuracy"] for row in r["rows"]} == direct
    assert r["per_layer"]["layers"] == ["stem", "body.0", "body.2", "down", "valid", "fc1", "head.0"]
    stem_only = at.approximate(net, {"stem": U, **{n: UEXACT for n in r["per_layer"]["layers"][1:]}})
    with torch.no_grad():
        acc = 100.0 * float((stem_only(x).argmax(1).numpy() == y).mean())
    assert r["per_layer"]["accuracy"][r["per_layer"]["multipliers"].index(U.name)][0] == acc
    assert {p.name for p in tmp_path.iterdir()} >= {"results.csv", "results.json", "per_layer.csv"}
    e1 = at.evaluate(net, U, (x.numpy(), y))
    e2 = axkern.survey.evaluate(model=net, multiplier=U, data=(x.numpy(), y))
    assert e1["accuracy"] == e2["accuracy"] == direct[U.name]
    assert set(e1["settings"]) == set(r["per_layer"]["layers"])
    # NHWC data: channels_last tensors, the same accuracy
    e3 = at.evaluate(net, U, (x.permute(0, 2, 3, 1).numpy(), y), input_layout="NHWC")
    assert e3["accuracy"] == direct[U.name]
    sm = at.as_survey_model(net)
    clone = pickle.loads(pickle.dumps(sm.configure(["stem"], multiplier=U)))
    assert clone.settings()["stem"][0] == U.name and clone.settings()["fc1"][0] is None
    assert type(net.stem) is nn.Conv2d                        # the original is untouched


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.main, self.aux = nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        return self.main(x), self.aux(x)


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return {"logits": self.fc(x)}


def test_survey_scores_the_first_of_several_outputs():
    torch.manual_seed(5)
    net = _TwoHeads().eval()
    x = torch.rand(40, 6)
    with torch.no_grad():
        main, aux = (t.numpy() for t in net(x))
    y = main.argmax(1)
    assert np.mean(aux.argmax(1) == y) < 0.9   # the heads disagree: the test can tell
    sm = at.as_survey_model(net)
    np.testing.assert_array_equal(sm.forward(x.numpy()), main)
    assert at.evaluate(net, UEXACT, (x.numpy(), y))["float_accuracy"] == 100.0
    with pytest.raises(TypeError, match="returned dict"):
        at.as_survey_model(_DictOut()).forward(x.numpy())


class _AuxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.fc, self.aux = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = self.body(x).mean((2, 3))
        return (self.fc(h), self.aux(h)) if self.training else self.fc(h)


def test_calibrate_leaves_an_idle_float_head_uncalibrated():
    # a training-only head left in float needs no range: the others are frozen; with a
    # multiplier it would be refused (it would take per-call ranges whenever it runs)
    torch.manual_seed(0)
    net = _AuxHead().eval()
    am = at.approximate(net, {"body": U, "fc": U, "aux": None})
    with at.calibrate(am):
        am(torch.rand(4, 3, 6, 6))
    assert am.body.calibrated and am.fc.calibrated and not am.aux.calibrated
    am2 = at.approximate(net, U)
    with pytest.raises(ValueError, match=r"saw no batch for the layers \['aux'\].*skip="):
        with at.calibrate(am2):
            am2(torch.rand(4, 3, 6, 6))
    assert not am2.body.calibrated   # nothing frozen


def test_errors_of_the_numpy_api_name_the_layer():
    # a calibrated layer fed NaN and a NaN weight (a diverged step) fail inside axconv2d /
    # axdense; in a deep network the message must say which layer it was
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 5 * 5, 2))
    am = at.approximate(net, U)
    with at.calibrate(am):
        am(torch.rand(4, 3, 5, 5))
    x = torch.rand(2, 3, 5, 5)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^ApproxConv2d '0': .*NaN or Inf"):
        am(x)
    with torch.no_grad():
        am[3].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^ApproxLinear '3': .*NaN or Inf"):
        am(torch.rand(2, 3, 5, 5))
    x.requires_grad_(True)   # the autograd function's forward too
    with pytest.raises(ValueError, match=r"^ApproxConv2d '0': .*NaN or Inf"):
        am(x)
    # an input smaller than the (dilated) kernel, NCHW and channels_last
    small = at.approximate(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2)), U)
    for t in (torch.rand(1, 3, 4, 6), torch.rand(1, 3, 4, 6).to(
            memory_format=torch.channels_last)):
        with pytest.raises(ValueError, match=r"^ApproxConv2d '0': .*does not fit the padded "
                                             r"4x6 input"):
            small(t)


# ------------------------------------------------------------------------------ bad input
def test_bad_input():
    net = make_net()
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear"):
        at.approximate(nn.Sequential(nn.ReLU(), nn.Flatten()), U)
    with pytest.raises(ValueError, match=r"'nope'.*expected names from \['stem'"):
        at.approximate(net, {"nope": U})
    with pytest.raises(ValueError, match="skip names"):
        at.approximate(net, U, skip=["nope"])
    with pytest.raises(ValueError, match="signed"):          # signed multiplier, unsigned codes
        at.approximate(net, S, quant="tfapprox")
    with pytest.raises(ValueError, match="signed"):
        at.approximate(net, U, quant="symmetric")
    with pytest.raises(ValueError, match="quant must be one of"):
        at.approximate(net, U, quant="fancy")
    with pytest.raises(ValueError, match="grad must be one of"):
        at.approximate(net, U, grad="exact")
    with pytest.raises(TypeError, match="multiplier must be"):
        at.approximate(net, 3.5)
    with pytest.raises(ValueError, match="tune mapping"):
        at.approximate(net, U, tune=np.arange(10))
    am = at.approximate(net, U)
    x = make_input()
    with pytest.raises(TypeError, match=r"float32.*x\.float\(\)"):
        am(x.double())
    with pytest.raises(TypeError, match="float16"):
        am(x.half())
    with pytest.raises(TypeError, match=r"dtype torch.float64.*model.float\(\)"):
        at.approximate(make_net().double(), U)
    with pytest.raises(ValueError, match=r"device meta.*\.cpu\(\)"):  # any non-CPU device
        am(torch.empty(3, 3, 9, 10, device="meta"))
    with pytest.raises(TypeError, match=r"dense \(strided\)"):
        am(x.to_sparse())
    w = am.stem.weight.data
    try:   # a parameter's data swapped for another dtype after conversion
        am.stem.weight.data = w.double()
        with pytest.raises(TypeError, match="the weight has dtype torch.float64"):
            am(x)
    finally:
        am.stem.weight.data = w
    with pytest.raises(ValueError, match="calibrate saw no batch"):
        with at.calibrate(am):
            pass
    assert not am.stem.calibrated
    with pytest.raises(ValueError, match="no ApproxConv2d/ApproxLinear"):
        with at.calibrate(net):
            pass
    with pytest.raises(ValueError, match="calibration method"):
        with at.calibrate(am, "entropy"):
            pass
    with pytest.raises(ValueError, match="input channels"):
        am.stem(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        am.stem(torch.full((1, 3, 5, 5), float("nan")))
    with pytest.raises(ValueError, match="not a Conv2d/Linear layer"):
        at.as_survey_model(net).configure(["nope"], multiplier=U)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        at.ApproxConv2d.from_float(nn.Linear(2, 2), U)
