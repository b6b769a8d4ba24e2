"""CUDA backend, verified without a GPU.

Three kinds of tests:

* every ``cuda_src/*.cu`` compiles with nvcc to a cubin for sm_75, sm_80 and sm_90 (what
  PyCUDA does at run time), and defines the entry points :mod:`axkern.cuda` launches;
* the very same kernel sources, compiled by the host C++ compiler through
  ``cuda_src/cuda_host_emu.h`` (blocks in a loop, the threads of a block as an OpenMP team,
  ``__syncthreads`` as its barrier, poisoned dynamic shared memory), run through the launch
  planning of :mod:`axkern.cuda` on small and odd shapes; every entry point is checked bit for
  bit against the reference backend;
* tests that need PyCUDA and a device (marked ``gpu``) skip cleanly without them.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from importlib.resources import files

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import axkern.cuda as axcuda
from axkern.backends import get_backend

SRC = files("axkern._cuda_src")
ARCHS = ("sm_75", "sm_80", "sm_90")
CU_FILES = sorted(p.name for p in SRC.iterdir() if p.name.endswith(".cu"))
_LAUNCHED = set()


def _find_cxx():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


# ------------------------------------------------------------------------------------ nvcc
@pytest.fixture(scope="session")
def nvcc_builds(tmp_path_factory):
    """Compile every (file, arch) pair once, all in parallel; {(file, arch): (rc, log, cubin)}."""
    nvcc = axcuda.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME)")
    out_dir = tmp_path_factory.mktemp("nvcc")
    procs = {}
    for fname in CU_FILES:
        for arch in ARCHS:
            cubin = out_dir / f"{fname}.{arch}.cubin"
            cmd = [nvcc, "-cubin", f"-arch={arch}", "-O3", "-std=c++17", f"-I{SRC}",
                   "-Xptxas", "-v", "-o", str(cubin), str(SRC / fname)]
            procs[fname, arch] = (subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True), cubin)
    results = {}
    for key, (proc, cubin) in procs.items():
        log, _ = proc.communicate(timeout=600)
        results[key] = (proc.returncode, log, cubin.read_bytes() if cubin.exists() else b"")
    return results


def test_kernel_table_matches_sources():
    """axkern.cuda's list of entry points is exactly what the sources define."""
    assert sorted(axcuda.KERNEL_FILES) == CU_FILES
    for fname in CU_FILES:
        text = (SRC / fname).read_text()
        defined = re.findall(r"^AXK_\w+_ENTRY\((\w+),", text, flags=re.M)
        assert sorted(defined) == sorted(axcuda.KERNEL_FILES[fname]), fname


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fname", CU_FILES)
def test_nvcc_compiles(nvcc_builds, fname, arch):
    rc, log, cubin = nvcc_builds[fname, arch]
    assert rc == 0, f"nvcc failed for {fname} ({arch}):\n{log}"
    assert "warning" not in log.lower(), log
    # Register spills would put the accumulators in local memory: a 2-3x slowdown, not a bug,
    # but a regression of the design (launch bounds of 256 threads, one block per SM).
    spills = re.findall(r"(\d+) bytes spill stores", log)
    assert spills and not any(int(n) for n in spills), log
    for kernel in axcuda.KERNEL_FILES[fname]:
        assert kernel.encode() in cubin, f"{kernel} missing from the {arch} cubin of {fname}"


# ------------------------------------------------------------------------- host emulation
@pytest.fixture(scope="session")
def emu_lib(tmp_path_factory):
    cxx = _find_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler (g++/c++) for the CUDA host emulation")
    d = tmp_path_factory.mktemp("emu")
    lines = ["#define AXK_HOST_EMU 1", '#include "cuda_host_emu.h"']
    lines += [f'#include "{f}"' for f in CU_FILES]
    lines += ["AXK_EMU_EXPORT_BEGIN"] + [f"AXK_EMU_KERNEL({k})" for k in axcuda.kernel_names()]
    lines += ["AXK_EMU_EXPORT_END", ""]
    (d / "emu.cpp").write_text("\n".join(lines))
    so = d / "axk_emu.so"
    # -fno-strict-aliasing: the kernels view byte buffers (shared memory, the uint16 table) as
    # 32-bit words, as CUDA code does; without it GCC may reorder those accesses.
    cmd = [cxx, "-std=c++17", "-O1", "-fopenmp", "-fPIC", "-shared", "-fno-strict-aliasing",
           "-Wall", "-Wno-unknown-pragmas", f"-I{SRC}", str(d / "emu.cpp"), "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"host emulation build failed:\n{proc.stderr}"
    lib = ctypes.CDLL(str(so))
    lib.axk_emu_launch.restype = ctypes.c_int
    lib.axk_emu_launch.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 6 + [ctypes.c_size_t,
                                                                              ctypes.c_void_p]
    for f in ("axk_emu_signature", "axk_emu_last_error", "axk_emu_kernel_name"):
        getattr(lib, f).restype = ctypes.c_char_p
    lib.axk_emu_signature.argtypes = [ctypes.c_char_p]
    lib.axk_emu_kernel_name.argtypes = [ctypes.c_int]
    return lib


class EmuDevice:
    """The device interface of axkern.cuda, backed by NumPy memory and the host emulation."""

    GARBAGE = -0x5A5A5A5B  # fills fresh outputs: an element the kernel misses is caught

    def __init__(self, lib, num_sms=3, max_smem_optin=227 * 1024):
        self.lib = lib
        self.limits = axcuda.DeviceLimits(num_sms, max_smem_optin)
        self.launches = []

    def table(self, table, mode):
        if mode == "exact":
            return np.intp(0), 0
        prep = axcuda.prepare_table(table, mode)
        return prep.data, prep.base

    def array(self, v):
        return np.ascontiguousarray(v)

    def empty(self, shape, dtype):
        return np.full(shape, self.GARBAGE, dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype)

    def result(self, out, keep_on_device):
        return out

    def launch(self, plan, args):
        emu_launch(self.lib, plan.kernel, plan.grid, plan.block, plan.shared, args)
        self.launches.append(plan)


def emu_launch(lib, kernel, grid, block, shared, args, on_fault=None):
    """Run one emulated kernel; pointer arguments are NumPy arrays or integer addresses.
    A kernel that fails on the "device" fails the test, or is reported to ``on_fault``."""
    sig = lib.axk_emu_signature(kernel.encode())
    assert sig is not None, f"{kernel} is not in the emulation library"
    sig = sig.decode()
    assert len(sig) == len(args), (kernel, sig, args)
    holders = []
    for code, a in zip(sig, args):
        if code == "p":
            addr = a.ctypes.data if isinstance(a, np.ndarray) else int(a)
            holders.append(ctypes.c_void_p(addr))
        elif code == "i":
            assert isinstance(a, np.int32), (kernel, a)
            holders.append(ctypes.c_int32(int(a)))
        elif code == "q":
            assert isinstance(a, np.int64), (kernel, a)
            holders.append(ctypes.c_int64(int(a)))
        else:
            raise AssertionError(f"unexpected kernel argument type in {sig}")
    params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
    rc = lib.axk_emu_launch(kernel.encode(), *grid, *block, shared, params)
    if rc != 0 and on_fault is not None:
        on_fault(f"{kernel}: {lib.axk_emu_last_error().decode()}")
        return
    assert rc == 0, f"{kernel}: {lib.axk_emu_last_error().decode()}"
    _LAUNCHED.add(kernel)


@pytest.fixture
def emu(emu_lib):
    return EmuDevice(emu_lib)


REF = get_backend("reference")
RNG = np.random.default_rng(20261122)


def _approx_table(kind):
    """Tables whose every entry matters: random perturbations of the exact product."""
    a = np.arange(256)
    if kind == "unsigned":
        t = np.outer(a, a) + RNG.integers(-300, 300, (256, 256))
        t[0, 0] = 7  # T[0, 0] != 0, so a masked reduction step that adds T[0, 0] is caught
        return t.clip(0, 65535).astype(np.int32)
    if kind == "signed":
        v = np.where(a >= 128, a - 256, a)
        return (np.outer(v, v) + RNG.integers(-50, 50, (256, 256))).astype(np.int32)
    if kind == "offset":  # narrow span, huge base: int64 sums through the 16-bit image
        return (np.int32(1 << 30) - RNG.integers(0, 65536, (256, 256))).astype(np.int32)
    if kind == "wide":  # spans far more than 16 bits: only the int32 image can hold it
        return RNG.integers(-(1 << 31), (1 << 31) - 1, (256, 256), dtype=np.int64).astype(np.int32)
    raise ValueError(kind)


TABLES = {k: _approx_table(k) for k in ("unsigned", "signed", "offset", "wide")}

# (mode, out dtype, table kind): every table-based entry point, with the accumulator type the
# table needs (int32 sums only where K * max|T| < 2**31 holds for the shapes below).
VARIANTS = [
    ("smem16", np.int32, "unsigned"),
    ("smem16", np.int32, "signed"),
    ("smem16", np.int64, "offset"),
    ("ldg32", np.int32, "signed"),
    ("ldg32", np.int64, "wide"),
    ("ldg32", np.int64, "unsigned"),
]


def _codes(shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


GEMM_SHAPES = [(1, 1, 1), (5, 3, 7), (70, 33, 50), (64, 16, 64), (300, 40, 130), (20, 17, 20),
               (257, 5, 3)]


@pytest.mark.parametrize("mode,out_dtype,kind", VARIANTS)
def test_emulated_gemm(emu, mode, out_dtype, kind):
    table = TABLES[kind]
    for M, K, N in GEMM_SHAPES:
        a, b = _codes((M, K)), _codes((K, N))
        got = axcuda.gemm_on(emu, a, b, table, out_dtype, mode=mode)
        want = REF.gemm(a, b, table, np.int64)
        assert got.dtype == out_dtype and got.shape == (M, N)
        np.testing.assert_array_equal(got.astype(np.int64), want, err_msg=f"{(M, K, N)}")
    acc = "i32" if out_dtype == np.int32 else "i64"
    assert {p.kernel for p in emu.launches} == {f"axk_gemm_{acc}_{mode}"}


def test_emulated_gemm_int64_wraps_exactly(emu):
    """Sums far beyond 2**31 (K = 3000 near-maximal entries) stay exact in int64."""
    table = TABLES["offset"]
    a, b = _codes((9, 3000)), _codes((3000, 5))
    want = REF.gemm(a, b, table, np.int64)
    assert np.abs(want).max() > 1 << 40
    for mode in ("smem16", "ldg32"):
        np.testing.assert_array_equal(axcuda.gemm_on(emu, a, b, table, np.int64, mode=mode), want)


@pytest.mark.parametrize("num_sms", [1, 1000])
def test_emulated_gemm_grid_sizes(emu_lib, num_sms):
    """Persistent blocks (1 block for many tiles) and one block per tile give the same sums."""
    dev = EmuDevice(emu_lib, num_sms=num_sms)
    a, b = _codes((150, 20)), _codes((20, 70))
    got = axcuda.gemm_on(dev, a, b, TABLES["unsigned"], np.int32)
    np.testing.assert_array_equal(got, REF.gemm(a, b, TABLES["unsigned"], np.int32))
    assert dev.launches[-1].grid[0] == (1 if num_sms == 1 else 3 * 2)


def test_emulated_exact_gemm(emu):
    a, b = _codes((37, 45)), _codes((45, 29))
    got = axcuda.gemm_on(emu, a, b, TABLES["unsigned"], np.int32, mode="exact")
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


def test_emulated_gemm_empty(emu):
    t = TABLES["unsigned"]
    assert axcuda.gemm_on(emu, _codes((0, 4)), _codes((4, 3)), t, np.int32).shape == (0, 3)
    z = axcuda.gemm_on(emu, _codes((3, 0)), _codes((0, 2)), t, np.int64)
    np.testing.assert_array_equal(z, np.zeros((3, 2), np.int64))


# (N, H, W, C, KH, KW, COUT, stride, padding (t, b, l, r), dilation, groups, pad_code)
CONV_CASES = [
    (2, 7, 6, 5, 3, 3, 9, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0),          # SAME 3x3
    (1, 9, 8, 4, 3, 3, 20, (2, 2), (0, 1, 1, 0), (1, 1), 1, 137),       # stride 2, TF SAME split
    (2, 5, 5, 8, 1, 1, 12, (1, 1), (0, 0, 0, 0), (1, 1), 1, 3),         # 1x1
    (3, 5, 5, 3, 5, 5, 6, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0),          # full-size filter
    (1, 10, 9, 3, 3, 2, 7, (1, 2), (2, 2, 1, 1), (2, 2), 1, 255),       # dilation, odd sizes
    (1, 6, 7, 6, 3, 3, 34, (1, 1), (1, 1, 1, 1), (1, 1), 2, 9),         # 2 groups, 17 per group
    (2, 12, 12, 2, 3, 3, 70, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0),       # several M and N tiles
    (1, 4, 4, 2, 3, 3, 3, (2, 1), (2, 0, 0, 2), (1, 2), 1, 200),        # padding > needed
]


def _run_conv(dev, case, table, out_dtype, mode, depthwise=None):
    N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups, pad_code = case
    x, w = _codes((N, H, W, C)), _codes((KH, KW, C // groups, COUT))
    got = axcuda.conv2d_on(dev, x, w, table, stride, padding, dilation, groups, pad_code,
                           out_dtype, mode=mode, depthwise=depthwise)
    want = REF.conv2d(x, w, table, stride, padding, dilation, groups, pad_code, np.int64)
    assert got.dtype == out_dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.astype(np.int64), want, err_msg=str(case))
    return x, w, got


@pytest.mark.parametrize("mode,out_dtype,kind", VARIANTS)
def test_emulated_conv2d(emu, mode, out_dtype, kind):
    for case in CONV_CASES:
        _run_conv(emu, case, TABLES[kind], out_dtype, mode)
    assert {p.kernel.split("_")[1] for p in emu.launches} == {"conv2d"}


DW_CASES = [
    (2, 7, 6, 5, 3, 3, 5, (1, 1), (1, 1, 1, 1), (1, 1), 5, 0),          # depthwise 3x3
    (1, 9, 8, 4, 3, 3, 8, (2, 2), (0, 1, 1, 0), (1, 1), 4, 77),         # multiplier 2, stride 2
    (1, 8, 9, 3, 5, 3, 3, (1, 1), (4, 4, 2, 2), (2, 2), 3, 1),          # dilation
    (2, 4, 4, 6, 4, 4, 6, (1, 1), (0, 0, 0, 0), (1, 1), 6, 0),          # full-size filter
    (1, 3, 5, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0),          # 1x1, one channel
]


@pytest.mark.parametrize("mode,out_dtype,kind", VARIANTS)
def test_emulated_depthwise(emu, mode, out_dtype, kind):
    for case in DW_CASES:
        _run_conv(emu, case, TABLES[kind], out_dtype, mode)
    assert {p.kernel.split("_")[1] for p in emu.launches} == {"dwconv2d"}


def test_depthwise_and_grouped_igemm_agree(emu):
    """A depthwise layer through the implicit GEMM (one tile per group) gives the same sums."""
    case = DW_CASES[1]
    _run_conv(emu, case, TABLES["signed"], np.int32, "smem16", depthwise=False)
    assert emu.launches[-1].kernel == "axk_conv2d_i32_smem16"


def test_emulated_exact_conv(emu):
    N, H, W, C, KH, KW, COUT = 2, 6, 7, 5, 3, 3, 11
    x, w = _codes((N, H, W, C)), _codes((KH, KW, C, COUT))
    got = axcuda.conv2d_on(emu, x, w, TABLES["unsigned"], (1, 1), (1, 1, 1, 1), (1, 1), 1, 0,
                           np.int32, mode="exact")
    # Independent: zero padding, then a sum of shifted products of the codes.
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((N, H, W, COUT), np.int64)
    for ky in range(KH):
        for kx in range(KW):
            want += xp[:, ky:ky + H, kx:kx + W, :] @ w[ky, kx].astype(np.int64)
    np.testing.assert_array_equal(got, want)


def test_automatic_mode_choice(emu_lib):
    big = EmuDevice(emu_lib, max_smem_optin=227 * 1024)   # sm_90
    small = EmuDevice(emu_lib, max_smem_optin=64 * 1024)  # sm_75: the table does not fit
    a, b = _codes((10, 12)), _codes((12, 9))
    for dev, kind, expect in ((big, "unsigned", "smem16"), (big, "wide", "ldg32"),
                              (small, "unsigned", "ldg32")):
        out_dtype = np.int64 if kind == "wide" else np.int32
        got = axcuda.gemm_on(dev, a, b, TABLES[kind], out_dtype)
        np.testing.assert_array_equal(got, REF.gemm(a, b, TABLES[kind], out_dtype))
        assert dev.launches[-1].kernel.endswith(expect)


def test_plans_fit_the_devices():
    """Every plan fits sm_80's opt-in limit (163 KiB) with the 16-bit table in shared memory."""
    a100 = axcuda.DeviceLimits(108, 163 * 1024)
    for ncols in (1, 16, 17, 32, 33, 64, 1000):
        for conv in (False, True):
            plan = axcuda.plan_igemm(1000, ncols, 1, np.int32, TABLES["unsigned"], a100, conv)
            assert plan.kernel.endswith("smem16") and plan.shared <= a100.max_smem_optin
            assert plan.block[0] * plan.block[1] == axcuda.THREADS


def test_bad_input(emu):
    t = TABLES["unsigned"]
    # int32 sums that could overflow are refused, as on the CPU backends
    big = np.full((256, 256), 1 << 20, np.int32)
    with pytest.raises(ValueError, match="int32 can overflow"):
        axcuda.gemm_on(emu, _codes((2, 4096)), _codes((4096, 2)), big, np.int32)
    with pytest.raises(ValueError, match="int32 can overflow"):
        axcuda.conv2d_on(emu, _codes((1, 4, 4, 512)), _codes((3, 3, 512, 2)), big, (1, 1),
                         (1, 1, 1, 1), (1, 1), 1, 0, np.int32)
    got = axcuda.gemm_on(emu, _codes((2, 4096)), _codes((4096, 2)), big, np.int64)
    np.testing.assert_array_equal(got, np.full((2, 2), 4096 << 20, np.int64))
    with pytest.raises(TypeError, match="uint8"):
        axcuda.gemm_on(emu, np.zeros((2, 3), np.int32), _codes((3, 2)), t, np.int32)
    with pytest.raises(ValueError, match="K must match"):
        axcuda.gemm_on(emu, _codes((2, 3)), _codes((4, 2)), t, np.int32)
    with pytest.raises(ValueError, match=r"\(256, 256\)"):
        axcuda.gemm_on(emu, _codes((2, 3)), _codes((3, 2)), t[:16, :16].copy(), np.int32)
    with pytest.raises(TypeError, match="int32 or int64"):
        axcuda.gemm_on(emu, _codes((2, 3)), _codes((3, 2)), t, np.float32)
    with pytest.raises(ValueError, match="65536"):
        axcuda.gemm_on(emu, _codes((2, 3)), _codes((3, 2)), TABLES["wide"], np.int64, mode="smem16")
    with pytest.raises(ValueError, match="groups"):
        axcuda.conv2d_on(emu, _codes((1, 4, 4, 3)), _codes((3, 3, 1, 4)), t, 1, (0,) * 4, 1, 2, 0,
                         np.int32)
    with pytest.raises(ValueError, match="pad_code"):
        axcuda.conv2d_on(emu, _codes((1, 4, 4, 3)), _codes((3, 3, 3, 4)), t, 1, (0,) * 4, 1, 1,
                         256, np.int32)
    with pytest.raises(TypeError, match="GPUArray"):
        axcuda.gemm_on(emu, [[1, 2]], _codes((2, 2)), t, np.int32)


def test_emulation_catches_short_shared_memory(emu):
    """A launch with less shared memory than the kernel's layout fails instead of overrunning."""
    plan = axcuda.plan_igemm(8, 8, 1, np.int32, TABLES["unsigned"], emu.limits, conv=False)
    short = axcuda.Launch(plan.kernel, plan.grid, plan.block, plan.shared - 16)
    a, b = _codes((8, 4)), _codes((4, 8))
    tab, base = emu.table(TABLES["unsigned"], "smem16")
    args = [a, b, tab, np.zeros((8, 8), np.int32), np.int32(8), np.int32(8), np.int32(4),
            np.int64(base)]
    with pytest.raises(AssertionError, match="dynamic shared memory"):
        emu.launch(short, args)


@settings(max_examples=15, deadline=None)
@given(st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
       st.tuples(st.integers(1, 9), st.integers(1, 20), st.sampled_from([1, 2, 3])),
       st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(1, 2),
                 st.integers(1, 2), st.integers(1, 2)),
       st.tuples(*[st.integers(0, 3)] * 4), st.integers(0, 255),
       st.sampled_from([None, "ldg32"]), st.booleans())
def test_emulated_conv2d_property(emu_lib, nhw, channels, filt, padding, pad_code, mode, i64):
    """Random geometries (single output pixels, padding wider than the filter, ...)."""
    from hypothesis import assume

    from axkern.backends import conv_output_size

    N, H, W = nhw
    cg, og, groups = channels
    KH, KW, sh, sw, dh, dw = filt
    OH, OW = conv_output_size(H, W, KH, KW, (sh, sw), padding, (dh, dw))
    assume(OH > 0 and OW > 0)
    case = (N, H, W, cg * groups, KH, KW, og * groups, (sh, sw), padding, (dh, dw), groups,
            pad_code)
    kind, out_dtype = ("offset", np.int64) if i64 else ("signed", np.int32)
    _run_conv(EmuDevice(emu_lib, num_sms=2), case, TABLES[kind], out_dtype, mode)


def test_every_entry_point_emulated(emu_lib):
    """Runs last in this file: each kernel of every source ran in the emulation above."""
    exported = []
    while (name := emu_lib.axk_emu_kernel_name(len(exported))) is not None:
        exported.append(name.decode())
    assert exported == axcuda.kernel_names()
    missing = set(exported) - _LAUNCHED
    if missing and len(_LAUNCHED) < 3:
        pytest.skip("run with the whole file to check coverage of the entry points")
    assert not missing, f"entry points never run in the emulation: {sorted(missing)}"


# ---------------------------------------------------------------------- without PyCUDA/GPU
def test_bench_exits_clearly_without_cuda():
    if axcuda.is_available()[0]:
        pytest.skip("a CUDA device is usable here")
    script = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "bench_cuda.py")
    if not os.path.isfile(script):
        pytest.skip("tools/ is not next to the tests")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no CUDA here" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_axkern_needs_no_pycuda():
    code = "import sys, axkern, axkern.cuda, axkern.backends; print('pycuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(__file__))  # the installed axkern
    assert out.stdout.strip() == "False"


def test_cuda_backend_raises_clear_error():
    ok, reason = axcuda.is_available()
    if ok:
        pytest.skip(f"a CUDA device is usable here: {reason}")
    backend = get_backend("cuda")
    a, b = _codes((2, 3)), _codes((3, 2))
    with pytest.raises(axcuda.CudaUnavailableError) as info:
        backend.gemm(a, b, TABLES["unsigned"], np.int32)
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert ("PyCUDA is not installed" in msg and 'pip install "axkern[cuda]"' in msg) or \
        "device" in msg or "driver" in msg
    with pytest.raises(axcuda.CudaUnavailableError):
        backend.conv2d(_codes((1, 3, 3, 1)), _codes((1, 1, 1, 1)), TABLES["unsigned"], (1, 1),
                       (0, 0, 0, 0), (1, 1), 1, 0, np.int32)
    # "auto" never picks a backend that cannot run.
    assert get_backend("auto").__name__ != "axkern.cuda"


# ------------------------------------------------- the PyCUDA glue, on an emulated device
class _FakeAlloc:
    """Device memory of the fake PyCUDA (a DeviceAllocation / PooledDeviceAllocation): host
    bytes, garbage-filled, with an address."""

    def __init__(self, nbytes):
        assert nbytes > 0, "PyCUDA allocates nothing for an empty array"
        self.buf = np.full(int(nbytes), 0xA5, np.uint8)

    def __int__(self):
        return self.buf.ctypes.data


def ptxas_registers(log):
    """{kernel: registers per thread} from the ``-Xptxas -v`` output of one nvcc build."""
    return {k: int(n) for k, n in re.findall(
        r"Compiling entry function '(\w+)'.*?Used (\d+) registers", log, flags=re.S)}


def _fake_pycuda(emu_lib, count=1, optin=227 * 1024):
    """Modules standing in for pycuda (the API calls axkern.cuda makes, checked against PyCUDA
    2026.1's sources) whose kernels run in the host emulation. Where PyCUDA is strict, so is the
    stand-in: the current context is per thread (pushed by importing ``pycuda.autoprimaryctx``
    in the importing thread only); the launch packs arguments as ``_build_arg_buf`` does (NumPy
    scalars, allocations, objects with ``gpudata``, a TypeError for anything else, plain ints
    included); reshape/slices of a GPUArray hold a plain int ``gpudata``, foreign memory a
    ``PointerHolderBase``, an empty array None (and ``fill`` of it fails); a launch reports a
    kernel fault asynchronously, at the next copy to the host."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import threading
    import types

    def module(name):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    pkg, drv, gpuarray, compiler, tools = (module(n) for n in (
        "pycuda", "pycuda.driver", "pycuda.gpuarray", "pycuda.compiler", "pycuda.tools"))
    pkg.__path__ = []  # a package: pycuda.autoprimaryctx is imported (once) through _AutoFinder
    drv.device_attribute = types.SimpleNamespace(
        MULTIPROCESSOR_COUNT="sms", MAX_SHARED_MEMORY_PER_BLOCK_OPTIN="optin",
        MAX_SHARED_MEMORY_PER_BLOCK="smem", MAX_REGISTERS_PER_MULTIPROCESSOR="regs_sm",
        MAX_SHARED_MEMORY_PER_MULTIPROCESSOR="smem_sm", RESERVED_SHARED_MEMORY_PER_BLOCK="resv",
        MAX_THREADS_PER_MULTIPROCESSOR="threads_sm", MAX_BLOCKS_PER_MULTIPROCESSOR="blocks_sm")
    drv.function_attribute = types.SimpleNamespace(MAX_DYNAMIC_SHARED_SIZE_BYTES="maxdyn",
                                                   NUM_REGS="regs", SHARED_SIZE_BYTES="static")
    drv.init = lambda: None
    attrs = {"sms": 3, "optin": optin, "smem": 48 * 1024, "regs_sm": 65536,
             "smem_sm": 228 * 1024, "resv": 1024, "threads_sm": 2048, "blocks_sm": 32}

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class LaunchError(Error):
        pass

    drv.Error, drv.LogicError, drv.LaunchError = Error, LogicError, LaunchError
    state = types.SimpleNamespace(fault=None)   # a kernel fault: sticky, as in CUDA
    stacks = threading.local()                  # the context stack of each thread

    def stack():
        if not hasattr(stacks, "s"):
            stacks.s = []
        return stacks.s

    class Device:
        def __init__(self, i=0):
            assert i < count

        count_ = staticmethod(lambda: count)
        compute_capability = lambda self: (9, 0)  # noqa: E731
        name = lambda self: "emulated device"  # noqa: E731
        get_attribute = lambda self, a: attrs[a]  # noqa: E731

        def retain_primary_context(self):
            return primary

    Device.count = Device.count_

    class Context:
        handle = 0x1234

        def push(self):
            stack().append(self)

        @staticmethod
        def pop():
            stack().pop()

        @staticmethod
        def get_current():
            return stack()[-1] if stack() else None

        @staticmethod
        def get_device():
            if not stack():
                raise LogicError("cuCtxGetDevice failed: invalid device context")
            return Device(0)

    primary = Context()
    drv.Device, drv.Context = Device, Context

    class PointerHolderBase:
        """Foreign device memory (PyTorch interop): only get_pointer()."""

        def get_pointer(self):
            raise NotImplementedError

    drv.PointerHolderBase = PointerHolderBase

    def address(gpudata):
        if isinstance(gpudata, PointerHolderBase):
            return int(gpudata.get_pointer())
        return int(gpudata)

    class PackError(Exception):
        """pycuda._pvt_struct.error: packing None as a pointer (PyCUDA issue #373)."""

    class GPUArray:
        def __init__(self, shape, dtype, allocator=None, base=None, gpudata=None):
            Context.get_device()  # PyCUDA's splay(): needs a current context
            self.shape = tuple(int(n) for n in shape)
            self.dtype = np.dtype(dtype)
            self.size = int(np.prod(self.shape))
            self.nbytes = self.size * self.dtype.itemsize
            self.allocator = allocator or _FakeAlloc
            if gpudata is None:
                self.gpudata = self.allocator(self.nbytes) if self.size else None
            else:
                self.gpudata = gpudata
            self.base = base
            self.flags = types.SimpleNamespace(c_contiguous=True)

        def _host(self):
            """The memory this array addresses, as a NumPy view."""
            if self.gpudata is None:
                return np.empty(self.shape, self.dtype)
            buf = (ctypes.c_char * self.nbytes).from_address(address(self.gpudata))
            return np.frombuffer(buf, self.dtype).reshape(self.shape)

        def get(self):
            if state.fault is not None:
                raise LaunchError("cuMemcpyDtoH failed: unspecified launch failure")
            return self._host().copy()

        def fill(self, value):
            if self.gpudata is None:
                raise PackError("required argument is not an integer")
            self._host()[...] = value
            return self

        def reshape(self, *shape):
            if isinstance(shape[0], (tuple, list)):
                shape = tuple(shape[0])
            if shape == self.shape:
                return self
            assert int(np.prod(shape)) == self.size
            return GPUArray(shape, self.dtype, self.allocator, base=self,
                            gpudata=int(self.gpudata))

        def ravel(self):
            return self.reshape(self.size)

        def __getitem__(self, index):
            # Slices of the first axis (what a batch split does): contiguous, with an offset.
            assert isinstance(index, slice), "the stand-in slices the first axis only"
            start, stop, step = index.indices(self.shape[0])
            assert step == 1
            row = self.nbytes // self.shape[0] if self.shape[0] else 0
            return GPUArray((max(stop - start, 0),) + self.shape[1:], self.dtype, self.allocator,
                            base=self, gpudata=int(self.gpudata) + start * row)

    def to_gpu(ary, allocator=None):
        g = GPUArray(ary.shape, ary.dtype, allocator)
        if g.size:
            g._host()[...] = ary
        gpuarray.uploads.append(ary.nbytes)
        return g

    def empty(shape, dtype, allocator=None):
        return GPUArray(shape, dtype, allocator)

    def zeros(shape, dtype, allocator=None):
        return GPUArray(shape, dtype, allocator).fill(np.zeros((), dtype))

    gpuarray.GPUArray, gpuarray.empty = GPUArray, empty
    gpuarray.to_gpu, gpuarray.zeros, gpuarray.uploads = to_gpu, zeros, []

    class DeviceMemoryPool:
        def allocate(self, nbytes):
            return _FakeAlloc(nbytes)

    tools.DeviceMemoryPool = DeviceMemoryPool

    def pack(args):
        """PyCUDA's _build_arg_buf: the argument types it accepts, as the values it packs."""
        out = []
        for i, arg in enumerate(args):
            if isinstance(arg, np.number):
                out.append(arg)
            elif isinstance(arg, _FakeAlloc):
                out.append(int(arg))
            else:
                assert not isinstance(arg, (np.ndarray, np.void)), "packed by value"
                try:
                    gpudata = np.uintp(arg.gpudata)
                except AttributeError:
                    raise TypeError("invalid type on parameter #%d (0-based)" % i) from None
                out.append(int(gpudata))
        return out

    def fault(msg):
        state.fault = msg

    class Function:
        def __init__(self, name):
            self.name, self.max_dynamic = name, 48 * 1024

        def set_attribute(self, attr, value):
            assert attr == "maxdyn" and value <= attrs["optin"]
            self.max_dynamic = value

        def get_attribute(self, attr):
            # Registers: ptxas' count where a test supplies the nvcc builds' (about what
            # nvcc 13 reports for sm_90 otherwise).
            return {"regs": compiler.num_regs.get(self.name, 128), "static": 0}[attr]

        num_regs = property(lambda self: self.get_attribute("regs"))
        shared_size_bytes = property(lambda self: self.get_attribute("static"))

        def __call__(self, *args, grid, block, shared=0):
            args = pack(args)
            if Context.get_current() is None:
                raise LogicError("cuLaunchKernel failed: invalid device context")
            if shared > self.max_dynamic:  # what cuLaunchKernel rejects on a real device
                raise LogicError("cuLaunchKernel failed: invalid argument")
            compiler.launches.append((self.name, tuple(grid)))
            emu_launch(emu_lib, self.name, grid, block, shared, args, on_fault=fault)

    class SourceModule:
        def __init__(self, source, nvcc="nvcc", no_extern_c=False, arch=None, include_dirs=(),
                     options=None):
            assert no_extern_c and arch == "sm_90" and os.path.isfile(nvcc)
            assert any(os.path.isfile(os.path.join(d, "axk_common.cuh")) for d in include_dirs)
            Context.get_device()  # modules load into the current context
            self.source = source
            compiler.compiled.append(source)

        def get_function(self, name):
            assert f"({name}," in self.source, name
            return Function(name)

    compiler.SourceModule, compiler.compiled, compiler.launches = SourceModule, [], []
    compiler.num_regs = {}

    class _AutoLoader(importlib.abc.Loader):
        """pycuda.autoprimaryctx: retains the primary context and pushes it, in the importing
        thread only (an import in any other thread finds the module already loaded)."""

        def create_module(self, spec):
            return None

        def exec_module(self, mod):
            mod.context = Device(0).retain_primary_context()
            mod.context.push()
            mod.device = mod.context.get_device()

    class _AutoFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "pycuda.autoprimaryctx":
                return importlib.util.spec_from_loader(name, _AutoLoader())
            return None

    pkg.driver, pkg.gpuarray, pkg.compiler, pkg.tools = drv, gpuarray, compiler, tools
    pkg.finder = _AutoFinder()
    return {"pycuda": pkg, "pycuda.driver": drv, "pycuda.gpuarray": gpuarray,
            "pycuda.compiler": compiler, "pycuda.tools": tools}


@pytest.fixture
def fake_pycuda(emu_lib, monkeypatch):
    if axcuda.find_nvcc() is None:
        pytest.skip("nvcc not found: is_available() is False without it")
    mods = _fake_pycuda(emu_lib)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(sys, "meta_path", [mods["pycuda"].finder] + sys.meta_path)
    monkeypatch.setattr(axcuda, "_probe_result", None)
    monkeypatch.setattr(axcuda, "_devices", {})
    monkeypatch.setattr(axcuda, "_thread_ctx", __import__("threading").local(), raising=False)
    yield mods
    sys.modules.pop("pycuda.autoprimaryctx", None)


def test_pycuda_glue_on_emulated_device(fake_pycuda):
    ok, reason = axcuda.is_available()
    assert ok, reason
    assert get_backend("auto") is axcuda
    table = TABLES["unsigned"]
    a, b = _codes((45, 30)), _codes((30, 20))
    got = get_backend("cuda").gemm(a, b, table, np.int32, 2)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, REF.gemm(a, b, table, np.int32))
    # The table went up once (uint16 image) and is reused; the module was compiled once.
    uploads = fake_pycuda["pycuda.gpuarray"].uploads
    assert axcuda.TABLE_ENTRIES * 2 in uploads
    n_uploads = len(uploads)
    np.testing.assert_array_equal(axcuda.gemm(a, b, table.copy(), np.int32), got)
    assert len(uploads) == n_uploads + 2  # a and b only
    # Device arrays in, device array out.
    ga = fake_pycuda["pycuda.gpuarray"].to_gpu(a)
    out = axcuda.gemm(ga, b, table, np.int64)
    assert isinstance(out, fake_pycuda["pycuda.gpuarray"].GPUArray)
    np.testing.assert_array_equal(out.get(), REF.gemm(a, b, table, np.int64))
    for case in (CONV_CASES[1], DW_CASES[1], CONV_CASES[5]):
        N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups, pad_code = case
        x, w = _codes((N, H, W, C)), _codes((KH, KW, C // groups, COUT))
        np.testing.assert_array_equal(
            axcuda.conv2d(x, w, table, stride, padding, dilation, groups, pad_code, np.int32),
            REF.conv2d(x, w, table, stride, padding, dilation, groups, pad_code, np.int32))
    assert len(fake_pycuda["pycuda.compiler"].compiled) == 2  # each source once


def test_pycuda_without_device(emu_lib, monkeypatch):
    for name, mod in _fake_pycuda(emu_lib, count=0).items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(axcuda, "_probe_result", None)
    assert axcuda.is_available() == (False, "PyCUDA is installed but no CUDA device was found")
    with pytest.raises(axcuda.CudaUnavailableError, match="no CUDA device"):
        axcuda.gemm(_codes((2, 2)), _codes((2, 2)), TABLES["unsigned"], np.int32)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # import fails: no libcuda
    monkeypatch.setattr(axcuda, "_probe_result", None)
    with pytest.raises(axcuda.CudaUnavailableError, match="cannot load the CUDA driver"):
        axcuda.require()


def test_pycuda_views_and_foreign_memory(fake_pycuda):
    """Slices and reshapes of a GPUArray hold a plain int ``gpudata``, foreign memory a
    PointerHolderBase: PyCUDA's packer refuses both as they are; the launch passes pointers."""
    gpuarray, drv = fake_pycuda["pycuda.gpuarray"], fake_pycuda["pycuda.driver"]
    __import__("pycuda.autoprimaryctx")   # what PyCUDA code does before making arrays
    table = TABLES["unsigned"]
    N, H, W, C, KH, KW, COUT, stride, padding, dilation, groups, pad_code = CONV_CASES[1]
    x, w = _codes((12, H, W, C)), _codes((KH, KW, C, COUT))
    gx = gpuarray.to_gpu(x)
    for lo, hi in ((0, 8), (4, 9)):   # a batch split: offset 0 and an offset into the array
        part = gx[lo:hi]
        assert type(part.gpudata) is int
        got = axcuda.conv2d(part, w, table, stride, padding, dilation, groups, pad_code, np.int32)
        np.testing.assert_array_equal(got.get(), REF.conv2d(x[lo:hi], w, table, stride, padding,
                                                            dilation, groups, pad_code, np.int32))
    M, K, N = 37, 21, 19
    a, b = _codes((M, K)), _codes((K, N))
    ga = gpuarray.to_gpu(a.ravel()).reshape(M, K)
    assert type(ga.gpudata) is int

    class Foreign(drv.PointerHolderBase):   # e.g. a torch tensor's memory
        def __init__(self, arr):
            self.arr = arr

        def get_pointer(self):
            return self.arr.ctypes.data

    gb = gpuarray.GPUArray((K, N), np.uint8, gpudata=Foreign(b.copy()))
    for lhs, rhs in ((ga, b), (a, gb), (ga, gb)):
        np.testing.assert_array_equal(axcuda.gemm(lhs, rhs, table, np.int64).get(),
                                      REF.gemm(a, b, table, np.int64))
    # The stand-in is as strict as PyCUDA: a plain int where a pointer goes is refused.
    fn = axcuda._device()._function("axk_gemm_i32_exact", 0)
    with pytest.raises(TypeError, match="invalid type on parameter #0"):
        fn(int(ga.gpudata), np.uintp(0), np.intp(0), np.uintp(0), np.int32(1), np.int32(1),
           np.int32(1), np.int64(0), grid=(1, 1, 1), block=(4, 64, 1))


@pytest.mark.parametrize("first", ["main", "worker"])
def test_pycuda_from_another_thread(fake_pycuda, first):
    """Context stacks are per thread: autoprimaryctx makes the primary context current only in
    the thread that imports it; a call from any other thread must make it current there too."""
    from concurrent.futures import ThreadPoolExecutor

    table = TABLES["unsigned"]
    a, b = _codes((30, 20)), _codes((20, 9))
    want = REF.gemm(a, b, table, np.int32)
    with ThreadPoolExecutor(1) as pool:
        calls = [lambda: axcuda.gemm(a, b, table, np.int32),
                 lambda: pool.submit(axcuda.gemm, a, b, table, np.int32).result()]
        if first == "worker":
            calls.reverse()
        for call in calls + calls:
            np.testing.assert_array_equal(call(), want)
    # One state for the device (its primary context), whichever thread called: compiled once.
    assert list(axcuda._devices) == [0x1234]
    assert len(fake_pycuda["pycuda.compiler"].compiled) == 1


def test_pycuda_empty_outputs(fake_pycuda):
    """Empty results launch nothing (PyCUDA's zeros of an empty array launches its fill kernel
    with a None pointer and fails); empty inputs of non-empty outputs pass a null pointer."""
    import axkern

    gpuarray = fake_pycuda["pycuda.gpuarray"]
    launches = fake_pycuda["pycuda.compiler"].launches
    table = TABLES["unsigned"]
    m = axkern.load_multiplier("mul8u_drum4")
    b = RNG.integers(0, 256, (3, 2))
    got = axkern.lut_matmul(np.zeros((0, 3), int), b, m, backend="cuda")
    assert got.shape == (0, 2)
    out = axcuda.gemm(gpuarray.to_gpu(np.zeros((0, 4), np.uint8)), _codes((4, 5)), table, np.int32)
    assert isinstance(out, gpuarray.GPUArray) and out.get().shape == (0, 5)
    out = axcuda.gemm(gpuarray.to_gpu(np.zeros((3, 0), np.uint8)), _codes((0, 2)), table, np.int64)
    np.testing.assert_array_equal(out.get(), np.zeros((3, 2), np.int64))
    z = axcuda.conv2d(np.zeros((0, 4, 4, 2), np.uint8), _codes((3, 3, 2, 5)), table, (1, 1),
                      (1, 1, 1, 1), (1, 1), 1, 0, np.int32)
    assert z.shape == (0, 4, 4, 5)
    assert launches == []
    # An empty input, a non-empty output: every position is padding, looked up as pad_code.
    x, w = np.zeros((1, 0, 0, 2), np.uint8), _codes((1, 1, 2, 3))
    got = axcuda.conv2d(x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), 1, 77, np.int32)
    np.testing.assert_array_equal(got, REF.conv2d(x, w, table, (1, 1), (1, 1, 1, 1), (1, 1), 1, 77,
                                                  np.int32))


def test_size_limit_below_int32_overflow(emu):
    """Sizes within 256 of 2**31 would overflow the kernels' 32-bit tile counts and K loop:
    refused by the planning and the checks, with the dimension and the limit named."""
    import types

    limit = 2**31 - 257
    t = TABLES["unsigned"]
    axcuda.plan_igemm(limit, 64, 1, np.int32, t, emu.limits, conv=False)
    for M, ncols, name, value in ((limit + 1, 8, "M", limit + 1), (2**31 - 100, 8, "M", 2**31 - 100),
                                  (8, 2**31 - 10, "ncols", 2**31 - 10)):
        with pytest.raises(ValueError, match=rf"{name}.* = {value} .*at most {limit}"):
            axcuda.plan_igemm(M, ncols, 1, np.int32, t, emu.limits, conv=False)

    class NoDevice:   # nothing may be planned, allocated or launched for these sizes
        limits = emu.limits

        def __getattr__(self, name):
            raise AssertionError(f"device.{name} used for an oversized problem")

    def dev_array(*shape):
        return types.SimpleNamespace(shape=shape, dtype=np.uint8, gpudata=0)

    big = 2**31 - 10
    with pytest.raises(ValueError, match=rf"K = {big} .*at most {limit}"):
        axcuda.gemm_on(NoDevice(), dev_array(4, big), dev_array(big, 4), t, np.int64)
    with pytest.raises(ValueError, match=rf"N = {big} .*at most {limit}"):
        axcuda.gemm_on(NoDevice(), dev_array(4, 8), dev_array(8, big), t, np.int64)
    with pytest.raises(ValueError, match=rf"N\*OH\*OW = {big} .*at most {limit}"):
        axcuda.conv2d_on(NoDevice(), dev_array(big, 1, 1, 1), dev_array(1, 1, 1, 2), t, (1, 1),
                         (0, 0, 0, 0), (1, 1), 1, 0, np.int64)
    assert axcuda.SIZE_LIMIT == limit


def test_blocks_per_sm():
    sm = axcuda.SmLimits()   # sm_90: 64 K registers, 228 KiB shared memory, 2048 threads
    assert axcuda.blocks_per_sm(sm, 256, 136, 0) == 1          # ldg32 GEMM
    assert axcuda.blocks_per_sm(sm, 256, 255, 0) == 1
    assert axcuda.blocks_per_sm(sm, 256, 128, 0) == 2
    assert axcuda.blocks_per_sm(sm, 256, 128, 133 * 1024) == 1  # smem16: the table fills it
    assert axcuda.blocks_per_sm(sm, 256, 64, 0) == 4            # depthwise
    assert axcuda.blocks_per_sm(sm, 256, 66, 0) == 3            # 66 -> 72 registers per thread
    assert axcuda.blocks_per_sm(sm, 256, 32, 0) == 8            # threads per SM
    assert axcuda.blocks_per_sm(axcuda.SmLimits(regs=1024), 256, 255, 0) == 1  # at least one


def test_pycuda_persistent_grid_by_occupancy(fake_pycuda, nvcc_builds):
    """As many persistent blocks as fit on the SMs at once (3 SMs here), by the register use
    ptxas reports for sm_90: one for the table kernels (the 16-bit table fills the shared
    memory; the int64 ldg32 kernels need 160-180 registers), more for the light ones, never
    more than the work."""
    regs = fake_pycuda["pycuda.compiler"].num_regs
    for fname in CU_FILES:
        regs.update(ptxas_registers(nvcc_builds[fname, "sm_90"][1]))
    assert set(regs) == set(axcuda.kernel_names())

    def per_sm(kernel):
        return axcuda.blocks_per_sm(axcuda.SmLimits(), 256, regs[kernel], 0)

    launches = fake_pycuda["pycuda.compiler"].launches
    a, b = _codes((300, 20)), _codes((20, 70))   # 5 x 2 = 10 tiles of 64 x 64
    for kind, out_dtype, kernel in (("wide", np.int64, "axk_gemm_i64_ldg32"),
                                    ("unsigned", np.int32, "axk_gemm_i32_smem16")):
        got = axcuda.gemm(a, b, TABLES[kind], out_dtype)
        np.testing.assert_array_equal(got, REF.gemm(a, b, TABLES[kind], out_dtype))
        assert launches[-1] == (kernel, (3, 1, 1))
    dev = axcuda._device()
    got = axcuda.gemm_on(dev, a, b, TABLES["unsigned"], np.int32, mode="exact")
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b)
    assert per_sm("axk_gemm_i32_exact") > 1
    grid = min(10, 3 * per_sm("axk_gemm_i32_exact"))
    assert launches[-1] == ("axk_gemm_i32_exact", (grid, 1, 1))
    x, w = _codes((2, 16, 16, 8)), _codes((3, 3, 1, 8))   # 4096 outputs: 16 blocks
    got = axcuda.conv2d(x, w, TABLES["wide"], (1, 1), (1, 1, 1, 1), (1, 1), 8, 0, np.int64)
    np.testing.assert_array_equal(got, REF.conv2d(x, w, TABLES["wide"], (1, 1), (1, 1, 1, 1),
                                                  (1, 1), 8, 0, np.int64))
    assert per_sm("axk_dwconv2d_i64_ldg32") > 1
    assert launches[-1] == ("axk_dwconv2d_i64_ldg32",
                            (min(16, 3 * per_sm("axk_dwconv2d_i64_ldg32")), 1, 1))
    axcuda.gemm(_codes((5, 3)), _codes((3, 4)), TABLES["wide"], np.int64)
    assert launches[-1] == ("axk_gemm_i64_ldg32", (1, 1, 1))       # one tile


def test_pycuda_launch_errors_are_clear(fake_pycuda, monkeypatch):
    """A refused launch, and a kernel that fails on the device (reported by CUDA at the next
    synchronization: the copy of the result), raise CudaKernelError naming the kernel."""
    table = TABLES["unsigned"]
    a, b = _codes((8, 4)), _codes((4, 8))
    dev = axcuda._device()
    plan = axcuda.plan_igemm(8, 8, 1, np.int32, table, dev.limits, conv=False)
    dev._optin[plan.kernel] = 1 << 30   # as if the opt-in had been set: the launch is refused
    with pytest.raises(RuntimeError, match=rf"launching {plan.kernel} .*failed") as info:
        axcuda.gemm(a, b, table, np.int32)
    assert isinstance(info.value, axcuda.CudaKernelError)
    real = axcuda.igemm_smem_bytes
    monkeypatch.setattr(axcuda, "igemm_smem_bytes", lambda *args: real(*args) - 16)
    monkeypatch.setattr(axcuda, "_devices", {})
    with pytest.raises(RuntimeError, match=rf"{plan.kernel} was launched by this call") as info:
        axcuda.gemm(a, b, table, np.int32)
    assert isinstance(info.value, axcuda.CudaKernelError)


# ------------------------------------------------------------------------ on a real device
gpu = pytest.mark.skipif(not axcuda.is_available()[0],
                         reason=f"no CUDA: {axcuda.is_available()[1]}")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode,out_dtype,kind", VARIANTS)
def test_gpu_matches_reference(mode, out_dtype, kind):
    dev = axcuda._device()
    table = TABLES[kind]
    for M, K, N in GEMM_SHAPES:
        a, b = _codes((M, K)), _codes((K, N))
        np.testing.assert_array_equal(axcuda.gemm_on(dev, a, b, table, out_dtype, mode=mode),
                                      REF.gemm(a, b, table, out_dtype))
    for case in CONV_CASES + DW_CASES:
        _run_conv(dev, case, table, out_dtype, mode)


@pytest.mark.gpu
@gpu
def test_gpu_arrays_stay_on_device():
    import pycuda.gpuarray as gpuarray

    table = TABLES["unsigned"]
    a, b = _codes((33, 40)), _codes((40, 17))
    out = axcuda.gemm(gpuarray.to_gpu(a), b, table, np.int32)
    assert isinstance(out, gpuarray.GPUArray)
    np.testing.assert_array_equal(out.get(), REF.gemm(a, b, table, np.int32))
    np.testing.assert_array_equal(get_backend("cuda").gemm(a, b, table, np.int32),
                                  REF.gemm(a, b, table, np.int32))
