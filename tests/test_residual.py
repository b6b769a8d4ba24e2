"""The byte-residual form of the expanded tables (axkern/_simd/expand.c): which tables have
it, checked against a NumPy statement of the class, and their sums, bit for bit against the
NumPy reference backend on every path (the form runs on "avx2", and on "avx512_vbmi" where
the CPU has VNNI; the scalar path takes the same calls through its own kernels)."""
import zlib

import numpy as np
import pytest

fast = pytest.importorskip("axkern._fast")
from axkern import library  # noqa: E402
from axkern.backends import freeze_table, get_backend, table256  # noqa: E402
from axkern.lut import operand_values  # noqa: E402
from test_simd import PATHS, codes  # noqa: E402

ref = get_backend("reference")
UNSIGNED = np.arange(256, dtype=np.int64)
SIGNED = operand_values(8, True).astype(np.int64)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def in_class(table):
    """NumPy's statement of the class: a table of the 16-bit class (entries spanning at most
    65535) where, for unsigned or int8 values v and some integer z, the entries less v(a) *
    (v(b) - z) span at most 255 in every column b (a: activation code, the table's row).
    Every z that could fit is tried."""
    t = table.astype(np.int64)
    if t.max() - t.min() > 65535:
        return False
    for v in (UNSIGNED, SIGNED):
        for z in _candidate_zs(t, v):
            r = t - np.outer(v, v - z)
            if (r.max(axis=0) - r.min(axis=0)).max() <= 255:
                return True
    return False


def _candidate_zs(t, v):
    # a fitting z makes column b0 (value 0) -z * v(a) plus a spread of at most 255, so the
    # least-squares slope of that column is within 255 / (spread of v) of -z; wider than
    # the kernel's own search, which takes the slope between two codes
    b0 = int(np.flatnonzero(v == 0)[0])
    slope = np.polyfit(v, t[:, b0], 1)[0]
    return range(int(np.floor(-slope)) - 3, int(np.ceil(-slope)) + 4)


def exact_plus(rng, v, spread, z=0, offsets=0, top=None):
    """v(a) * (v(b) - z) plus a residual of the given spread per column (both ends reached),
    shifted by up to +-offsets per column; top: a row set to the largest residual too (the
    code of the largest value makes the kernel's estimate of z one off)."""
    r = rng.integers(0, spread + 1, (256, 256))
    r[0, :], r[1, :] = 0, spread
    if top is not None:
        r[top, :] = spread
    t = np.outer(v, v - z) + r
    if offsets:
        t += rng.integers(-offsets, offsets + 1, 256)[None, :]
    return np.ascontiguousarray(t, dtype=np.int32)


def tables(rng):
    """Tables of the class (True) and just outside it (False)."""
    u, s = UNSIGNED, SIGNED
    out = {
        "unsigned": (exact_plus(rng, u, 128), True),
        "unsigned, spread 255": (exact_plus(rng, u, 255), True),
        "signed, offsets": (exact_plus(rng, s, 200, offsets=15000), True),
        "unsigned, weight zero point folded": (exact_plus(rng, u, 100, z=117), True),
        "signed, z = -5": (exact_plus(rng, s, 255, z=-5), True),
        "unsigned, z = 117, rising": (exact_plus(rng, u, 255, z=117, top=255), True),
        "unsigned, spread 256": (exact_plus(rng, u, 256), False),
        # a residual of a byte, but entries spanning more than 16 bits
        "unsigned, offsets": (exact_plus(rng, u, 100, offsets=2000), False),
    }
    # one column whose spread is 256: the whole table leaves the class
    t = exact_plus(rng, u, 255)
    t[1, 200] += 1   # row 1 holds the largest residual of every column
    out["one column too wide"] = (t, False)
    return out


VNNI = "avx512_vbmi" in fast.available_paths() and (_cpu_flags() or set()).__contains__(
    "avx512_vnni")


def form_runs(path):
    """Whether the byte-residual form runs on this path and CPU."""
    return path == "avx2" or (path == "avx512_vbmi" and VNNI)


def test_byte_residual_class_matches_numpy():
    rng = np.random.default_rng(61)
    built = tables(rng)
    cases = {k: t for k, (t, _) in built.items()}
    for name in ("mul8u_trunc4", "mul8s_trunc4", "mul8u_perf1", "mul8u_exact",
                 "mul8u_trunc6", "mul8u_drum4"):
        cases[name] = table256(library.load_multiplier(name))
    cases["random 16-bit"] = rng.integers(0, 1 << 16, (256, 256)).astype(np.int32)
    for name, t in cases.items():
        want = in_class(t)
        if name in built:   # the tables were built in or out of the class
            assert want == built[name][1], name
        for path in fast.available_paths():
            got = fast.byte_residual(t, path)
            assert got == (want and form_runs(path)), (name, path)
    # the shipped near-exact circuits are in it, DRUM is not
    assert in_class(cases["mul8u_trunc4"]) and not in_class(cases["mul8u_drum4"])
    assert not in_class(cases["mul8u_trunc6"])   # a spread of 321


def test_byte_residual_refuses_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        fast.byte_residual(np.zeros((16, 16), np.int32))
    with pytest.raises(TypeError, match="int32"):
        fast.byte_residual(np.zeros((256, 256), np.float64))
    with pytest.raises(ValueError, match="unknown CPU path"):
        fast.byte_residual(np.zeros((256, 256), np.int32), "neon")


def _dequantized(sums, dq):
    v = sums.astype(np.int64) + dq["corr"]
    return (v.astype(np.float64) * dq["scale"]).astype(np.float32) + dq["bias"]


@pytest.mark.parametrize("path", PATHS)
def test_byte_residual_sums_exact(path):
    """GEMMs of both orientations (the swapped one streams a transposed copy of b), a split
    reduction, steps not a multiple of 4 or 16, several and partial 64-column blocks (32 on
    "avx2", whose blocks of 32 steps read two runs of 16: 16 input channels make a filter
    row of 48 steps), convolutions whose taps hold whole blocks of 16 steps (and one whose
    taps do not, which takes the 16-bit rows), strides, dilation, groups, a nonzero pad
    code, a batch-1 layer of few pixels (the swapped expanded tables), the last columns
    past whole residual blocks in a block of the 16-bit rows (48 output channels on "avx2"),
    and the dequantizing store in both layouts: forced expanded tables and the automatic
    choice, on every table of the class and one outside it."""
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    # tails of 16-bit rows after whole residual blocks: 40, 48 and 144 columns (avx2), 80
    # and 96 (avx512_vbmi), one with its reduction split (40 x 2048 x 40)
    gemms = [(70, 37, 100), (40, 70, 600), (64, 1024, 64), (129, 16, 33), (3, 40, 65),
             (90, 50, 40), (40, 2048, 40), (60, 45, 80), (33, 100, 96), (50, 64, 144)]
    convs = [  # N, H, W, C, COUT, k, stride, dilation, groups
        (2, 6, 7, 16, 64, 3, 1, 1, 1), (1, 9, 9, 32, 48, 3, 2, 2, 1),
        (2, 5, 5, 3, 70, 1, 1, 1, 1), (2, 16, 16, 24, 40, 3, 1, 1, 1),
        (2, 6, 6, 32, 80, 3, 1, 1, 2), (1, 3, 3, 64, 130, 3, 1, 1, 1)]
    for name, (table, _) in tables(rng).items():
        sixteen = int(table.max()) - int(table.min()) <= 65535
        methods = ("expand", "auto") if sixteen else ("auto",)
        for M, K, N in gemms:
            a, b = codes((M, K), rng), codes((K, N), rng)
            want = ref.gemm(a, b, table, np.int32)
            for method in methods:
                got = fast.gemm(a, b, table, np.int32, num_threads=2, path=path, method=method)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} gemm {M, K, N}")
        for N, H, W, C, COUT, k, s, d, g in convs:
            x = codes((N, H, W, C), rng)
            w = codes((k, k, C // g, COUT), rng)
            p = (k - 1) * d // 2
            geo = ((s, s), (p, p, p, p), (d, d), g, 201)
            want = ref.conv2d(x, w, table, *geo, np.int32)
            for method in methods:
                got = fast.conv2d(x, w, table, *geo, np.int32, 2, path=path, method=method)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} conv {C, COUT, g}")
            dq = {"scale": rng.uniform(0.5, 2, COUT), "corr": rng.integers(-999, 999, COUT),
                  "bias": rng.standard_normal(COUT).astype(np.float32)}
            y = fast.conv2d(x, w, table, *geo, np.int32, 2, path=path, method=methods[0],
                            dequant=dq)
            np.testing.assert_array_equal(y, _dequantized(want, dq), err_msg=name)
            y = fast.conv2d(x, w, table, *geo, np.int32, 2, path=path, method=methods[0],
                            dequant=dq, out_format="NCHW")
            np.testing.assert_array_equal(y, _dequantized(want, dq).transpose(0, 3, 1, 2),
                                          err_msg=name)


@pytest.mark.parametrize("path", PATHS)
def test_direct_method_exact_on_every_table(path):
    """The direct method on the tables of the class (on "avx512_vbmi" with VNNI, the
    byte-residual direct kernel for 6 fixed codes or more, the 16-bit kernel for fewer) and
    outside it, bit for bit against the reference backend: tiles of whole and partial blocks
    of 64 rows, reductions not a multiple of 4 and longer than the kernel's 64-step chunks,
    both GEMM orientations, int64 sums, convolutions streamed over the padded width (stride
    1) and packed (stride 2), groups, a pad code; and the tiles' stores by rows (NHWC, NCHW,
    the window sums of a weight zero point) against the NumPy epilogue."""
    rng = np.random.default_rng(zlib.crc32(b"direct " + path.encode()))
    gemms = [(200, 130, 7), (5, 70, 300), (64, 257, 64), (130, 3, 40), (7, 300, 500),
             (192, 64, 6), (70, 9, 5)]
    convs = [  # N, H, W, C, COUT, k, stride, groups
        (2, 9, 9, 16, 16, 3, 1, 1), (2, 8, 7, 24, 12, 3, 2, 1), (1, 6, 6, 32, 20, 3, 1, 2)]
    for name, (table, _) in tables(rng).items():
        # frozen, as the float layers' tables are: the stores then add the correction in
        # int32, and the NCHW store of int32 sums dequantizes 8 x 8 blocks in registers
        table = freeze_table(table)
        for M, K, N in gemms:
            a, b = codes((M, K), rng), codes((K, N), rng)
            want = ref.gemm(a, b, table, np.int64)
            for acc in (np.int32, np.int64):
                got = fast.gemm(a, b, table, acc, num_threads=2, path=path, method="direct")
                np.testing.assert_array_equal(got, want.astype(acc),
                                              err_msg=f"{name} gemm {M, K, N} {acc}")
            # the store by rows, with the window sums of a weight zero point
            dq = {"scale": rng.uniform(0.5, 2, N), "corr": rng.integers(-999, 999, N),
                  "bias": rng.standard_normal(N).astype(np.float32),
                  "zw": rng.integers(-30, 30, N), "sumx": rng.integers(-5000, 5000, (M, 1))}
            y = fast.gemm(a, b, table, np.int32, num_threads=2, path=path, method="direct",
                          dequant=dq)
            v = want.astype(np.int32).astype(np.int64) + dq["corr"] - dq["zw"] * dq["sumx"]
            np.testing.assert_array_equal(
                y, (v.astype(np.float64) * dq["scale"]).astype(np.float32) + dq["bias"],
                err_msg=f"{name} gemm {M, K, N} dequantized")
        for N, H, W, C, COUT, k, s, g in convs:
            x = codes((N, H, W, C), rng)
            w = codes((k, k, C // g, COUT), rng)
            geo = ((s, s), (1, 1, 1, 1), (1, 1), g, 77)
            want = ref.conv2d(x, w, table, *geo, np.int64)
            for acc in (np.int32, np.int64):
                got = fast.conv2d(x, w, table, *geo, acc, 2, path=path, method="direct")
                np.testing.assert_array_equal(got, want.astype(acc),
                                              err_msg=f"{name} conv {C, COUT, s, g} {acc}")
            dq = {"scale": rng.uniform(0.5, 2, COUT), "corr": rng.integers(-999, 999, COUT),
                  "bias": rng.standard_normal(COUT).astype(np.float32)}
            want32 = want.astype(np.int32)
            for fmt, order in (("NHWC", (0, 1, 2, 3)), ("NCHW", (0, 3, 1, 2))):
                y = fast.conv2d(x, w, table, *geo, np.int32, 2, path=path, method="direct",
                                dequant=dq, out_format=fmt)
                np.testing.assert_array_equal(y, _dequantized(want32, dq).transpose(order),
                                              err_msg=f"{name} conv {C, COUT, s, g} {fmt}")


def test_float_layers_keep_the_form_with_folded_zero_points():
    """axconv2d / axmatmul fold an unsigned weight zero point into the table (T - zw v(a)),
    which the class takes as its z: the layers' tables stay in it, and their results equal
    the reference backend's."""
    import axkern

    rng = np.random.default_rng(5)
    table = exact_plus(rng, UNSIGNED, 128)
    m = axkern.backends.as_multiplier(table)
    x = rng.standard_normal((2, 6, 6, 32)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 64)).astype(np.float32)
    from axkern.conv import _prepare_weights, resolve_quant
    pw = _prepare_weights(w, resolve_quant("auto", m).weight, m, None, fast, fold=True)
    assert pw.folded and pw.zw != 0
    assert in_class(pw.table)
    assert fast.byte_residual(pw.table) == form_runs(fast.default_path())
    np.testing.assert_array_equal(axkern.axconv2d(x, w, m, backend="cpu"),
                                  axkern.axconv2d(x, w, m, backend="reference"))
    a = rng.standard_normal((50, 96)).astype(np.float32)
    b = rng.standard_normal((96, 70)).astype(np.float32)
    np.testing.assert_array_equal(axkern.axmatmul(a, b, m, backend="cpu"),
                                  axkern.axmatmul(a, b, m, backend="reference"))



def test_bench_says_where_the_form_runs():
    """axkern bench's records carry whether the table took the byte-residual form on their
    path, and its header says so: the synthetic table's figures are those of near-exact
    tables there."""
    from axkern import bench

    recs = bench.run_bench(paths=fast.available_paths(), shapes=["gemm 8x2048x1024"],
                           repeat=1, api=False, torch=False)
    for r in recs:
        assert r["byte_residual"] == form_runs(r["path"]), r["path"]
    note = bench._residual_note(recs)
    runs = [p for p in sorted(fast.available_paths()) if form_runs(p)]
    assert note == ("; byte-residual expanded tables on " + ", ".join(runs) if runs else "")
