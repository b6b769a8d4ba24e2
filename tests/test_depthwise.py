"""The depthwise method of axkern._fast (axkern/_simd/depthwise.c), forced on every dispatch
path and compared bit for bit with the NumPy reference backend: filter sizes 1x1 to 9x2,
strides, vertical dilation, asymmetric padding, channel counts around the 16-channel block,
batches split into several units, both table classes and both accumulators, the dequantizing
store of the float-level layer, and the shapes the method refuses."""
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

fast = pytest.importorskip("axkern._fast")
from axkern import Multiplier, axconv2d  # noqa: E402
from axkern.backends import get_backend  # noqa: E402
from axkern.bench import _ForcedPath  # noqa: E402
from axkern.quant import QuantParams  # noqa: E402
from test_simd import PATHS, codes, random_table  # noqa: E402

ref = get_backend("reference")

DEPTHWISE = [
    # (N, H, W, C, KH, KW, stride, padding, dilation)
    (2, 7, 9, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # SAME 3x3
    (1, 8, 8, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),    # stride 2, one full block
    (2, 6, 11, 3, 1, 4, (1, 2), (0, 0, 1, 2), (1, 1)),    # 1x4, horizontal stride only
    (1, 9, 6, 18, 5, 2, (3, 1), (2, 2, 0, 1), (2, 1)),    # vertical dilation, 2 blocks
    (1, 4, 4, 1, 2, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # one channel, no padding copy
    (7, 5, 5, 33, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),    # 3 blocks, several image chunks
    (3, 1, 12, 4, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1)),    # single output row
    (2, 12, 3, 6, 4, 4, (1, 1), (3, 0, 3, 0), (1, 1)),    # 4x4: every lane, one-sided pad
    (40, 3, 3, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),    # many tiny images
    (1, 12, 5, 20, 9, 2, (1, 1), (4, 4, 0, 1), (1, 1)),   # 9 rows: 7-channel blocks
    (2, 20, 30, 35, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # rows past one kernel tile, bands
    (1, 9, 200, 16, 2, 3, (1, 1), (0, 1, 2, 0), (3, 1)),  # an output row past one tile
    (18, 24, 24, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)), # threads split by image chunks
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["uint16", "int16", "offset", "4bit", "int32"])
def test_depthwise_matches_reference(path, kind):
    rng = np.random.default_rng(zlib.crc32(f"dw/{path}/{kind}".encode()))
    table = random_table(kind, rng)
    if kind == "int32":   # generic class, small enough for int32 sums of 20 taps
        table = (table >> 9).astype(np.int32)
    for (N, H, W, C, KH, KW, stride, padding, dilation) in DEPTHWISE:
        x = codes((N, H, W, C), rng, kind)
        w = codes((KH, KW, 1, C), rng, kind)
        args = (stride, padding, dilation, C, int(rng.integers(0, 16)))
        want = ref.conv2d(x, w, table, *args, np.int64)
        for dt in (np.int32, np.int64):
            if kind == "int32" and dt == np.int64:
                continue   # refused (below): the direct method serves it
            for nt in (1, 3):
                got = fast.conv2d(x, w, table, *args, dt, nt, path=path, method="depthwise")
                np.testing.assert_array_equal(got, want.astype(dt),
                                              err_msg=f"{(N, H, W, C, KH, KW)} {args} {dt}")
        # the automatic choice gives the same sums
        got = fast.conv2d(x, w, table, *args, np.int32, path=path)
        np.testing.assert_array_equal(got, want.astype(np.int32))


def test_int64_sums_of_large_entries():
    """Biased 16-bit entries are summed in uint32 and unbiased in int64: exact int64 sums of
    entries near 2^31 (whose int32 sums the boundary refuses)."""
    rng = np.random.default_rng(5)
    top = (1 << 31) - 1
    table = rng.integers(top - 65535, top + 1, (256, 256)).astype(np.int32)  # 16-bit class
    x = codes((2, 7, 8, 3), rng)
    w = codes((5, 4, 1, 3), rng)
    args = ((1, 1), (2, 2, 1, 2), (1, 1), 3, 3)
    want = ref.conv2d(x, w, table, *args, np.int64)
    assert want.max() > 19 * top
    for path in fast.available_paths():
        np.testing.assert_array_equal(
            fast.conv2d(x, w, table, *args, np.int64, path=path, method="depthwise"), want)
    with pytest.raises(ValueError, match="int32 can overflow"):
        fast.conv2d(x, w, table, *args, np.int32, method="depthwise")


@pytest.mark.parametrize("path", PATHS)
def test_dequantizing_store(path):
    """axconv2d on a depthwise layer with the depthwise method: the folded zero point, window
    sums with per-channel weight zero points, bias or none, against the reference backend."""
    rng = np.random.default_rng(23)
    v = np.arange(256)
    m = Multiplier(np.clip(np.multiply.outer(v, v) + rng.integers(-40, 41, (256, 256)), 0,
                           65535), name="noisy")
    be = _ForcedPath(fast, path, "depthwise")
    C = 20
    x = rng.standard_normal((3, 9, 8, C)).astype(np.float32)
    per_ch = QuantParams(np.linspace(0.01, 0.05, C), rng.integers(0, 256, C))
    for kw in (dict(), dict(bias=True), dict(quant=(QuantParams(0.03, 9), per_ch)),
               dict(stride=2, padding="VALID", bias=True)):
        kw = dict(kw)
        w = rng.standard_normal((3, 3, 1, C)).astype(np.float32)
        if kw.pop("bias", False):
            kw["bias"] = rng.standard_normal(C).astype(np.float32)
        got = axconv2d(x, w, m, groups=C, backend=be, **kw)
        want = axconv2d(x, w, m, groups=C, backend="reference", **kw)
        np.testing.assert_array_equal(got, want, err_msg=str(kw))
    # the store against the reference backend's sums, int32 (rows in float64) and int64
    # (element by element) accumulation
    xc = codes((2, 6, 7, C), rng)
    wc = codes((3, 3, 1, C), rng)
    t = random_table("uint16", rng)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), C, 0)
    sums = ref.conv2d(xc, wc, t, *args, np.int64)
    for dt in (np.int32, np.int64):
        scale = rng.uniform(1e-9, 1e-3, C)
        corr = rng.integers(-1000, 1000, C)
        got = fast.conv2d(xc, wc, t, *args, dt, path=path, method="depthwise",
                          dequant={"scale": scale, "corr": corr})
        want = ((sums + corr).astype(np.float64) * scale).astype(np.float32)
        np.testing.assert_array_equal(got, want)


def test_refused_shapes():
    rng = np.random.default_rng(6)
    t16 = random_table("uint16", rng)
    x = codes((1, 6, 6, 4), rng)
    msg = "method 'depthwise' needs a conv2d with groups equal"
    refused = [
        (codes((3, 3, 1, 8), rng), dict(groups=4)),                   # channel multiplier 2
        (codes((3, 3, 2, 4), rng), dict(groups=2)),                   # grouped, not depthwise
        (codes((3, 3, 4, 4), rng), dict()),                           # dense
        (codes((3, 3, 1, 4), rng), dict(groups=4, dilation=(1, 2))),  # horizontal dilation
        (codes((3, 3, 1, 4), rng), dict(groups=4, dilation=(2, 2))),  # dilated both ways
    ]
    for w, kw in refused:
        with pytest.raises(ValueError, match=msg):
            fast.conv2d(x, w, t16, out_dtype=np.int32, method="depthwise", **kw)
        # the automatic choice still serves them
        args = dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                    pad_code=0)
        args.update(kw)
        got = fast.conv2d(x, w, t16, out_dtype=np.int32, **args)
        want = ref.conv2d(x, w, t16, args["stride"], args["padding"], args["dilation"],
                          args["groups"], 0, np.int64).astype(np.int32)
        np.testing.assert_array_equal(got, want)
    # int64 sums of a generic-class table: refused, served by auto (direct)
    t32 = random_table("int32", rng)
    w = codes((3, 3, 1, 4), rng)
    with pytest.raises(ValueError, match="method 'depthwise'"):
        fast.conv2d(x, w, t32, groups=4, out_dtype=np.int64, method="depthwise")
    np.testing.assert_array_equal(fast.conv2d(x, w, t32, groups=4, out_dtype=np.int64),
                                  ref.conv2d(x, w, t32, (1, 1), (0, 0, 0, 0), (1, 1), 4, 0,
                                             np.int64))
    # not a GEMM method
    with pytest.raises(ValueError, match="method 'depthwise'"):
        fast.gemm(codes((3, 4), rng), codes((4, 2), rng), t16, np.int32, method="depthwise")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_depthwise_random_geometry_both_layouts(data):
    """Random depthwise geometry (odd output heights for the two-row kernel's tail, strides,
    vertical dilation, asymmetric padding, 1 to 20 channels), every path and both input
    layouts (NHWC indices, and NCHW indices read as planes), against the reference
    backend's sums; the dequantizing NCHW store (channel planes) against NumPy's epilogue."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    C = data.draw(st.integers(1, 20))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh = data.draw(st.integers(1, 2))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    H = data.draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 11))
    W = data.draw(st.integers(max(1, kw - pads[2] - pads[3]), 11))
    N = data.draw(st.integers(1, 3))
    kind = data.draw(st.sampled_from(["uint16", "int16", "offset", "int32"]))
    table = random_table(kind, rng)
    if kind == "int32":
        table = (table >> 9).astype(np.int32)
    x = codes((N, H, W, C), rng, kind)
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w = codes((kh, kw, 1, C), rng, kind)
    args = ((sh, sw), pads, (dh, 1), C, int(rng.integers(0, 16)))
    want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
    scale = rng.uniform(1e-4, 1e-3, C)
    corr = rng.integers(-999, 999, C)
    bias = rng.standard_normal(C).astype(np.float32)
    deq = ((want.astype(np.int64) + corr).astype(np.float64) * scale).astype(np.float32) + bias
    dq = {"scale": scale, "corr": corr, "bias": bias}
    for path in fast.available_paths():   # every path this CPU runs
        for fmt, xi in (("NHWC", x), ("NCHW", xn)):
            got = fast.conv2d(xi, w, table, *args, np.int32, 2, path=path, method="depthwise",
                              in_format=fmt)
            np.testing.assert_array_equal(got, want, err_msg=f"{path} {fmt}")
            got = fast.conv2d(xi, w, table, *args, np.int32, 2, path=path, method="depthwise",
                              in_format=fmt, dequant=dq, out_format="NCHW")
            np.testing.assert_array_equal(got, deq.transpose(0, 3, 1, 2), err_msg=f"{path} {fmt}")


@pytest.mark.parametrize("path", PATHS)
def test_nchw_planes_of_every_row_width(path):
    """NCHW indices read as planes and padded by the depthwise method (its rows copied into
    the padded planes 16 bytes at a time, the last move overlapping, 8 bytes or bytes below
    16): rows of every width class, against the reference backend's sums."""
    rng = np.random.default_rng(zlib.crc32(f"dw-rows/{path}".encode()))
    table = random_table("uint16", rng)
    for W in (1, 5, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47):
        x = codes((2, 3, W, 6), rng)
        w = codes((3, 3, 1, 6), rng)
        args = ((1, 1), (1, 1, 1, 2), (1, 1), 6, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int32)
        got = fast.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w, table, *args,
                          np.int32, 2, path=path, method="depthwise", in_format="NCHW")
        np.testing.assert_array_equal(got, want, err_msg=f"W={W}")


@pytest.mark.parametrize("path", PATHS)
def test_nhwc_store_of_wide_rows(path):
    """The dequantizing NHWC store by blocks of 16 output columns (on the AVX-512 VBMI path
    the blocks of sums are dequantized as they are transposed; the last block of a row and
    blocks of fewer than 16 channels with masked loads and stores): whole and partial
    channel blocks (5-row filters take blocks of 12 channels), output widths below, at and
    around the 16-pixel block, tables whose entries are stored biased, the float64
    correction (raw tables) and the int32 one (frozen tables' bounded sums, unsigned and
    signed, through axconv2d in both layouts), bias or none, against NumPy's epilogue of the
    reference sums and against the reference backend."""
    rng = np.random.default_rng(zlib.crc32(f"dw-nhwc/{path}".encode()))
    shapes = ((16, 16), (32, 21), (20, 35), (48, 47), (24, 14), (16, 7))
    for kind, (C, W), KH in zip(("uint16", "int16", "offset", "uint16", "int16", "offset"),
                                shapes, (3, 3, 5, 3, 5, 3)):
        table = random_table(kind, rng)
        x = codes((3, 5, W, C), rng, kind)
        w = codes((KH, 3, 1, C), rng, kind)
        args = ((1, 1), (KH // 2, KH // 2, 1, 1), (1, 1), C, int(rng.integers(0, 256)))
        sums = ref.conv2d(x, w, table, *args, np.int64)
        scale = rng.uniform(1e-9, 1e-3, C)
        corr = rng.integers(-999, 999, C)
        for bias in (None, rng.standard_normal(C).astype(np.float32)):
            dq = {"scale": scale, "corr": corr}
            want = ((sums + corr).astype(np.float64) * scale).astype(np.float32)
            if bias is not None:
                dq["bias"] = bias
                want = want + bias
            got = fast.conv2d(x, w, table, *args, np.int32, 2, path=path, method="depthwise",
                              dequant=dq)
            np.testing.assert_array_equal(got, want, err_msg=f"{kind} C={C} W={W} KH={KH} "
                                          f"bias={bias is not None}")
    v = np.arange(256)
    vs = v - 256 * (v >= 128)   # a signed multiplier's operands (stored biased in the kernels)
    noise = rng.integers(-40, 41, (256, 256))
    mults = (Multiplier(np.clip(np.multiply.outer(v, v) + noise, 0, 65535), name="noisy"),
             Multiplier(np.multiply.outer(vs, vs) + noise, signed=True, name="noisy-s"))
    be = _ForcedPath(fast, path, "depthwise")
    for m in mults:
        for C, W in shapes:
            x = rng.standard_normal((2, 4, W, C)).astype(np.float32)
            w = rng.standard_normal((3, 3, 1, C)).astype(np.float32)
            for bias in (None, rng.standard_normal(C).astype(np.float32)):
                for fmt, xf, wf in (("NHWC", x, w), ("NCHW", np.ascontiguousarray(
                        x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1)))):
                    kw = dict(groups=C, bias=bias, data_format=fmt)
                    got = axconv2d(xf, wf, m, backend=be, **kw)
                    want = axconv2d(xf, wf, m, backend="reference", **kw)
                    np.testing.assert_array_equal(got, want, err_msg=f"{m.name} C={C} W={W} "
                                                  f"{fmt}")


@pytest.mark.parametrize("path", PATHS)
def test_planar_copy_of_nhwc_rows(path):
    """The planar copy of NHWC codes that the depthwise and the direct method read: padded
    rows of 16 columns or more go by 16 x 16 transposes of 16 channels, the last block of a
    row stepped back over the one before, or (images narrower than 16) starting in the left
    padding and reading pad codes for the pixels outside the image; the channels past the
    last block of 16 by blocks of 8 and bytes; a single image's copy split between the
    threads by blocks of 16 channels (NCHW codes too: their border). Widths 1 - 33 with
    paddings that make the padded rows narrower than, exactly and wider than 16 columns,
    channel counts with 0, 5 and 13 channels past a block of 16, one and two images; the sums
    against the reference backend, with a pad code that differs from every input code."""
    rng = np.random.default_rng(zlib.crc32(f"dw-planar/{path}".encode()))
    table = random_table("uint16", rng)
    cases = [(W, pl, pr) for W in (1, 7, 9, 13, 14, 15, 16, 17, 27, 28, 33)
             for pl, pr in ((1, 1), (2, 0), (0, 2))]
    cases += [(10, 3, 3), (12, 4, 0), (3, 0, 4)]   # padded rows of 16 or just under
    for i, (W, pl, pr) in enumerate(cases):
        C = (16, 21, 29, 32, 61)[i % 5]
        # one image: its copy is split by blocks of 16 channels between the threads
        x = rng.integers(1, 256, (1 + i % 2, 3, W, C)).astype(np.uint8)
        pads = (1, 1, pl, pr)
        w = rng.integers(0, 256, (3, 3, 1, C)).astype(np.uint8)
        args = ((1, 1), pads, (1, 1), C, 0)
        want = ref.conv2d(x, w, table, *args, np.int64)
        for fmt, xi in (("NHWC", x), ("NCHW", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))):
            got = fast.conv2d(xi, w, table, *args, np.int64, 3, path=path, method="depthwise",
                              in_format=fmt)
            np.testing.assert_array_equal(got, want, err_msg=f"depthwise {fmt} W={W} C={C} "
                                          f"pads={pads}")
        wd = rng.integers(0, 256, (3, 3, C, 5)).astype(np.uint8)
        args = ((1, 1), pads, (1, 1), 1, 0)
        want = ref.conv2d(x, wd, table, *args, np.int64)
        got = fast.conv2d(x, wd, table, *args, np.int64, 3, path=path, method="direct")
        np.testing.assert_array_equal(got, want, err_msg=f"direct W={W} C={C} pads={pads}")


def _check_forced_depthwise(x, w, table, args, want, path, rng, msg, bias):
    """The forced depthwise method on ``path`` against the reference sums ``want``: int32
    and int64 sums from NHWC and NCHW indices, and both dequantizing stores against NumPy's
    epilogue (random per-channel scales and corrections, a bias or none)."""
    C = x.shape[3]
    scale = rng.uniform(1e-6, 1e-3, C)
    corr = rng.integers(-999, 999, C)
    dq = {"scale": scale, "corr": corr}
    deq = ((want + corr).astype(np.float64) * scale).astype(np.float32)
    if bias:
        dq["bias"] = rng.standard_normal(C).astype(np.float32)
        deq = deq + dq["bias"]
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    for fmt, xi in (("NHWC", x), ("NCHW", xn)):
        for dt in (np.int32, np.int64):
            got = fast.conv2d(xi, w, table, *args, dt, 2, path=path, method="depthwise",
                              in_format=fmt)
            np.testing.assert_array_equal(got, want.astype(dt), err_msg=f"{msg} {fmt}")
        for of, e in (("NHWC", deq), ("NCHW", deq.transpose(0, 3, 1, 2))):
            got = fast.conv2d(xi, w, table, *args, np.int32, 2, path=path, method="depthwise",
                              in_format=fmt, dequant=dq, out_format=of)
            np.testing.assert_array_equal(got, e, err_msg=f"{msg} {fmt} -> {of}")


@pytest.mark.parametrize("path", PATHS)
def test_wide_filters(path):
    """Filters of 5 to 9 columns (5 x 5, 7 x 7, 3 x 7, 1 x 9, 2 x 6) at strides 1 - 3: on the
    AVX-512 VBMI path at strides 1 and 2 the depthwise method's variant over the direct
    kernel serves them (a tap at a time; stride 2 over the four phase planes of each padded
    plane, one with vertical dilation; stride 1 with and without the padding columns in its
    planar copy), elsewhere its uint16 rows of E in groups of 4 filter columns (on `avx2`,
    and on `avx512_vbmi` at stride 3); filters of up to 4 columns at stride 2 take the phase
    planes on `avx512_vbmi` and the rows of E elsewhere. int32 and int64 sums from NHWC and
    NCHW indices and both dequantizing stores, against the reference backend and NumPy's
    epilogue. The scalar path refuses wider filters, and every path a generic-class table
    with them; the automatic choice serves those exactly."""
    rng = np.random.default_rng(zlib.crc32(f"dw-wide/{path}".encode()))
    cases = [(5, 5, 1, (2, 2, 2, 2), 24, 17, 11), (7, 7, 1, (3, 3, 3, 3), 16, 16, 11),
             (3, 7, 1, (1, 1, 3, 3), 13, 9, 11), (1, 9, 1, (0, 0, 4, 4), 35, 30, 11),
             (2, 6, 1, (0, 1, 2, 3), 20, 11, 11), (5, 5, 1, (0, 0, 0, 0), 9, 12, 11),
             (3, 3, 2, (0, 1, 0, 1), 24, 16, 16), (3, 3, 2, (1, 1, 1, 1), 18, 15, 13),
             (5, 5, 2, (1, 2, 1, 2), 20, 29, 14), (7, 7, 2, (3, 3, 3, 3), 16, 9, 10),
             (2, 4, 2, (0, 0, 0, 0), 5, 10, 7), (4, 3, 2, (2, 0, 1, 0), 33, 22, 21),
             (5, 5, 3, (2, 2, 2, 2), 18, 23, 16), (3, 9, 3, (1, 1, 0, 4), 17, 30, 9)]
    for i, (KH, KW, s, pads, C, W, H) in enumerate(cases):
        kind = ("uint16", "int16", "offset")[i % 3]
        table = random_table(kind, rng)
        x = codes((2, H, W, C), rng, kind)
        w = codes((KH, KW, 1, C), rng, kind)
        args = ((s, s), pads, (1 + (i == 7), 1), C, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64)
        msg = f"{KH}x{KW} stride {s} pads={pads} C={C} H={H} W={W}"
        if path != "scalar" or KW <= 4:
            _check_forced_depthwise(x, w, table, args, want, path, rng, msg, bias=False)
        else:
            with pytest.raises(ValueError, match="method 'depthwise'"):
                fast.conv2d(x, w, table, *args, np.int32, path=path, method="depthwise")
        np.testing.assert_array_equal(fast.conv2d(x, w, table, *args, np.int32, 2, path=path),
                                      want.astype(np.int32), err_msg=f"{msg} auto")
    # refused on every path with a generic-class table
    x = codes((1, 9, 9, 4), rng)
    w = codes((5, 5, 1, 4), rng)
    t32 = random_table("int32", rng) >> 12
    for table, stride in ((t32, (1, 1)), (t32, (2, 2))):
        args = (stride, (2, 2, 2, 2), (1, 1), 4, 0)
        with pytest.raises(ValueError, match="method 'depthwise'"):
            fast.conv2d(x, w, table, *args, np.int32, path=path, method="depthwise")
        np.testing.assert_array_equal(fast.conv2d(x, w, table, *args, np.int32, path=path),
                                      ref.conv2d(x, w, table, *args, np.int32))


@pytest.mark.parametrize("path", PATHS)
def test_stride2_phase_planes(path):
    """Stride-2 layers, whose four phase planes the AVX-512 VBMI path makes straight from the
    codes (rows of E elsewhere): NHWC rows of 16 pixels and more (16 x 16 transposes, the
    last block stepped back) and narrower, NCHW rows likewise (by 16 pixels), left padding
    of either parity, channels past the last block of 16, one image (the copy split by
    channel blocks between the threads) and several, filters of 1 to 5 rows and columns;
    int32 and int64 sums from NHWC and NCHW indices and both dequantizing stores against
    the reference backend and NumPy's epilogue."""
    rng = np.random.default_rng(zlib.crc32(f"dw-phases/{path}".encode()))
    for i, (N, H, W, C, KH, KW, pads) in enumerate((
            (1, 12, 37, 33, 3, 3, (0, 1, 0, 1)),
            (2, 13, 34, 16, 3, 3, (1, 1, 1, 1)),
            (1, 9, 7, 20, 3, 3, (1, 0, 1, 0)),
            (1, 10, 64, 48, 3, 3, (0, 1, 0, 1)),
            (3, 17, 18, 5, 3, 2, (1, 1, 2, 0)),
            (1, 11, 35, 40, 5, 5, (2, 2, 3, 1)),
            (2, 8, 16, 17, 1, 1, (0, 0, 1, 0)),
            (1, 6, 33, 32, 2, 4, (1, 0, 0, 3)))):
        kind = ("uint16", "int16", "offset")[i % 3]
        table = random_table(kind, rng)
        x = codes((N, H, W, C), rng, kind)
        w = codes((KH, KW, 1, C), rng, kind)
        args = ((2, 2), pads, (1, 1), C, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64)
        msg = f"{N}x{H}x{W}x{C} {KH}x{KW} pads={pads}"
        if path != "scalar" or KW <= 4:
            _check_forced_depthwise(x, w, table, args, want, path, rng, msg, bias=i % 2 == 0)
        np.testing.assert_array_equal(fast.conv2d(x, w, table, *args, np.int32, 2, path=path),
                                      want.astype(np.int32), err_msg=f"{msg} auto")


def _compact(H, W, KH, KW, pads, dh):
    """Whether the AVX-512 VBMI path streams a planar copy without padding columns
    (depthwise.c: the left and right padding exactly the filter's overhang, and a band's
    positions taking an eighth fewer blocks of 64 that way)."""
    pt, pb, pl, pr = pads
    if pl + pr != KW - 1 or not (pl or pr):
        return False
    cb = 16 if KH <= 4 else max(1, 64 // KH)
    OH = H + pt + pb - dh * (KH - 1)
    nb = min(max(1, 4096 // (cb * W)), OH)
    full = -(-((nb - 1) * (W + pl + pr) + W) // 64)
    return 8 * -(-(nb * W) // 64) <= 7 * full


@pytest.mark.parametrize("path", PATHS)
def test_planes_without_padding_columns(path):
    """Layers whose padding columns the AVX-512 VBMI path leaves out of the planar copy (the
    taps that fall in them masked per lane and looked up with the pad code): SAME 3x3 on
    whole and partial channel blocks, one-sided and uneven left and right padding, vertical
    dilation, a shorter last band, bands of two chunks (5-row filters); int32 and int64
    sums from NHWC and NCHW indices against the reference backend, and the dequantizing
    NHWC and NCHW stores against NumPy's epilogue."""
    rng = np.random.default_rng(zlib.crc32(f"dw-compact/{path}".encode()))
    table = random_table("int16", rng)
    for N, H, W, C, KH, KW, pads, dh in (
            (2, 16, 16, 32, 3, 3, (1, 1, 1, 1), 1),
            (3, 8, 8, 20, 3, 3, (1, 1, 1, 1), 1),
            (1, 7, 8, 16, 2, 4, (0, 1, 1, 2), 1),
            (1, 7, 8, 16, 2, 4, (1, 0, 2, 1), 1),
            (2, 11, 7, 5, 3, 2, (1, 1, 0, 1), 2),
            (3, 30, 20, 16, 3, 3, (1, 1, 1, 1), 1),
            (1, 28, 12, 6, 5, 3, (2, 2, 1, 1), 1)):
        assert _compact(H, W, KH, KW, pads, dh)
        x = codes((N, H, W, C), rng, "int16")
        w = codes((KH, KW, 1, C), rng, "int16")
        args = ((1, 1), pads, (dh, 1), C, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64)
        _check_forced_depthwise(x, w, table, args, want, path, rng,
                                f"{(N, H, W, C, KH, KW, pads, dh)}", bias=True)
