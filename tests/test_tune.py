"""ALWANN weight tuning against a brute-force search written here."""
import numpy as np
import pytest

from axkern import Multiplier, axconv2d, axdense, axmatmul, tune_weights

F32 = np.float32


def brute_force(T, values, p):
    n = len(values)
    out = []
    for w in range(n):
        costs = [sum(p[a] * abs(values[a] * values[w] - int(T[a, c])) for a in range(n)) for c in range(n)]
        best = min(costs)
        out.append(w if costs[w] == best else costs.index(best))
    return np.array(out)


@pytest.mark.parametrize("signed", [False, True])
def test_matches_brute_force_4bit(signed):
    rng = np.random.default_rng(int(signed))
    m = Multiplier.exact(4, signed=signed)
    T = np.asarray(m.table) + rng.integers(-6, 7, (16, 16))
    mm = Multiplier(T, signed=signed)
    v = list(mm.values())
    np.testing.assert_array_equal(tune_weights(mm), brute_force(T, v, [1] * 16))
    hist = rng.integers(0, 50, 16)
    np.testing.assert_array_equal(tune_weights(mm, hist), brute_force(T, v, list(hist)))
    np.testing.assert_array_equal(tune_weights(mm, hist.astype(float) / 7), brute_force(T, v, list(hist / 7)))


def test_exact_is_identity_and_ties():
    np.testing.assert_array_equal(tune_weights(Multiplier.exact(8)), np.arange(256))
    # Columns 2 and 3 are identical copies of the exact column 2: weight 3 is best served by
    # ... column 3's own entries (a tie with 2 keeps w' = w), weight 5 by the lowest of them.
    v = np.arange(16)
    T = np.multiply.outer(v, v)
    T[:, 3] = T[:, 2]
    T[:, 5] = 0
    mp = tune_weights(Multiplier(T))
    assert mp[3] == 3  # costs of 2, 3 (and 4) tie: keep 3
    # For weight 5 the candidates 4 and 6 cost sum(a) each; the lowest one (4) wins.
    assert mp[5] == 4
    assert mp[2] == 2


def test_histogram_changes_the_choice():
    v = np.arange(16)
    T = np.multiply.outer(v, v)
    T[:8, 7] = 0          # column 7 broken for small activations only
    m = Multiplier(T)
    assert tune_weights(m)[7] != 7
    hist = np.zeros(16)
    hist[8:] = 1          # activations never small: column 7 is exact where it matters
    assert tune_weights(m, hist)[7] == 7


def test_tune_applied_in_layers():
    rng = np.random.default_rng(5)
    T = np.multiply.outer(np.arange(256), np.arange(256))
    T[:, 1::2] = 0                          # odd weight columns broken: tuning maps them to w - 1
    m = Multiplier(T)
    mapping = tune_weights(m)
    a = rng.random((4, 10)).astype(F32)
    b = rng.random((10, 3)).astype(F32)
    # Reference: codes by the TF formula with quant="asymmetric" ([0, max] ranges, zero point 0), lookups T[qa, map[qb]].
    def codes(x):
        s = F32(x.max()) / F32(255)
        return np.floor(np.clip(x, F32(0), F32(255) * s) * (F32(1) / s) + F32(0.5)).astype(np.int64), float(s)
    qa, sa = codes(a)
    qb, sb = codes(b)
    assert mapping[1] == 1 and (mapping[3::2] == np.arange(2, 255, 2)).all()  # 1 ties with column 0
    ref = sa * sb * T[qa[:, :, None], mapping[qb][None, :, :]].sum(axis=1)
    y = axmatmul(a, b, m, tune=True, quant="asymmetric", backend="cpu")
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()
    np.testing.assert_array_equal(axmatmul(a, b, m, tune=mapping, quant="asymmetric"), y)
    np.testing.assert_array_equal(axdense(a, b, m, tune=True, quant="asymmetric"), y)
    untuned = axmatmul(a, b, m, quant="asymmetric")
    exact = sa * sb * (qa @ qb)
    assert np.abs(y - exact).sum() < np.abs(untuned - exact).sum()
    # Convolution: a 1x1 filter is the same product.
    yc = axconv2d(a.reshape(1, 1, 4, 10), b.reshape(1, 1, 10, 3), m, tune=True, quant="asymmetric",
                  backend="reference")
    np.testing.assert_array_equal(yc.reshape(4, 3), y)


def test_tune_keeps_original_codes_in_corrections():
    # With a zero point, the correction terms use the ORIGINAL weight codes.
    rng = np.random.default_rng(6)
    T = np.multiply.outer(np.arange(256), np.arange(256))
    T[:, 100:140] = T[:, 101:141]
    m = Multiplier(T)
    mapping = tune_weights(m)
    a = rng.standard_normal((3, 7)).astype(F32)
    b = rng.standard_normal((7, 2)).astype(F32)
    def codes(x):
        lo, hi = F32(min(x.min(), 0)), F32(max(x.max(), 0))
        s = (hi - lo) / F32(255)
        zf = F32(0) - lo / s
        z = int(np.floor(float(zf) + 0.5))
        nmin = (F32(0) - F32(z)) * s
        q = np.floor((np.clip(x, nmin, (F32(255) - F32(z)) * s) - nmin) * (F32(1) / s) + F32(0.5))
        return q.astype(np.int64), float(s), z
    qa, sa, za = codes(a)
    qb, sb, zb = codes(b)
    lut = T[qa[:, :, None], mapping[qb][None, :, :]].sum(axis=1)
    ref = sa * sb * (lut - zb * qa.sum(1)[:, None] - za * qb.sum(0)[None, :] + 7 * za * zb)
    y = axmatmul(a, b, m, tune=mapping, backend="reference")
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("hist, exc", [
    (np.ones(10), ValueError), (-np.ones(256), ValueError), (np.zeros(256), ValueError),
    (np.full(256, np.nan), ValueError), (np.array(["x"] * 256), TypeError),
])
def test_bad_histogram(hist, exc):
    with pytest.raises(exc):
        tune_weights(Multiplier.exact(8), hist)


def test_bad_mapping():
    m = Multiplier.exact(8)
    with pytest.raises(ValueError, match="codes"):
        axmatmul(np.ones((2, 3)), np.ones((3, 2)), m, tune=np.full(256, 300))
    with pytest.raises(TypeError, match="tune"):
        axmatmul(np.ones((2, 3)), np.ones((3, 2)), m, tune=np.ones(256))
    with pytest.raises(TypeError):
        tune_weights("exact")
