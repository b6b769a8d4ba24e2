"""Fast CPU kernels (axkern._fast): every dispatch path, forced in turn, bit-exact against the
NumPy reference backend on random tables of each class and on awkward shapes."""
import argparse
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

fast = pytest.importorskip("axkern._fast")
from axkern.backends import get_backend  # noqa: E402

ref = get_backend("reference")
AVAILABLE = fast.available_paths()


def _path_param(p):
    return pytest.param(p, marks=pytest.mark.skipif(p not in AVAILABLE,
                                                    reason=f"CPU cannot run path {p}"))


PATHS = [_path_param(p) for p in fast.PATHS]


def random_table(kind, rng):
    """A (256, 256) int32 table of one class (see axkern/_simd/axsimd.h)."""
    if kind == "uint16":
        t = rng.integers(0, 1 << 16, (256, 256))
        t[0, 0], t[-1, -1] = 0, 65535  # span exactly 65535: the widest 16-bit-class table
    elif kind == "int16":
        t = rng.integers(-(1 << 15), 1 << 15, (256, 256))
        t[3, 5], t[7, 11] = -32768, 32767
    elif kind == "offset":  # 16-bit span, but nowhere near zero
        t = rng.integers(-(1 << 20), -(1 << 20) + 60000, (256, 256))
    elif kind == "int32":  # span > 65535: generic path
        t = rng.integers(-(1 << 31), (1 << 31) - 1, (256, 256))
    elif kind == "4bit":  # a 4-bit unsigned multiplier in the top-left corner
        t = np.zeros((256, 256), np.int64)
        t[:16, :16] = np.outer(np.arange(16), np.arange(16)) + rng.integers(-3, 4, (16, 16))
    else:
        raise AssertionError(kind)
    return np.ascontiguousarray(t, dtype=np.int32)


TABLES = ["uint16", "int16", "offset", "int32", "4bit"]


def codes(shape, rng, kind="uint16"):
    hi = 16 if kind == "4bit" else 256
    return rng.integers(0, hi, shape, dtype=np.uint8)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", TABLES)
def test_gemm_matches_reference(path, kind):
    rng = np.random.default_rng(zlib.crc32(f'{path}/{kind}'.encode()))
    table = random_table(kind, rng)
    # M not a multiple of 64, K = 1, N = 1, partial tiles, both orientations (N > M swaps),
    # more than one flush interval (K > 128) and more than one column block (N > 64).
    for M, K, N in [(1, 1, 1), (7, 1, 300), (65, 3, 1), (130, 129, 5), (193, 40, 70),
                    (3, 300, 257), (260, 17, 65), (64, 64, 64)]:
        a = codes((M, K), rng, kind)
        b = codes((K, N), rng, kind)
        expect = ref.gemm(a, b, table, np.int64)
        for dt in (np.int64, np.int32):
            if dt is np.int32 and kind == "int32":
                continue  # would overflow: the Python layer never asks for int32 here
            got = fast.gemm(a, b, table, dt, path=path)
            assert got.dtype == dt and got.shape == (M, N)
            np.testing.assert_array_equal(got, expect.astype(dt), err_msg=f"{M}x{K}x{N} {dt}")


CONVS = [
    # (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups)
    (2, 9, 11, 6, 3, 3, 4, (1, 1), (1, 1, 1, 1), (1, 1), 1),    # SAME-like
    (1, 10, 7, 4, 3, 3, 5, (2, 2), (1, 0, 1, 1), (1, 1), 1),    # stride 2, asymmetric pad
    (2, 12, 12, 3, 3, 2, 2, (1, 2), (2, 2, 2, 2), (2, 3), 1),   # dilation, rectangular kernel
    (1, 8, 9, 6, 3, 3, 9, (1, 1), (0, 0, 0, 0), (1, 1), 3),     # groups
    (3, 7, 6, 5, 3, 3, 5, (1, 1), (1, 1, 1, 1), (1, 1), 5),     # depthwise
    (2, 5, 5, 4, 3, 3, 8, (2, 1), (1, 1, 1, 1), (1, 1), 4),     # depthwise, multiplier 2
    (2, 6, 5, 7, 1, 1, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),     # 1x1
    (2, 5, 4, 3, 5, 4, 2, (1, 1), (0, 0, 0, 0), (1, 1), 1),     # full-size filter
    (1, 17, 19, 2, 3, 3, 70, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # > 192 pixels, > 64 filters
    (1, 3, 3, 2, 5, 5, 2, (1, 1), (2, 2, 2, 2), (1, 1), 1),     # mostly padding
    (1, 4, 4, 1, 3, 3, 1, (3, 3), (0, 0, 0, 0), (1, 1), 1),     # stride wider than the kernel
    (2, 5, 5, 2, 3, 3, 12, (1, 1), (1, 1, 1, 1), (1, 1), 1),    # stride 1, packed tiles
    (1, 9, 10, 3, 3, 3, 4, (1, 1), (2, 2, 2, 2), (2, 2), 1),    # stride 1, dilation, wide rows
    (1, 20, 20, 8, 3, 3, 8, (2, 2), (1, 1, 1, 1), (1, 1), 8),   # depthwise, stride 2
    (2, 9, 11, 10, 3, 3, 4, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # 8x8 blocks plus edges
    (2, 8, 8, 16, 3, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), 1),   # tiles across images
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", TABLES)
def test_conv2d_matches_reference(path, kind):
    rng = np.random.default_rng(zlib.crc32(f'{path}/{kind}/conv'.encode()))
    table = random_table(kind, rng)
    for (N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups) in CONVS:
        x = codes((N, H, W, C), rng, kind)
        w = codes((KH, KW, C // groups, COUT), rng, kind)
        pad_code = int(rng.integers(0, 16))
        args = (stride, padding, dilation, groups, pad_code)
        expect = ref.conv2d(x, w, table, *args, np.int64)
        for dt in (np.int64, np.int32):
            if dt is np.int32 and kind == "int32":
                continue
            got = fast.conv2d(x, w, table, *args, dt, path=path)
            assert got.dtype == dt
            np.testing.assert_array_equal(got, expect.astype(dt),
                                          err_msg=f"conv {(N, H, W, C, KH, KW, COUT)} {args}")


@pytest.mark.parametrize("path", PATHS)
def test_int64_accumulation_gemm(path):
    """K = 70000 maximal entries: sums far beyond int32, and beyond 2^32 for the biased
    16-bit sums (several reduction chunks)."""
    K = 70000
    rng = np.random.default_rng(7)
    for kind, (ia, ib), v in [("uint16", (255, 255), 65535), ("int16", (200, 3), -32768),
                              ("int32", (9, 9), (1 << 31) - 1)]:
        table = random_table(kind, rng)
        table[ia, ib] = v
        a = np.full((3, K), ia, np.uint8)
        b = np.full((K, 2), ib, np.uint8)
        got = fast.gemm(a, b, table, np.int64, path=path)
        np.testing.assert_array_equal(got, np.full((3, 2), K * v, np.int64))
        # mixed codes: compare with an independent NumPy sum
        a = rng.integers(0, 256, (2, K), dtype=np.uint8)
        b = rng.integers(0, 256, (K, 3), dtype=np.uint8)
        expect = np.array([[table[a[m], b[:, n]].astype(np.int64).sum() for n in range(3)]
                           for m in range(2)])
        np.testing.assert_array_equal(fast.gemm(a, b, table, np.int64, path=path), expect)


@pytest.mark.parametrize("path", PATHS)
def test_int64_sums_of_tables_above_zero(path):
    """16-bit-class tables whose smallest entry is positive (a negative bias, held as
    uint32 modulo 2^32): int64 sums must subtract it as the integer it is. Before the fix,
    gemm and conv2d returned sums off by K * 2^32 for such tables."""
    rng = np.random.default_rng(17)
    top = (1 << 31) - 1
    for lo, hi in ((1000, 60000), (top - 65535, top + 1)):
        table = rng.integers(lo, hi, (256, 256)).astype(np.int32)
        a = rng.integers(0, 256, (40, 50), dtype=np.uint8)
        b = rng.integers(0, 256, (50, 30), dtype=np.uint8)
        for M in (40, 3):   # both orientations
            np.testing.assert_array_equal(fast.gemm(a[:M], b, table, np.int64, path=path),
                                          ref.gemm(a[:M], b, table, np.int64))
        x = rng.integers(0, 256, (2, 6, 5, 4), dtype=np.uint8)
        w = rng.integers(0, 256, (3, 3, 4, 6), dtype=np.uint8)
        args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, 5)
        np.testing.assert_array_equal(fast.conv2d(x, w, table, *args, np.int64, path=path),
                                      ref.conv2d(x, w, table, *args, np.int64))


@pytest.mark.parametrize("path", PATHS)
def test_int64_accumulation_conv(path):
    """A 3x3 VALID convolution over 4000 channels (K = 36000) with maximal entries."""
    rng = np.random.default_rng(8)
    table = random_table("uint16", rng)
    table[250, 251] = 65535
    x = np.full((1, 3, 4, 4000), 250, np.uint8)
    w = np.full((3, 3, 4000, 2), 251, np.uint8)
    got = fast.conv2d(x, w, table, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, np.int64, path=path)
    np.testing.assert_array_equal(got, np.full((1, 1, 2, 2), 36000 * 65535, np.int64))
    x = rng.integers(0, 256, (1, 3, 3, 4000), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 3, 4000, 1), dtype=np.uint8)
    got = fast.conv2d(x, w, table, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, np.int64, path=path)
    assert got[0, 0, 0, 0] == table[x[0], w[..., 0]].astype(np.int64).sum()


def test_exact_multiplier_closed_form():
    """With the exact unsigned table the sums are the integer matrix product."""
    rng = np.random.default_rng(9)
    table = np.outer(np.arange(256), np.arange(256)).astype(np.int32)
    a = rng.integers(0, 256, (100, 50), dtype=np.uint8)
    b = rng.integers(0, 256, (50, 30), dtype=np.uint8)
    expect = a.astype(np.int64) @ b.astype(np.int64)
    for p in AVAILABLE:
        np.testing.assert_array_equal(fast.gemm(a, b, table, np.int32, path=p), expect)


@pytest.mark.parametrize("path", PATHS)
def test_direct_conv_splits_filter_blocks_among_threads(path):
    """Batch-1 layers of fewer row tiles than threads: the direct method's threads share
    an image's row tiles, and the blocks of 64 filters (whole groups of them, a partial last
    block) when the tiles are too few, instead of leaving all but one idle; wide (stride 1)
    and packed (stride 2) modes, groups, NCHW codes and the dequantizing NCHW store, 1 to 3
    threads, against the reference backend. (Most of these layers now stream their filters
    past the pixels instead, see test_direct_conv_swaps_operands_for_few_pixels; the
    stride-2 layers of 8 x 8 outputs by 65 filters a group keep the pixels streamed on every
    path.)"""
    rng = np.random.default_rng(zlib.crc32(f"{path}/fparts".encode()))
    table = random_table("int16", rng)
    for (H, C, COUT, stride, groups) in [(5, 8, 200, 1, 1), (6, 6, 150, 2, 1),
                                         (4, 12, 260, 1, 2), (5, 9, 3 * 70, 1, 3),
                                         (16, 4, 130, 1, 1), (16, 4, 65, 2, 1),
                                         (16, 8, 2 * 65, 2, 2)]:
        x = codes((1, H, H, C), rng)
        w = codes((3, 3, C // groups, COUT), rng)
        args = ((stride, stride), (1, 1, 1, 1), (1, 1), groups, 5)
        want = ref.conv2d(x, w, table, *args, np.int64).astype(np.int32)
        scale = rng.uniform(1e-4, 1e-2, COUT)
        want_f = (want.astype(np.float64) * scale).astype(np.float32)
        xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        for nt in (1, 2, 3):
            msg = f"{(H, C, COUT, stride, groups)} threads {nt}"
            got = fast.conv2d(x, w, table, *args, np.int32, nt, path=path, method="direct")
            np.testing.assert_array_equal(got, want, err_msg=msg)
            got = fast.conv2d(xn, w, table, *args, np.int32, nt, path=path, method="direct",
                              in_format="NCHW", dequant={"scale": scale}, out_format="NCHW")
            np.testing.assert_array_equal(got, want_f.transpose(0, 3, 1, 2), err_msg=msg)


def test_threads_and_layouts_do_not_change_results():
    rng = np.random.default_rng(10)
    table = random_table("int16", rng)
    a = rng.integers(0, 256, (300, 70), dtype=np.uint8)
    b = rng.integers(0, 256, (70, 40), dtype=np.uint8)
    one = fast.gemm(a, b, table, np.int32, num_threads=1)
    np.testing.assert_array_equal(fast.gemm(a, b, table, np.int32, num_threads=2), one)
    np.testing.assert_array_equal(
        fast.gemm(np.asfortranarray(a), b[:, ::-1].copy()[:, ::-1], table, np.int32), one)
    x = rng.integers(0, 256, (4, 9, 9, 3), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 3, 3, 5), dtype=np.uint8)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, 0, np.int32)
    c1 = fast.conv2d(x, w, table, *args, num_threads=1)
    np.testing.assert_array_equal(fast.conv2d(x, w, table, *args, num_threads=2), c1)
    np.testing.assert_array_equal(fast.conv2d(x[:, ::-1][:, ::-1], w, table, *args), c1)


def test_empty_shapes():
    table = np.zeros((256, 256), np.int32)
    z = np.zeros
    assert fast.gemm(z((0, 5), np.uint8), z((5, 3), np.uint8), table, np.int32).shape == (0, 3)
    np.testing.assert_array_equal(
        fast.gemm(z((4, 0), np.uint8), z((0, 3), np.uint8), table + 1, np.int64), z((4, 3)))
    out = fast.conv2d(z((0, 4, 4, 2), np.uint8), z((3, 3, 2, 5), np.uint8), table)
    assert out.shape == (0, 2, 2, 5)
    out = fast.conv2d(z((1, 2, 2, 2), np.uint8), z((3, 3, 2, 5), np.uint8), table)
    assert out.shape == (1, 0, 0, 5)


def test_available_and_default_paths():
    assert AVAILABLE[-1] == "scalar"
    assert set(AVAILABLE) <= set(fast.PATHS)
    assert fast.default_path() in AVAILABLE


def test_bad_path_argument():
    a = np.zeros((2, 2), np.uint8)
    table = np.zeros((256, 256), np.int32)
    with pytest.raises(ValueError, match="unknown CPU path 'sse9'"):
        fast.gemm(a, a, table, np.int32, path="sse9")
    with pytest.raises(TypeError, match="path"):
        fast.conv2d(np.zeros((1, 2, 2, 1), np.uint8), np.zeros((1, 1, 1, 1), np.uint8), table,
                    path=3)
    missing = [p for p in fast.PATHS if p not in AVAILABLE]
    for p in missing:  # a path this CPU cannot run is an error, never another path
        with pytest.raises(ValueError, match="not supported by this CPU"):
            fast.gemm(a, a, table, np.int32, path=p)


def test_bad_inputs():
    table = np.zeros((256, 256), np.int32)
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        fast.gemm(a.astype(np.int32), a.T.copy(), table, np.int32)
    with pytest.raises(ValueError, match="K must match"):
        fast.gemm(a, a, table, np.int32)
    with pytest.raises(ValueError, match="shape"):
        fast.gemm(a, a.T.copy(), table[:16, :16].copy(), np.int32)
    with pytest.raises(TypeError, match="int32"):
        fast.gemm(a, a.T.copy(), table.astype(np.int64), np.int32)
    with pytest.raises(TypeError, match="out_dtype"):
        fast.gemm(a, a.T.copy(), table, np.float32)
    x = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="groups"):
        fast.conv2d(x, np.zeros((3, 3, 1, 4), np.uint8), table, groups=2)
    with pytest.raises(ValueError, match="stride"):
        fast.conv2d(x, np.zeros((3, 3, 3, 4), np.uint8), table, stride=(0, 1))


def _run_with_env(value, code):
    env = dict(os.environ, AXKERN_CPU_PATH=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(__file__))  # the installed axkern


def test_env_var_forces_path():
    code = ("import numpy as np, axkern._fast as f; print(f.default_path()); "
            "t = np.arange(65536, dtype=np.int32).reshape(256, 256) % 1000; "
            "a = np.arange(12, dtype=np.uint8).reshape(3, 4); "
            "print(int(f.gemm(a, a.T.copy(), t, np.int64).sum()))")
    expect = None
    for p in AVAILABLE:
        r = _run_with_env(p, code)
        assert r.returncode == 0, r.stderr
        name, total = r.stdout.split()
        assert name == p
        expect = total if expect is None else expect
        assert total == expect
    r = _run_with_env("bogus", code)
    assert r.returncode != 0 and "AXKERN_CPU_PATH" in r.stderr and "bogus" in r.stderr


def test_bench_signed_multiplier():
    # --signed: a signed multiplier's table (two's-complement indices) and so the symmetric
    # quantization of the float-level calls, the path whose codes were left scalar once
    from axkern import Multiplier, bench
    from axkern.lut import operand_values

    t = bench._table(np.random.default_rng(0), signed=True)
    v = operand_values(8, True).astype(np.int64)
    assert np.abs(t - np.outer(v, v)).max() <= 64
    assert Multiplier(t, signed=True).signed
    recs = bench.run_bench(paths=["scalar"], repeat=1, shapes=["gemm 8x2048x1024"],
                           torch=False, signed=True)
    assert len(recs) == 1 and recs[0]["api_gmacs"] > 0 and recs[0]["kernel_gmacs"] > 0
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["bench", "--signed"]).signed


def test_bench_multiplier_table(capsys):
    # --multiplier: a multiplier's own (frozen) table, which the kernels may take by its
    # factors; the synthetic table stays the default
    from axkern import bench
    from axkern.backends import table256, table_factors
    from axkern.library import load_multiplier

    m = load_multiplier("mul8u_drum4")
    assert table_factors(table256(m)) is not None
    recs = bench.run_bench(paths=["scalar"], repeat=1, shapes=["gemm 8x2048x1024"],
                           torch=False, multiplier=m)
    assert len(recs) == 1 and recs[0]["api_gmacs"] > 0 and recs[0]["kernel_gmacs"] > 0
    with pytest.raises(ValueError, match="signed and multiplier exclude each other"):
        bench.run_bench(paths=["scalar"], repeat=1, shapes=["gemm 8x2048x1024"], torch=False,
                        multiplier="mul8u_drum4", signed=True)
    assert bench.main(["--paths", "scalar", "--repeat", "1", "--shapes", "gemm 8x2048x1024",
                       "--no-torch", "--multiplier", "mul8u_drum4"]) == 0
    assert "the table of mul8u_drum4" in capsys.readouterr().out
    assert bench.main(["--signed", "--multiplier", "mul8u_drum4"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_bench_records_and_cli_parser():
    from axkern import bench

    recs = bench.run_bench(paths=["scalar"], repeat=1, shapes=["gemm 8x2048x1024"], api=False)
    assert len(recs) == 1
    r = recs[0]
    assert r["shape"] == "gemm 8x2048x1024" and r["path"] == "scalar"
    assert r["macs"] == 8 * 2048 * 1024
    assert r["kernel_gmacs"] > 0 and r["blas_gmacs"] > 0 and r["kernel_ratio"] > 0
    assert r["api_gmacs"] is None and r["api_ratio"] is None
    assert abs(r["kernel_ratio"] - r["kernel_s"] / r["blas_s"]) < 1e-12
    assert "| gemm 8x2048x1024 | scalar |" in bench.format_table(recs)
    with pytest.raises(ValueError, match="unknown CPU path"):
        bench.run_bench(paths=["mmx"], repeat=1)
    with pytest.raises(ValueError, match="unknown shapes"):
        bench.run_bench(shapes=["resnet-50"], repeat=1)
    # forced methods: one record per method that serves the shape
    recs = bench.run_bench(paths=["scalar"], repeat=1, shapes=["depthwise 64 @16x16"],
                           api=False, methods=["direct", "expand", "depthwise"])
    assert [r["method"] for r in recs] == ["direct", "expand", "depthwise"]
    recs = bench.run_bench(paths=["scalar"], repeat=1, shapes=["gemm 8x2048x1024"],
                           api=False, methods=["direct", "depthwise"])
    assert [r["method"] for r in recs] == ["direct"]   # depthwise cannot serve a GEMM
    assert "| gemm 8x2048x1024 | scalar (direct) |" in bench.format_table(recs)
    with pytest.raises(ValueError, match="unknown kernel method"):
        bench.run_bench(paths=["scalar"], repeat=1, methods=["fastest"])
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--paths", "scalar", "--repeat", "2", "--kernel-only",
                              "--methods", "direct,expand"])
    assert args.func is bench._cmd and args.repeat == 2 and args.kernel_only
    assert args.methods == "direct,expand"


@pytest.mark.parametrize("scale, zp, bits, signed", [
    (0.023, 117, 8, False), (6 / 255, 0, 8, False), (0.05, 0, 8, True), (0.1, 3, 4, True),
    (0.7, 5, 4, False), (1e-3, 255, 8, False)])
def test_quantize_indices_matches_quant(scale, zp, bits, signed):
    """The fused quantizer is bit-identical to axkern.quant's NumPy float32 formulas,
    including exact half-way points and values far outside the range."""
    from axkern.quant import QuantParams, quantize_float

    p = QuantParams(np.float32(scale), zp, bits=bits, signed=signed)
    rng = np.random.default_rng(bits + 10 * zp)
    x = (rng.standard_normal((37, 301)) * 40 * scale).astype(np.float32)
    s = np.float32(p.scale)
    x[0, :200] = (np.arange(200, dtype=np.float32) - 100 + np.float32(0.5)) * s  # ties
    x[1, :4] = [1e30, -1e30, 0.0, -0.0]
    # the range's ends and their neighbours (the 8-bit loop leaves the clamp from below to
    # the packs' saturation), the float32 extremes and subnormals
    lo, hi = np.float32((p.qmin - p.zero_point) * s), np.float32((p.qmax - p.zero_point) * s)
    ends = [lo, hi, np.nextafter(lo, np.float32(-np.inf)), np.nextafter(hi, np.float32(np.inf)),
            np.nextafter(lo, np.float32(np.inf)), np.nextafter(hi, np.float32(-np.inf)),
            np.finfo(np.float32).max, -np.finfo(np.float32).max, 1e-45, -1e-45]
    x[2, 3:3 + len(ends)] = ends
    codes = quantize_float(x, p).astype(np.int64)
    mask = (1 << bits) - 1
    idx, sums = fast.quantize_indices(x, p, mask, row_sums=True)
    np.testing.assert_array_equal(idx, (codes & mask).astype(np.uint8))
    np.testing.assert_array_equal(sums, codes.sum(axis=-1))
    # without the sums (unsigned 8-bit codes take a loop of their own)
    np.testing.assert_array_equal(fast.quantize_indices(x, p, mask),
                                  (codes & mask).astype(np.uint8))
    np.testing.assert_array_equal(fast.quantize_indices(x.T, p, mask, num_threads=1),
                                  (codes.T & mask).astype(np.uint8))
    big = np.tile(x, (8, 1)).reshape(2, -1)  # few long rows, no sums: split flat
    np.testing.assert_array_equal(fast.quantize_indices(big, p, mask),
                                  (np.tile(codes, (8, 1)).reshape(2, -1) & mask).astype(np.uint8))


@pytest.mark.parametrize("bits, zp", [(8, 128), (8, 0), (4, 9)])
def test_quantize_indices_scale_beyond_the_float32_range(bits, zp):
    """A scale so large that the range's ends overflow float32 (255 * 1.5e36): the clamped
    value minus the range's start is +Inf, and the code must be the range's last, as in
    axkern.quant, not what truncating an infinity gives."""
    from axkern.quant import QuantParams, quantize_float

    p = QuantParams(np.float32(1.5e36), zp, bits=bits)
    x = np.array([3.4e38, 2e38, 1.9e38, 1e36, 0.0, -1e36, -3.4e38] * 7, np.float32)
    with np.errstate(over="ignore"):   # the reference's float32 range overflows too
        want = (quantize_float(x, p).astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    mask = (1 << bits) - 1
    np.testing.assert_array_equal(fast.quantize_indices(x, p, mask), want)
    np.testing.assert_array_equal(fast.quantize_indices(x[None], p, mask, row_sums=True)[0][0],
                                  want)


@pytest.mark.parametrize("signed", [False, True])
def test_quantize_indices_every_position_of_the_vector_loop(signed):
    """Runs around the 32-value rounds of the AVX2 quantizer: the codes of every length and
    a NaN or an infinity at every position of a round (each of its four vectors) and of the
    tail is found."""
    from axkern.quant import QuantParams, quantize_float

    p = QuantParams(np.float32(0.02), 0 if signed else 119, signed=signed)
    rng = np.random.default_rng(7)
    for n in (1, 7, 31, 32, 33, 64, 95, 130):
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        want = (quantize_float(x, p).astype(np.int64) & 255).astype(np.uint8)
        np.testing.assert_array_equal(fast.quantize_indices(x, p, num_threads=1), want)
        idx, sums = fast.quantize_indices(x[None], p, row_sums=True, num_threads=1)
        np.testing.assert_array_equal(idx[0], want)
        assert sums[0] == quantize_float(x, p).astype(np.int64).sum()
        for pos in sorted({0, 7, 8, 15, 16, 23, 24, 31, n // 2, n - 1}):
            if pos >= n:
                continue
            for bad in (np.nan, np.inf, -np.inf):
                y = x.copy()
                y[pos] = bad
                with pytest.raises(ValueError, match="NaN or Inf"):
                    fast.quantize_indices(y, p, num_threads=1)


def test_quantize_indices_shapes_and_errors():
    from axkern.quant import QuantParams

    p = QuantParams(0.5, 10)
    assert fast.quantize_indices(np.float32(1.0), p).tolist() == 12
    idx, sums = fast.quantize_indices(np.zeros((3, 0)), p, row_sums=True)
    assert idx.shape == (3, 0) and sums.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="NaN or Inf"):
        fast.quantize_indices(np.array([1.0, np.nan]), p)
    with pytest.raises(ValueError, match="per-tensor"):
        fast.quantize_indices(np.ones((2, 2)), QuantParams([0.5, 0.25], [1, 2]))
    with pytest.raises(TypeError, match="QuantParams"):
        fast.quantize_indices(np.ones(2), 0.5)
    with pytest.raises(ValueError, match="index_mask"):
        fast.quantize_indices(np.ones(2), p, index_mask=100)
    with pytest.raises(TypeError, match="numeric"):
        fast.quantize_indices(np.array(["a"]), p)


def test_concurrent_calls_with_different_tables():
    """Python threads call the kernels at once (the GIL is released) with more tables than
    the prepared-table cache holds: every result must use its own table."""
    import threading

    rng = np.random.default_rng(11)
    tables = [random_table(k, rng) for k in ("uint16", "int16", "offset", "int32", "4bit",
                                             "uint16")]
    a = rng.integers(0, 16, (70, 33), dtype=np.uint8)
    b = rng.integers(0, 16, (33, 9), dtype=np.uint8)
    expect = [ref.gemm(a, b, t, np.int64) for t in tables]
    errors = []

    def work(i):
        try:
            for rep in range(5):
                j = (i + rep) % len(tables)
                got = fast.gemm(a, b, tables[j], np.int64, num_threads=1,
                                path=AVAILABLE[rep % len(AVAILABLE)])
                if not np.array_equal(got, expect[j]):
                    errors.append((i, rep))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _window_sums_numpy(x, values, KH, KW, stride, pad, dil, g, pad_code):
    """Receptive-field sums of operand values per group, by explicit NumPy loops."""
    N, H, W, C = x.shape
    xp = np.full((N, H + pad[0] + pad[1], W + pad[2] + pad[3], C), pad_code, np.uint8)
    xp[:, pad[0]:pad[0] + H, pad[2]:pad[2] + W] = x
    OH = (xp.shape[1] - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (xp.shape[2] - dil[1] * (KW - 1) - 1) // stride[1] + 1
    table = np.zeros(256, np.int64)
    table[:len(values)] = values
    vals = table[xp]
    expect = np.zeros((N, OH, OW, g), np.int64)
    Cg = C // g
    for oy in range(OH):
        for ox in range(OW):
            for ky in range(KH):
                for kx in range(KW):
                    px = vals[:, oy * stride[0] + ky * dil[0], ox * stride[1] + kx * dil[1]]
                    expect[:, oy, ox] += px.reshape(N, g, Cg).sum(-1)
    return expect


@pytest.mark.parametrize("path", PATHS)
def test_window_sums(path):
    """Receptive-field sums of operand values per group, against explicit NumPy loops."""
    rng = np.random.default_rng(12)
    values = np.where(np.arange(256) >= 128, np.arange(256) - 256, np.arange(256))  # signed
    for (N, H, W, C, KH, KW, stride, pad, dil, g) in [
            (2, 7, 8, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
            (1, 9, 9, 6, 3, 2, (2, 1), (1, 2, 0, 1), (1, 2), 3),
            (2, 6, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4)]:
        x = rng.integers(0, 256, (N, H, W, C), dtype=np.uint8)
        expect = _window_sums_numpy(x, values, KH, KW, stride, pad, dil, g, 200)
        got = fast.window_sums(x, values, (KH, KW), stride, pad, dil, g, 200, path=path)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expect)
    with pytest.raises(ValueError, match="values"):
        fast.window_sums(x, np.zeros((3, 3), int), (3, 3))
    with pytest.raises(ValueError, match="groups"):
        fast.window_sums(x, values, (3, 3), groups=5)


def test_window_sums_checks_every_call():
    """window_sums remembers the values it checked (by their bytes): bad values and bad
    geometry are refused on every call all the same, before and after good ones, and the
    same values in another integer dtype or length give the same sums."""
    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, (2, 6, 6, 4), dtype=np.uint8)
    good = np.arange(256, dtype=np.int64)
    ref = _window_sums_numpy(x, good, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0)
    np.testing.assert_array_equal(ref, fast.window_sums(x, good, (3, 3), (1, 1), (1, 1, 1, 1)))
    np.testing.assert_array_equal(
        ref, fast.window_sums(x, np.arange(256, dtype=np.int32), (3, 3), (1, 1), (1, 1, 1, 1)))
    np.testing.assert_array_equal(
        ref, fast.window_sums(x, list(range(256)), (3, 3), (1, 1), (1, 1, 1, 1)))
    too_big = good.copy()
    too_big[7] = 1 << 16
    for _ in range(2):
        with pytest.raises(ValueError, match="16-bit"):
            fast.window_sums(x, too_big, (3, 3))
        with pytest.raises(ValueError, match="values"):
            fast.window_sums(x, good.astype(np.float64), (3, 3))
        with pytest.raises(ValueError, match="values"):
            fast.window_sums(x, np.arange(257), (3, 3))
        with pytest.raises(ValueError, match="padding"):
            fast.window_sums(x, good, (3, 3), padding=(-1, 0, 0, 0))
        with pytest.raises(ValueError, match="pad_code"):
            fast.window_sums(x, good, (3, 3), pad_code=256)
        with pytest.raises(TypeError, match="uint8"):
            fast.window_sums(x.astype(np.int16), good, (3, 3))
        np.testing.assert_array_equal(
            ref, fast.window_sums(x, good, (3, 3), (1, 1), (1, 1, 1, 1)))
    # values shorter than 256 (a 4-bit multiplier's 16): zero past their length
    short = np.arange(16) * 3
    np.testing.assert_array_equal(
        fast.window_sums(x, short, (3, 3), (1, 1), (1, 1, 1, 1)),
        _window_sums_numpy(x, short, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0))


def test_bench_median_of_runs(capsys):
    """combine_runs: every figure the median over the runs (ratios within each run first),
    the ratio ranges; the CLI's --runs prints them."""
    from axkern import bench

    def rec(shape, k, api, nchw, torch_s, cl):
        best = min(t for t in (torch_s, cl) if t is not None)
        return dict(shape=shape, path="avx2", method=None, macs=10 ** 9, kernel_s=k,
                    api_s=api, api_nchw_s=nchw, blas_s=1.0, torch_s=torch_s, torch_cl_s=cl,
                    torch_best_s=best, kernel_ratio=k, api_ratio=api,
                    api_torch=api / best, api_nchw_torch=nchw / best)
    runs = [[rec("a", 1.0, 2.0, 3.0, 1.0, 0.5)], [rec("a", 3.0, 2.5, 2.0, 1.0, 2.0)],
            [rec("a", 2.0, 9.0, 4.0, 2.0, 1.0)]]
    (r,) = bench.combine_runs(runs)
    assert r["kernel_s"] == 2.0 and r["api_s"] == 2.5 and r["api_nchw_s"] == 3.0
    assert r["torch_best_s"] == 1.0 and r["kernel_gmacs"] == 0.5
    # per-run ratios 4.0, 2.5, 9.0 and 6.0, 2.0, 4.0: their medians, not a ratio of medians
    assert r["api_torch"] == 4.0 and r["api_nchw_torch"] == 4.0
    assert r["api_torch_range"] == (2.5, 9.0) and r["api_nchw_torch_range"] == (2.0, 6.0)
    assert r["runs"] == 3
    assert "| 2.50 - 9.00 | 2.00 - 6.00 |" in bench.format_table([r])
    with pytest.raises(ValueError, match="different shapes"):
        bench.combine_runs([runs[0], [rec("b", 1.0, 1.0, 1.0, 1.0, 1.0)]])
    with pytest.raises(ValueError, match="at least one run"):
        bench.combine_runs([])
    from axkern.cli import main
    assert main(["bench", "--paths", "scalar", "--shapes", "gemm 8x2048x1024", "--repeat", "1",
                 "--kernel-only", "--no-torch", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "the median of 2 runs" in out and "| gemm 8x2048x1024 | scalar |" in out
    assert main(["bench", "--runs", "0"]) == 2


def test_table_grads_against_numpy():
    """axkern._fast.table_grads (the grad="table" backward products) against NumPy gathers
    and einsum, both outputs, one of them, and bad arguments."""
    rng = np.random.default_rng(11)
    M, K, N = 700, 37, 19   # rows beyond one tile of g, odd sizes
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(0, 256, (K, N), dtype=np.uint8)
    da = rng.standard_normal((256, 256)).astype(np.float32)
    db = rng.standard_normal((256, 256)).astype(np.float32)
    gs, g = rng.standard_normal((M, N)), rng.standard_normal((M, N))
    ga_ref = np.einsum("mkn,mn->mk", da[a[:, :, None], b[None]].astype(np.float64), gs)
    gb_ref = np.einsum("mkn,mn->kn", db[a[:, :, None], b[None]].astype(np.float64), g)
    for nt in (1, 2):
        ga, gb = fast.table_grads(a, b, da, db, gs, g, num_threads=nt)
        np.testing.assert_allclose(ga, ga_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gb, gb_ref, rtol=1e-12, atol=1e-10)
    ga, gb = fast.table_grads(a, b, da, db, gs, g, need_b=False)
    assert gb is None and np.allclose(ga, ga_ref)
    ga, gb = fast.table_grads(a, b, da, db, gs, g, need_a=False)
    assert ga is None and np.allclose(gb, gb_ref)
    with pytest.raises(ValueError, match="chain"):
        fast.table_grads(a, b[1:], da, db, gs, g)
    with pytest.raises(ValueError, match="float32"):
        fast.table_grads(a, b, da.astype(np.float64), db, gs, g)
    with pytest.raises(ValueError, match="gs must be float64"):
        fast.table_grads(a, b, da, db, gs[1:], g)
