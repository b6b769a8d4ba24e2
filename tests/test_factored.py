"""Factored tables: axkern.lowrank finds exact int16 factors of low-rank tables, and the
"factored" method of axkern._fast (axkern/_simd/factored.c) sums their products; both are
checked against independent computations (int64 products of the factors, the NumPy
reference backend) on every dispatch path."""
import contextlib
import gc
import zlib

import numpy as np
import pytest

from axkern import axconv2d, axmatmul, library
from axkern.backends import (_FACTORS, freeze_table, get_backend, table256, table_factors,
                             table_token)
from axkern.lowrank import MAX_RANK, factor_table
from axkern.lut import operand_values

fast = pytest.importorskip("axkern._fast")
from axkern.bench import _ForcedPath  # noqa: E402
from test_simd import PATHS, codes  # noqa: E402

ref = get_backend("reference")


def product(U, V):
    return U.astype(np.int64) @ V.T.astype(np.int64)


def low_rank_table(rank, rng, hi=40):
    U = rng.integers(-hi, hi + 1, (256, rank))
    V = rng.integers(-hi, hi + 1, (256, rank))
    return U @ V.T


# ---------------------------------------------------------------- factor_table

# ranks of the shipped multipliers' tables: operand-mapping circuits are outer products
RANK_ONE = ["mul8u_exact", "mul8s_exact", "mul8u_drum3", "mul8u_drum4", "mul8u_drum6",
            "mul8s_drum4", "mul8s_drum6", "mul8u_perf1", "mul8u_perf2", "mul8u_perf4"]


@pytest.mark.parametrize("name", RANK_ONE)
def test_operand_mapping_multipliers_factor_with_one_product(name):
    m = library.load_multiplier(name)
    U, V = factor_table(m.table)
    assert U.dtype == V.dtype == np.int16 and U.shape == V.shape == (256, 1)
    np.testing.assert_array_equal(product(U, V), m.table)


def test_exact_multiplier_factors_are_the_operands():
    for signed in (False, True):
        v = operand_values(8, signed).astype(np.int64)
        U, V = factor_table(np.outer(v, v))
        # one factor each, so U = s v and V = v / s for an integer s dividing v: +-1 here
        assert abs(int(U[1, 0])) == 1 and np.array_equal(U[:, 0] * U[1, 0], v)
        np.testing.assert_array_equal(V[:, 0] * U[1, 0], v)


def test_truncated_and_broken_array_multipliers_have_a_few_products():
    for name, rank in (("mul8u_trunc2", 3), ("mul8u_bam_v10h5", 3), ("mul8u_bam_v8h4", 4)):
        m = library.load_multiplier(name)
        U, V = factor_table(m.table)
        assert U.shape == (256, rank), name
        np.testing.assert_array_equal(product(U, V), m.table, err_msg=name)
        assert factor_table(m.table, max_rank=rank - 1) is None, name


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_random_low_rank_tables(rank):
    rng = np.random.default_rng(rank)
    for _ in range(3):
        t = low_rank_table(rank, rng, hi=90)
        U, V = factor_table(t, max_rank=8)
        assert U.shape[1] == rank
        np.testing.assert_array_equal(product(U, V), t)


def test_rank_beyond_the_sampled_rows():
    # factor_table rejects a table early when 32 of its rows have too high a rank; a table
    # whose extra factor lives in rows outside that sample must still be factored in full.
    from axkern.lowrank import _SAMPLE_ROWS

    v = np.arange(256)
    t = np.outer(v, v)
    row = next(r for r in range(256) if r not in set(_SAMPLE_ROWS.tolist()))
    t[row] += 3 * v + 1                     # rank 2, the sample's rows of rank 1
    assert np.linalg.matrix_rank(t[_SAMPLE_ROWS].astype(float)) == 1
    U, V = factor_table(t)
    assert U.shape == (256, 2)
    np.testing.assert_array_equal(product(U, V), t)
    assert factor_table(t, max_rank=1) is None


def test_high_rank_and_bad_tables():
    rng = np.random.default_rng(0)
    v = np.arange(256)
    noisy = np.outer(v, v) + rng.integers(-64, 65, (256, 256))   # axkern bench's table
    assert factor_table(noisy) is None
    assert factor_table(library.load_multiplier("mul8u_mitchell").table, max_rank=8) is None
    assert factor_table(low_rank_table(MAX_RANK + 1, rng)) is None
    # factors that exist but need more than int16
    big = np.outer(np.full(256, 1), np.full(256, 1 << 20)) * np.arange(256)[:, None]
    assert factor_table(big) is None
    zero = factor_table(np.zeros((256, 256), np.int32))
    assert zero[0].shape == (256, 1) and not zero[0].any() and not zero[1].any()
    with pytest.raises(ValueError, match="shape \\(256, 256\\)"):
        factor_table(np.zeros((16, 16), np.int32))
    with pytest.raises(ValueError, match="integer array"):
        factor_table(np.zeros((256, 256)))
    with pytest.raises(ValueError, match="max_rank"):
        factor_table(noisy, max_rank=9)


def test_factors_only_for_frozen_tables_and_dropped_with_them():
    t = np.ascontiguousarray(library.load_multiplier("mul8u_drum4").table, dtype=np.int32)
    assert table_factors(t) is None          # a caller's array: could change after a check
    frozen = freeze_table(t.copy())
    U, V = table_factors(frozen)
    assert table_factors(frozen)[0] is U     # found once
    token = table_token(frozen)
    assert token in _FACTORS
    del frozen, U, V
    gc.collect()
    assert token not in _FACTORS


# ---------------------------------------------------------------- the factored method

def frozen(t):
    # a copy: freeze_table is for arrays axkern made, never for a table others share
    return freeze_table(np.array(t, dtype=np.int32, order="C"))


CONVS = [
    # (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups)
    (2, 9, 11, 6, 3, 3, 20, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # two blocks, one partial
    (1, 10, 7, 3, 3, 3, 5, (2, 2), (1, 0, 1, 1), (1, 1), 1),    # odd runs, stride 2
    (2, 12, 12, 4, 3, 2, 16, (1, 2), (2, 2, 2, 2), (2, 3), 1),  # dilation
    (1, 8, 9, 6, 3, 3, 9, (1, 1), (0, 0, 0, 0), (1, 1), 3),     # groups of 2 channels
    (3, 7, 6, 5, 3, 3, 5, (1, 1), (1, 1, 1, 1), (1, 1), 5),     # depthwise
    (2, 6, 5, 7, 1, 1, 33, (1, 1), (0, 0, 0, 0), (1, 1), 1),    # 1x1, 3 blocks
    (1, 6, 6, 64, 3, 3, 96, (1, 1), (1, 1, 1, 1), (1, 1), 2),   # 2 groups of 48 filters
    (4, 16, 16, 16, 3, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # many row tiles
    (2, 7, 6, 5, 3, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), 1),     # odd runs, a full block
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_factored_method_matches_reference(path, rank):
    rng = np.random.default_rng(zlib.crc32(f"f/{path}/{rank}".encode()))
    table = frozen(low_rank_table(rank, rng, hi=90))
    assert table_factors(table)[0].shape[1] == rank
    # M: fewer rows than the kernel's 6, remainders of 6, several tiles; K * rank odd
    for M, K, N in [(1, 1, 1), (5, 3, 16), (7, 19, 17), (200, 33, 40), (13, 300, 70),
                    (401, 64, 16)]:
        a, b = codes((M, K), rng), codes((K, N), rng)
        want = ref.gemm(a, b, table, np.int64).astype(np.int32)
        for nt in (1, 3):
            got = fast.gemm(a, b, table, np.int32, nt, path=path, method="factored")
            np.testing.assert_array_equal(got, want, err_msg=f"{M}x{K}x{N} {nt}")
    for (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups) in CONVS:
        x = codes((N, H, W, C), rng)
        w = codes((KH, KW, C // groups, COUT), rng)
        args = (stride, padding, dilation, groups, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored")
        np.testing.assert_array_equal(got, want, err_msg=f"{(N, H, W, C, COUT)} {args}")
        # NCHW indices in (an NHWC copy is taken), the automatic choice
        got = fast.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w, table, *args,
                          np.int32, path=path, method="factored", in_format="NCHW")
        np.testing.assert_array_equal(got, want, err_msg=f"NCHW {(N, H, W, C, COUT)}")
        got = fast.conv2d(x, w, table, *args, np.int32, path=path)
        np.testing.assert_array_equal(got, want, err_msg=f"auto {(N, H, W, C, COUT)}")


@contextlib.contextmanager
def factored_chunk(nbytes):
    """The factored kernels' chunk budget lowered to ``nbytes`` inside the block."""
    old = fast._factored_chunk()
    fast._factored_chunk(nbytes)
    try:
        yield
    finally:
        fast._factored_chunk(old)


@pytest.mark.parametrize("path", PATHS)
def test_factored_conv_in_chunks_of_images(path):
    """A batch whose input values are built a few images at a time (the chunk lowered from
    32 MiB to an image or two): every chunk's rows, output and window sums in place."""
    rng = np.random.default_rng(11)
    m = library.load_multiplier("mul8u_drum4")
    table = frozen(m.table)
    x = codes((5, 7, 6, 8), rng)
    w = codes((3, 3, 8, 20), rng)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, 3)
    want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
    xf = rng.standard_normal((5, 7, 6, 8)).astype(np.float32)
    wf = rng.standard_normal((3, 3, 8, 20)).astype(np.float32)
    be = _ForcedPath(fast, path, "factored")
    want_f = axconv2d(xf, wf, m, backend="reference")
    want_nchw = axconv2d(np.ascontiguousarray(xf.transpose(0, 3, 1, 2)),
                         np.ascontiguousarray(wf.transpose(3, 2, 0, 1)), m,
                         backend="reference", data_format="NCHW")
    for chunk in (1, 2 * 9 * 8 * 8 * 2):   # one image, two images of values
        with factored_chunk(chunk):
            got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored")
            np.testing.assert_array_equal(got, want, err_msg=str(chunk))
            np.testing.assert_array_equal(axconv2d(xf, wf, m, backend=be), want_f)
            got = axconv2d(np.ascontiguousarray(xf.transpose(0, 3, 1, 2)),
                           np.ascontiguousarray(wf.transpose(3, 2, 0, 1)), m, backend=be,
                           data_format="NCHW")
            np.testing.assert_array_equal(got, want_nchw)
    assert fast._factored_chunk() == 32 << 20


@pytest.mark.parametrize("path", PATHS)
def test_factored_sums_wrap_like_int32(path):
    """Entries far outside the 16-bit class (a rank-1 table of products up to 2^29): the
    int32 lanes wrap modulo 2^32 and still give every sum that fits int32."""
    rng = np.random.default_rng(5)
    u = rng.integers(-23000, 23001, 256)
    v = rng.integers(-23000, 23001, 256)
    table = frozen(np.outer(u, v))
    a, b = codes((30, 3), rng), codes((3, 20), rng)
    want = ref.gemm(a, b, table, np.int64)
    assert np.abs(want).max() < 2 ** 31 and np.abs(table).max() > 2 ** 28
    got = fast.gemm(a, b, table, np.int32, path=path, method="factored")
    np.testing.assert_array_equal(got, want.astype(np.int32))


@pytest.mark.parametrize("path", PATHS)
def test_factored_dequantizing_store(path):
    """The float-level layer on the factored method: an unfolded weight zero point (window
    sums), a folded one, bias, NCHW and NHWC, the linear layer; bit for bit the reference."""
    rng = np.random.default_rng(7)
    be = _ForcedPath(fast, path, "factored")

    def both_layouts(x, w, m, **kw):
        want = axconv2d(x, w, m, backend="reference", **kw)
        np.testing.assert_array_equal(axconv2d(x, w, m, backend=be, **kw), want,
                                      err_msg=f"{m.name} {w.shape} {kw}")
        got = axconv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                       np.ascontiguousarray(w.transpose(3, 2, 0, 1)), m, backend=be,
                       data_format="NCHW", **kw)
        np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2),
                                      err_msg=f"NCHW {m.name} {w.shape} {kw}")

    for name in ("mul8u_drum4", "mul8s_drum4", "mul8u_exact"):
        m = library.load_multiplier(name)
        x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
        w = rng.standard_normal((3, 3, 6, 20)).astype(np.float32)
        bias = rng.standard_normal(20).astype(np.float32)
        for kw in (dict(), dict(bias=bias), dict(padding="VALID", stride=2)):
            both_layouts(x, w, m, **kw)
        # depthwise filters (folded zero point; the depthwise method when not forced)
        wd = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
        for kw in (dict(groups=6), dict(groups=6, stride=2, bias=bias[:6])):
            both_layouts(x, wd, m, **kw)
        a = rng.standard_normal((40, 50)).astype(np.float32)
        b = rng.standard_normal((50, 24)).astype(np.float32)
        bias = rng.standard_normal(24).astype(np.float32)
        np.testing.assert_array_equal(axmatmul(a, b, m, backend=be, bias=bias),
                                      axmatmul(a, b, m, backend="reference", bias=bias))


DEPTHWISE = [
    # (N, H, W, C, KH, KW, stride, padding, dilation): channels around the kernel's blocks
    # of 8, filters with an odd and an even count of columns (r = 1 pairs them), strides and
    # dilations either way, asymmetric padding, no padding
    (2, 9, 11, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 7, 6, 5, 3, 3, (2, 1), (1, 0, 2, 1), (2, 1)),
    (1, 12, 12, 24, 5, 4, (1, 2), (2, 2, 1, 1), (1, 2)),
    (2, 8, 8, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 4, 4, 9, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 13, 17, 12, 3, 2, (2, 1), (0, 1, 1, 0), (1, 3)),
    (1, 5, 19, 8, 2, 7, (1, 1), (0, 0, 3, 3), (1, 1)),
    # NCHW planes: rows of 4 vectors, the last partial (25 - 32 outputs), and of 2 x 32 + 6
    (1, 11, 19, 9, 1, 1, (1, 1), (3, 3, 3, 3), (2, 1)),
    (2, 4, 70, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    # the AVX-512 rows of 4 outputs that share loads (stride 1 across, 16 channels or more):
    # taps 2 columns apart (dilation 2; rank 1's pairs of a 3 x 5 filter), a 3 x 2 filter,
    # outputs per row not a multiple of 4, a block of 16 and a remainder
    (2, 10, 13, 33, 3, 3, (1, 1), (2, 2, 2, 2), (1, 2)),
    (1, 7, 12, 16, 3, 5, (2, 1), (1, 1, 2, 2), (1, 1)),
    (1, 6, 9, 16, 3, 2, (1, 1), (1, 1, 0, 1), (1, 1)),
    # 7 x 7: 49 taps of rank 2, 28 pairs of rank 1 (the planes' taps once went through a
    # buffer of 32 beyond which a misaligned heap copy crashed)
    (1, 9, 10, 8, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1)),
]


def dequantized(total, scale, corr=0, bias=None, zw=None, sumx=None):
    """The float-level epilogue in NumPy, for a depthwise layer (one channel a group):
    float32(float64(total - zw sumx + corr) * scale), plus bias in float32."""
    v = total.astype(np.int64) + corr
    if zw is not None:
        v = v - zw * sumx
    y = (v.astype(np.float64) * scale).astype(np.float32)
    return y if bias is None else y + bias


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_factored_depthwise_matches_reference(path, rank):
    """Depthwise filters of factored tables (factored.c, axs_fdwconv2d: 8 channels or 8
    pixels per vpmaddwd; rank 3 takes the general factored kernel): int32 sums from NHWC
    and NCHW indices, and the dequantizing store in both output layouts, whose NCHW planes
    from NCHW indices take their own kernel (horizontal stride 1, no window sums), against
    the reference backend's sums and a NumPy epilogue; the automatic choice alike."""
    rng = np.random.default_rng(zlib.crc32(f"fdw/{path}/{rank}".encode()))
    table = frozen(low_rank_table(rank, rng, hi=90))
    assert table_factors(table)[0].shape[1] == rank
    for (N, H, W, C, KH, KW, stride, padding, dilation) in DEPTHWISE:
        x = codes((N, H, W, C), rng)
        xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = codes((KH, KW, 1, C), rng)
        args = (stride, padding, dilation, C, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        dq = dict(scale=rng.uniform(1e-4, 1e-2, C),
                  corr=rng.integers(-1000, 1000, C).astype(np.int64),
                  bias=rng.standard_normal(C).astype(np.float32))
        want_f = dequantized(want, **dq)
        for method in ("factored", "auto"):
            msg = f"{method} {(N, H, W, C, KH, KW)} {args}"
            got = fast.conv2d(x, w, table, *args, np.int32, path=path, method=method)
            np.testing.assert_array_equal(got, want, err_msg=msg)
            got = fast.conv2d(xn, w, table, *args, np.int32, path=path, method=method,
                              in_format="NCHW")
            np.testing.assert_array_equal(got, want, err_msg=f"NCHW in {msg}")
            for xin, fmt in ((x, "NHWC"), (xn, "NCHW")):
                got = fast.conv2d(xin, w, table, *args, np.int32, path=path, method=method,
                                  dequant=dq, in_format=fmt)
                np.testing.assert_array_equal(got, want_f, err_msg=f"{fmt} in, dq {msg}")
                got = fast.conv2d(xin, w, table, *args, np.int32, path=path, method=method,
                                  dequant=dq, in_format=fmt, out_format="NCHW")
                np.testing.assert_array_equal(got, want_f.transpose(0, 3, 1, 2),
                                              err_msg=f"{fmt} in, NCHW dq {msg}")


@pytest.mark.parametrize("path", PATHS)
def test_factored_depthwise_random_geometries(path):
    """Random depthwise geometries (sizes, filters, strides, dilations, padding, channel
    counts around the blocks of 8 and, on AVX-512, of 16), ranks 1 and 2 and a signed DRUM
    table: int32 sums from NHWC indices and the dequantized NCHW planes from NCHW indices
    against the reference."""
    rng = np.random.default_rng(zlib.crc32(f"fdw-random/{path}".encode()))
    tables = [frozen(low_rank_table(1, rng, hi=90)), frozen(low_rank_table(2, rng, hi=90)),
              frozen(library.load_multiplier("mul8s_drum6").table)]
    done = 0
    while done < 60:
        table = tables[done % 3]
        N, H, W = (int(v) for v in rng.integers(1, (3, 12, 40)))
        C = int(rng.choice([1, 2, 7, 8, 9, 16, 24, 33, 40]))
        KH, KW, sh, sw, dh, dw = (int(v) for v in rng.integers(1, (6, 6, 4, 4, 4, 4)))
        pad = tuple(int(v) for v in rng.integers(0, 4, 4))
        if H + pad[0] + pad[1] < dh * (KH - 1) + 1 or W + pad[2] + pad[3] < dw * (KW - 1) + 1:
            continue
        x = codes((N, H, W, C), rng)
        w = codes((KH, KW, 1, C), rng)
        args = ((sh, sw), pad, (dh, dw), C, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        dq = dict(scale=rng.uniform(1e-4, 1e-2, C),
                  corr=rng.integers(-1000, 1000, C).astype(np.int64))
        want_f = dequantized(want, **dq)
        msg = f"{(N, H, W, C, KH, KW)} {args}"
        got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored")
        np.testing.assert_array_equal(got, want, err_msg=msg)
        got = fast.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w, table, *args,
                          np.int32, path=path, method="factored", dequant=dq,
                          in_format="NCHW", out_format="NCHW")
        np.testing.assert_array_equal(got, want_f.transpose(0, 3, 1, 2), err_msg=msg)
        done += 1


def run_factored_layers(t, path, rng, msg):
    """GEMM, dense and depthwise convolutions with the factored method forced, runs of
    values around the vector loops' 32 and 64, against the reference backend."""
    for M, K, N in [(5, 1, 3), (9, 31, 17), (7, 65, 40), (130, 100, 16)]:
        a, b = codes((M, K), rng), codes((K, N), rng)
        want = ref.gemm(a, b, t, np.int64).astype(np.int32)
        got = fast.gemm(a, b, t, np.int32, 2, path=path, method="factored")
        np.testing.assert_array_equal(got, want, err_msg=f"{msg} {M}x{K}x{N}")
    for (N, H, W, C, COUT, g) in [(2, 9, 13, 3, 8, 1), (1, 6, 70, 16, 20, 1),
                                  (2, 7, 9, 33, 33, 33), (1, 5, 3, 16, 16, 16)]:
        x = codes((N, H, W, C), rng)
        w = codes((3, 3, C // g, COUT), rng)
        args = ((1, 1), (1, 1, 1, 1), (1, 1), g, int(rng.integers(0, 256)))
        want = ref.conv2d(x, w, t, *args, np.int64).astype(np.int32)
        got = fast.conv2d(x, w, t, *args, np.int32, 2, path=path, method="factored")
        np.testing.assert_array_equal(got, want, err_msg=f"{msg} {(N, H, W, C, COUT, g)}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["mul8u_exact", "mul8u_perf2", "mul8s_exact", "mul8u_drum4",
                                  "mul8s_drum4"])
def test_shipped_rank1_tables_through_the_factored_kernels(path, name):
    """Shipped rank-1 tables whose streamed values are the code itself (zero- or
    sign-extended, negated, offset: exact and perforated multipliers, turned into values by
    widening instead of lookups) and DRUM tables (looked up): GEMM, convolution and depthwise
    layers with the factored method forced, runs of values of every length around the
    vector loops' 16, 32 and 64, against the reference backend."""
    rng = np.random.default_rng(zlib.crc32(f"rank1/{path}/{name}".encode()))
    t = frozen(table256(library.load_multiplier(name)))
    assert table_factors(t)[0].shape[1] == 1
    run_factored_layers(t, path, rng, name)


def value_kind(col):
    """'affine' when a factor column is the code itself (zero- or sign-extended, either
    sign) plus an offset, 'narrow' when its values span at most 256, else 'wide'."""
    col = col.astype(np.int64)
    v = np.arange(256)
    for e in (v, v.astype(np.int8).astype(np.int64)):
        if np.array_equal(col, col[0] + e) or np.array_equal(col, col[0] - e):
            return "affine"
    return "narrow" if col.max() - col.min() <= 255 else "wide"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["mul8u_drum3", "mul8u_drum4", "mul8u_drum6"])
def test_folded_rank1_tables_through_the_factored_kernels(path, name):
    """A rank-1 table with the weight zero point folded in (T[a, b] - z_w a, as axconv2d
    prepares unsigned DRUM multipliers under per-call ranges) has two factors: the code
    itself and narrow values; the AVX2 code widens the one and looks up the other
    (axs_fvalues2_shuf_avx2) instead of gathering both. Both signs of z_w."""
    rng = np.random.default_rng(zlib.crc32(f"fold/{path}/{name}".encode()))
    m = library.load_multiplier(name)
    for zw in (131, -7):
        t = frozen(m.table.astype(np.int64) - zw * np.arange(256)[:, None])
        U = table_factors(t)[0]
        assert sorted(value_kind(U[:, i]) for i in range(U.shape[1])) == ["affine", "narrow"]
        run_factored_layers(t, path, rng, f"{name} z_w {zw}")


@pytest.mark.parametrize("path", PATHS)
def test_rank2_factors_of_every_value_kind(path):
    """Two factors per code of each kind the AVX2 code treats apart: the code zero- or
    sign-extended, negated or not, plus an offset (widened); values spanning at most 256
    (one byte plane looked up) at either place; wider values (gathers). The factors are
    set for the table as given (their product is the table), in place of those
    axkern.lowrank would find."""
    rng = np.random.default_rng(zlib.crc32(f"kinds/{path}".encode()))
    v = np.arange(256, dtype=np.int64)
    s = v.astype(np.int8).astype(np.int64)
    cols = {"u+": 5 + v, "u-": 7 - v, "s+": s - 3, "s-": -s, "narrow": rng.integers(-100, 156, 256),
            "narrow0": rng.integers(0, 256, 256), "wide": rng.integers(-300, 300, 256)}
    cols["narrow0"][:2] = (0, 255)   # the span's ends: exactly 256 values
    cols["257"] = rng.integers(-128, 129, 256)
    cols["257"][:2] = (-128, 128)        # one value too many for a byte plane
    for first, second in [("u-", "narrow"), ("narrow0", "s+"), ("s-", "u+"),
                          ("narrow", "narrow0"), ("wide", "u+"), ("u+", "wide"),
                          ("257", "u-")]:
        U = np.stack([cols[first], cols[second]], axis=1)
        V = rng.integers(-60, 61, (256, 2))
        t = frozen(U @ V.T)
        table_factors(t)   # found once and cached; replaced by the chosen factors
        _FACTORS[table_token(t)] = (U.astype(np.int16), V.astype(np.int16))
        assert table_factors(t)[0].shape == (256, 2)
        run_factored_layers(t, path, rng, f"{first}/{second}")


def classed_values(rng, k, zero_row, ends=False):
    """256 values whose 16 rows (codes 16 h .. 16 h + 15) are k distinct rows once each row's
    first value is taken off, each row's first value drawn apart: the zero row among them
    (at a random class) or not. With ``ends`` the values span exactly 256."""
    R = rng.integers(-6, 7, (k, 16))
    R[:, 0] = 0
    for i in range(1, k):   # distinct rows
        R[i, 1 + i % 15] += 20 + i
    if zero_row:
        R[rng.integers(0, k)] = 0
    else:
        R[R.sum(axis=1) == 0, 2] = 9   # (rows that sum to zero are not all zero: dropped)
        R[:, 3] += 1
    cls = rng.permutation(np.resize(np.arange(k), 16))
    base = rng.integers(-90, 90, 16)
    v = (base[:, None] + R[cls]).reshape(256)
    if ends:   # lowest and highest 255 apart: the row of the highest raised (its base)
        v = v - v.min()
        h = v.argmax() // 16
        v[16 * h:16 * h + 16] += 255 - v.max()
    return v


@pytest.mark.parametrize("path", PATHS)
def test_narrow_values_by_row_classes(path):
    """Narrow values whose 16-code rows repeat up to a constant (DRUM's: 5 forms, one of
    them zero) take the row-class lookup on AVX2 (axs_bclass: the code's row picks a class
    and a base byte, a shuffle per non-zero form instead of 16): 1 to 9 forms with and
    without the zero one, values spanning exactly 256, and 9 or 10 forms with more than 8
    non-zero ones (the whole plane's chunks instead); one factor (r = 1) and two (beside
    the code itself), against the reference."""
    rng = np.random.default_rng(zlib.crc32(f"classes/{path}".encode()))
    v = np.arange(256, dtype=np.int64)
    s = v.astype(np.int8).astype(np.int64)
    cases = [(k, z, False) for k in (1, 2, 5, 8) for z in (True, False)]
    cases += [(8, True, True), (3, False, True), (9, True, False), (9, False, False),
              (10, True, False)]
    for k, zero_row, ends in cases:
        col = classed_values(rng, k, zero_row, ends)
        rows = {tuple(r - r[0]) for r in col.reshape(16, 16)}
        assert len(rows) == k and (tuple([0] * 16) in rows) == zero_row
        assert col.max() - col.min() == 255 if ends else col.max() - col.min() <= 255
        # beside the code itself, either place, either sign (their own AVX2 loop), and
        # beside a signed code (the general one)
        for U in (col[:, None], np.stack([7 - v, col], axis=1), np.stack([5 + v, col], axis=1),
                  np.stack([col, v], axis=1), np.stack([col, 3 - v], axis=1),
                  np.stack([s - 3, col], axis=1)):
            V = rng.integers(-60, 61, (256, U.shape[1]))
            t = frozen(U @ V.T)
            table_factors(t)   # found once and cached; replaced by the chosen factors
            _FACTORS[table_token(t)] = (U.astype(np.int16), V.astype(np.int16))
            run_factored_layers(t, path, rng, f"{k} classes, zero row {zero_row}, r {U.shape[1]}")


@pytest.mark.parametrize("path", PATHS)
def test_factored_depthwise_in_chunks_of_images(path):
    """A depthwise layer's pairs built a band of output rows at a time (the band's budget
    lowered from 256 KiB): bands of one row and of three (the last one shorter), every
    band's rows, output and window sums in place (NHWC indices; NCHW planes take none)."""
    rng = np.random.default_rng(13)
    m = library.load_multiplier("mul8u_drum4")
    table = frozen(m.table)
    x = codes((5, 7, 6, 12), rng)
    w = codes((3, 3, 1, 12), rng)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 12, 3)
    want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
    dq = dict(scale=np.full(12, 0.01), zw=np.full(12, 3, np.int64),
              sumx=rng.integers(0, 5000, (5, 7, 6, 12)))
    want_f = dequantized(want, **dq)
    row = 8 * 12 * 4   # bytes of a padded row of pairs
    for chunk in (1, 5 * row):   # the 3 rows one output row needs; 5 rows: bands of 3
        with factored_chunk(chunk):
            got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored")
            np.testing.assert_array_equal(got, want, err_msg=str(chunk))
            got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored",
                              dequant=dq)
            np.testing.assert_array_equal(got, want_f, err_msg=f"dq {chunk}")
    assert fast._factored_chunk() == 32 << 20


@pytest.mark.parametrize("path", PATHS)
def test_factored_depthwise_bands_for_idle_threads(path):
    """One or two images of a few rows (fewer bands than threads): thinner bands, one per
    thread at least, with their edge rows built twice; every thread count, odd rows,
    strides and the dequantizing store against the reference."""
    rng = np.random.default_rng(17)
    table = frozen(library.load_multiplier("mul8u_drum4").table)
    for N, H, W, C, stride in [(1, 7, 5, 16, 1), (2, 9, 4, 8, 1), (1, 1, 6, 24, 1),
                               (1, 11, 7, 16, 2), (1, 14, 14, 32, 1)]:
        x = codes((N, H, W, C), rng)
        w = codes((3, 3, 1, C), rng)
        args = ((stride, stride), (1, 1, 1, 1), (1, 1), C, 5)
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        scale = np.linspace(0.01, 0.02, C)
        want_f = dequantized(want, scale)
        for nt in (1, 2, 3, 5, 8):
            got = fast.conv2d(x, w, table, *args, np.int32, nt, path=path, method="factored")
            np.testing.assert_array_equal(got, want, err_msg=f"{(N, H, W, C)} {nt}")
            got = fast.conv2d(x, w, table, *args, np.int32, nt, path=path, method="factored",
                              dequant={"scale": scale})
            np.testing.assert_array_equal(got, want_f, err_msg=f"dq {(N, H, W, C)} {nt}")


def test_fold_kept_out_of_rank_one_tables():
    """A folded weight zero point adds a factor to a DRUM table (rank 1 -> 2): such weights
    keep the plain table and the window sums; tables without factors still fold."""
    from axkern.conv import _prepare_weights, resolve_quant

    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    for name, folded in (("mul8u_drum4", False), ("mul8u_mitchell", True),
                         ("mul8u_perf2", True)):   # perforated: value(a) is its factor
        m = library.load_multiplier(name)
        spec = resolve_quant("tfapprox", m)
        pw = _prepare_weights(w, spec.weight, m, None, fast, fold=True)
        assert pw.zw_any and pw.folded == folded, name


def test_factored_method_errors():
    rng = np.random.default_rng(4)
    a, b = codes((4, 3), rng), codes((3, 2), rng)
    mine = np.ascontiguousarray(library.load_multiplier("mul8u_drum4").table, dtype=np.int32)
    with pytest.raises(ValueError, match="method 'factored' needs a table that axkern froze"):
        fast.gemm(a, b, mine, np.int32, method="factored")          # not frozen
    with pytest.raises(ValueError, match="method 'factored'"):
        fast.gemm(a, b, frozen(mine), np.int64, method="factored")  # int64 sums
    v = np.arange(256)
    noisy = frozen(np.outer(v, v) + rng.integers(-64, 65, (256, 256)))
    with pytest.raises(ValueError, match="method 'factored'"):
        fast.conv2d(codes((1, 3, 3, 1), rng), codes((1, 1, 1, 1), rng), noisy,
                    out_dtype=np.int32, method="factored")


@pytest.mark.parametrize("path", PATHS)
def test_weights_packed_once(path):
    """factored_weights packs the fixed side once; gemm and conv2d given it (packed=) give
    the sums of the calls that pack on their own, for ranks 1 to 3, groups and partial
    blocks; a packing made for other weights, another table or other groups is refused."""
    rng = np.random.default_rng(12)
    for rank in (1, 2, 3):
        table = frozen(low_rank_table(rank, rng, hi=90))
        a, b = codes((70, 45), rng), codes((45, 37), rng)
        b.setflags(write=False)
        fw = fast.factored_weights(b, table)
        # the kernels take a packing only of the size their own would have (16-column
        # blocks, pairs of steps): a packing they ignored would pass the sums below too
        assert fw.w is b and fw.nbytes == 2 * 3 * 16 * (45 * rank + (45 * rank) % 2)
        want = ref.gemm(a, b, table, np.int64).astype(np.int32)
        for method in ("factored", None):
            got = fast.gemm(a, b, table, np.int32, path=path, method=method, packed=fw)
            np.testing.assert_array_equal(got, want, err_msg=f"gemm {rank} {method}")
        x, w = codes((2, 7, 6, 8), rng), codes((3, 3, 4, 22), rng)
        w.setflags(write=False)
        fw = fast.factored_weights(w, table, groups=2)
        # 2 groups of 11 filters (a block each), 9 taps of 4 channels per group
        assert fw.nbytes == 2 * 2 * 16 * 9 * (4 * rank + (4 * rank) % 2)
        args = ((1, 1), (1, 1, 1, 1), (1, 1), 2, 5)
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        got = fast.conv2d(x, w, table, *args, np.int32, path=path, method="factored",
                          packed=fw)
        np.testing.assert_array_equal(got, want, err_msg=f"conv {rank}")
        for other in (fast.factored_weights(b, table), fast.factored_weights(w, table)):
            with pytest.raises(ValueError, match="made for other weights, table or groups"):
                fast.conv2d(x, w, table, *args, np.int32, path=path, packed=other)
        with pytest.raises(ValueError, match="made for other weights, table or groups"):
            fast.conv2d(x, w, frozen(low_rank_table(rank, rng)), *args, np.int32, path=path,
                        packed=fw)


def test_factored_weights_errors():
    rng = np.random.default_rng(13)
    table = frozen(low_rank_table(1, rng))
    b = codes((5, 4), rng)
    with pytest.raises(ValueError, match="read-only C-contiguous uint8"):
        fast.factored_weights(b, table)                    # writeable: could change
    b.setflags(write=False)
    with pytest.raises(ValueError, match="freeze_table"):
        fast.factored_weights(b, np.array(table))          # a caller's table
    with pytest.raises(ValueError, match="groups must be an int >= 1 dividing"):
        fast.factored_weights(b, table, groups=3)
    v = np.arange(256)
    noisy = frozen(np.outer(v, v) + rng.integers(-64, 65, (256, 256)))
    assert fast.factored_weights(b, noisy) is None           # no factors
    with pytest.raises(TypeError, match="packed must come from factored_weights"):
        fast.gemm(codes((3, 5), rng), b, table, np.int32, packed="b")


def test_prepared_weights_keep_their_packing():
    """The float-level layer packs a layer's weights once and passes them on every call."""
    from axkern.conv import _WEIGHTS
    from axkern.backends import table256

    rng = np.random.default_rng(14)
    m = library.load_multiplier("mul8u_drum4")
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    w = rng.standard_normal((3, 3, 6, 20)).astype(np.float32)
    want = axconv2d(x, w, m, backend="reference")
    for _ in range(2):
        np.testing.assert_array_equal(axconv2d(x, w, m), want)
    pw = _WEIGHTS.get(table256(m), "tfapprox", w, None, fast)
    assert pw is not None and pw.packed[1] is not None and pw.packed[1].w is pw.wi
    a = rng.standard_normal((40, 50)).astype(np.float32)
    b = rng.standard_normal((50, 24)).astype(np.float32)
    want = axmatmul(a, b, m, backend="reference")
    for _ in range(2):
        np.testing.assert_array_equal(axmatmul(a, b, m), want)
    pb = _WEIGHTS.get(table256(m), "tfapprox", b, None, fast)
    assert pb is not None and pb.packed[1] is not None and pb.packed[1].w is pb.wi
