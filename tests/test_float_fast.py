"""The float-level layer on the fast host helpers (axkern._fast.quantize_indices,
window_sums, epilogue): bit-identical to the plain NumPy code of the reference backend, and
each helper against an independent NumPy computation."""
import numpy as np
import pytest

fast = pytest.importorskip("axkern._fast")
from axkern import Multiplier, axconv2d, axmatmul, load_multiplier  # noqa: E402
from axkern.lut import operand_values  # noqa: E402
from axkern.bench import _ForcedPath  # noqa: E402
from axkern.quant import QuantParams  # noqa: E402


def noisy(bits, signed, seed):
    """An approximate multiplier: the exact table plus small deterministic noise."""
    rng = np.random.default_rng(seed)
    v = operand_values(bits, signed)
    t = np.multiply.outer(v, v) + rng.integers(-3, 4, (1 << bits, 1 << bits))
    if not signed:
        t = np.clip(t, 0, None)
    return Multiplier(t, signed=signed, name=f"noisy{bits}{'s' if signed else 'u'}")


# ------------------------------------------------------------------------------ epilogue
def epilogue_ref(total, scale, zw, sumx, corr, bias, groups):
    """Independent NumPy: int64 correction, one float64 product, float32 cast and add."""
    t = total.astype(np.int64)
    cols = t.shape[-1]
    og = cols // groups
    v = t.copy()
    if sumx is not None:
        zwv = np.broadcast_to(np.asarray(zw, np.int64), (cols,))
        v -= zwv * np.repeat(sumx, og, axis=-1)
    if corr is not None:
        v += np.broadcast_to(np.asarray(corr, np.int64), (cols,))
    y = (v.astype(np.float64) * np.broadcast_to(np.asarray(scale, np.float64), (cols,))
         ).astype(np.float32)
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return y


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_epilogue_matches_numpy(dtype, groups, with_bias):
    rng = np.random.default_rng(groups + 7 * with_bias)
    lim = np.iinfo(np.int32).max if dtype == np.int32 else 1 << 40
    total = rng.integers(-lim, lim, (5, 7, 9 * groups), dtype=np.int64).astype(dtype)
    cols = total.shape[-1]
    scale = rng.random(cols) * 1e-4
    zw = rng.integers(-255, 256, cols)
    sumx = rng.integers(-10**6, 10**6, (5, 7, groups))
    corr = rng.integers(-10**9, 10**9, cols)
    bias = rng.standard_normal(cols).astype(np.float32) if with_bias else None
    got = fast.epilogue(total, scale, zw, sumx, corr, bias, groups)
    assert got.dtype == np.float32 and got.shape == total.shape
    np.testing.assert_array_equal(got, epilogue_ref(total, scale, zw, sumx, corr, bias, groups))
    # optional terms left out, scalar scale and zero point
    np.testing.assert_array_equal(fast.epilogue(total, 0.25), epilogue_ref(total, 0.25, None, None, None, None, 1))
    np.testing.assert_array_equal(fast.epilogue(total, 0.5, 3, sumx, None, None, groups, num_threads=1),
                                  epilogue_ref(total, 0.5, 3, sumx, None, None, groups))


def test_epilogue_large_terms_stay_exact():
    """Correction terms beyond float64's exact range for the fast rows: the int64 rows."""
    total = np.array([[2**31 - 1, -2**31, 5, 0]], np.int32)
    sumx = np.array([[2**40]], np.int64)
    zw = np.array([3, -5, 1 << 21, 0])
    corr = np.array([2**53 + 1, -(2**60), 7, 0])
    scale = np.array([1e-12, 1e-13, 1e-6, 1.0])
    np.testing.assert_array_equal(fast.epilogue(total, scale, zw, sumx, corr),
                                  epilogue_ref(total, scale, zw, sumx, corr, None, 1))
    # a row whose terms are small takes the float64 rows, the other the int64 one
    total2 = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32)
    sumx2 = np.array([[10], [2**35]], np.int64)
    zw2 = np.array([1, 2, 3, 4])
    np.testing.assert_array_equal(fast.epilogue(total2, 1e-3, zw2, sumx2),
                                  epilogue_ref(total2, 1e-3, zw2, sumx2, None, None, 1))


def test_epilogue_errors():
    t = np.zeros((2, 4), np.int32)
    with pytest.raises(TypeError, match="int32 or int64"):
        fast.epilogue(t.astype(np.float32), 1.0)
    with pytest.raises(ValueError, match="groups"):
        fast.epilogue(t, 1.0, groups=3)
    with pytest.raises(ValueError, match="together"):
        fast.epilogue(t, 1.0, zw=1)
    with pytest.raises(ValueError, match="sumx must have shape"):
        fast.epilogue(t, 1.0, zw=1, sumx=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="scale"):
        fast.epilogue(t, np.ones(3))
    assert fast.epilogue(np.zeros((0, 4), np.int32), 1.0).shape == (0, 4)


# --------------------------------------------------------------------------- window sums
def window_ref(q, ksize, stride, pads, dilation, groups, fill):
    """Explicit loops over outputs and taps (q: operand values, int64 NHWC)."""
    N, H, W, C = q.shape
    KH, KW = ksize
    top, bottom, left, right = pads
    OH = (H + top + bottom - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    cg = C // groups
    out = np.zeros((N, OH, OW, groups), np.int64)
    for oy in range(OH):
        for ox in range(OW):
            for ky in range(KH):
                for kx in range(KW):
                    iy = oy * stride[0] + ky * dilation[0] - top
                    ix = ox * stride[1] + kx * dilation[1] - left
                    if 0 <= iy < H and 0 <= ix < W:
                        out[:, oy, ox] += q[:, iy, ix].reshape(N, groups, cg).sum(-1)
                    else:
                        out[:, oy, ox] += fill * cg
    return out


@pytest.mark.parametrize("bits, signed", [(8, False), (8, True), (5, True), (6, False)])
@pytest.mark.parametrize("C, groups", [(1, 1), (13, 1), (37, 1), (24, 3), (10, 10), (130, 2),
                                      (16, 1), (64, 2), (48, 3)])
def test_window_sums_value_maps(bits, signed, C, groups):
    """Every way the helper sums a pixel's channels (identity, int8, table lookup; runs of
    8 bytes and their tails; groups of a multiple of 16 channels in one flat loop) against
    explicit loops, with stride, dilation, uneven padding."""
    rng = np.random.default_rng(C + bits)
    v = operand_values(bits, signed)
    x = rng.integers(0, 1 << bits, (2, 6, 7, C), dtype=np.uint8)
    x[0, 0, 0] = (1 << bits) - 1  # extreme codes
    x[0, 0, 1] = 1 << (bits - 1)
    pad_code = int(rng.integers(0, 1 << bits))
    for ksize, stride, pads, dil in [((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                                     ((2, 3), (2, 1), (0, 2, 1, 0), (1, 2)),
                                     # horizontal stride, taps wholly past every border
                                     ((3, 3), (1, 2), (3, 2, 4, 3), (2, 1)),
                                     ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))]:
        got = fast.window_sums(x, v, ksize, stride, pads, dil, groups, pad_code)
        want = window_ref(v[x], ksize, stride, pads, dil, groups, int(v[pad_code]))
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------- float level: cpu == NumPy
MULTS = [noisy(8, False, 1), noisy(8, True, 2), noisy(4, True, 3), noisy(6, False, 4)]


def quant_modes(m):
    if m.signed:
        return ["symmetric", "symmetric-per-channel",
                (QuantParams(0.05, 0, bits=m.bits, signed=True),
                 QuantParams([0.1, 0.2, 0.3, 0.05, 0.07, 0.2], [0, 0, 0, 0, 0, 0],
                             bits=m.bits, signed=True))]
    return ["tfapprox", "asymmetric",
            (QuantParams(0.02, 7, bits=m.bits), QuantParams(0.03, 3, bits=m.bits))]


def with_ties(x, scale):
    """Put exact half-way points of the input quantizer into ``x``."""
    flat = x.reshape(-1)
    k = min(flat.size, 40)
    flat[:k] = (np.arange(k, dtype=np.float32) - 20 + np.float32(0.5)) * np.float32(scale)
    return x


@pytest.mark.parametrize("mi", range(len(MULTS)))
@pytest.mark.parametrize("layout", ["plain", "grouped", "nchw"])
def test_axconv2d_cpu_equals_reference(mi, layout):
    m = MULTS[mi]
    rng = np.random.default_rng(mi)
    groups = 2 if layout == "grouped" else 1
    x = with_ties(rng.standard_normal((2, 7, 9, 4)).astype(np.float32), 0.05)
    w = rng.standard_normal((3, 2, 4 // groups, 6)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=groups, bias=bias)
    if layout == "nchw":
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
        kw["data_format"] = "NCHW"
    for quant in quant_modes(m):
        if isinstance(quant, tuple) and groups > 1:
            continue
        got = axconv2d(x, w, m, quant=quant, backend="cpu", **kw)
        want = axconv2d(x, w, m, quant=quant, backend="reference", **kw)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"quant={quant!r}")


def test_axconv2d_cpu_depthwise_and_tuning():
    m = MULTS[0]
    rng = np.random.default_rng(5)
    x = rng.random((3, 9, 8, 6), dtype=np.float32)
    w = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
    for kw in (dict(groups=6), dict(groups=6, padding="VALID"), dict(groups=6, tune=True)):
        np.testing.assert_array_equal(axconv2d(x, w, m, backend="cpu", **kw),
                                      axconv2d(x, w, m, backend="reference", **kw))


@pytest.mark.parametrize("mi", range(len(MULTS)))
def test_axmatmul_cpu_equals_reference(mi):
    m = MULTS[mi]
    rng = np.random.default_rng(10 + mi)
    cases = [((33, 17), (17, 6)), ((2, 5, 17), (17, 6)), ((17,), (17, 6)), ((5, 17), (17,)),
             ((2, 5, 17), (2, 17, 6))]
    for sa, sb in cases:
        a = with_ties(rng.standard_normal(sa).astype(np.float32), 0.05)
        b = rng.standard_normal(sb).astype(np.float32)
        n = sb[-1] if len(sb) > 1 else None
        bias = rng.standard_normal(n).astype(np.float32) if n else None
        for quant in quant_modes(m):
            if isinstance(quant, tuple) and n != 6:
                continue
            got = axmatmul(a, b, m, quant=quant, bias=bias, backend="cpu")
            want = axmatmul(a, b, m, quant=quant, bias=bias, backend="reference")
            assert got.shape == np.matmul(a, b).shape
            np.testing.assert_array_equal(got, want, err_msg=f"{sa} {sb} quant={quant!r}")


def test_float_layer_errors_on_fast_path():
    m = MULTS[0]
    x = np.ones((1, 4, 4, 2), np.float32)
    x[0, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        axconv2d(x, np.ones((3, 3, 2, 2), np.float32), m, backend="cpu")
    with pytest.raises(ValueError, match="NaN or Inf"):
        axmatmul(np.array([[1.0, np.inf]]), np.ones((2, 2)), m, backend="cpu")


@pytest.mark.parametrize("mode", ["tfapprox", "asymmetric", "symmetric"])
def test_checked_params_from_min_max(mode):
    """The parameters from x's min and max are those make_params computes from all of x."""
    from axkern.conv import checked_params, make_params

    rng = np.random.default_rng(3)
    for m in (MULTS[0], MULTS[3]) if mode != "symmetric" else (MULTS[1], MULTS[2]):
        for x in (rng.standard_normal((4, 5, 6)).astype(np.float32),
                  rng.random((7, 3)).astype(np.float32) + 2,     # all positive
                  -rng.random((7, 3)).astype(np.float32),        # all negative
                  np.zeros((2, 2), np.float32)):
            want = make_params(x, mode, m)
            for helper in (None, fast):
                got = checked_params(x, mode, m, "x", fast=helper)
                assert (np.float32(got.scale), int(got.zero_point), got.bits, got.signed) == \
                    (np.float32(want.scale), int(want.zero_point), want.bits, want.signed)
        # remembered parameters (by mode, bits and the range's bit patterns) never serve
        # another mode, another width or a range that differs in the last bit
        x = rng.standard_normal((4, 5)).astype(np.float32)
        x.flat[0] = x.max() + 1                       # the unique maximum
        nudged = x.copy()
        nudged.flat[0] = np.nextafter(x.flat[0], np.float32(np.inf))
        for xx, mm, md in ((x, m, mode), (nudged, m, mode), (x, MULTS[2 if m.signed else 3], mode),
                           (x, m, "asymmetric" if mode == "tfapprox" else mode)):
            if md == "asymmetric" and m.signed:
                continue
            want = make_params(xx, md, mm)
            for _ in range(2):   # computed, then remembered
                got = checked_params(xx, md, mm, "x", fast=fast, num_threads=1)
                assert (np.float32(got.scale), int(got.zero_point), got.bits) == \
                    (np.float32(want.scale), int(want.zero_point), want.bits)
        for bad in (np.nan, np.inf, -np.inf):
            for size in (9, 70001):   # one block, several blocks (parallel) of min_max
                x = np.ones(size, np.float32)
                x[size // 2 + 1] = bad
                for helper in (None, fast):
                    with pytest.raises(ValueError, match="NaN or Inf"):
                        checked_params(x, mode, m, "x", fast=helper)


def test_min_max_matches_numpy():
    rng = np.random.default_rng(4)
    for shape in [(1,), (7,), (15,), (16,), (17,), (33, 5), (70001,), (3, 300, 101)]:
        x = rng.standard_normal(shape).astype(np.float32)
        for pos in (0, x.size - 1, x.size // 2):   # the extremes anywhere, tails included
            y = x.copy().reshape(-1)
            y[pos] = 1e30
            lo, hi = fast.min_max(y.reshape(shape))
            assert (lo, hi) == (y.min(), y.max())
            y[pos] = np.nan
            assert all(np.isnan(fast.min_max(y.reshape(shape))))
    x = rng.standard_normal((20, 30)).astype(np.float32)
    assert fast.min_max(x.T, num_threads=1) == (x.min(), x.max())   # non-contiguous
    with pytest.raises(ValueError, match="non-empty float32"):
        fast.min_max(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="non-empty float32"):
        fast.min_max(np.zeros(3))


def test_epilogue_depthwise_rows():
    """One channel per group (depthwise): each output has its own window sum."""
    rng = np.random.default_rng(8)
    total = rng.integers(-2**31, 2**31, (3, 4, 5, 11), dtype=np.int64).astype(np.int32)
    sumx = rng.integers(-10**5, 10**5, (3, 4, 5, 11))
    zw = rng.integers(0, 256, 11)
    corr = rng.integers(-10**8, 10**8, 11)
    scale = rng.random(11)
    for bias in (None, rng.standard_normal(11).astype(np.float32)):
        np.testing.assert_array_equal(fast.epilogue(total, scale, zw, sumx, corr, bias, 11),
                                      epilogue_ref(total, scale, zw, sumx, corr, bias, 11))


def test_out_buffers():
    """``out=`` of the kernels and helpers: filled in place, checked strictly."""
    from axkern.backends import table256

    rng = np.random.default_rng(6)
    t = table256(MULTS[0])
    a = rng.integers(0, 256, (9, 20), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 5), dtype=np.uint8)
    o = np.full((9, 5), -1, np.int32)
    assert fast.gemm(a, b, t, np.int32, out=o) is o
    np.testing.assert_array_equal(o, fast.gemm(a, b, t, np.int32))
    x = rng.integers(0, 256, (2, 5, 6, 4), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 3, 4, 3), dtype=np.uint8)
    o = np.full((2, 5, 6, 3), -1, np.int64)
    assert fast.conv2d(x, w, t, (1, 1), (1, 1, 1, 1), out_dtype=np.int64, out=o) is o
    np.testing.assert_array_equal(o, fast.conv2d(x, w, t, (1, 1), (1, 1, 1, 1), out_dtype=np.int64))
    o = np.empty((2, 5, 6, 1), np.int64)
    v = np.arange(256)
    assert fast.window_sums(x, v, (3, 3), (1, 1), (1, 1, 1, 1), out=o) is o
    np.testing.assert_array_equal(o, fast.window_sums(x, v, (3, 3), (1, 1), (1, 1, 1, 1)))
    xf = rng.standard_normal((4, 7)).astype(np.float32)
    p = QuantParams(0.05, 100)
    o = np.empty((4, 7), np.uint8)
    assert fast.quantize_indices(xf, p, out=o) is o
    np.testing.assert_array_equal(o, fast.quantize_indices(xf, p))
    for bad in (np.empty((9, 5), np.int64), np.empty((5, 9), np.int32),
                np.empty((9, 10), np.int32)[:, ::2], [[0] * 5] * 9):
        with pytest.raises(ValueError, match="out must be"):
            fast.gemm(a, b, t, np.int32, out=bad)
    ro = np.empty((4, 7), np.uint8)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out must be"):
        fast.quantize_indices(xf, p, out=ro)


def test_work_buffers_across_shapes():
    """Calls of growing and shrinking sizes reuse the work buffers: results unaffected."""
    from axkern.conv import work_buffer

    m = MULTS[0]
    rng = np.random.default_rng(9)
    for shape in [(1, 4, 4, 3), (2, 9, 7, 3), (1, 3, 5, 3), (2, 9, 7, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
        np.testing.assert_array_equal(axconv2d(x, w, m, backend="cpu"),
                                      axconv2d(x, w, m, backend="reference"))
    buf = work_buffer("test-role", (3, 4), np.int64)
    assert buf.shape == (3, 4) and buf.dtype == np.int64 and buf.flags.c_contiguous
    assert work_buffer("test-role", (2, 2), np.int32).base is buf.base   # reused
    assert work_buffer("test-role", (0,), np.float32).shape == (0,)


# ------------------------------------------------------- dequantization inside the kernels
def table_mult(table, name):
    return Multiplier(np.asarray(table, np.int64), name=name)


@pytest.mark.parametrize("path", fast.available_paths())
def test_fused_dequant_every_route(path):
    """Every way the fused epilogue is reached, on every path, equals the NumPy code:
    folded zero point (depthwise), a fold that would leave the 16-bit class (window sums
    instead), per-channel weight zero points with groups, a table outside the 16-bit class,
    and int64 accumulation over more than one 32768-term chunk."""
    rng = np.random.default_rng(21)
    be = _ForcedPath(fast, path)   # the benchmark's backend: one dispatch path
    v = np.arange(256)
    full = np.multiply.outer(v, v)
    full[0, 255] = 65535   # span exactly 65535; row 0 stays, so any fold widens it
    wide = full + rng.integers(-(1 << 18), 1 << 18, (256, 256))   # generic class
    mults = [MULTS[0], table_mult(full, "span65535"), table_mult(wide, "int32span")]
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    per_ch = QuantParams(np.linspace(0.01, 0.05, 6), np.array([0, 3, 100, 255, 7, 12]))
    for m in mults:
        for kw in (dict(groups=6, w=(3, 3, 1, 6)), dict(groups=2, w=(3, 2, 3, 6)),
                   dict(groups=2, w=(3, 2, 3, 6), quant=(QuantParams(0.03, 9), per_ch)),
                   dict(groups=1, w=(1, 1, 6, 6), padding="VALID")):
            kw = dict(kw)
            w = rng.standard_normal(kw.pop("w")).astype(np.float32)
            b = rng.standard_normal(6).astype(np.float32)
            got = axconv2d(x, w, m, bias=b, backend=be, **kw)
            want = axconv2d(x, w, m, bias=b, backend="reference", **kw)
            np.testing.assert_array_equal(got, want, err_msg=f"{m.name} {kw}")
    K = 40000   # > 32768 terms and K * max|T| > 2**31: int64 sums in chunks
    a = rng.standard_normal((5, K)).astype(np.float32)
    b = rng.standard_normal((K, 3)).astype(np.float32)
    for m in mults[:2]:
        np.testing.assert_array_equal(axmatmul(a, b, m, backend=be),
                                      axmatmul(a, b, m, backend="reference"), err_msg=m.name)
    # rows < columns: the kernel streams the columns (the swapped orientation)
    a = rng.standard_normal((3, 50)).astype(np.float32)
    b = rng.standard_normal((50, 300)).astype(np.float32)
    for m in mults:
        np.testing.assert_array_equal(axmatmul(a, b, m, backend=be, bias=np.ones(300)),
                                      axmatmul(a, b, m, backend="reference", bias=np.ones(300)))


def test_fold_zero_point():
    from axkern.backends import table256
    from axkern.conv import _fold_zero_point

    m = MULTS[0]
    t = table256(m)
    folded, dtype = _fold_zero_point(t, m, 37, 9)
    np.testing.assert_array_equal(folded, t - 37 * np.arange(256)[:, None])
    assert dtype == np.int32
    assert _fold_zero_point(t, m, 37, 40000)[1] == np.int64   # 40000 * 65k > 2**31
    s = MULTS[1]   # signed: values of the indices are the two's-complement operands
    np.testing.assert_array_equal(
        _fold_zero_point(table256(s), s, 5, 9)[0].astype(np.int64),
        table256(s) - 5 * np.resize(operand_values(8, True), 256)[:, None])
    full = np.multiply.outer(np.arange(256), np.arange(256))
    full[0, 255] = 65535
    assert _fold_zero_point(full.astype(np.int32), table_mult(full, "f"), 1, 9) is None


def test_dequant_argument_errors():
    t = np.zeros((256, 256), np.int32)
    a = np.zeros((4, 3), np.uint8)
    b = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="dequant must be a dict"):
        fast.gemm(a, b, t, np.int32, dequant={"corr": [1, 2]})
    with pytest.raises(ValueError, match="go together"):
        fast.gemm(a, b, t, np.int32, dequant={"scale": 1.0, "zw": 1})
    with pytest.raises(ValueError, match="sumx must be"):
        fast.gemm(a, b, t, np.int32, dequant={"scale": 1.0, "zw": 1, "sumx": np.zeros((3, 1), np.int64)})
    with pytest.raises(ValueError, match="scale must be"):
        fast.gemm(a, b, t, np.int32, dequant={"scale": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="out must be"):
        fast.gemm(a, b, t, np.int32, dequant={"scale": 1.0}, out=np.zeros((4, 2), np.int32))
    y = fast.gemm(np.zeros((4, 0), np.uint8), np.zeros((0, 2), np.uint8), t, np.int32,
                  dequant={"scale": 0.5, "corr": [2, 4], "bias": [1.0, -1.0]})
    np.testing.assert_array_equal(y, np.array([[2.0, 1.0]] * 4, np.float32))


def test_equal_multipliers_share_their_table_and_its_caches():
    """Multipliers equal in kind and entries share one frozen table (so the caches keyed by
    it hit: a new table per call redid milliseconds of work); another signedness, another
    width or other entries never do, and the results always follow the multiplier's own
    kind (the reference backend from scratch)."""
    import axkern
    from axkern.backends import as_multiplier, table256, table_token
    from axkern.tune import resolve_tuning

    m = axkern.load_multiplier("mul8u_drum4")
    t = table256(m)
    assert table256(axkern.load_multiplier("mul8u_drum4")) is t
    assert table256(axkern.Multiplier(np.array(m.table))) is t
    arr = np.array(m.table)
    assert table256(as_multiplier(arr[:])) is t              # a fresh view of an array
    signed = axkern.Multiplier(m.table, signed=True)
    assert table256(signed) is not t and np.array_equal(table256(signed), t)
    other = np.array(m.table)
    other[5, 5] += 1
    assert table256(axkern.Multiplier(other)) is not t
    small = axkern.Multiplier(np.zeros((16, 16), np.int32))
    assert table256(small) is not table256(axkern.Multiplier(np.zeros((256, 256), np.int32)))
    assert table_token(t) and table_token(table256(signed)) != table_token(t)
    # a Multiplier made per call and dropped: its table stays for the next one
    import gc

    token = table_token(table256(axkern.load_multiplier("mul8u_drum5")))
    gc.collect()
    assert table_token(table256(axkern.load_multiplier("mul8u_drum5"))) == token
    # the ALWANN tuning is computed once per table, not per Multiplier object
    assert resolve_tuning(True, axkern.load_multiplier("mul8u_drum4")) is \
        resolve_tuning(True, m)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    be = _ForcedPath(fast, fast.default_path())
    for mult in (m, signed, axkern.Multiplier(other)):
        for _ in range(2):
            np.testing.assert_array_equal(axconv2d(x, w, mult, backend=be),
                                          axconv2d(x, w, mult, backend="reference"))


def test_calibrated_weights_prepared_once_and_folded_tables_kept(monkeypatch):
    """Fixed (calibrated) weight parameters are cached by their values, and a weight cache
    miss finds the folded table of the same table and zero point again; neither may serve
    weights or parameters that changed."""
    from axkern.backends import table256
    from axkern import conv
    from axkern.conv import _FOLDED, _WEIGHTS, _prepare_weights
    from axkern.quant import calibrate

    rng = np.random.default_rng(5)
    m = load_multiplier("mul8u_trunc8")      # no factors: the zero point folds
    x = rng.random((2, 6, 6, 8), dtype=np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    q = (calibrate(x), calibrate(w))
    be = _ForcedPath(fast, fast.default_path())
    first = axconv2d(x, w, m, quant=q, backend=be)
    np.testing.assert_array_equal(first, axconv2d(x, w, m, quant=q, backend="reference"))
    hit = _WEIGHTS.get(table256(m), q[1], w, None, fast)
    assert hit is not None
    # equal parameters in another object hit; other parameters miss
    same = QuantParams(q[1].scale, q[1].zero_point, q[1].bits, q[1].signed)
    assert _WEIGHTS.get(table256(m), same, w, None, fast) is hit
    other = QuantParams(q[1].scale * 2, q[1].zero_point, q[1].bits, q[1].signed)
    assert _WEIGHTS.get(table256(m), other, w, None, fast) is None
    got = axconv2d(x, w, m, quant=(q[0], other), backend=be)
    np.testing.assert_array_equal(got, axconv2d(x, w, m, quant=(q[0], other),
                                                backend="reference"))
    # prepared afresh (a miss: an empty cache): the same folded table, found in _FOLDED
    with monkeypatch.context() as mp:
        mp.setattr(conv, "_WEIGHTS", conv._WeightCache())
        again = _prepare_weights(w, q[1], m, None, fast, fold=True)
    assert again is not hit and again.folded and again.table is hit.table
    assert any(v is not None and v[0] is hit.table for v in _FOLDED.values())
    w[1, 1, 2, 3] += 1.0
    got = axconv2d(x, w, m, quant=q, backend=be)
    np.testing.assert_array_equal(got, axconv2d(x, w, m, quant=q, backend="reference"))
    assert not np.array_equal(got, first)


def test_weight_cache_index_stays_bounded_and_threads_share_it(monkeypatch, run_contended):
    """Hits at ever new addresses (the same weights copied per call) must not grow the
    cache's address index without end, and threads putting and hitting at once never
    raise."""
    from axkern import conv

    cache = conv._WeightCache(slots=2)
    monkeypatch.setattr(conv, "_WEIGHTS", cache)
    rng = np.random.default_rng(13)
    m = load_multiplier("mul8u_drum4")
    x = rng.random((1, 4, 4, 4), dtype=np.float32)
    w = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    bank = np.stack([w] * 64)
    want = axconv2d(x, w, m, backend="reference")
    for i in range(64):
        np.testing.assert_array_equal(axconv2d(x, bank[i], m), want)
        assert len(cache._where) <= 4 * 2
    errors = []

    def putter():
        r = np.random.default_rng(1)
        try:
            for _ in range(150):
                axconv2d(x, r.standard_normal((1, 1, 4, 4)).astype(np.float32), m)
        except Exception as e:   # noqa: BLE001 (any exception is the failure)
            errors.append(repr(e))

    def getter(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(300):
                got = axconv2d(x, bank[int(r.integers(0, 64))], m)
                if not np.array_equal(got, want):
                    errors.append("wrong result")
        except Exception as e:   # noqa: BLE001
            errors.append(repr(e))

    run_contended((putter,), (getter, 2), (getter, 3))
    assert not errors, errors[:3]


def test_weight_cache_never_serves_stale_weights():
    """The fused conv and matmul paths prepare each weight array once (axkern.conv._WEIGHTS);
    weights changed in place, another multiplier, another weight mode or another tuning must
    each be quantized afresh: every call equals the reference backend computed from
    scratch."""
    from axkern.backends import table256
    from axkern.conv import _WEIGHTS
    from axkern.tune import tune_weights

    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 7, 7, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    m1, m2 = noisy(8, False, 1), noisy(8, False, 2)
    be = _ForcedPath(fast, fast.default_path())

    def check(m, **kw):
        got = axconv2d(x, w, m, backend=be, **kw)
        np.testing.assert_array_equal(got, axconv2d(x, w, m, backend="reference", **kw))
        return got

    first = check(m1)
    np.testing.assert_array_equal(check(m1), first)   # served from the cache
    assert _WEIGHTS.get(table256(m1), "tfapprox", w, None, fast) is not None
    w[0, 0, 0, 0] += 0.5                               # in place: same object, new values
    assert not np.array_equal(check(m1), first)
    check(m2)                                          # another table
    check(m1, quant="asymmetric")                      # another weight mode
    check(m1, tune=True)                               # tuned codes
    check(m1, tune=np.roll(tune_weights(m1), 1))       # another mapping
    w[...] = 0.25                                      # constant filter: zero point 0
    check(m1)
    a = rng.standard_normal((5, 12)).astype(np.float32)
    b = rng.standard_normal((12, 7)).astype(np.float32)
    first = axmatmul(a, b, m1, backend=be)
    for _ in range(2):
        np.testing.assert_array_equal(axmatmul(a, b, m1, backend=be), first)
    b[3, 2] = -b[3, 2]
    got = axmatmul(a, b, m1, backend=be)
    np.testing.assert_array_equal(got, axmatmul(a, b, m1, backend="reference"))
    assert not np.array_equal(got, first)
    b[3, 2] = np.nan                                   # a hit must not skip the check
    with pytest.raises(ValueError, match="b contains NaN"):
        axmatmul(a, b, m1, backend=be)
    # transposed views (PyTorch's OIHW filters seen as HWIO, a linear layer's w.T) are
    # compared in their memory order: an edit of the memory shows, and a contiguous array
    # of the same values (another memory order) is not taken for the view
    oihw = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    view = oihw.transpose(2, 3, 1, 0)
    want = axconv2d(x, view, m1, backend="reference")
    for _ in range(2):
        np.testing.assert_array_equal(axconv2d(x, view, m1, backend=be), want)
    hit = _WEIGHTS.get(table256(m1), "tfapprox", view, None, fast)
    assert hit is not None and hit.perm is not None
    assert _WEIGHTS.get(table256(m1), "tfapprox", np.ascontiguousarray(view), None,
                        fast) is not hit
    oihw[4, 3, 2, 1] += 1.0                            # the memory behind the view
    assert _WEIGHTS.get(table256(m1), "tfapprox", view, None, fast) is None
    got = axconv2d(x, view, m1, backend=be)
    np.testing.assert_array_equal(got, axconv2d(x, view, m1, backend="reference"))
    assert not np.array_equal(got, want)
    wt = rng.standard_normal((7, 12)).astype(np.float32)   # (out, in), used as wt.T
    first = axmatmul(a, wt.T, m1, backend=be)
    np.testing.assert_array_equal(axmatmul(a, wt.T, m1, backend=be), first)
    wt[6, 11] = -wt[6, 11]
    np.testing.assert_array_equal(axmatmul(a, wt.T, m1, backend=be),
                                  axmatmul(a, wt.T, m1, backend="reference"))
    assert not fast.same_bytes(np.float32([0.0]), np.float32([-0.0]))
    assert fast.same_bytes(np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2))
    assert not fast.same_bytes(np.arange(6), np.arange(5))
    # large arrays are compared in 1 MiB chunks on all threads: a difference in any chunk,
    # the last partial one included, must show
    big = rng.integers(0, 256, (5 << 20) + 3, dtype=np.uint8)
    other = big.copy()
    assert fast.same_bytes(big, other)
    for pos in (0, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 12345, big.size - 1):
        other[pos] ^= 1
        for nt in (None, 1, 3):
            assert not fast.same_bytes(big, other, nt), (pos, nt)
        other[pos] ^= 1
    assert fast.same_bytes(big, other) and fast.same_bytes(big, other, 1)
    with pytest.raises(ValueError, match="num_threads"):
        fast.same_bytes(big, other, 0)


def test_layers_given_input_params_equal_the_public_calls():
    """conv_with_input_params / dense_with_input_params (the PyTorch layers' way in, with the
    input's parameters already computed) against axconv2d / axdense on the reference backend
    with the same parameters fixed (QuantSpec), bit for bit: both layouts, strides,
    paddings, groups, bias or not, tuning, signed and unsigned tables, factored and not,
    per-channel input parameters, entries on the cpu and the reference backend, empty
    batches; and axconv2d's / axdense's own errors."""
    from axkern.conv import conv_with_input_params, range_params, resolve_quant
    from axkern.matmul import axdense, dense_with_input_params
    from axkern.quant import QuantSpec, symmetric_params

    rng = np.random.default_rng(21)
    mults = [load_multiplier("mul8u_drum4"), load_multiplier("mul8s_drum4"), noisy(8, False, 1),
             noisy(6, True, 2)]
    convs = [  # (N, C, H, W, COUT, k, groups, stride, padding, dilation)
        (2, 3, 9, 7, 5, 3, 1, 1, "SAME", 1), (3, 8, 6, 6, 8, 3, 8, 1, 1, 1),
        (1, 6, 11, 10, 4, 2, 2, (2, 1), ((0, 1), (2, 0)), 1), (2, 4, 8, 8, 6, 3, 1, 1, "VALID", 2),
        (0, 4, 5, 5, 3, 3, 1, 1, "SAME", 1)]
    for m in mults:
        spec = resolve_quant("auto", m)
        for (N, C, H, W, COUT, k, g, stride, padding, dilation) in convs:
            for fmt in ("NCHW", "NHWC"):
                shape = (N, C, H, W) if fmt == "NCHW" else (N, H, W, C)
                x = rng.standard_normal(shape).astype(np.float32)
                w = rng.standard_normal((COUT, C // g, k, k) if fmt == "NCHW"
                                        else (k, k, C // g, COUT)).astype(np.float32)
                lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
                xps = [range_params(lo, hi, spec.input, m)]
                if m.signed:   # per-channel input parameters: axconv2d's path
                    xps.append(symmetric_params(rng.uniform(0.5, 2, C).astype(np.float32)
                                                * np.ones(1, np.float32), m.bits, 0))
                for xp in xps:
                    for bias in (None, rng.standard_normal(COUT).astype(np.float32)):
                        for tune, backend in ((False, "cpu"), (True, "cpu"),
                                              (False, "reference")):
                            if xp.per_channel and (N == 0 or fmt == "NHWC"):
                                continue
                            kw = dict(bias=bias, stride=stride, padding=padding,
                                      dilation=dilation, groups=g, tune=tune, backend=backend,
                                      num_threads=2, data_format=fmt)
                            if xp.per_channel:   # per input channel: axis 1 of NCHW only
                                with pytest.raises(ValueError):
                                    axconv2d(x, w, m, quant=QuantSpec(xp, spec.weight), **kw)
                                with pytest.raises(ValueError):
                                    conv_with_input_params(x, w, m, xp, spec, **kw)
                                continue
                            # the reference backend's NumPy code: independent of the
                            # fused path both entries share on the cpu backend
                            want = axconv2d(x, w, m, quant=QuantSpec(xp, spec.weight),
                                            **dict(kw, backend="reference"))
                            got = conv_with_input_params(x, w, m, xp, spec, **kw)
                            assert got.tobytes() == want.tobytes() and got.shape == want.shape, \
                                (m.name, N, C, H, W, COUT, k, g, fmt, tune, backend)
        for (M, K, N) in [(5, 7, 3), (33, 64, 10), (0, 4, 2), (4, 1, 9)]:
            x = rng.standard_normal((M, K)).astype(np.float32)
            w = rng.standard_normal((K, N)).astype(np.float32)
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
            xp = range_params(lo, hi, spec.input, m)
            for xs in (x, x[0]) if M else (x,):   # batched, unbatched (a Linear's 1-D input)
                for bias in (None, rng.standard_normal(N).astype(np.float32)):
                    for tune, backend in ((False, "cpu"), (True, "cpu"), (False, "reference")):
                        want = axdense(xs, w, m, bias, quant=QuantSpec(xp, spec.weight),
                                       tune=tune, backend="reference", num_threads=2)
                        got = dense_with_input_params(xs, w, m, xp, spec, bias=bias, tune=tune,
                                                      backend=backend, num_threads=2)
                        assert got.tobytes() == want.tobytes() and got.shape == want.shape, \
                            (m.name, M, K, N, tune, backend)
    # the errors are axconv2d's / axdense's own
    m = mults[0]
    spec = resolve_quant("auto", m)
    xp = range_params(-1.0, 1.0, spec.input, m)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    kw = dict(stride=1, padding=1, dilation=1, groups=1, tune=False, backend="cpu",
              num_threads=None, data_format="NCHW")
    for bad, match in [(dict(bias=np.zeros(5, np.float32)), "bias must have shape"),
                       (dict(bias=None, groups=3), "groups"),
                       (dict(bias=None, num_threads=0), "num_threads")]:
        with pytest.raises(ValueError, match=match):
            conv_with_input_params(x, w, m, xp, spec, **dict(kw, **bad))
    for args, extra in [((x[0], w), {}), ((x, w[0]), {}), ((x, w), dict(data_format="NCWH"))]:
        with pytest.raises(ValueError) as want:
            axconv2d(*args, m, quant=QuantSpec(xp, spec.weight), **dict(kw, bias=None, **extra))
        with pytest.raises(ValueError) as got:
            conv_with_input_params(*args, m, xp, spec, **dict(kw, bias=None, **extra))
        assert str(got.value) == str(want.value)
    xd, wd = x.reshape(4, 25), w.reshape(-1)[:75].reshape(25, 3)
    for bad, match in [(dict(bias=np.zeros(4, np.float32)), "bias must have shape"),
                       (dict(bias=None, num_threads=-1), "num_threads"),
                       (dict(bias=None, tune=np.arange(3)), "mapping")]:
        with pytest.raises((ValueError, TypeError), match=match):
            dense_with_input_params(xd, wd, m, xp, spec, **dict(
                dict(bias=None, tune=False, backend="cpu", num_threads=None), **bad))
