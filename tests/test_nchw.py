"""NCHW convolutions without transposed copies (axkern._fast): the quantization that reads
planar NCHW float32 and writes NHWC table indices (``quantize_indices(from_nchw=True)``),
and the dequantizing stores that write the NCHW output directly (``conv2d(out_format=
"NCHW")``), forced on every dispatch path and kernel method and compared bit for bit with
independent NumPy computations on the reference backend's sums, and ``axconv2d(data_format=
"NCHW")`` with its NHWC call and the reference backend."""
import zlib

import numpy as np
import pytest

fast = pytest.importorskip("axkern._fast")
from axkern import Multiplier, axconv2d  # noqa: E402
from axkern.backends import freeze_table, get_backend  # noqa: E402
from axkern.bench import _ForcedPath  # noqa: E402
from axkern.quant import QuantParams, quantize_float, symmetric_params, tf_quant_params  # noqa: E402
from test_simd import PATHS, codes, random_table  # noqa: E402

ref = get_backend("reference")

CONVS = [
    # (N, H, W, C, KH, KW, COUT, groups, stride, padding, dilation)
    (2, 7, 9, 5, 3, 3, 6, 1, (1, 1), (1, 1, 1, 1), (1, 1)),       # odd sizes, SAME
    (3, 5, 6, 16, 3, 3, 16, 1, (2, 1), (0, 1, 2, 0), (1, 1)),     # stride, asymmetric pads
    (2, 8, 8, 12, 2, 3, 20, 4, (1, 1), (0, 0, 0, 0), (2, 1)),     # groups, dilation, VALID
    (5, 4, 4, 33, 3, 3, 33, 33, (1, 1), (1, 1, 1, 1), (1, 1)),    # depthwise, 3 blocks
    (2, 11, 10, 3, 1, 4, 3, 3, (2, 2), (0, 0, 1, 2), (1, 1)),     # depthwise 1x4, stride 2
    (9, 6, 5, 8, 3, 3, 70, 1, (1, 1), (1, 1, 1, 1), (1, 1)),      # tiles across images, > 64 columns
    (2, 12, 12, 20, 3, 3, 40, 1, (1, 1), (1, 1, 1, 1), (1, 1)),   # whole 16 x 16 store blocks
    (2, 32, 32, 3, 3, 3, 21, 1, (1, 1), (1, 1, 1, 1), (1, 1)),    # planes 4 KiB apart (buffered)
    (1, 20, 64, 17, 3, 3, 17, 17, (1, 1), (1, 1, 1, 1), (1, 1)),  # depthwise, bands of 4 rows
]


def dequant_numpy(total, dq, groups):
    """Independent NumPy epilogue: int64 correction, one float64 product, float32 bias."""
    t = total.astype(np.int64)
    cols = t.shape[-1]
    v = t + np.broadcast_to(np.asarray(dq.get("corr", 0), np.int64), (cols,))
    if "zw" in dq:
        og = cols // groups
        v = v - np.asarray(dq["zw"], np.int64) * np.repeat(dq["sumx"], og, axis=-1)
    y = (v.astype(np.float64) * np.asarray(dq["scale"], np.float64)).astype(np.float32)
    if dq.get("bias") is not None:
        y = y + np.asarray(dq["bias"], np.float32)
    return y


def methods_for(C, COUT, groups, KW, dilation):
    dw = groups == C == COUT and KW <= 4 and dilation[1] == 1
    return ["direct", "expand"] + (["depthwise"] if dw else []) + [None]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["uint16", "int32"])
def test_conv2d_nchw_store_every_method(path, kind):
    rng = np.random.default_rng(zlib.crc32(f"nchw/{path}/{kind}".encode()))
    table = random_table(kind, rng)
    if kind == "int32":   # generic class, small enough for int32 sums of these layers
        table = (table >> 12).astype(np.int32)
    for (N, H, W, C, KH, KW, COUT, g, stride, padding, dilation) in CONVS:
        x = codes((N, H, W, C), rng)
        w = codes((KH, KW, C // g, COUT), rng)
        args = (stride, padding, dilation, g, int(rng.integers(0, 256)))
        sums = ref.conv2d(x, w, table, *args, np.int64)
        OH, OW = sums.shape[1:3]
        dq = {"scale": rng.uniform(1e-4, 1e-3, COUT), "corr": rng.integers(-999, 999, COUT),
              "bias": rng.standard_normal(COUT).astype(np.float32)}
        dqz = dict(dq, zw=rng.integers(-3, 4, COUT), sumx=rng.integers(-9999, 9999, (N, OH, OW, g)))
        for d in (dq, dqz):
            want = dequant_numpy(sums, d, g).transpose(0, 3, 1, 2)
            for method in methods_for(C, COUT, g, KW, dilation):
                for dt in (np.int32, np.int64):
                    if (method == "expand" and (kind == "int32" or dt == np.int64)) or \
                            (method == "depthwise" and kind == "int32" and dt == np.int64):
                        continue   # refused (see axkern._fast.conv2d)
                    got = fast.conv2d(x, w, table, *args, dt, 2, path=path, method=method,
                                      dequant=d, out_format="NCHW")
                    assert got.shape == (N, COUT, OH, OW) and got.flags.c_contiguous
                    np.testing.assert_array_equal(
                        got, want, err_msg=f"{(N, H, W, C, KH, KW, COUT, g)} {method} {dt}")
    # an empty reduction (no input channels): the dequantized zeros, NCHW
    z = fast.conv2d(np.zeros((2, 3, 4, 0), np.uint8), np.zeros((1, 1, 0, 5), np.uint8), table,
                    out_dtype=np.int32, path=path, dequant={"scale": 0.5, "corr": np.arange(5)},
                    out_format="NCHW")
    np.testing.assert_array_equal(z, np.broadcast_to(
        (np.arange(5) * 0.5).astype(np.float32)[None, :, None, None], (2, 5, 3, 4)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["uint16", "int32"])
def test_conv2d_nchw_input_every_method(path, kind):
    """``in_format="NCHW"``: the depthwise method reads the planes as they are (padded or
    not), the other methods an NHWC copy; integer sums and the NCHW dequantizing store
    against the reference backend's sums of the NHWC codes."""
    rng = np.random.default_rng(zlib.crc32(f"nchw-in/{path}/{kind}".encode()))
    table = random_table(kind, rng)
    if kind == "int32":
        table = (table >> 12).astype(np.int32)
    convs = CONVS + [(3, 6, 7, 10, 3, 3, 10, 10, (1, 1), (0, 0, 0, 0), (2, 1)),  # dw, unpadded
                     (2, 9, 8, 4, 2, 2, 4, 4, (2, 2), (0, 1, 0, 1), (1, 1))]
    for (N, H, W, C, KH, KW, COUT, g, stride, padding, dilation) in convs:
        x = codes((N, H, W, C), rng)
        xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = codes((KH, KW, C // g, COUT), rng)
        args = (stride, padding, dilation, g, int(rng.integers(0, 256)))
        sums = ref.conv2d(x, w, table, *args, np.int64)
        dq = {"scale": rng.uniform(1e-4, 1e-3, COUT), "corr": rng.integers(-999, 999, COUT)}
        want = dequant_numpy(sums, dq, g).transpose(0, 3, 1, 2)
        for method in methods_for(C, COUT, g, KW, dilation):
            for dt in (np.int32, np.int64):
                if (method == "expand" and (kind == "int32" or dt == np.int64)) or \
                        (method == "depthwise" and kind == "int32" and dt == np.int64):
                    continue
                msg = f"{(N, H, W, C, KH, KW, COUT, g)} {method} {dt}"
                got = fast.conv2d(xn, w, table, *args, dt, 2, path=path, method=method,
                                  in_format="NCHW")
                np.testing.assert_array_equal(got, sums.astype(dt), err_msg=msg)
                got = fast.conv2d(xn, w, table, *args, dt, 2, path=path, method=method,
                                  in_format="NCHW", dequant=dq, out_format="NCHW")
                np.testing.assert_array_equal(got, want, err_msg=msg)
    with pytest.raises(ValueError, match="in_format must be"):
        fast.conv2d(xn, w, table, in_format="HWCN")
    with pytest.raises(ValueError, match="channels"):   # C read from axis 1
        fast.conv2d(np.ascontiguousarray(xn.transpose(0, 2, 3, 1)), w, table, *args,
                    in_format="NCHW")


@pytest.mark.parametrize("path", PATHS)
def test_conv2d_nchw_store_signed_zeros(path):
    """The NCHW stores bit for bit, zeros' signs included: scales so small that every
    product rounds to a zero of its sign in float32, without a bias (nothing is added: a
    negative zero stays one) and with one of zeros. Every method and table class that
    stores through them, factored tables too, tiles across images, edges of 8 x 8 blocks."""
    rng = np.random.default_rng(zlib.crc32(f"nchw-zeros/{path}".encode()))
    exact = np.outer(np.arange(256), np.arange(256)).astype(np.int32)   # factors of rank 1
    tables = {"uint16": random_table("uint16", rng), "factored": freeze_table(exact)}
    for (N, H, W, C, KH, KW, COUT, g, stride, padding, dilation) in CONVS:
        x = codes((N, H, W, C), rng)
        w = codes((KH, KW, C // g, COUT), rng)
        args = (stride, padding, dilation, g, int(rng.integers(0, 256)))
        for kind, table in tables.items():
            sums = ref.conv2d(x, w, table, *args, np.int64)
            corr = -sums.reshape(-1, COUT).mean(axis=0).astype(np.int64)   # both signs
            # about half the products below half the smallest subnormal: zeros of both signs
            scale = 5e-46 / max(1.0, float(np.median(np.abs(sums + corr))))
            for bias in (None, np.zeros(COUT, np.float32)):
                dq = {"scale": np.full(COUT, scale), "corr": corr, "bias": bias}
                want = dequant_numpy(sums, dq, g).transpose(0, 3, 1, 2)
                assert ((want == 0) & np.signbit(want)).any() == (bias is None)
                methods = methods_for(C, COUT, g, KW, dilation)
                for method in methods + (["factored"] if kind == "factored" else []):
                    if method == "expand" and kind == "factored":
                        continue
                    got = fast.conv2d(x, w, table, *args, np.int32, 2, path=path,
                                      method=method, dequant=dq, out_format="NCHW")
                    assert got.tobytes() == want.tobytes(), \
                        f"{(N, H, W, C, KH, KW, COUT, g)} {kind} {method} bias {bias is not None}"


def test_conv2d_nchw_into_out_and_errors():
    rng = np.random.default_rng(3)
    t = random_table("uint16", rng)
    x, w = codes((2, 5, 6, 4), rng), codes((3, 3, 4, 3), rng)
    dq = {"scale": 0.25}
    o = np.full((2, 3, 5, 6), np.nan, np.float32)
    assert fast.conv2d(x, w, t, (1, 1), (1, 1, 1, 1), out_dtype=np.int32, dequant=dq,
                       out_format="NCHW", out=o) is o
    np.testing.assert_array_equal(o, fast.conv2d(x, w, t, (1, 1), (1, 1, 1, 1), out_dtype=np.int32,
                                                 dequant=dq).transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="needs dequant"):
        fast.conv2d(x, w, t, out_format="NCHW")
    with pytest.raises(ValueError, match="out_format must be"):
        fast.conv2d(x, w, t, dequant=dq, out_format="CHWN")
    with pytest.raises(ValueError, match="out must be"):   # an NHWC-shaped buffer
        fast.conv2d(x, w, t, (1, 1), (1, 1, 1, 1), out_dtype=np.int32, dequant=dq,
                    out_format="NCHW", out=np.empty((2, 5, 6, 3), np.float32))


@pytest.mark.parametrize("signed,bits", [(False, 8), (True, 8), (False, 4), (True, 5)])
def test_quantize_from_nchw(signed, bits):
    rng = np.random.default_rng(bits + 10 * signed)
    mask = (1 << bits) - 1
    for shape in [(2, 3, 7, 5), (1, 1, 1, 1), (3, 64, 8, 8), (2, 21, 5, 7), (1, 3, 60, 100)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        x.flat[::7] = 0.5 * np.round(x.flat[::7] * 4)   # ties of the rounding rules
        # 16 x 16 blocks with tails of pixels and channels (21 channels, 35 pixels); 2 tiles
        p = symmetric_params(x, bits) if signed else tf_quant_params(x.min(), x.max(), bits)
        q = quantize_float(x.transpose(0, 2, 3, 1), p)
        want = q.astype(np.int64).astype(np.uint8) & mask   # two's complement, low bits
        for nt in (1, 3):
            got = fast.quantize_indices(x, p, index_mask=mask, num_threads=nt, from_nchw=True)
            assert got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want, err_msg=f"{shape} {nt}")
    x = np.ones((2, 3, 4, 5), np.float32)
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        fast.quantize_indices(x, QuantParams(0.1, 0), from_nchw=True)
    with pytest.raises(ValueError, match="from_nchw takes a 4-D"):
        fast.quantize_indices(x[0], QuantParams(0.1, 0), from_nchw=True)
    with pytest.raises(ValueError, match="from_nchw takes a 4-D"):
        fast.quantize_indices(x, QuantParams(0.1, 0), from_nchw=True, row_sums=True)


@pytest.mark.parametrize("path", fast.available_paths())
def test_axconv2d_nchw_equals_nhwc_and_reference(path):
    """The float-level call in NCHW (planar quantization, NCHW store) on every path and
    method against its NHWC call transposed and the reference backend: unsigned and signed
    multipliers, folded and window-sum zero points, per-channel weights, depthwise layers,
    a non-contiguous NCHW input."""
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    v = np.arange(256)
    span = np.multiply.outer(v, v)
    span[0, 255] = 65535   # a fold would leave the 16-bit class: window sums instead
    mults = [Multiplier.exact(8), Multiplier.exact(8, signed=True),
             Multiplier(span.astype(np.int64), name="span65535")]
    cases = [dict(w=(6, 5, 3, 3), groups=1), dict(w=(6, 1, 3, 3), groups=6, c=6),
             dict(w=(4, 2, 3, 2), groups=2, c=4, stride=2, padding="VALID"),
             dict(w=(6, 5, 3, 3), groups=1, quant="symmetric-per-channel")]
    for m in mults:
        for case in cases:
            kw = dict(case)
            w = rng.standard_normal(kw.pop("w")).astype(np.float32)
            C = kw.pop("c", 5)
            if kw.get("quant") == "symmetric-per-channel" and not m.signed:
                continue
            x = rng.standard_normal((3, C, 9, 7)).astype(np.float32)
            b = rng.standard_normal(w.shape[0]).astype(np.float32)
            want = axconv2d(x, w, m, bias=b, data_format="NCHW", backend="reference", **kw)
            nhwc = axconv2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), m, bias=b,
                            backend=_ForcedPath(fast, path), **kw).transpose(0, 3, 1, 2)
            np.testing.assert_array_equal(nhwc, want)
            for method in methods_for(C, w.shape[0], kw["groups"], w.shape[3], (1, 1)):
                be = _ForcedPath(fast, path, method)
                try:
                    got = axconv2d(x, w, m, bias=b, data_format="NCHW", backend=be, **kw)
                except ValueError as e:   # a forced method that cannot serve this table
                    assert "method" in str(e)
                    continue
                assert got.flags.c_contiguous and got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=f"{m.name} {case} {method}")
    # an NCHW view that is not contiguous (quantized through its NHWC view)
    x = rng.standard_normal((2, 9, 7, 5)).astype(np.float32).transpose(0, 3, 1, 2)
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        axconv2d(x, w, mults[0], data_format="NCHW", backend=_ForcedPath(fast, path)),
        axconv2d(x, w, mults[0], data_format="NCHW", backend="reference"))


@pytest.mark.parametrize("path", PATHS)
def test_swapped_gemm_dequantizes_rows(path):
    """GEMMs of few rows stream the columns of b past the rows of a (the output tile is
    transposed): the expanded method's dequantizing store transposes the tile and
    dequantizes a row at a time, the direct method's dequantizes each fixed row's run of
    columns; every shape of tile and reduction split against NumPy on the reference sums."""
    rng = np.random.default_rng(zlib.crc32(f"swapped/{path}".encode()))
    table = random_table("uint16", rng)
    for M, K, N in [(1, 7, 33), (3, 50, 300), (5, 300, 1000), (17, 40, 500), (9, 600, 70)]:
        a, b = codes((M, K), rng), codes((K, N), rng)
        sums = ref.gemm(a, b, table, np.int64)
        for dq in ({"scale": rng.uniform(1e-4, 1e-3, N)},
                   {"scale": rng.uniform(1e-4, 1e-3, N), "corr": rng.integers(-999, 999, N),
                    "bias": rng.standard_normal(N).astype(np.float32),
                    "zw": rng.integers(-3, 4, N), "sumx": rng.integers(-9999, 9999, (M, 1))}):
            want = dequant_numpy(sums, dq, 1)
            for method in ("expand", "direct", None):
                got = fast.gemm(a, b, table, np.int32, 2, path=path, method=method, dequant=dq)
                np.testing.assert_array_equal(got, want, err_msg=f"{(M, K, N)} {method}")


@pytest.mark.parametrize("path", PATHS)
def test_direct_conv_swaps_operands_for_few_pixels(path):
    """Convolutions of few output pixels by many filters (batch-1 layers of small images):
    the direct method and the expanded tables (groups 1) stream the filters past an im2col
    copy of the pixels. Images of more pixels than a fixed block (64), padding with a
    nonzero code, strides, dilation, groups, int32 and int64 sums, the dequantizing store
    with window sums in both layouts and NCHW codes in, generic (32-bit) tables, against the
    reference backend."""
    rng = np.random.default_rng(zlib.crc32(f"swapped-conv/{path}".encode()))
    for kind in ("uint16", "int32"):
        table = random_table(kind, rng)
        if kind == "int32":   # small enough for int32 sums of these layers
            table = (table >> 12).astype(np.int32)
        for (N, H, W, C, KH, KW, COUT, g, stride, padding, dilation) in [
                (1, 2, 2, 64, 3, 3, 512, 1, (1, 1), (1, 1, 1, 1), (1, 1)),
                (1, 7, 7, 24, 3, 3, 300, 1, (1, 1), (1, 1, 1, 1), (1, 1)),
                (2, 9, 9, 16, 3, 3, 260, 1, (1, 1), (0, 2, 1, 0), (1, 1)),   # 81 > 64 pixels
                (1, 10, 10, 12, 3, 3, 2 * 120, 2, (2, 2), (1, 1, 1, 1), (1, 1)),
                (3, 4, 5, 8, 2, 3, 130, 1, (1, 1), (1, 0, 2, 1), (2, 2)),
                (1, 6, 9, 8, 3, 2, 200, 1, (2, 3), (0, 1, 1, 0), (1, 3)),
                (1, 1, 1, 200, 1, 1, 700, 1, (1, 1), (0, 0, 0, 0), (1, 1))]:
            x = codes((N, H, W, C), rng)
            w = codes((KH, KW, C // g, COUT), rng)
            args = (stride, padding, dilation, g, int(rng.integers(1, 256)))
            sums = ref.conv2d(x, w, table, *args, np.int64)
            OH, OW = sums.shape[1:3]
            for method in ("direct", "expand", None):
                msg = f"{(N, H, W, C, KH, KW, COUT, g)} {kind} {method}"
                if method == "expand" and kind == "int32":
                    continue   # refused: 16-bit class only
                for dt in (np.int32,) if method == "expand" else (np.int32, np.int64):
                    got = fast.conv2d(x, w, table, *args, dt, 2, path=path, method=method)
                    np.testing.assert_array_equal(got, sums.astype(dt), err_msg=msg)
                dq = {"scale": rng.uniform(1e-4, 1e-3, COUT),
                      "corr": rng.integers(-999, 999, COUT),
                      "bias": rng.standard_normal(COUT).astype(np.float32),
                      "zw": rng.integers(-3, 4, COUT),
                      "sumx": rng.integers(-9999, 9999, (N, OH, OW, g))}
                want = dequant_numpy(sums, dq, g)
                got = fast.conv2d(x, w, table, *args, np.int32, 2, path=path, method=method,
                                  dequant=dq)
                np.testing.assert_array_equal(got, want, err_msg=msg)
                # without window sums (the NHWC row stores' other branch)
                dq1 = {"scale": dq["scale"], "corr": dq["corr"]}
                got = fast.conv2d(x, w, table, *args, np.int32, 2, path=path, method=method,
                                  dequant=dq1)
                want1 = dequant_numpy(sums, dq1, g)
                np.testing.assert_array_equal(got, want1, err_msg=msg)
                xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
                got = fast.conv2d(xn, w, table, *args, np.int32, 3, path=path, method=method,
                                  dequant=dq, in_format="NCHW", out_format="NCHW")
                np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2), err_msg=msg)
                got = fast.conv2d(x, w, table, *args, np.int32, 2, path=path, method=method,
                                  dequant=dq1, out_format="NCHW")
                np.testing.assert_array_equal(got, want1.transpose(0, 3, 1, 2), err_msg=msg)
