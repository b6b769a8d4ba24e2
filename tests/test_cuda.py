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


def emu_launch(lib, kernel, grid, block, shared, args):
    """Run one emulated kernel; pointer arguments are NumPy arrays or integer addresses."""
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
    """Device memory of the fake PyCUDA: host bytes, garbage-filled, with an address."""

    def __init__(self, nbytes):
        self.buf = np.full(max(int(nbytes), 1), 0xA5, np.uint8)

    def __int__(self):
        return self.buf.ctypes.data


def _fake_pycuda(emu_lib, count=1, optin=227 * 1024):
    """Modules standing in for pycuda (the API calls axkern.cuda makes, checked against PyCUDA
    2026.1's sources) whose kernels run in the host emulation."""
    import importlib.machinery
    import types

    def module(name):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    pkg, drv, gpuarray, compiler, tools = (module(n) for n in (
        "pycuda", "pycuda.driver", "pycuda.gpuarray", "pycuda.compiler", "pycuda.tools"))
    drv.device_attribute = types.SimpleNamespace(
        MULTIPROCESSOR_COUNT="sms", MAX_SHARED_MEMORY_PER_BLOCK_OPTIN="optin",
        MAX_SHARED_MEMORY_PER_BLOCK="smem")
    drv.function_attribute = types.SimpleNamespace(MAX_DYNAMIC_SHARED_SIZE_BYTES="maxdyn")
    drv.init = lambda: None
    attrs = {"sms": 3, "optin": optin, "smem": 48 * 1024}

    class Device:
        def __init__(self, i=0):
            assert i < count

        count_ = staticmethod(lambda: count)
        compute_capability = lambda self: (9, 0)  # noqa: E731
        name = lambda self: "emulated device"  # noqa: E731
        get_attribute = lambda self, a: attrs[a]  # noqa: E731

    Device.count = Device.count_

    class Context:
        current = None
        handle = 0x1234

        @staticmethod
        def get_current():
            return Context.current

        @staticmethod
        def get_device():
            return Device(0)

    Context.current = Context()
    drv.Device, drv.Context = Device, Context

    class GPUArray:
        def __init__(self, shape, dtype, allocator=None):
            self.shape = tuple(int(n) for n in shape)
            self.dtype = np.dtype(dtype)
            n = int(np.prod(self.shape))
            self.gpudata = (allocator or _FakeAlloc)(n * self.dtype.itemsize)
            self.view = self.gpudata.buf[:n * self.dtype.itemsize].view(self.dtype).reshape(self.shape)
            self.flags = types.SimpleNamespace(c_contiguous=True)

        def get(self):
            return self.view.copy()

    def to_gpu(ary, allocator=None):
        g = GPUArray(ary.shape, ary.dtype, allocator)
        g.view[...] = ary
        gpuarray.uploads.append(ary.nbytes)
        return g

    def zeros(shape, dtype, allocator=None):
        g = GPUArray(shape, dtype, allocator)
        g.view[...] = 0
        return g

    gpuarray.GPUArray = gpuarray.empty = GPUArray
    gpuarray.to_gpu, gpuarray.zeros, gpuarray.uploads = to_gpu, zeros, []

    class DeviceMemoryPool:
        def allocate(self, nbytes):
            return _FakeAlloc(nbytes)

    tools.DeviceMemoryPool = DeviceMemoryPool

    class Function:
        def __init__(self, name):
            self.name, self.max_dynamic = name, 48 * 1024

        def set_attribute(self, attr, value):
            assert attr == "maxdyn" and value <= attrs["optin"]
            self.max_dynamic = value

        def __call__(self, *args, grid, block, shared=0):
            if shared > self.max_dynamic:  # what cuLaunchKernel rejects on a real device
                raise RuntimeError(f"launch with {shared} bytes of shared memory, "
                                   f"{self.max_dynamic} allowed")
            args = [int(a) if isinstance(a, _FakeAlloc) else a for a in args]
            assert all(isinstance(a, (int, np.number)) for a in args), args
            emu_launch(emu_lib, self.name, grid, block, shared, args)

    class SourceModule:
        def __init__(self, source, nvcc="nvcc", no_extern_c=False, arch=None, include_dirs=(),
                     options=None):
            assert no_extern_c and arch == "sm_90" and os.path.isfile(nvcc)
            assert any(os.path.isfile(os.path.join(d, "axk_common.cuh")) for d in include_dirs)
            self.source = source
            compiler.compiled.append(source)

        def get_function(self, name):
            assert f"({name}," in self.source, name
            return Function(name)

    compiler.SourceModule, compiler.compiled = SourceModule, []
    pkg.driver, pkg.gpuarray, pkg.compiler, pkg.tools = drv, gpuarray, compiler, tools
    return {"pycuda": pkg, "pycuda.driver": drv, "pycuda.gpuarray": gpuarray,
            "pycuda.compiler": compiler, "pycuda.tools": tools}


@pytest.fixture
def fake_pycuda(emu_lib, monkeypatch):
    if axcuda.find_nvcc() is None:
        pytest.skip("nvcc not found: is_available() is False without it")
    mods = _fake_pycuda(emu_lib)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(axcuda, "_probe_result", None)
    monkeypatch.setattr(axcuda, "_devices", {})
    return mods


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
