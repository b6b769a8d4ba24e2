"""Quantization helpers against hand-computed values and NumPy float32 arithmetic."""
import numpy as np
import pytest

from axkern.quant import (QuantParams, QuantSpec, calibrate, dequantize, fake_quant, quantize,
                          symmetric_params, tf_nudge, tf_quant_params)

F32 = np.float32


@pytest.mark.parametrize("lo, hi, zp, nmin, nmax", [
    (-0.5, 1.5, 64, -64 * 2 / 255, 191 * 2 / 255),      # zp_from_min = 63.75 -> 64
    (-1.25, 0.75, 159, -159 * 2 / 255, 96 * 2 / 255),   # 159.375 -> 159
    (0.1, 1.0, 0, 0.0, 0.9),                            # min > 0: zero point clamps to 0
    (-1.0, -0.1, 255, -0.9, 0.0),                       # max < 0: zero point clamps to 255
    (-10.0, 0.0, 255, -10.0, 0.0),
    (0.0, 2.55, 0, 0.0, 2.55),
])
def test_tf_nudge_hand_values(lo, hi, zp, nmin, nmax):
    a, b, s, z = tf_nudge(lo, hi)
    assert z == zp
    assert isinstance(a, np.float32) and isinstance(s, np.float32)
    assert abs(float(a) - nmin) < 1e-6 and abs(float(b) - nmax) < 1e-6
    assert abs(float(s) - (hi - lo) / 255) < 1e-7


def test_tf_nudge_rounds_half_away_from_zero():
    # min = -127.5 * s exactly representable: zp_from_min = 127.5 -> 128 (half away from 0).
    s = F32(1) / F32(2)  # scale 0.5: max - min = 127.5
    _, _, scale, zp = tf_nudge(F32(-63.75), F32(63.75))
    assert scale == s and zp == 128
    _, _, _, zp = tf_nudge(F32(-63.25), F32(64.25))  # 126.5 -> 127
    assert zp == 127


def nudge_float32(x_min, x_max, bits):
    """TensorFlow's Nudge in NumPy float32 scalars, step by step (the reference for
    tf_nudge, which computes in float64 rounded per operation)."""
    lo, hi = F32(x_min), F32(x_max)
    qmin, qmax = F32(0), F32((1 << bits) - 1)
    with np.errstate(all="ignore"):
        for _ in range(2):
            scale = (hi - lo) / (qmax - qmin)
            if scale > 0 and np.isfinite(F32(1) / scale):
                break
            lo, hi = min(lo, F32(0)), max(hi, F32(0))
        else:
            scale = None
        if scale is not None and np.isinf(scale):
            return "too wide"
        if scale is None or not scale > 0 or not np.isfinite(F32(1) / scale):
            return F32(0), qmax, F32(1), 0
        zp_from_min = qmin - lo / scale
        zp = 0 if zp_from_min < qmin else 2 ** bits - 1 if zp_from_min > qmax else \
            int(np.floor(np.float64(zp_from_min) + 0.5))
        return (qmin - F32(zp)) * scale, (qmax - F32(zp)) * scale, scale, zp


def nudge_ranges():
    """Float32 ranges of every magnitude (subnormal to near the float32 limit), including 0
    or not, constant ones, and ones whose zero points round at halves."""
    rng = np.random.default_rng(11)
    big = float(np.finfo(F32).max)
    pairs = [(0.0, 0.0), (-0.0, 0.0), (1e-45, 2e-45), (-big, big), (-big, 0.0), (0.0, big),
             (big / 2, big), (-3e38, -1e-38), (1e30, 1e30 + 1e23), (-1e-40, 1e-38),
             (-63.75, 63.75), (-63.25, 64.25), (5.0, 5.0), (-7.0, -7.0), (-1e-30, 1e30),
             (F32(-1e30), big)]   # max - min a little above the largest float32: rounds to it
    for _ in range(3000):
        e = rng.uniform(-44, 38.5, 2)
        v = np.sort(rng.choice([-1.0, 1.0], 2) * 10.0 ** e).astype(F32)
        if rng.random() < 0.2:   # quantization steps and zero points that round at halves
            s = F32(rng.integers(1, 1000)) / F32(rng.choice([4, 8, 255, 1024]))
            z = rng.integers(0, 256) + rng.choice([0.0, 0.5, 0.25])
            v = np.array([-z * s, (255 - z) * s], F32)
        pairs.append((v[0], v[1]))
    return pairs


def symmetric_float32(lo, hi, bits):
    """amax / qmax in NumPy float32, 1 where its reciprocal overflows (or amax is 0)."""
    with np.errstate(all="ignore"):
        s = max(abs(F32(lo)), abs(F32(hi))) / F32((1 << (bits - 1)) - 1)
        return s if s > 0 and np.isfinite(F32(1) / s) else F32(1)


@pytest.mark.parametrize("compiled", [True, False])
def test_tf_nudge_matches_float32_arithmetic(compiled, monkeypatch):
    """tf_nudge against the same formulas in NumPy float32 scalars, on ranges of every kind
    (either zero too) and every bit width, with axkern._fast's Nudge and with the Python
    one that serves where it is not compiled; those whose scale overflows raise."""
    from axkern import quant

    if compiled:
        pytest.importorskip("axkern._fast")
        assert quant._fast_helpers() is not None
    else:
        monkeypatch.setattr(quant, "_FAST", [None])
    for lo, hi in nudge_ranges() + [(-0.0, -0.0), (-0.0, 3.0), (-2.0, -0.0)]:
        for bits in range(2, 9):
            want = nudge_float32(lo, hi, bits)
            if isinstance(want, str):
                with pytest.raises(ValueError, match="too wide"):
                    tf_nudge(lo, hi, bits)
                continue
            got = tf_nudge(lo, hi, bits)
            assert all(type(g) is F32 for g in got[:3]) and type(got[3]) is int
            assert np.array(got[:3]).tobytes() == np.array(want[:3], F32).tobytes(), \
                (lo, hi, bits, got, want)
            assert got[3] == want[3], (lo, hi, bits)


def test_compiled_nudge_refuses_bad_arguments():
    """axkern._fast.nudge_scale_zp (tf_nudge's, checked above): a float32 value and an int,
    None for a range too wide (tf_nudge's error), bad arguments refused."""
    fast = pytest.importorskip("axkern._fast")
    s, z = fast.nudge_scale_zp(-1.0, 2.0, 8)
    assert type(s) is float and s == float(F32(s)) and type(z) is int
    big = float(np.finfo(F32).max)
    assert fast.nudge_scale_zp(-big, big, 8) is None
    for args in [(0.0, 1.0, 9), (0.0, 1.0, 1), (1.0, 0.0, 8), (float("nan"), 1.0, 8),
                 (0.0, float("inf"), 8)]:
        with pytest.raises(ValueError, match="bits must be|finite range"):
            fast.nudge_scale_zp(*args)


def test_scalar_quant_params_as_the_general_path():
    """A float32 scale and an int zero point take scalar checks (on every call of a layer)
    where arrays take NumPy's: the same attributes, or the same error, at the limits of the
    scale (its reciprocal, the lower end of the range) and of the zero point."""
    tiny = float(np.finfo(F32).tiny)
    big = np.finfo(F32).max
    smallest_ok = F32(1) / big   # near the smallest scale whose reciprocal is finite
    scales = [F32(1), F32(0.0123), big, F32(1e38), F32(1.4e36), F32(1.3e36), F32(2.9e-39),
              F32(3e-39), smallest_ok, np.nextafter(smallest_ok, F32(0)),
              np.nextafter(smallest_ok, F32(1)), F32(tiny), F32(0), F32(-1), F32(np.inf),
              F32(np.nan), F32(1082401 * 2.0 ** 103),
              np.nextafter(F32(1082401 * 2.0 ** 103), F32(0))]
    # 31 * 1082401 * 2**103 is 2**128 - 2**103, the first product that rounds to infinity
    for s in scales:
        for z in (0, 1, 31, 127, 128, 255, 256, -1, -127, -128):
            for bits, signed in ((8, False), (8, True), (4, False), (2, True)):
                outcomes = []
                for sv, zv in ((s, z), (np.array(s), np.array(z))):   # scalar / general
                    try:
                        p = QuantParams(sv, zv, bits=bits, signed=signed)
                        outcomes.append((type(p.scale), p.scale.tobytes(), type(p.zero_point),
                                         p.zero_point, p.per_channel))
                    except (ValueError, TypeError) as e:
                        outcomes.append((type(e), str(e).replace("array(", "").split(",")[0]))
                assert outcomes[0][0] is outcomes[1][0], (s, z, bits, signed, outcomes)
                if not isinstance(outcomes[0][0], type) or not issubclass(outcomes[0][0],
                                                                          Exception):
                    assert outcomes[0] == outcomes[1], (s, z, bits, signed)
    # and at the limits, what float32 arithmetic says: 1 / scale finite from the smallest
    # invertible scale on; (0 - 31) * 1082401 * 2**103 = -(2**128 - 2**103) rounds to -inf
    from axkern.quant import _MIN_SCALE
    with np.errstate(over="ignore"):
        assert np.isfinite(F32(1) / _MIN_SCALE)
        assert np.isinf(F32(1) / np.nextafter(_MIN_SCALE, F32(0)))
        assert np.isinf(F32(-31) * F32(1082401 * 2.0 ** 103))
        assert np.isfinite(F32(-30) * F32(1082401 * 2.0 ** 103))
    assert QuantParams(_MIN_SCALE, 0).scale == _MIN_SCALE
    with pytest.raises(ValueError, match="too small"):
        QuantParams(np.nextafter(_MIN_SCALE, F32(0)), 0)
    edge = F32(1082401 * 2.0 ** 103)
    with pytest.raises(ValueError, match="too large"):
        QuantParams(edge, 31)
    assert QuantParams(edge, 30).zero_point == 30
    assert QuantParams(edge, 31, signed=True).zero_point == 31   # no lower end to overflow


def test_tf_codes_round_half_up():
    p = QuantParams(0.5, 10)
    # (x + 5) * 2 + 0.5 floored: 0.25 -> 11 (half goes up), -0.25 -> 10, clamping at both ends.
    np.testing.assert_array_equal(quantize([0.0, 1.0, -5.0, 200.0, 0.25, -0.25, -100.0], p),
                                  [10, 12, 0, 255, 11, 10, 0])
    np.testing.assert_array_equal(dequantize([10, 12, 0], p), F32([0.0, 1.0, -5.0]))


def test_fake_quant_matches_tf_formula():
    x = np.linspace(-1.3, 2.1, 101).astype(F32)
    nmin, nmax, s, _ = tf_nudge(-1.3, 2.1)
    inv = F32(1) / s
    ref = np.floor((np.clip(x, nmin, nmax) - nmin) * inv + F32(0.5)) * s + nmin
    np.testing.assert_array_equal(fake_quant(x, -1.3, 2.1), ref)
    # The default range is the data's, widened to include 0.
    np.testing.assert_array_equal(fake_quant(x), fake_quant(x, x.min(), x.max()))
    y = np.array([0.5, 1.0], F32)
    np.testing.assert_array_equal(fake_quant(y), fake_quant(y, 0.0, 1.0))


def test_degenerate_ranges_do_not_give_nan():
    assert tf_nudge(0.0, 0.0) == (0.0, 255.0, 1.0, 0)
    nmin, nmax, s, zp = tf_nudge(3.0, 3.0)
    assert nmin == 0 and zp == 0 and abs(float(nmax) - 3.0) < 1e-6
    nmin, nmax, s, zp = tf_nudge(-2.0, -2.0)
    assert zp == 255 and nmax == 0 and abs(float(nmin) + 2.0) < 1e-6
    np.testing.assert_allclose(fake_quant(np.full(5, 3.0)), 3.0, rtol=1e-6)
    np.testing.assert_array_equal(fake_quant(np.zeros(4)), 0.0)
    p = symmetric_params(np.zeros((2, 3)))
    assert p.scale == 1 and np.all(quantize(np.zeros(3), p) == 0)
    p = symmetric_params(np.array([[1.0, 0.0], [-2.0, 0.0]]), channel_axis=1)
    np.testing.assert_array_equal(p.scale, F32([2 / 127, 1.0]))
    tiny = tf_nudge(1e-45, 2e-45)  # 1 / scale would overflow
    assert all(np.isfinite(v) for v in tiny[:3])


def test_symmetric_round_half_to_even():
    x = np.array([127.0, -0.5, 0.5, 1.5, 2.5, -1.5, 300.0, -300.0], F32)
    p = QuantParams(1.0, 0, signed=True)
    np.testing.assert_array_equal(quantize(x, p), [127, 0, 0, 2, 2, -2, 127, -127])
    p = symmetric_params(x[:6])
    assert p.scale == F32(1) and p.signed and p.zero_point == 0
    w = np.array([[1.0, -4.0], [0.5, 2.0]], F32)
    pc = symmetric_params(w, channel_axis=-1)
    np.testing.assert_array_equal(pc.scale, F32([1 / 127, 4 / 127]))
    np.testing.assert_array_equal(quantize(w, pc), [[127, -127], [64, 64]])  # 63.5 -> 64 (even)


def test_calibrate():
    b1, b2 = np.array([-1.0, 0.5]), np.array([2.0, 0.0])
    p = calibrate([b1, b2])
    ref = tf_quant_params(-1.0, 2.0)
    assert p.scale == ref.scale and p.zero_point == ref.zero_point
    data = np.concatenate([np.linspace(-1, 1, 10001), [50.0]])
    pp = calibrate(data, method="percentile", percentile=99.9)
    assert float(pp.scale) < 3 / 255
    ps = calibrate(data, scheme="symmetric", method="minmax")
    assert ps.signed and abs(float(ps.scale) - 50 / 127) < 1e-6
    pc = calibrate([np.array([[1.0, -3.0]]), np.array([[0.5, 2.0]])], scheme="symmetric", channel_axis=1)
    np.testing.assert_allclose(pc.scale, [1 / 127, 3 / 127], rtol=1e-6)


@pytest.mark.parametrize("call, exc", [
    (lambda: fake_quant([1.0, np.nan]), ValueError),
    (lambda: fake_quant([1.0, np.inf]), ValueError),
    (lambda: symmetric_params([np.inf]), ValueError),
    (lambda: quantize([np.nan], QuantParams(1.0)), ValueError),
    (lambda: calibrate([[1.0, np.nan]]), ValueError),
    (lambda: tf_nudge(1.0, -1.0), ValueError),
    (lambda: tf_nudge(np.nan, 1.0), ValueError),
    (lambda: QuantParams(0.0), ValueError),
    (lambda: QuantParams(-1.0), ValueError),
    (lambda: QuantParams(1.0, 256), ValueError),
    (lambda: QuantParams(1.0, -128, signed=True), ValueError),
    (lambda: QuantParams(1.0, bits=9), ValueError),
    (lambda: QuantParams("a"), TypeError),
    (lambda: QuantParams([1.0, 2.0], [0, 0, 0]), ValueError),
    (lambda: quantize(np.ones((2, 3)), QuantParams([1.0, 2.0], signed=True)), ValueError),
    (lambda: quantize([1.0], "p"), TypeError),
    (lambda: calibrate([1.0], scheme="minmax"), ValueError),
    (lambda: calibrate([1.0], method="kl"), ValueError),
    (lambda: QuantSpec("asym", "tfapprox"), ValueError),
    (lambda: QuantSpec(QuantParams([1.0, 2.0]), "tfapprox"), ValueError),
    (lambda: fake_quant(np.array(["a"])), TypeError),
])
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_range_params_against_float32_formulas():
    """The per-call parameters from a tensor's min and max (remembered per range) against
    the formulas in NumPy float32: TensorFlow's Nudge of the range (tfapprox), of the range
    widened to include 0 (asymmetric), amax / qmax (symmetric); signed and unsigned tables
    of 8, 6 and 4 bits, ranges with either zero, repeated (remembered) or not, and
    make_params of the tensor [min, max] alike."""
    from axkern import Multiplier, library
    from axkern.conv import make_params, range_params

    rng = np.random.default_rng(5)
    ranges = [(0.0, 0.0), (-0.0, 0.0), (-0.0, -0.0), (0.0, 3.0), (-0.0, 3.0), (-2.0, -0.0),
              (-1e-45, 1e-45), (-1e-40, 1e-41), (2.5, 2.5), (-4.0, 1e30)]
    ranges += [tuple(np.sort(rng.standard_normal(2) * 10.0 ** rng.uniform(-6, 6)))
               for _ in range(200)]
    mults = [library.load_multiplier(n) for n in ("mul8u_drum4", "mul8s_drum4", "mul8u_trunc8")]
    mults += [Multiplier.exact(4), Multiplier.exact(6, signed=True)]
    for mode in ("tfapprox", "asymmetric", "symmetric"):   # the same ranges, other bit widths
        for m in (m for m in mults if m.signed == (mode == "symmetric")):
            for lo, hi in ranges + ranges[:20]:
                lo32, hi32 = F32(lo), F32(hi)
                if mode == "symmetric":
                    want = (symmetric_float32(lo32, hi32, m.bits), 0)
                else:
                    if mode == "asymmetric":
                        lo32, hi32 = min(lo32, F32(0)), max(hi32, F32(0))
                    want = nudge_float32(lo32, hi32, m.bits)[2:]
                for got in (range_params(F32(lo), F32(hi), mode, m),
                            make_params(np.array([lo, hi], F32), mode, m)):
                    assert (got.scale.tobytes(), got.zero_point, got.signed) == \
                        (F32(want[0]).tobytes(), want[1], m.signed), (lo, hi, mode)


def test_range_check_counts_against_numpy():
    """The range check's counts over every step-th value (axkern._fast.off_zero: C-contiguous
    arrays of any shape in memory order, 1-D ones of any stride) against NumPy's on the
    sample view, and its bad arguments refused."""
    fast = pytest.importorskip("axkern._fast")
    rng = np.random.default_rng(9)
    for shape in [(7,), (3, 5, 8), (2, 16, 16, 64), (1, 1), (1000,)]:
        x = rng.standard_normal(shape).astype(F32)
        x[x < -0.5] = 0.0
        flat = x.reshape(-1)
        for step in (1, 2, 3, 7, 512, 5000):
            for half in (0.0, 0.3, float(np.abs(flat).max()), 1e-40):
                s = flat[::step]
                want = (int(np.count_nonzero(s > F32(half)))
                        + int(np.count_nonzero(s < -F32(half))), int(np.count_nonzero(s)))
                assert fast.off_zero(x, half, step) == want, (shape, step, half)
                assert fast.off_zero(flat[::-1][::-1], half, step) == want   # 1-D view
                assert fast.off_zero(flat[::2], half, step) == \
                    (int(np.count_nonzero(flat[::2][::step] > F32(half)))
                     + int(np.count_nonzero(flat[::2][::step] < -F32(half))),
                     int(np.count_nonzero(flat[::2][::step])))
    with pytest.raises(ValueError, match="step"):
        fast.off_zero(np.ones(4, F32), 0.5, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        fast.off_zero(np.ones((4, 4), F32).T[:, :2], 0.5)
    with pytest.raises(ValueError, match="float32"):
        fast.off_zero(np.ones(4), 0.5)
