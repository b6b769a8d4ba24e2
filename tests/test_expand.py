"""The expanded-table method of axkern._fast (axkern/_simd/expand.c), forced on every
dispatch path and compared bit for bit with the NumPy reference backend: every column block
width and partial blocks, both GEMM orientations, reductions of many blocks, groups, odd
thread counts, and the dequantizing store of the float-level layer."""
import zlib

import numpy as np
import pytest

fast = pytest.importorskip("axkern._fast")
from axkern import Multiplier, axconv2d, axmatmul  # noqa: E402
from axkern.backends import get_backend  # noqa: E402
from axkern.bench import _ForcedPath  # noqa: E402
from axkern.quant import QuantParams  # noqa: E402
from test_simd import PATHS, codes, random_table  # noqa: E402

ref = get_backend("reference")
TABLES16 = ["uint16", "int16", "offset", "4bit"]   # the 16-bit class


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", TABLES16)
def test_gemm_expand_matches_reference(path, kind):
    rng = np.random.default_rng(zlib.crc32(f"x/{path}/{kind}".encode()))
    table = random_table(kind, rng)
    # N: one 16-wide block (partial and full), two and three blocks, several blocks with a
    # partial last one; M: fewer rows than a register group, rows that leave
    # remainders, and M < N, where the columns of b become the streamed rows (swapped; from
    # 32 rows of a on, (48, 37, 700), streamed from a transposed copy of b).
    # K: 1 step, one partial block, several blocks with a partial last one.
    # 8 columns or fewer: the 8-wide blocks of the AVX2 code, written in place (100, 20, 8)
    # or through the transposed store (8, 64, 200); more than 16 on the AVX-512 path: 32-wide
    # blocks (zmm rows), full (32) and partial (17, 48, 70, 257), 12, 4 and 1 rows at a time
    for M, K, N in [(1, 1, 1), (5, 3, 16), (9, 17, 17), (33, 40, 32), (70, 129, 48),
                    (130, 33, 70), (3, 300, 257), (8, 64, 200), (200, 9, 100), (100, 20, 8),
                    (61, 70, 7), (48, 37, 700)]:
        a = codes((M, K), rng, kind)
        b = codes((K, N), rng, kind)
        expect = ref.gemm(a, b, table, np.int64).astype(np.int32)
        got = fast.gemm(a, b, table, np.int32, path=path, method="expand")
        np.testing.assert_array_equal(got, expect, err_msg=f"{M}x{K}x{N}")


CONVS = [
    # (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups)
    (2, 9, 11, 6, 3, 3, 4, (1, 1), (1, 1, 1, 1), (1, 1), 1),    # SAME-like, 4 filters
    (1, 10, 7, 4, 3, 3, 5, (2, 2), (1, 0, 1, 1), (1, 1), 1),    # stride 2, asymmetric pad
    (2, 12, 12, 3, 3, 2, 2, (1, 2), (2, 2, 2, 2), (2, 3), 1),   # dilation, blocks across taps
    (1, 8, 9, 6, 3, 3, 9, (1, 1), (0, 0, 0, 0), (1, 1), 3),     # groups, no padding copy
    (3, 7, 6, 5, 3, 3, 5, (1, 1), (1, 1, 1, 1), (1, 1), 5),     # depthwise
    (2, 6, 5, 7, 1, 1, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),     # 1x1
    (1, 17, 19, 2, 3, 3, 70, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 4 blocks + 6 filters
    (2, 8, 8, 16, 3, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # one full 16-wide block
    (2, 8, 8, 32, 3, 3, 32, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # two full blocks
    (1, 6, 6, 64, 3, 3, 96, (1, 1), (1, 1, 1, 1), (1, 1), 2),   # 2 groups of 48 filters
    (2, 7, 7, 5, 3, 3, 8, (1, 1), (1, 1, 1, 1), (1, 1), 1),     # one full 8-wide block
    (1, 6, 6, 12, 3, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), 2),   # 8-wide blocks per group
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", TABLES16)
def test_conv2d_expand_matches_reference(path, kind):
    rng = np.random.default_rng(zlib.crc32(f"x/{path}/{kind}/conv".encode()))
    table = random_table(kind, rng)
    for (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups) in CONVS:
        x = codes((N, H, W, C), rng, kind)
        w = codes((KH, KW, C // groups, COUT), rng, kind)
        args = (stride, padding, dilation, groups, int(rng.integers(0, 16)))
        expect = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="expand")
        np.testing.assert_array_equal(got, expect, err_msg=f"{(N, H, W, C, COUT)} {args}")


@pytest.mark.parametrize("path", PATHS)
def test_methods_agree_on_threads_and_large_shapes(path):
    """A ResNet-8-like layer and a GEMM large enough for several row tiles per thread: the
    automatic choice, both forced methods and 1 to 3 threads give the same sums."""
    rng = np.random.default_rng(3)
    table = random_table("uint16", rng)
    x = codes((6, 16, 16, 32), rng)
    w = codes((3, 3, 32, 32), rng)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, 7)
    want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
    a = codes((5000, 40), rng)
    b = codes((40, 64), rng)
    want_g = ref.gemm(a, b, table, np.int64).astype(np.int32)
    for method in ("auto", "direct", "expand"):
        for nt in (1, 2, 3):
            got = fast.conv2d(x, w, table, *args, np.int32, nt, path=path, method=method)
            np.testing.assert_array_equal(got, want, err_msg=f"conv {method} {nt}")
            got = fast.gemm(a, b, table, np.int32, nt, path=path, method=method)
            np.testing.assert_array_equal(got, want_g, err_msg=f"gemm {method} {nt}")


@pytest.mark.parametrize("path", PATHS)
def test_reduction_split(path):
    """Few column blocks and rows for the threads: the reduction is cut into parts summed
    separately (expand.c, xksplit), in both GEMM orientations and with partial last parts;
    the int32 sums, the dequantizing store and 1 to 3 threads against the reference."""
    rng = np.random.default_rng(31)
    table = random_table("int16", rng)
    for M, K, N in [(5, 1000, 300), (300, 1000, 5), (8, 2048, 40), (16, 257, 16),
                    (1, 4099, 70)]:
        a = codes((M, K), rng)
        b = codes((K, N), rng)
        want = ref.gemm(a, b, table, np.int64)
        scale = rng.uniform(1e-12, 1e-6, N)
        corr = rng.integers(-1000, 1000, N)
        want_dq = ((want + corr).astype(np.float64) * scale).astype(np.float32)
        for nt in (1, 2, 3):
            got = fast.gemm(a, b, table, np.int32, nt, path=path, method="expand")
            np.testing.assert_array_equal(got, want.astype(np.int32), err_msg=f"{M, K, N} {nt}")
            got = fast.gemm(a, b, table, np.int32, nt, path=path,
                            method="expand", dequant={"scale": scale, "corr": corr})
            np.testing.assert_array_equal(got, want_dq, err_msg=f"dq {M, K, N} {nt}")
    # a grouped convolution: one block per group, a long reduction
    x = codes((1, 6, 6, 96), rng)
    w = codes((3, 3, 48, 8), rng)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 2, 3)
    want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
    for nt in (2, 3):
        np.testing.assert_array_equal(
            fast.conv2d(x, w, table, *args, np.int32, nt, path=path, method="expand"), want)


@pytest.mark.parametrize("path", PATHS)
def test_rows_of_codes_never_streamed(path):
    """The expanded tables build no rows for chunks of 16 codes outside a step's span of
    streamed codes (expand.c, xproblem.kmask). Each channel's codes lie in a chunk of its
    own (the two groups' channels in different ones), the pad code in none of them; a GEMM
    operand's streamed steps (columns of a, rows of b in the swapped orientation) each in
    one chunk but for the first element, in another; a table of the byte-residual class and
    one outside it, 1 and 2 threads, against the reference."""
    rng = np.random.default_rng(47)
    near_exact = (np.outer(np.arange(256), np.arange(256)) +
                  rng.integers(0, 100, (256, 256))).astype(np.int32)

    def in_chunks(shape, chunk):
        return (16 * chunk + rng.integers(0, 16, shape)).astype(np.uint8)

    x = in_chunks((2, 7, 7, 32), np.arange(32) // 4)        # channel c: chunk c // 4
    a = in_chunks((300, 80), np.arange(80) % 16)             # column k: chunk k % 16
    a[0] = in_chunks(80, (np.arange(80) + 8) % 16)
    b = in_chunks((70, 300), (np.arange(70) % 16)[:, None])  # row k: chunk k % 16
    b[:, 0] = in_chunks(70, (np.arange(70) + 8) % 16)
    for table in (near_exact, random_table("int16", rng)):
        for g, cout, k in ((1, 40, 3), (2, 48, 3), (1, 20, 1)):
            w = codes((k, k, 32 // g, cout), rng)
            p = k // 2
            args = ((1, 1), (p, p, p, p), (1, 1), g, 250)
            want = ref.conv2d(x, w, table, *args, np.int32)
            for nt in (1, 2):
                got = fast.conv2d(x, w, table, *args, np.int32, nt, path=path,
                                  method="expand")
                np.testing.assert_array_equal(got, want, err_msg=f"conv {g, cout, k, nt}")
        for a_, b_ in ((a, codes((80, 24), rng)), (codes((12, 70), rng), b)):
            want = ref.gemm(a_, b_, table, np.int32)
            got = fast.gemm(a_, b_, table, np.int32, 2, path=path, method="expand")
            np.testing.assert_array_equal(got, want, err_msg=f"gemm {a_.shape, b_.shape}")


def test_method_errors():
    rng = np.random.default_rng(4)
    a = codes((4, 3), rng)
    b = codes((3, 2), rng)
    with pytest.raises(ValueError, match="unknown kernel method 'fast'"):
        fast.gemm(a, b, random_table("uint16", rng), np.int32, method="fast")
    with pytest.raises(ValueError, match="unknown kernel method"):
        fast.conv2d(codes((1, 3, 3, 1), rng), codes((1, 1, 1, 1), rng),
                    random_table("uint16", rng), method=1)
    # entries spanning more than 65535, or int64 sums: only the direct method serves them
    with pytest.raises(ValueError, match="method 'expand' needs a table whose entries span"):
        fast.gemm(a, b, random_table("int32", rng), np.int64, method="expand")
    with pytest.raises(ValueError, match="int32 accumulation"):
        fast.gemm(a, b, random_table("uint16", rng), np.int64, method="expand")
    with pytest.raises(ValueError, match="method 'expand'"):
        fast.conv2d(codes((1, 3, 3, 1), rng), codes((1, 1, 1, 1), rng),
                    random_table("int32", rng), out_dtype=np.int32, method="expand")
    # auto and direct serve both
    t32 = random_table("int32", rng)
    np.testing.assert_array_equal(fast.gemm(a, b, t32, np.int64, method="direct"),
                                  ref.gemm(a, b, t32, np.int64))


@pytest.mark.parametrize("path", PATHS)
def test_dequantizing_store(path):
    """axconv2d / axmatmul with the expanded method: the zero point folded into the table,
    window sums with per-channel weight zero points and groups, bias or none, the
    transposed store of the swapped GEMM, and the element-by-element store that takes
    over when a correction term is too large for float64 to hold exactly."""
    rng = np.random.default_rng(22)
    v = np.arange(256)
    m = Multiplier(np.clip(np.multiply.outer(v, v) + rng.integers(-40, 41, (256, 256)), 0,
                           65535), name="noisy")
    be = _ForcedPath(fast, path, "expand")
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    per_ch = QuantParams(np.linspace(0.01, 0.05, 6), np.array([0, 3, 100, 255, 7, 12]))
    for kw in (dict(w=(3, 3, 6, 6)), dict(w=(3, 3, 6, 6), bias=True),
               dict(w=(3, 2, 3, 6), groups=2, quant=(QuantParams(0.03, 9), per_ch)),
               dict(w=(1, 1, 6, 6), padding="VALID", bias=True)):
        kw = dict(kw)
        w = rng.standard_normal(kw.pop("w")).astype(np.float32)
        if kw.pop("bias", False):
            kw["bias"] = rng.standard_normal(6).astype(np.float32)
        got = axconv2d(x, w, m, backend=be, **kw)
        want = axconv2d(x, w, m, backend="reference", **kw)
        np.testing.assert_array_equal(got, want, err_msg=str(kw))
    for M, N in ((40, 24), (3, 70)):   # (3, 70): the columns of b are streamed
        a = rng.standard_normal((M, 50)).astype(np.float32)
        b = rng.standard_normal((50, N)).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        np.testing.assert_array_equal(axmatmul(a, b, m, backend=be, bias=bias),
                                      axmatmul(a, b, m, backend="reference", bias=bias))
    # the dequantizing store against the reference's integer sums, with a correction
    # beyond 2^52 (exact in int64, not in float64: the store must use the int64 form)
    a = codes((20, 30), rng)
    b = codes((30, 16), rng)
    t = random_table("uint16", rng)
    sums = ref.gemm(a, b, t, np.int64)   # < 2^31: the int32 sums are the same
    for corr in (rng.integers(-1000, 1000, 16), np.full(16, (1 << 60) + 12345)):
        scale = rng.uniform(1e-20, 1e-3, 16)
        got = fast.gemm(a, b, t, np.int32, path=path, method="expand",
                        dequant={"scale": scale, "corr": corr})
        want = ((sums + corr).astype(np.float64) * scale).astype(np.float32)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("path", PATHS)
def test_table_changed_in_place_is_not_served_stale(path):
    """The kernels cache prepared tables keyed by their content: one entry changed in place
    must show in the next call, in both GEMM orientations, for both methods and both table
    classes; + 65536 leaves the entry's low 16 bits (those of a 16-bit-class key) alone."""
    rng = np.random.default_rng(9)
    a = codes((40, 7), rng)
    b = codes((7, 30), rng)
    cases = [("16-bit", method, delta, np.int32) for method in ("direct", "expand")
             for delta in (1, 5000)]
    cases += [("16-bit", "direct", 65536, np.int64), ("int32", "direct", 65536, np.int64),
              ("int32", "direct", 1, np.int64)]
    for kind, method, delta, dt in cases:
        table = (rng.integers(0, 60000, (256, 256)) if kind == "16-bit"
                 else random_table("int32", rng) // 2).astype(np.int32)
        for M in (40, 3):   # 3 rows < 30 columns: the fixed codes are rows of a
            fast.gemm(a[:M], b, table, dt, path=path, method=method)
            table[a[0, 0], b[0, 0]] += delta
            got = fast.gemm(a[:M], b, table, dt, path=path, method=method)
            np.testing.assert_array_equal(got, ref.gemm(a[:M], b, table, np.int64).astype(dt),
                                          err_msg=f"{kind} {M} {method} {delta}")
