"""``out=`` of axconv2d / axmatmul / axdense (how axkern.torch writes into tensors' memory);
needs no torch."""
import numpy as np
import pytest

import axkern

M = axkern.load_multiplier("mul8u_drum4")
MS = axkern.load_multiplier("mul8s_drum4")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("m", [M, MS], ids=["unsigned", "signed"])
def test_axconv2d_out(backend, fmt, m):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    if fmt == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    kw = dict(stride=(2, 1), padding=1, groups=2, data_format=fmt, backend=backend,
              bias=np.arange(6, dtype=np.float32))
    want = axkern.axconv2d(x, w, m, **kw)
    out = np.full(want.shape, np.nan, np.float32)
    assert axkern.axconv2d(x, w, m, out=out, **kw) is out
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        axkern.axconv2d(x, w, m, out=np.empty(want.shape, np.float64), **kw)
    with pytest.raises(ValueError, match="out must be"):
        axkern.axconv2d(x, w, m, out=np.empty(want.shape[::-1], np.float32).T, **kw)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_axdense_axmatmul_out(backend):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 7)).astype(np.float32)
    for m in (M, MS):
        want = axkern.axdense(a, b, m, backend=backend)
        out = np.empty_like(want)
        assert axkern.axdense(a, b, m, backend=backend, out=out) is out
        np.testing.assert_array_equal(out, want)
        for lhs, rhs in ((a[0, 0], b), (a, b[:, 0]), (a, np.stack([b, b, b]))):
            want = axkern.axmatmul(lhs, rhs, m, backend=backend)
            out = np.empty_like(want)
            assert axkern.axmatmul(lhs, rhs, m, backend=backend, out=out) is out
            np.testing.assert_array_equal(out, want)
        with pytest.raises(ValueError, match=r"shape \(3, 4, 7\)"):
            axkern.axdense(a, b, m, backend=backend, out=np.empty((12, 7), np.float32))
