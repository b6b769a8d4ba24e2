"""axmatmul / axdense / lut_matmul against NumPy references computed here."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axkern import Multiplier, axdense, axmatmul, lut_matmul
from axkern.quant import QuantParams

F32 = np.float32


def tf_codes(x):
    """TF FakeQuantWithMinMaxVars codes of the raw min/max range (TFApprox), float32 math."""
    x = np.asarray(x, F32)
    lo, hi = F32(x.min()), F32(x.max())
    scale = (hi - lo) / F32(255)
    zf = F32(0) - lo / scale
    z = 0 if zf < 0 else 255 if zf > 255 else int(np.floor(float(zf) + 0.5))
    nmin, nmax = (F32(0) - F32(z)) * scale, (F32(255) - F32(z)) * scale
    q = np.floor((np.clip(x, nmin, nmax) - nmin) * (F32(1) / scale) + F32(0.5)).astype(np.int64)
    return q, float(scale), z


def lut_sum(qa, qb, T, bits=8):
    """sum_k T[a[..., m, k], b[..., k, n]] by broadcasting (plain NumPy)."""
    mask = (1 << bits) - 1
    return T[(qa[..., :, :, None] & mask), (qb[..., None, :, :] & mask)].astype(np.int64).sum(axis=-2)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("ashape, bshape", [
    ((5, 7), (7, 3)), ((2, 5, 7), (7, 4)), ((3, 1, 4, 6), (2, 6, 5)), ((6,), (6, 2)), ((4, 6), (6,)),
    ((6,), (6,)), ((2, 3, 9), (2, 9, 1)),
])
def test_exact_matches_numpy_matmul_of_fake_quantized(ashape, bshape, backend):
    rng = np.random.default_rng(len(ashape) * 10 + len(bshape))
    a = rng.standard_normal(ashape).astype(F32)
    b = rng.standard_normal(bshape).astype(F32)
    qa, sa, za = tf_codes(a)
    qb, sb, zb = tf_codes(b)
    ref = np.matmul(sa * (qa - za), sb * (qb - zb))
    y = axmatmul(a, b, Multiplier.exact(8), backend=backend)
    assert y.shape == np.shape(ref) and y.dtype == np.float32
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_cpu_reference_identical_and_algebra(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    M, K, N = (data.draw(st.integers(0, 12)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 20)))
    signed = data.draw(st.booleans())
    m = Multiplier(rng.integers(-50000, 50000, (256, 256)), signed=signed)
    lo, hi = (-128, 127) if signed else (0, 255)
    a = rng.integers(lo, hi + 1, (M, K))
    b = rng.integers(lo, hi + 1, (K, N))
    r1 = lut_matmul(a, b, m, backend="cpu")
    r2 = lut_matmul(a, b, m, backend="reference")
    assert r1.dtype == r2.dtype
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(r1, lut_sum(a, b, np.asarray(m.table)).reshape(M, N))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_approximate_float_algebra(backend):
    rng = np.random.default_rng(1)
    m = Multiplier(rng.integers(0, 70000, (256, 256)))
    a = rng.standard_normal((2, 5, 11)).astype(F32) + F32(0.5)
    b = rng.standard_normal((11, 4)).astype(F32) - F32(0.3)
    bias = np.array([0.5, -1, 2, 0], F32)
    qa, sa, za = tf_codes(a)
    qb, sb, zb = tf_codes(b)
    K = 11
    lut = lut_sum(qa, qb, np.asarray(m.table))
    ref = sa * sb * (lut - zb * qa.sum(-1)[..., None] - za * qb.sum(0) + K * za * zb) + bias
    y = axmatmul(a, b, m, bias=bias, backend=backend)
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()
    yd = axdense(a, b, m, bias, backend=backend)
    np.testing.assert_array_equal(yd, y)


def test_symmetric_per_channel_signed():
    rng = np.random.default_rng(2)
    m = Multiplier(rng.integers(-20000, 20000, (256, 256)), signed=True)
    a = rng.standard_normal((6, 9)).astype(F32)
    b = (rng.standard_normal((9, 3)) * [1, 10, 0.1]).astype(F32)
    sa = np.abs(a).max() / F32(127)
    sb = (np.abs(b).max(axis=0) / F32(127)).astype(F32)
    qa = np.clip(np.rint(a / sa), -127, 127).astype(np.int64)
    qb = np.clip(np.rint(b / sb), -127, 127).astype(np.int64)
    ref = float(sa) * sb.astype(np.float64) * lut_sum(qa, qb, np.asarray(m.table))
    y = axmatmul(a, b, m, quant="symmetric-per-channel", backend="cpu")
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()


def test_k70000_maximal_codes_exact():
    m = Multiplier.exact(8)
    K = 70000
    for backend in ("cpu", "reference"):
        r = lut_matmul(np.full((2, K), 255), np.full((K, 3), 255), m, backend=backend)
        assert r.dtype == np.int64
        assert (r == K * 255 * 255).all()
    # Wider outputs (several columns per tile of the CPU kernel): exact there too.
    r = lut_matmul(np.full((3, K), 255), np.full((K, 9), 255), m, backend="cpu")
    assert r.dtype == np.int64 and (r == K * 255 * 255).all()
    ms = Multiplier.exact(8, signed=True)
    r = lut_matmul(np.full((1, K), -128), np.full((K, 1), -128), ms, backend="cpu")
    assert r[0, 0] == K * 128 * 128
    assert lut_matmul(np.ones((1, 100), int), np.ones((100, 1), int), m).dtype == np.int32


def test_explicit_params_and_layouts():
    rng = np.random.default_rng(3)
    m = Multiplier.exact(8)
    a = rng.standard_normal((8, 5)).astype(F32)
    b = rng.standard_normal((5, 4)).astype(F32)
    q = (QuantParams(0.02, 128), QuantParams(0.01, 120))
    y = axmatmul(a, b, m, quant=q, backend="cpu")
    np.testing.assert_array_equal(axmatmul(a[:3], b, m, quant=q, backend="cpu"), y[:3])
    np.testing.assert_array_equal(axmatmul(np.asfortranarray(a), b[:, ::-1][:, ::-1], m, quant=q), y)
    assert axmatmul(np.zeros((0, 5), F32), b, m).shape == (0, 4)
    assert axdense(np.zeros((0, 3, 5), F32), b, m).shape == (0, 3, 4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda m: axmatmul(np.ones((2, 3)), np.ones((4, 2)), m), ValueError, "K="),
    (lambda m: axmatmul(np.ones((2, 2, 3)), np.ones((3, 3, 2)), m), ValueError, "broadcast"),
    (lambda m: axmatmul(np.ones((2, 3)), np.full((3, 2), np.nan), m), ValueError, "NaN"),
    (lambda m: axmatmul(np.ones((2, 3)), np.ones((3, 2)), m, quant="nope"), ValueError, "quant"),
    (lambda m: axmatmul(np.ones((2, 3)), np.ones((3, 2)), m, bias=np.ones(3)), ValueError, "bias"),
    (lambda m: axmatmul(np.float32(1), np.ones((3, 2)), m), ValueError, "dimension"),
    (lambda m: axdense(np.ones((2, 3)), np.ones((3, 2, 1)), m), ValueError, "in, out"),
    (lambda m: axdense(np.ones((2, 4)), np.ones((3, 2)), m), ValueError, "features"),
    # axdense names its own operands, not axmatmul's a and b
    (lambda m: axdense(np.full((2, 3), np.inf), np.ones((3, 2)), m), ValueError, "^x contains"),
    (lambda m: axdense(np.ones((2, 3)), np.full((3, 2), np.nan), m), ValueError, "^w contains"),
    (lambda m: axdense(np.ones((2, 3), complex), np.ones((3, 2)), m), TypeError, "^x must"),
    (lambda m: lut_matmul(np.ones((2, 3)), np.ones((3, 2), int), m), TypeError, "integer"),
    (lambda m: lut_matmul(np.full((2, 3), 300), np.ones((3, 2), int), m), ValueError, "outside"),
    (lambda m: lut_matmul(np.ones((2, 3), int), np.ones((3, 2), int), np.ones((16, 8))), ValueError, "shape"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(Multiplier.exact(8))
