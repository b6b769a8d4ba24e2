"""Quantization helpers against hand-computed values."""
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
