"""Bad or unusual arguments to the compiled kernels (axkern._fast): window sums in other
groups than the call's, thread counts, packings whose weights could change, outputs that
overlap the inputs, reductions beyond int32, and values that would not convert exactly.
Results are checked against the NumPy reference backend and a NumPy dequantization."""
import itertools

import numpy as np
import pytest

from axkern import library
from axkern.backends import get_backend, table256

fast = pytest.importorskip("axkern._fast")
from test_simd import PATHS, codes  # noqa: E402

ref = get_backend("reference")


def dequantized(total, dq, groups):
    # the dequantization of exact sums, in NumPy: float32(float64(v + corr - zw * sumx[r, g])
    # * scale), column o in group g = o // (cols // groups)
    t = np.asarray(total, np.int64)
    g = np.arange(t.shape[-1]) // (t.shape[-1] // groups)
    v = t + np.int64(dq.get("corr", 0)) - np.asarray(dq["zw"], np.int64) * dq["sumx"][..., g]
    return (v.astype(np.float64) * dq["scale"]).astype(np.float32)


@pytest.mark.parametrize("path", PATHS)
def test_window_sums_in_their_own_groups(path):
    """``sumx`` of G groups pairs column ``o`` with group ``o // (N // G)``, whatever the
    convolution's groups: every method stores that (the expanded and factored stores took
    the convolution's group, and read past the end of sumx)."""
    rng = np.random.default_rng(8)
    drum = table256(library.load_multiplier("mul8u_drum4"))   # frozen, factors of rank 1
    noisy = rng.integers(-100, 100, (256, 256)).astype(np.int32)
    a, b = codes((64, 32), rng), codes((32, 64), rng)
    for table, methods in ((noisy, ("direct", "expand")),
                           (drum, ("direct", "expand", "factored"))):
        want_sums = ref.gemm(a, b, table, np.int32)
        for G in (1, 2, 4):
            dq = {"scale": 0.5, "zw": np.arange(64) - 7, "corr": 3,
                  "sumx": rng.integers(-5000, 5000, (64, G))}
            want = dequantized(want_sums, dq, G)
            for method in methods + ("auto",):
                got = fast.gemm(a, b, table, np.int32, dequant=dq, method=method, path=path)
                np.testing.assert_array_equal(got, want, err_msg=f"gemm {method} G={G}")
        # few rows against many columns: the swapped GEMM's transposed store
        a1 = codes((4, 32), rng)
        b1 = codes((32, 200), rng)
        sums = ref.gemm(a1, b1, table, np.int32)
        dq = {"scale": 0.25, "zw": 2, "sumx": rng.integers(-900, 900, (4, 5))}
        for method in methods + ("auto",):
            got = fast.gemm(a1, b1, table, np.int32, dequant=dq, method=method, path=path)
            np.testing.assert_array_equal(got, dequantized(sums, dq, 5), err_msg=method)
        # convolutions: sumx of one group for 2 or 8 groups, and of 4 for 2
        x = codes((2, 6, 6, 8), rng)
        for groups, G in ((2, 1), (8, 1), (2, 4), (1, 8)):
            w = codes((3, 3, 8 // groups, 8), rng)
            sums = ref.conv2d(x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), groups, 0, np.int32)
            dq = {"scale": 0.5, "zw": 3, "sumx": rng.integers(-700, 700, (2, 6, 6, G))}
            want = dequantized(sums, dq, G)
            for method in methods + ("auto",):
                if method == "factored" and groups == 8:
                    continue   # (one input channel per group: the depthwise shape)
                for fmt in ("NHWC", "NCHW"):
                    got = fast.conv2d(x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), groups, 0,
                                      np.int32, dequant=dq, method=method, path=path,
                                      out_format=fmt)
                    if fmt == "NCHW":
                        got = got.transpose(0, 2, 3, 1)
                    np.testing.assert_array_equal(got, want,
                                                  err_msg=f"{method} {fmt} {groups} G={G}")


def test_address_is_the_first_elements():
    """_fast.address (the weight cache's key) against NumPy's ctypes address: views at an
    offset, reversed and transposed ones, an empty array; anything else refused."""
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    for v in (a, a[1:], a[:, 2:, 3:], a[::-1], a.T, a[2, 3, 4:], np.empty(0, np.uint8)):
        assert fast.address(v) == v.ctypes.data
    with pytest.raises(TypeError, match="ndarray"):
        fast.address([1.0, 2.0])


def test_same_bytes_thread_count_is_checked():
    a = np.zeros(8 << 20, np.uint8)
    for bad in (100000, 2**31 - 1, 2**40, 0, True):
        with pytest.raises(ValueError, match="num_threads"):
            fast.same_bytes(a, a.copy(), num_threads=bad)
    assert fast.same_bytes(a, a.copy(), num_threads=2)


def test_packed_weights_only_for_weights_that_cannot_change():
    rng = np.random.default_rng(9)
    T = table256(library.load_multiplier("mul8u_drum4"))
    a = codes((8, 16), rng)
    base = codes((16, 8), rng)
    view = base.view()
    view.setflags(write=False)
    with pytest.raises(ValueError, match="view of a writeable array"):
        fast.factored_weights(view, T)          # base[...] = 3 would change it
    w = base.copy()
    w.setflags(write=False)
    fw = fast.factored_weights(w, T)
    np.testing.assert_array_equal(fast.gemm(a, w, T, np.int32, packed=fw),
                                  ref.gemm(a, w, T, np.int32))
    w.setflags(write=True)
    w[:] = 7
    with pytest.raises(ValueError, match="made writeable since"):
        fast.gemm(a, w, T, np.int32, packed=fw)
    frozen = np.frombuffer(bytes(range(128)), np.uint8).reshape(16, 8)   # immutable memory
    assert fast.factored_weights(frozen, T) is not None


def test_out_overlapping_an_input_is_refused():
    rng = np.random.default_rng(10)
    T = rng.integers(-9, 9, (256, 256)).astype(np.int32)
    buf = np.zeros(2048 * 16 * 8, np.uint8)
    out = buf.view(np.int64).reshape(2048, 16)
    a = buf[:2048 * 64].reshape(2048, 64)
    with pytest.raises(ValueError, match="overlaps an input"):
        fast.gemm(a, codes((64, 16), rng), T, out=out)
    x = codes((1, 4, 4, 16), rng)
    w = codes((1, 1, 16, 4), rng)
    alias = x.view(np.int32).reshape(1, 4, 4, 4)
    with pytest.raises(ValueError, match="overlaps an input"):
        fast.conv2d(x, w, T, out_dtype=np.int32, out=alias)
    f = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        from axkern.quant import QuantParams

        fast.quantize_indices(f, QuantParams(0.5, 3),
                              out=f.view(np.uint8).reshape(-1)[:64].reshape(4, 16))
    # a separate buffer is fine
    y = np.empty((2048, 16), np.int64)
    b = codes((64, 16), rng)
    np.testing.assert_array_equal(fast.gemm(a, b, T, out=y), ref.gemm(a, b, T, np.int64))


def test_reduction_beyond_int32_is_named():
    T = np.zeros((256, 256), np.int32)
    for K in (2**31, 2**31 - 2**16 + 1):     # the second: block counters would pass 2**31 - 1
        a = np.zeros((1, K), np.uint8)       # never touched: the check comes first
        b = np.zeros((K, 1), np.uint8)
        with pytest.raises(ValueError, match=f"K = {K} exceeds 2\\*\\*31 - 2\\*\\*16"):
            fast.gemm(a, b, T)


def test_dequant_values_must_convert_exactly():
    rng = np.random.default_rng(11)
    T = rng.integers(-9, 9, (256, 256)).astype(np.int32)
    a, b = codes((3, 4), rng), codes((4, 2), rng)
    with pytest.raises(TypeError, match="real numbers"):
        fast.gemm(a, b, T, np.int32, dequant={"scale": None})
    with pytest.raises(ValueError, match="must hold integers"):
        fast.gemm(a, b, T, np.int32, dequant={"scale": 1.0, "corr": 1.7})
    with pytest.raises(ValueError, match="finite"):
        fast.gemm(a, b, T, np.int32, dequant={"scale": np.nan})
    total = ref.gemm(a, b, T, np.int64)
    with pytest.raises(ValueError, match="must hold integers"):
        fast.epilogue(total, 1.0, zw=1, sumx=np.full((3, 1), 0.5))
    with pytest.raises(ValueError, match="must hold integers"):
        fast.epilogue(total, 1.0, zw=1, sumx=np.full((3, 1), np.nan))
    with pytest.raises(TypeError, match="real numbers"):
        fast.epilogue(total, None)
    # integral floats are values like any other
    np.testing.assert_array_equal(fast.epilogue(total, 1.0, corr=2.0),
                                  fast.epilogue(total, 1.0, corr=2))
    # 0-d arrays (the float layers' per-tensor zero point) are scalars, checked alike:
    # float32(float64(total - zw sumx + corr) * scale) in NumPy
    sumx = rng.integers(-50, 50, (3, 1))
    expect = ((total.astype(np.int64) - 3 * sumx - 4).astype(np.float64) * 0.5).astype(
        np.float32)
    np.testing.assert_array_equal(
        fast.epilogue(total, np.float64(0.5), zw=np.array(3), sumx=sumx, corr=np.array(-4)),
        expect)
    with pytest.raises(ValueError, match="must hold integers"):
        fast.epilogue(total, 1.0, corr=np.array(1.5))
    with pytest.raises(ValueError, match="finite"):
        fast.epilogue(total, np.array(np.inf))
    with pytest.raises(ValueError, match="finite"):
        fast.gemm(a, b, T, np.int32, dequant={"scale": np.array(np.nan)})


@pytest.mark.parametrize("path", PATHS)
def test_int32_correction_only_where_the_total_fits(path):
    """With a frozen table the stores add the correction to the int32 sums in int32 when K
    max|T| + max|corr| stays below 2**31 (axs_xdeq_init): a correction near 2**31 whose
    totals leave int32 (entries of one sign, the correction of the same) must take the
    float64 form. Against float32(float64(total + corr) * scale) in NumPy, for a GEMM, a
    dense and a depthwise convolution, both output layouts."""
    from axkern.backends import freeze_table

    rng = np.random.default_rng(23)

    def expect(total, corr, scale):
        return ((total.astype(np.int64) + corr).astype(np.float64) * scale).astype(np.float32)

    methods = {1: ("direct", "expand"), 4: ("direct", "depthwise", "expand")}
    for sign in (1, -1):
        T = freeze_table(sign * rng.integers(5, 10, (256, 256)).astype(np.int32))
        big = sign * (2**31 - 20)   # |total| >= 5 K >= 45: the sum leaves int32
        a, b = codes((5, 50), rng), codes((50, 3), rng)
        total = ref.gemm(a, b, T, np.int64)
        for corr in (np.array([big, big // 2, 7]), np.array([3, -5, 7])):
            for method in methods[1]:
                got = fast.gemm(a, b, T, np.int32, path=path, method=method,
                                dequant={"scale": 0.5, "corr": corr})
                np.testing.assert_array_equal(got, expect(total, corr, 0.5),
                                              err_msg=f"{method} {corr}")
        x = codes((2, 6, 7, 4), rng)
        for groups, cout in ((1, 3), (4, 4)):
            w = codes((3, 3, 4 // groups, cout), rng)
            args = ((1, 1), (1, 1, 1, 1), (1, 1), groups, 0)
            total = ref.conv2d(x, w, T, *args, np.int64)
            for corr, method in itertools.product(
                    (np.array([big, 7, big, 1])[:cout], np.arange(cout) - 2), methods[groups]):
                dq = {"scale": 0.25, "corr": corr}
                want = expect(total, corr, 0.25)
                msg = f"groups {groups} {method} corr {corr}"
                got = fast.conv2d(x, w, T, *args, np.int32, path=path, method=method,
                                  dequant=dq)
                np.testing.assert_array_equal(got, want, err_msg=msg)
                got = fast.conv2d(x, w, T, *args, np.int32, path=path, method=method,
                                  dequant=dq, out_format="NCHW")
                np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2), err_msg=msg)


def _wait(pid, seconds):
    """The exit status of child ``pid``, or None (after killing it) if it runs longer."""
    import os
    import signal
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_calls_in_a_forked_child_do_not_hang():
    """After the parent ran a kernel on two threads, a fork() child's call on two threads
    waited forever (GNU OpenMP does not rebuild its pool in the child): a child now runs
    every call on one thread, with the parent's results."""
    import os

    import axkern

    rng = np.random.default_rng(3)
    a = rng.random((128, 96), dtype=np.float32)
    x = rng.random((2, 9, 9, 8), dtype=np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    m = library.load_multiplier("mul8u_trunc8")
    want = (axkern.axmatmul(a, a.T, m, num_threads=2), axkern.axconv2d(x, w, m, num_threads=2),
            axkern.axconv2d(x, w[:, :, :1], m, groups=8, num_threads=None))
    threads = fast.max_threads()
    pid = os.fork()
    if pid == 0:   # the child: no pytest machinery, only an exit status
        ok = 3
        try:
            got = (axkern.axmatmul(a, a.T, m, num_threads=2),
                   axkern.axconv2d(x, w, m, num_threads=2),
                   axkern.axconv2d(x, w[:, :, :1], m, groups=8, num_threads=None))
            same = all(np.array_equal(g, h) for g, h in zip(got, want))
            ok = 0 if same and fast.max_threads() == 1 else 4
        finally:
            os._exit(ok)
    assert _wait(pid, 120) == 0
    assert fast.max_threads() == threads   # the parent keeps its threads
    np.testing.assert_array_equal(axkern.axmatmul(a, a.T, m, num_threads=2), want[0])


def test_pickled_and_copied_multipliers_keep_their_table_frozen_and_shared():
    """Pickle and deepcopy carried the kernels' cached table as an unregistered writeable
    copy: every table cache missed (tune=True 100 - 300 times slower) and the "read-only"
    table was writeable."""
    import copy
    import pickle

    import axkern
    from axkern.backends import table_token

    m = library.load_multiplier("mul8u_drum4")
    x = np.random.default_rng(0).random((2, 6, 6, 4), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    want = axkern.axconv2d(x, w, m, tune=True)
    for m2 in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert m2 == m and not m2.table.flags.writeable
        with pytest.raises(ValueError):
            m2.table[0, 0] = 1
        t = table256(m2)
        assert table_token(t) != 0 and t is table256(m)   # interned: one table, every cache
        np.testing.assert_array_equal(axkern.axconv2d(x, w, m2, tune=True), want)
    # a pickle written before: its state holds the cached table, an unregistered copy
    old = object.__new__(type(m))
    state = dict(m.__dict__, _axkern_table256=np.array(table256(m)))
    state["_table"] = np.array(m.table)
    old.__setstate__(state)
    assert not old.table.flags.writeable and table256(old) is table256(m)


def test_forced_method_refuses_empty_calls_alike():
    """A forced method that cannot serve a call raises the same ValueError whatever the
    call's size: an empty batch, an empty reduction and an empty GEMM used to return an
    empty (or zero) result where a batch of one raised."""
    rng = np.random.default_rng(21)
    sixteen = rng.integers(-100, 100, (256, 256)).astype(np.int32)   # the 16-bit class
    generic = rng.integers(-(1 << 20), 1 << 20, (256, 256)).astype(np.int32)
    drum = table256(library.load_multiplier("mul8u_drum4"))          # frozen, with factors

    def outcome(call):
        try:
            call()
        except ValueError as e:
            return str(e).split(":")[0] + ": refused"
        return "ran"

    seen = set()
    for table in (sixteen, generic, drum):
        for method in ("expand", "depthwise", "factored", "direct", "auto"):
            for dtype in (np.int32, np.int64):
                for groups, cg in ((1, 8), (8, 1)):
                    w = codes((3, 3, cg, 8), rng)
                    runs = [outcome(lambda x=codes((n, 5, 5, 8), rng), w=w: fast.conv2d(
                        x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), groups, 0, dtype,
                        method=method)) for n in (1, 0)]
                    assert runs[0] == runs[1], (method, dtype, groups, runs)
                    seen.add(runs[0])
                a, b = codes((3, 16), rng), codes((16, 5), rng)
                runs = [outcome(lambda a=a, b=b: fast.gemm(a, b, table, dtype, method=method))
                        for a, b in ((a, b), (a[:0], b), (a[:, :0], b[:0]))]
                assert runs[0] == runs[1] == runs[2], (method, dtype, runs)
    assert seen == {"ran", "conv2d: refused"}
