"""axconv2d / lut_conv2d against references written here, independently of axkern's code."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import axkern
from axkern import Multiplier, axconv2d, lut_conv2d
from axkern.quant import QuantParams

F32 = np.float32
BACKENDS = ["reference", "cpu"]


# ------------------------------------------------------------------ independent references
def tf_codes(x, lo=None, hi=None, widen=False):
    """TF FakeQuantWithMinMaxVars codes (8 bit), float32 math. The default range is the raw
    min/max (TFApprox); ``widen`` includes 0 in it ("asymmetric")."""
    x = np.asarray(x, F32)
    if lo is None:
        lo = min(x.min(), 0) if widen else x.min()
    if hi is None:
        hi = max(x.max(), 0) if widen else x.max()
    lo, hi = F32(lo), F32(hi)
    scale = (hi - lo) / F32(255)
    zf = F32(0) - lo / scale
    z = 0 if zf < 0 else 255 if zf > 255 else int(np.floor(float(zf) + 0.5))
    nmin = (F32(0) - F32(z)) * scale
    nmax = (F32(255) - F32(z)) * scale
    inv = F32(1) / scale
    q = np.floor((np.minimum(np.maximum(x, nmin), nmax) - nmin) * inv + F32(0.5)).astype(np.int64)
    return q, float(scale), z


def sym_codes(x, axis=None):
    x = np.asarray(x, F32)
    if axis is None:
        s = np.abs(x).max() / F32(127)
    else:
        s = (np.abs(np.moveaxis(x, axis, -1)).reshape(-1, x.shape[axis]).max(axis=0) / F32(127)).astype(F32)
    q = np.clip(np.rint(x / s), -127, 127).astype(np.int64)
    return q, np.asarray(s, np.float64)


def same_pads(size, k, s, d):
    out = -(-size // s)
    tot = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return tot // 2, tot - tot // 2


def conv_generic(x, w, stride, pads, dilation, groups, fill, tap):
    """out[n,oy,ox,o] = sum tap(x_window, w) via plain loops over kernel taps (NHWC/HWIO)."""
    N, H, W, C = x.shape
    KH, KW, Cg, O = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    t, b, l, r = pads
    xp = np.full((N, H + t + b, W + l + r, C), fill, dtype=x.dtype)
    xp[:, t:t + H, l:l + W] = x
    OH = (H + t + b - dh * (KH - 1) - 1) // sh + 1
    OW = (W + l + r - dw * (KW - 1) - 1) // sw + 1
    Og = O // groups
    out = np.zeros((N, OH, OW, O), np.float64 if x.dtype.kind == "f" else np.int64)
    for oy in range(OH):
        for ox in range(OW):
            for ky in range(KH):
                for kx in range(KW):
                    px = xp[:, oy * sh + ky * dh, ox * sw + kx * dw, :]   # (N, C)
                    for o in range(O):
                        g = o // Og
                        out[:, oy, ox, o] += tap(px[:, g * Cg:(g + 1) * Cg], w[ky, kx, :, o]).sum(axis=1)
    return out


def float_conv(x, w, stride, pads, dilation, groups):
    return conv_generic(x.astype(np.float64), w.astype(np.float64), stride, pads, dilation, groups,
                        0.0, lambda a, b: a * b[None, :])


def lut_conv(xq, wq, T, stride, pads, dilation, groups, fill, bits=8):
    mask = (1 << bits) - 1
    return conv_generic(xq, wq, stride, pads, dilation, groups, fill,
                        lambda a, b: T[a & mask, b[None, :] & mask].astype(np.int64))


def to_nchw(x, w):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))


# ------------------------------------------------------------------ exact multiplier
# (H, W, C, KH, KW, O, stride, padding, dilation, groups)
CASES = [
    (7, 8, 3, 3, 3, 4, 1, "SAME", 1, 1),
    (7, 8, 3, 3, 3, 4, 2, "SAME", 1, 1),
    (7, 8, 3, 3, 3, 4, 1, "VALID", 1, 1),
    (8, 7, 3, 3, 2, 5, 2, "VALID", 1, 1),
    (9, 9, 2, 3, 3, 3, 1, "SAME", 2, 1),
    (9, 8, 2, 3, 3, 3, 2, "VALID", 2, 1),
    (6, 5, 4, 1, 1, 6, 1, "SAME", 1, 1),          # 1x1
    (6, 5, 4, 1, 1, 6, 2, "VALID", 1, 1),          # 1x1 strided
    (5, 4, 3, 5, 4, 7, 1, "VALID", 1, 1),          # full-size filter
    (6, 6, 4, 3, 3, 6, 1, "SAME", 1, 2),           # grouped
    (6, 7, 4, 3, 3, 4, 2, "SAME", 1, 4),           # depthwise
    (6, 7, 3, 3, 3, 6, 1, "SAME", 2, 3),           # depthwise, channel multiplier 2, dilated
    (5, 5, 2, 3, 3, 3, 1, ((1, 0), (2, 1)), 1, 1),  # explicit padding
]


def _case_data(case, seed):
    H, W, C, KH, KW, O, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, H, W, C)).astype(F32)
    w = rng.standard_normal((KH, KW, C // g, O)).astype(F32)
    if isinstance(p, str):
        pads = (*same_pads(H, KH, s, d), *same_pads(W, KW, s, d)) if p == "SAME" else (0, 0, 0, 0)
    else:
        pads = (*p[0], *p[1])
    return x, w, (s, s), pads, (d, d), g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_exact_multiplier_equals_float_conv_of_fake_quantized(case, backend):
    x, w, stride, pads, dil, g = _case_data(case, CASES.index(case))
    qx, sx, zx = tf_codes(x)
    qw, sw, zw = tf_codes(w)
    ref = float_conv(sx * (qx - zx), sw * (qw - zw), stride, pads, dil, g)
    H, W, C, KH, KW, O, s, p, d, _ = case
    y = axconv2d(x, w, Multiplier.exact(8), stride=s, padding=p, dilation=d, groups=g, backend=backend)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    # Same numbers through the NCHW / OIHW layout.
    xn, wn = to_nchw(x, w)
    yn = axconv2d(xn, wn, Multiplier.exact(8), stride=s, padding=p, dilation=d, groups=g,
                  data_format="NCHW", backend=backend)
    np.testing.assert_array_equal(yn, y.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("case", CASES[:2] + CASES[6:7] + CASES[10:11])
def test_signed_symmetric_exact(case):
    x, w, stride, pads, dil, g = _case_data(case, 7)
    H, W, C, KH, KW, O, s, p, d, _ = case
    m = Multiplier.exact(8, signed=True)
    qx, sx = sym_codes(x)
    for quant, axis in (("symmetric", None), ("symmetric-per-channel", 3)):
        qw, sw = sym_codes(w, axis)
        ref = float_conv(sx * qx, sw * qw, stride, pads, dil, g)
        y = axconv2d(x, w, m, stride=s, padding=p, dilation=d, groups=g, quant=quant, backend="cpu")
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    # "auto" is symmetric per tensor for a signed multiplier.
    qw, sw = sym_codes(w)
    np.testing.assert_array_equal(
        axconv2d(x, w, m, stride=s, padding=p, dilation=d, groups=g, backend="cpu"),
        axconv2d(x, w, m, stride=s, padding=p, dilation=d, groups=g, quant="symmetric", backend="reference"))


# ------------------------------------------------------------------ approximate multipliers
def random_multiplier(rng, signed=False, bits=8):
    n = 1 << bits
    T = rng.integers(-40000, 40000, size=(n, n))
    return Multiplier(T, signed=signed, name="random")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cpu_and_reference_identical_integer_sums(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    g = data.draw(st.sampled_from([1, 1, 2, 3]))
    cg = data.draw(st.integers(1, 3))
    og = data.draw(st.integers(1, 18))  # 8-channel tiles plus remainders
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    H = data.draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 9))
    W = data.draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 9))
    N = data.draw(st.integers(0, 2))
    signed = data.draw(st.booleans())
    bits = data.draw(st.sampled_from([8, 8, 4]))
    m = random_multiplier(rng, signed, bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    x = rng.integers(lo, hi + 1, size=(N, H, W, g * cg))
    w = rng.integers(lo, hi + 1, size=(kh, kw, cg, g * og))
    pad_code = int(rng.integers(lo, hi + 1))
    kw_ = dict(stride=(sh, sw), padding=((pads[0], pads[1]), (pads[2], pads[3])), dilation=(dh, dw),
               groups=g, pad_code=pad_code)
    a = lut_conv2d(x, w, m, backend="cpu", **kw_)
    b = lut_conv2d(x, w, m, backend="reference", **kw_)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    if N:
        ref = lut_conv(x, w, np.asarray(m.table), (sh, sw), pads, (dh, dw), g, pad_code, bits)
        np.testing.assert_array_equal(a, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[6], CASES[8], CASES[10], CASES[11]])
def test_approximate_float_result_matches_zero_point_algebra(case, backend):
    rng = np.random.default_rng(3)
    m = random_multiplier(rng)
    x, w, stride, pads, dil, g = _case_data(case, 11)
    x = x + F32(0.7)  # zero points away from the edges
    H, W, C, KH, KW, O, s, p, d, _ = case
    qx, sx, zx = tf_codes(x)
    qw, sw, zw = tf_codes(w)
    T = np.asarray(m.table, np.int64)
    K = KH * KW * (C // g)
    lut = lut_conv(qx, qw, T, stride, pads, dil, g, zx)
    ones = np.ones_like(qw)
    sum_x = conv_generic(qx, ones, stride, pads, dil, g, zx, lambda a, b: a * b[None, :])
    sum_w = qw.reshape(-1, qw.shape[-1]).sum(axis=0)
    ref = sx * sw * (lut - zw * sum_x - zx * sum_w + K * zx * zw)
    y = axconv2d(x, w, m, stride=s, padding=p, dilation=d, groups=g, backend=backend)
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()


def test_signed_approximate_symmetric_algebra():
    rng = np.random.default_rng(5)
    m = random_multiplier(rng, signed=True)
    x, w, stride, pads, dil, g = _case_data(CASES[1], 5)
    qx, sx = sym_codes(x)
    qw, sw = sym_codes(w, 3)
    ref = sx * sw * lut_conv(qx, qw, np.asarray(m.table, np.int64), stride, pads, dil, g, 0)
    y = axconv2d(x, w, m, stride=2, padding="SAME", quant="symmetric-per-channel", backend="cpu")
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()


def test_one_by_one_filter_keeps_correction_terms():
    # TFApprox's 1x1 fast path dropped the zero-point terms: with an all-positive filter the
    # weight zero point is 0 but the input's is not, so the z_x * sum q_w term matters.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 4, 4, 3)).astype(F32)
    w = rng.random((1, 1, 3, 2)).astype(F32) + F32(0.1)
    qx, sx, zx = tf_codes(x)
    qw, sw, zw = tf_codes(w)
    assert zx != 0
    ref = np.einsum("nhwc,co->nhwo", sx * (qx - zx), sw * (qw[0, 0] - zw))
    for backend in BACKENDS:
        y = axconv2d(x, w, Multiplier.exact(8), backend=backend)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_tfapprox_keeps_tf_clipping_and_asymmetric_widens_the_range():
    # TFApprox feeds the raw per-call min/max to FakeQuantWithMinMaxVars: for an all-positive
    # tensor TF's nudging moves the range to [0, max - min] and clips the top values.
    # "asymmetric" widens the range to include 0 and reproduces the float product closely.
    rng = np.random.default_rng(11)
    x = (rng.random((2, 5, 5, 3)) + 0.5).astype(F32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(F32)
    for widen, quant in ((False, "tfapprox"), (True, "asymmetric")):
        qx, sx, zx = tf_codes(x, widen=widen)
        qw, sw, zw = tf_codes(w, widen=widen)
        xf = sx * (qx - zx)
        wf = sw * (qw - zw)
        ref = np.zeros((2, 3, 3, 4))
        for ky in range(3):
            for kx in range(3):
                ref += np.einsum("nhwc,co->nhwo", xf[:, ky:ky + 3, kx:kx + 3], wf[ky, kx])
        y = axconv2d(x, w, Multiplier.exact(8), padding="VALID", quant=quant)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
        assert (xf.max() < 0.9 * x.max()) == (not widen)  # clipped only under tfapprox


# ------------------------------------------------------------------ API details
def test_bias_and_explicit_params_across_batches():
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((1, 5, 5, 2)).astype(F32)
    x2 = np.concatenate([x1, 3 * x1])
    w = rng.standard_normal((3, 3, 2, 3)).astype(F32)
    m = Multiplier.exact(8)
    xp, wp = QuantParams(0.05, 100), QuantParams(0.02, 128)
    b = np.array([1.0, -2.0, 0.5], F32)
    y1 = axconv2d(x1, w, m, quant=(xp, wp), bias=b, backend="cpu")
    y2 = axconv2d(x2, w, m, quant={"input": xp, "weight": wp}, bias=b, backend="cpu")
    np.testing.assert_array_equal(y1[0], y2[0])  # fixed params: independent of the batch
    # Against the algebra with codes computed by hand from the TF formula.
    qx = np.clip(np.floor((np.clip(x1, F32(-100 * 0.05), F32(155 * 0.05)) - F32(-100) * F32(0.05))
                          * (F32(1) / F32(0.05)) + F32(0.5)), 0, 255)
    qw = np.clip(np.floor((np.clip(w, F32(-128) * F32(0.02), F32(127) * F32(0.02)) - F32(-128) * F32(0.02))
                          * (F32(1) / F32(0.02)) + F32(0.5)), 0, 255)
    ref = float_conv(float(F32(0.05)) * (qx - 100), float(F32(0.02)) * (qw - 128), (1, 1),
                     (1, 1, 1, 1), (1, 1), 1) + b
    assert np.abs(y1 - ref).max() <= 1e-5 * np.abs(ref).max()


def test_non_contiguous_and_fortran_inputs():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 6, 4)).astype(F32)
    w = rng.standard_normal((3, 3, 4, 5)).astype(F32)
    m = random_multiplier(rng)
    y = axconv2d(x, w, m, stride=2, backend="cpu")
    xs = np.zeros((2, 12, 6, 8), F32)[:, ::2, :, ::2]
    xs[...] = x
    np.testing.assert_array_equal(axconv2d(xs, np.asfortranarray(w), m, stride=2, backend="cpu"), y)
    np.testing.assert_array_equal(axconv2d(np.asfortranarray(x), w[::1, ::1], m, stride=2,
                                           backend="reference"), y)
    xc = rng.integers(0, 256, (2, 6, 6, 4))
    wc = rng.integers(0, 256, (3, 3, 4, 5))
    r = lut_conv2d(xc, wc, m, backend="cpu")
    np.testing.assert_array_equal(lut_conv2d(np.asfortranarray(xc), wc[:, :, :, ::-1][:, :, :, ::-1], m,
                                             backend="cpu"), r)


def test_empty_batch():
    m = Multiplier.exact(8)
    y = axconv2d(np.zeros((0, 5, 6, 3), F32), np.ones((3, 3, 3, 4), F32), m, stride=2, backend="cpu")
    assert y.shape == (0, 3, 3, 4) and y.dtype == np.float32
    y = axconv2d(np.zeros((0, 3, 5, 6), F32), np.ones((4, 3, 3, 3), F32), m, data_format="NCHW",
                 padding="VALID")
    assert y.shape == (0, 4, 3, 4)
    r = lut_conv2d(np.zeros((0, 5, 5, 2), int), np.ones((2, 2, 2, 3), int), m, backend="cpu")
    assert r.shape == (0, 4, 4, 3)


def test_constant_and_zero_inputs_give_finite_results():
    m = Multiplier.exact(8)
    w = np.ones((3, 3, 2, 2), F32)
    assert np.all(axconv2d(np.zeros((1, 4, 4, 2), F32), w, m) == 0)
    y = axconv2d(np.full((1, 4, 4, 2), 2.0, F32), w, m, padding="VALID")
    np.testing.assert_allclose(y, 36.0, rtol=1e-5)


def test_accumulator_dtype_and_int64_exactness():
    m = Multiplier.exact(8)
    # K = 3*3*4 = 36: int32 suffices; K = 40000 * 255 * 255 > 2**31: int64, still exact.
    assert lut_conv2d(np.zeros((1, 3, 3, 4), int), np.zeros((3, 3, 4, 1), int), m).dtype == np.int32
    x = np.full((1, 1, 1, 40000), 255)
    w = np.full((1, 1, 40000, 2), 255)
    for backend in BACKENDS:
        r = lut_conv2d(x, w, m, backend=backend)
        assert r.dtype == np.int64 and r[0, 0, 0, 0] == 40000 * 255 * 255


def test_tf_same_padding_split_and_dilation():
    m = Multiplier.exact(8)
    x = np.ones((1, 4, 4, 1), int)
    w = np.ones((2, 2, 1, 1), int)
    # SAME with an even filter pads only at the bottom/right (TensorFlow's split).
    r = lut_conv2d(x, w, m, padding="SAME")[0, :, :, 0]
    np.testing.assert_array_equal(r, [[4, 4, 4, 2], [4, 4, 4, 2], [4, 4, 4, 2], [2, 2, 2, 1]])
    r = lut_conv2d(x, w, m, padding="SAME", pad_code=3)[0, :, :, 0]
    assert r[3, 3] == 1 + 3 + 3 + 3
    r = lut_conv2d(np.arange(16).reshape(1, 4, 4, 1), w, m, dilation=2)[0, :, :, 0]
    np.testing.assert_array_equal(r, [[0 + 2 + 8 + 10, 1 + 3 + 9 + 11], [4 + 6 + 12 + 14, 5 + 7 + 13 + 15]])


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(w=np.ones((3, 3, 2, 4), F32)), ValueError, "channel"),
    (dict(groups=2, w=np.ones((3, 3, 3, 4), F32)), ValueError, "groups=2 does not divide"),
    (dict(groups=3, w=np.ones((3, 3, 1, 4), F32)), ValueError, "does not divide the 4 output"),
    (dict(x=np.ones((4, 4, 3), F32)), ValueError, "4 dimensions"),
    (dict(w=np.ones((3, 3, 3), F32)), ValueError, "4 dimensions"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dilation=(1, 0)), ValueError, "dilation"),
    (dict(data_format="NWHC"), ValueError, "data_format"),
    (dict(padding="FULL"), ValueError, "padding"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(quant="bogus"), ValueError, "quant"),
    (dict(quant="symmetric"), ValueError, "signed"),
    (dict(multiplier=Multiplier.exact(8, signed=True), quant="tfapprox"), ValueError, "unsigned"),
    (dict(multiplier=np.zeros((256, 255))), ValueError, "shape"),
    (dict(multiplier=np.zeros((3, 3))), ValueError, "shape"),
    (dict(multiplier="exact"), TypeError, "Multiplier"),
    (dict(x=np.full((1, 5, 5, 3), np.nan, F32)), ValueError, "NaN"),
    (dict(w=np.full((3, 3, 3, 4), np.inf, F32)), ValueError, "NaN or Inf"),
    (dict(bias=np.ones(3, F32)), ValueError, "bias"),
    (dict(w=np.ones((7, 7, 3, 4), F32), padding="VALID"), ValueError, "does not fit"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(num_threads=0), ValueError, "num_threads"),
    (dict(tune=np.arange(10)), ValueError, "tune"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(x=np.ones((1, 5, 5, 3), F32), w=np.ones((3, 3, 3, 4), F32), multiplier=Multiplier.exact(8))
    for k in ("x", "w", "multiplier"):
        if k in kwargs:
            args[k] = kwargs.pop(k)
    kwargs.setdefault("backend", "cpu")
    with pytest.raises(exc, match=match):
        axconv2d(args["x"], args["w"], args["multiplier"], **kwargs)


def test_bad_codes():
    m = Multiplier.exact(8)
    with pytest.raises(ValueError, match="outside"):
        lut_conv2d(np.full((1, 3, 3, 1), 256), np.ones((1, 1, 1, 1), int), m)
    with pytest.raises(ValueError, match="outside"):
        lut_conv2d(np.ones((1, 3, 3, 1), int), np.ones((1, 1, 1, 1), int), Multiplier.exact(8, signed=True),
                   pad_code=200, padding=1)
    with pytest.raises(TypeError, match="integer"):
        lut_conv2d(np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1), int), m)
    with pytest.raises(ValueError, match="outside"):
        lut_conv2d(np.full((1, 3, 3, 1), -1), np.ones((1, 1, 1, 1), int), m)


def test_lazy_exports():
    assert axkern.axconv2d is axconv2d and axkern.lut_conv2d is lut_conv2d


def test_per_channel_params_in_both_layouts():
    rng = np.random.default_rng(12)
    m = random_multiplier(rng, signed=True)
    x = rng.standard_normal((2, 6, 5, 4)).astype(F32)
    w = (rng.standard_normal((3, 3, 2, 6)) * np.array([1, 2, 4, 8, 0.5, 0.1])).astype(F32)
    y = axconv2d(x, w, m, groups=2, quant="symmetric-per-channel", backend="cpu")
    xn, wn = to_nchw(x, w)
    yn = axconv2d(xn, wn, m, groups=2, quant="symmetric-per-channel", data_format="NCHW", backend="reference")
    np.testing.assert_array_equal(yn, y.transpose(0, 3, 1, 2))
    # The same through explicit per-output-channel parameters.
    sw = (np.abs(w).reshape(-1, 6).max(axis=0) / F32(127)).astype(F32)
    sx = F32(np.abs(x).max() / F32(127))
    q = (QuantParams(sx, signed=True), QuantParams(sw, signed=True))
    np.testing.assert_array_equal(axconv2d(x, w, m, groups=2, quant=q, backend="cpu"), y)
    with pytest.raises(ValueError, match="per output channel"):
        axconv2d(x, w, m, groups=2, quant=(q[0], QuantParams(sw[:5], signed=True)))


def test_remembered_arguments_are_checked_by_type():
    # the geometry and quantization of plain arguments are remembered by value: a bool, or
    # a bool inside a tuple, equals 1 but must still be refused after the int was accepted
    x, w, m = np.ones((1, 5, 5, 3), F32), np.ones((3, 3, 3, 3), F32), Multiplier.exact(8)
    ref = axconv2d(x, w, m, stride=1, groups=1)
    # the same geometry spelled in (nested) tuples, remembered too
    np.testing.assert_array_equal(axconv2d(x, w, m, stride=(1, 1), dilation=(1, 1),
                                           padding=((1, 1), (1, 1))), ref)
    for kw in (dict(groups=True), dict(stride=(1, True)), dict(stride=True),
               dict(dilation=(True, 1)), dict(padding=(True, 1)),
               dict(stride=(1, 1), dilation=(1, 1), padding=((1, True), (1, 1)))):
        with pytest.raises((TypeError, ValueError)):
            axconv2d(x, w, m, **kw)
    # the kernels' own check, remembered by value alike (pad 1 all round, stride 1)
    from axkern import _fast
    xi, wi = np.zeros((1, 5, 5, 3), np.uint8), np.zeros((3, 3, 3, 3), np.uint8)
    t = m.table.astype(np.int32)
    _fast.conv2d(xi, wi, t, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0)
    for kw in (dict(stride=(1, True)), dict(padding=(1, 1, 1, True)),
               dict(dilation=(True, 1)), dict(groups=True)):
        args = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
        args.update(kw)
        with pytest.raises((TypeError, ValueError)):
            _fast.conv2d(xi, wi, t, pad_code=0, **args)
    np.testing.assert_array_equal(axconv2d(x, w, m, stride=np.int64(1), groups=np.int64(1)), ref)
    np.testing.assert_array_equal(axconv2d(x, w, m, stride=[1, 1], padding=[1, 1]), ref)
    for _ in range(2):   # a refused scheme is refused every time
        with pytest.raises(ValueError, match="signed"):
            axconv2d(x, w, m, quant="symmetric")
    bad = w.copy()
    bad[0, 0, 0, 0] = np.nan
    for backend in ("cpu", "reference", "cpu"):   # the weights' check is not cached away
        with pytest.raises(ValueError, match="w contains NaN"):
            axconv2d(x, bad, m, backend=backend)


def test_work_buffers_follow_growth():
    # work buffers hand out remembered views: after a role's buffer grows, a view of the
    # old buffer must not come back
    from axkern.conv import work_buffer
    work_buffer("test-role", (4,), np.int32)
    big = work_buffer("test-role", (1 << 16,), np.int32)
    again = work_buffer("test-role", (4,), np.int32)
    assert np.shares_memory(again, big) and again.shape == (4,) and again.dtype == np.int32
    assert work_buffer("test-role", (4,), np.int32) is again
    assert work_buffer("test-role", (2, 2), np.int32).shape == (2, 2)
