"""The kernel contract: backend registry, helpers, argument checks, threads."""
import threading

import numpy as np
import pytest

from axkern import Multiplier, backends
from axkern.backends import accumulator_dtype, available_backends, get_backend, table256


def test_registry():
    assert {"reference", "cpu"} <= set(available_backends())
    assert get_backend("reference").__name__ == "axkern._reference"
    assert get_backend("cpu").__name__ == backends.BACKENDS["cpu"]
    auto = get_backend("auto")
    assert auto.__name__ in (backends.BACKENDS["cpu"], "axkern.cuda")
    if "cuda" not in available_backends():
        assert auto.__name__ == backends.BACKENDS["cpu"]
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("tpu")
    with pytest.raises(TypeError):
        get_backend(3)
    ref = get_backend("reference")
    assert get_backend(ref) is ref


KERNELS = ["reference", "cpu"]


def test_table256_and_accumulator_dtype():
    m4 = Multiplier.exact(4, signed=True)
    t = table256(m4)
    assert t.shape == (256, 256) and t.dtype == np.int32 and t.flags.c_contiguous
    np.testing.assert_array_equal(t[:16, :16], m4.table)
    assert not t[16:].any() and not t[:, 16:].any()
    assert table256(m4) is t  # cached
    m = Multiplier.exact(8)  # max |T| = 65025
    assert accumulator_dtype(33025, m) == np.int32        # 33025 * 65025 < 2**31
    assert accumulator_dtype(33026, m) == np.int64
    assert accumulator_dtype(10 ** 6, m4) == np.int32     # max |T| = 64
    with pytest.raises(ValueError):
        accumulator_dtype(-1, m)


@pytest.mark.parametrize("name", KERNELS)
def test_contract_gemm_and_conv(name):
    be = get_backend(name)
    rng = np.random.default_rng(0)
    T = rng.integers(-2 ** 31, 2 ** 31, (256, 256)).astype(np.int32)  # int64 sums needed
    a = rng.integers(0, 256, (9, 33), dtype=np.uint8)
    b = rng.integers(0, 256, (33, 17), dtype=np.uint8)
    ref = T[a[:, :, None], b[None, :, :]].astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(be.gemm(a, b, T, np.int64, None), ref)
    with pytest.raises(ValueError, match="overflow"):
        be.gemm(a, b, T, np.int32, None)
    small = (T // 2 ** 16).astype(np.int32)
    r32 = be.gemm(a, b, small, np.int32, 1)
    assert r32.dtype == np.int32
    np.testing.assert_array_equal(r32, small[a[:, :, None], b[None, :, :]].astype(np.int64).sum(axis=1))
    # conv: 1x1 over a 1x1 image is the GEMM of one pixel; pad_code is looked up in padding.
    x = a[:, None, None, :]
    w = b[None, None]
    np.testing.assert_array_equal(be.conv2d(x, w, T, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, np.int64, 2)[:, 0, 0], ref)
    out = be.conv2d(x, w, T, (1, 1), (1, 0, 0, 0), (1, 1), 1, 5, np.int64, None)
    assert out.shape == (9, 2, 1, 17)
    np.testing.assert_array_equal(out[:, 0, 0], np.broadcast_to(T[5, b].astype(np.int64).sum(0), (9, 17)))


@pytest.mark.parametrize("name", KERNELS)
def test_overflow_check_sees_every_table_change(name):
    # max|T| is remembered for read-only tables that own their memory; a writeable table is
    # read afresh on every call, and a new frozen table is never confused with an old one
    be = get_backend(name)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 2), dtype=np.uint8)
    T = np.ones((256, 256), np.int32)
    assert be.gemm(a, b, T, np.int32, None).tolist() == [[4, 4]] * 3
    T[a[0, 0], b[0, 0]] = 2 ** 30   # 4 * 2**30 = 2**32 can overflow int32
    with pytest.raises(ValueError, match="overflow"):
        be.gemm(a, b, T, np.int32, None)
    for big in (False, True):
        F = np.full((256, 256), 2 ** 30 if big else 1, np.int32)
        F.setflags(write=False)
        for _ in range(2):   # the second call takes the remembered bound
            if big:
                with pytest.raises(ValueError, match="overflow"):
                    be.gemm(a, b, F, np.int32, None)
            else:
                assert be.gemm(a, b, F, np.int32, None).tolist() == [[4, 4]] * 3
        del F


@pytest.mark.parametrize("name", KERNELS)
def test_contract_checks(name):
    be = get_backend(name)
    T = np.zeros((256, 256), np.int32)
    a = np.zeros((3, 4), np.uint8)
    b = np.zeros((4, 2), np.uint8)
    with pytest.raises(ValueError, match="256, 256"):
        be.gemm(a, b, np.zeros((16, 16), np.int32), np.int64, None)
    with pytest.raises(TypeError, match="int32"):
        be.gemm(a, b, np.zeros((256, 256), np.int64), np.int64, None)
    with pytest.raises(TypeError, match="uint8"):
        be.gemm(a.astype(np.int32), b, T, np.int64, None)
    with pytest.raises(ValueError, match="K must match"):
        be.gemm(a, b.T.copy(), T, np.int64, None)
    with pytest.raises(TypeError, match="out_dtype"):
        be.gemm(a, b, T, np.float32, None)
    with pytest.raises(ValueError, match="num_threads"):
        be.gemm(a, b, T, np.int64, 0)
    x = np.zeros((1, 4, 4, 6), np.uint8)
    w = np.zeros((3, 3, 3, 4), np.uint8)
    with pytest.raises(ValueError, match="groups"):
        be.conv2d(x, w, T, (1, 1), (0, 0, 0, 0), (1, 1), 4, 0, np.int64, None)
    with pytest.raises(ValueError, match="input channels per group"):
        be.conv2d(x, w, T, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, np.int64, None)
    with pytest.raises(ValueError, match="stride"):
        be.conv2d(x, w, T, (0, 1), (0, 0, 0, 0), (1, 1), 2, 0, np.int64, None)
    with pytest.raises(ValueError, match="dilation"):
        be.conv2d(x, w, T, (1, 1), (0, 0, 0, 0), (1, -1), 2, 0, np.int64, None)
    with pytest.raises(ValueError, match="pad_code"):
        be.conv2d(x, w, T, (1, 1), (0, 0, 0, 0), (1, 1), 2, 256, np.int64, None)
    with pytest.raises(TypeError, match="padding"):
        be.conv2d(x, w, T, (1, 1), (0, 0), (1, 1), 2, 0, np.int64, None)
    with pytest.raises(ValueError, match="4 dimensions"):
        be.conv2d(x[0], w, T, (1, 1), (0, 0, 0, 0), (1, 1), 2, 0, np.int64, None)


def test_cpu_threads_same_result_and_gil_released():
    cpu = backends.get_backend("cpu")
    rng = np.random.default_rng(1)
    T = rng.integers(-1000, 1000, (256, 256)).astype(np.int32)
    x = rng.integers(0, 256, (4, 12, 12, 8), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 3, 8, 12), dtype=np.uint8)
    args = (T, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0, np.int32)
    r1 = cpu.conv2d(x, w, *args, 1)
    np.testing.assert_array_equal(cpu.conv2d(x, w, *args, 2), r1)
    np.testing.assert_array_equal(cpu.conv2d(x, w, *args, None), r1)
    # Several Python threads calling the kernel at once (GIL released) get correct results.
    results = [None] * 3

    def work(i):
        results[i] = cpu.conv2d(x, w, *args, 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, r1)
    assert cpu.max_threads() >= 1


def test_as_multiplier():
    m = backends.as_multiplier(np.zeros((16, 16), int))
    assert m.bits == 4 and not m.signed
    with pytest.raises(ValueError):
        backends.as_multiplier(np.zeros((256, 128), int))
    with pytest.raises(TypeError):
        backends.as_multiplier([[0]])


def test_table_array_keeps_its_multiplier_while_unchanged():
    # The same array gives the same Multiplier (so every cache keyed by its table hits);
    # an array changed in place gives a new one, and the results follow the new entries.
    import axkern

    rng = np.random.default_rng(3)
    t = np.outer(np.arange(256), np.arange(256)) + rng.integers(-9, 10, (256, 256))
    m = backends.as_multiplier(t)
    assert backends.as_multiplier(t) is m and np.array_equal(m.table, t)
    assert backends.as_multiplier(t.copy()) is m              # another array, same entries
    assert backends.as_multiplier(t[:]) is m                  # a fresh view
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    before = axkern.axconv2d(x, w, t)
    t += 1000                                                 # the same memory, new entries
    m2 = backends.as_multiplier(t)
    assert m2 is not m and np.array_equal(m2.table, t) and np.array_equal(m.table, t - 1000)
    after = axkern.axconv2d(x, w, t)
    np.testing.assert_array_equal(after, axkern.axconv2d(x, w, Multiplier(t),
                                                         backend="reference"))
    assert not np.array_equal(after, before)


def test_signed_table_array_read_as_unsigned_warns_once():
    import warnings

    from axkern import load_multiplier
    from axkern.lut import SignednessWarning

    t = np.array(load_multiplier("mul8s_drum4").table)
    with pytest.warns(SignednessWarning, match="raw arrays are unsigned"):
        m = backends.as_multiplier(t)
    assert not m.signed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.as_multiplier(t) is m and backends.as_multiplier(t.copy()) is m
        backends.as_multiplier(np.array(load_multiplier("mul8u_drum4").table))   # no warning


def test_values_beyond_float32_and_bad_out_are_named():
    import axkern

    m = axkern.load_multiplier("mul8u_drum4")
    with pytest.raises(ValueError, match="beyond the float32 range"):
        axkern.axconv2d(np.full((1, 4, 4, 1), 1e39), np.ones((1, 1, 1, 1)), m)
    with pytest.raises(ValueError, match="beyond the float32 range"):
        axkern.axmatmul(np.ones((2, 3)), np.full((3, 2), -1e300), m)
    ro = np.zeros((1, 4, 4, 1), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        axkern.axconv2d(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), m, out=ro)
    with pytest.raises(ValueError, match="not C-contiguous"):
        axkern.axconv2d(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), m,
                        out=np.zeros((1, 4, 4, 2), np.float32)[..., :1])


def test_omp_num_threads_is_honoured():
    import os
    import subprocess
    import sys

    code = "from axkern import _fast; print(_fast.max_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(__file__))  # import the installed axkern
    assert out.stdout.strip() == "3"


def test_frozen_tables_get_tokens_never_reused():
    # freeze_table marks axkern's own tables immutable: a token that the compiled cache of
    # prepared tables trusts without comparing entries. Arrays a caller owns get none, even
    # read-only ones (their flags can be flipped back).
    t = backends.freeze_table(np.arange(65536, dtype=np.int32).reshape(256, 256))
    assert not t.flags.writeable
    tok = backends.table_token(t)
    assert tok > 0 and backends.table_token(t) == tok
    assert backends.table_token(t.copy()) == 0
    user = np.ones((256, 256), np.int32)
    user.setflags(write=False)
    assert backends.table_token(user) == 0
    seen = {tok}
    for _ in range(5):   # freed tables' addresses are reused, their tokens never
        del t
        t = backends.freeze_table(np.zeros((256, 256), np.int32))
        assert backends.table_token(t) not in seen
        seen.add(backends.table_token(t))
    assert backends.table_token(table256(Multiplier.exact(8))) > 0


@pytest.mark.parametrize("method", ["direct", "expand"])
def test_kernel_cache_follows_every_table(method):
    # frozen tables are found by token, others by content; a table freed and a new one at
    # the same address, or a caller's read-only table changed after flipping its flag, must
    # never be served from a stale entry
    fast = pytest.importorskip("axkern._fast")
    ref = get_backend("reference")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 24), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 32), dtype=np.uint8)

    def check(T):
        got = fast.gemm(a, b, T, np.int32, method=method)
        np.testing.assert_array_equal(got, ref.gemm(a, b, T, np.int32, None))

    for i in range(4):
        T = backends.freeze_table(rng.integers(0, 256, (256, 256)).astype(np.int32))
        check(T)
        check(T)
        twin = backends.freeze_table(T.copy())   # same entries, another token
        check(twin)
        check(T)
        del T, twin
    user = rng.integers(0, 256, (256, 256)).astype(np.int32)
    user.setflags(write=False)
    check(user)
    user.setflags(write=True)
    user[a[0, 0], b[0, 0]] += 1
    user.setflags(write=False)
    check(user)


def test_table_array_caches_under_threads(run_contended):
    """Threads turning table arrays into multipliers at once (evicting and inserting in the
    same small caches) never raise, and each gets its own table's multiplier."""
    rng = np.random.default_rng(12)
    tables = [rng.integers(0, 200, (16, 16)) for _ in range(64)]
    errors, wrong = [], []

    def work(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(1500):
                k = int(r.integers(0, 64))
                m = backends.as_multiplier(tables[k].copy())
                if not np.array_equal(m.table, tables[k]):
                    wrong.append(k)
        except Exception as e:   # noqa: BLE001 (any exception is the failure)
            errors.append(repr(e))

    run_contended(*[(work, s) for s in range(3)])
    assert not errors and not wrong
    assert len(backends._ARRAY_CONTENTS) <= 16 and len(backends._ARRAY_MULTIPLIERS) <= 16
