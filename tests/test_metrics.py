"""Error metrics against hand-computed values, closed forms and explicit loops."""
import math
from fractions import Fraction

import numpy as np
import pytest

from axkern import Multiplier, error_map, metrics

KEYS = {"name", "bits", "signed", "mae", "mae_pct", "wce", "wce_pct", "wcre_pct", "ep_pct",
        "mre_pct", "mse", "bias", "std"}


def test_two_bit_unsigned_by_hand():
    # exact 2-bit table with four entries changed (row a, column b):
    #   T[3,3] = 8 (err -1), T[1,1] = 2 (+1), T[2,3] = 7 (+1), T[0,2] = 1 (+1, a*b = 0)
    t = np.array([[0, 0, 1, 0],
                  [0, 2, 2, 3],
                  [0, 2, 4, 7],
                  [0, 3, 6, 8]])
    m = Multiplier.from_array(t, name="two")
    r = metrics(m)
    assert set(r.to_dict()) == KEYS
    assert (r.name, r.bits, r.signed) == ("two", 2, False)
    assert r.mae == 0.25                      # 4 / 16
    assert r.mae_pct == 1.5625                # 100 * 0.25 / 16
    assert r.wce == 1 and r.wce_pct == 6.25   # 100 * 1 / 16
    assert r.ep_pct == 25.0                   # 4 of 16 pairs
    assert r.bias == 0.125                    # (-1 + 1 + 1 + 1) / 16
    assert r.mse == 0.25                      # 4 / 16
    assert r.std == pytest.approx(math.sqrt(0.25 - 0.125 ** 2))  # sqrt(0.234375)
    # MRE over the 9 pairs with a*b != 0: (1/9 + 1/1 + 1/6) / 9 = 23/162; (0,2) is skipped
    assert r.mre_pct == pytest.approx(100 * 23 / 162)
    assert r.wcre_pct == 100.0                # 1 / (1*1)


def test_three_bit_signed_by_hand():
    # signed 3-bit (values -4..3, codes 0..7), exact except four entries:
    #   a=-4,b=-4 (codes 4,4): 15 (err -1);  a=-1,b=3 (7,3): -2 (err +1)
    #   a=2,b=-3 (2,5): -8 (err -2);          a=3,b=0 (3,0): 1 (err +1, a*b = 0)
    t = np.array(Multiplier.exact(3, signed=True).table)
    t[4, 4], t[7, 3], t[2, 5], t[3, 0] = 15, -2, -8, 1
    r = metrics(Multiplier.from_array(t, signed=True))
    assert r.signed and r.bits == 3
    assert r.mae == 5 / 64
    assert r.mae_pct == pytest.approx(0.1220703125)  # 100 * 5/64 / 64
    assert r.wce == 2 and r.wce_pct == 3.125
    assert r.ep_pct == 6.25
    assert r.bias == -1 / 64
    assert r.mse == 7 / 64
    assert r.std == pytest.approx(math.sqrt(447) / 64)  # sqrt(7/64 - 1/4096)
    # 49 pairs with a*b != 0; relative errors 1/16, 1/3, 2/6 -> mean 35/48/49 = 5/336
    assert r.mre_pct == pytest.approx(500 / 336)
    assert r.wcre_pct == pytest.approx(100 / 3)


@pytest.mark.parametrize("signed", [False, True])
def test_exact_multiplier_has_no_error(signed):
    r = metrics(Multiplier.exact(8, signed=signed))
    for k in ("mae", "mae_pct", "wce", "wce_pct", "wcre_pct", "ep_pct", "mre_pct", "mse", "bias",
              "std"):
        assert getattr(r, k) == 0, k
    assert not error_map(Multiplier.exact(6, signed=signed)).any()


def test_exact_plus_one_closed_form():
    e = Multiplier.exact(8)
    m = Multiplier.from_array(e.table.astype(np.int64) + 1)
    r = metrics(m)
    assert (r.mae, r.bias, r.std, r.ep_pct, r.mse, r.wce) == (1.0, 1.0, 0.0, 100.0, 1.0, 1)
    assert r.mae_pct == 100 / 65536
    assert r.wcre_pct == 100.0  # 1 / (1 * 1)
    # mean of 1/(a b) over a, b in 1..255 is (H_255 / 255)^2
    h = sum(Fraction(1, k) for k in range(1, 256))
    assert r.mre_pct == pytest.approx(100 * float(h / 255) ** 2, rel=1e-12)
    assert np.array_equal(error_map(m), np.ones((256, 256)))


@pytest.mark.parametrize("k,bias,ep,mse", [
    # err = -(a*b mod 2^k); a and b are uniform mod 2^k, so the 2^k x 2^k residue table decides:
    (1, -0.25, 25.0, 0.25),   # a*b odd for 1 of 4 residue pairs
    (2, -1.0, 50.0, 2.25),    # residues 0..3: sum of a*b mod 4 = 16, of squares 36, 8 nonzero
])
def test_truncated_product_closed_form(k, bias, ep, mse):
    m = Multiplier.from_function(lambda a, b: ((a * b) >> k) << k, bits=8)
    r = metrics(m)
    assert r.bias == bias and r.mae == -bias
    assert r.ep_pct == ep and r.mse == mse
    assert r.std == pytest.approx(math.sqrt(mse - bias * bias))
    assert r.wce == 2 ** k - 1


def test_signed_symmetric_error_has_zero_bias():
    # |a*b| rounded down in magnitude to a multiple of 4: errors mirror across the sign
    m = Multiplier.from_function(lambda a, b: np.sign(a * b) * ((np.abs(a * b) >> 2) << 2),
                                 bits=6, signed=True)
    r = metrics(m)
    assert r.bias == pytest.approx(0.0, abs=1e-15)
    assert r.wce == 3


def test_weighted_metrics_match_explicit_loop():
    rng = np.random.default_rng(3)
    bits = 4
    n = 1 << bits
    t = Multiplier.exact(bits, signed=True).table + rng.integers(-3, 4, size=(n, n))
    t[rng.random((n, n)) < 0.4] = Multiplier.exact(bits, signed=True).table[0, 0]  # some zeros
    m = Multiplier.from_array(t, signed=True)
    ha = rng.integers(0, 50, size=n).astype(float)
    hb = rng.integers(1, 9, size=n).astype(float)
    vals = [c - n if c >= n // 2 else c for c in range(n)]
    sa, sb = ha.sum(), hb.sum()
    wmae = wbias = wmse = wep = 0.0
    for i in range(n):
        for j in range(n):
            e = int(t[i, j]) - vals[i] * vals[j]
            p = ha[i] / sa * hb[j] / sb
            wmae += p * abs(e)
            wbias += p * e
            wmse += p * e * e
            wep += p * (e != 0)
    r = metrics(m, a_weights=ha, b_weights=hb)
    assert r.weighted_mae == pytest.approx(wmae, rel=1e-12)
    assert r.weighted_bias == pytest.approx(wbias, rel=1e-12, abs=1e-12)
    assert r.weighted_mse == pytest.approx(wmse, rel=1e-12)
    assert r.weighted_ep_pct == pytest.approx(100 * wep, rel=1e-12)
    d = r.to_dict()
    assert set(d) == KEYS | {"weighted_mae", "weighted_mae_pct", "weighted_bias", "weighted_mse",
                             "weighted_ep_pct"}
    # uniform weights reproduce the unweighted figures; one-sided weights default the other
    u = metrics(m, a_weights=np.ones(n))
    assert u.weighted_mae == pytest.approx(u.mae) and u.weighted_bias == pytest.approx(u.bias)
    assert u.weighted_mse == pytest.approx(u.mse) and u.weighted_ep_pct == pytest.approx(u.ep_pct)
    assert metrics(m).weighted_mae is None and set(metrics(m).to_dict()) == KEYS


def test_large_errors_stay_exact():
    # errors near 2**31: err**2 summed over 65536 pairs overflows int64 if done naively
    t = np.full((256, 256), 2 ** 31 - 1, dtype=np.int64)
    r = metrics(Multiplier.from_array(t))
    a = np.arange(256)
    err = [2 ** 31 - 1 - int(x) for x in np.multiply.outer(a, a).ravel()]
    assert r.mse == pytest.approx(sum(e * e for e in err) / 65536, rel=1e-12)
    assert r.std >= 0 and np.isfinite(r.std)


def test_bad_arguments():
    m = Multiplier.exact(4)
    with pytest.raises(TypeError, match="Multiplier"):
        metrics(np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"a_weights.*shape \(16,\)"):
        metrics(m, a_weights=np.ones(8))
    with pytest.raises(ValueError, match="b_weights.*non-negative"):
        metrics(m, b_weights=-np.ones(16))
    with pytest.raises(ValueError, match="not all zero"):
        metrics(m, a_weights=np.zeros(16))
