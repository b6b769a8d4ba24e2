"""CUDA backend: the LUT kernels of ``cuda_src/`` compiled at run time through PyCUDA.

Implements the kernel contract of :mod:`axkern.backends` (``gemm`` and ``conv2d`` over uint8
table indices, exact int32/int64 sums of table entries). PyCUDA is imported only when a kernel
is first used; ``import axkern`` never needs it. Install it with ``pip install "axkern[cuda]"``.

* The sources are compiled once per CUDA context and device architecture
  (``pycuda.compiler.SourceModule``, which also keeps a disk cache of the binaries).
* Each table is prepared (see :func:`prepare_table`) and uploaded once; uploads are cached by
  the SHA-1 of the table bytes, so every later call with the same multiplier reuses them.
* Inputs may be NumPy arrays or ``pycuda.gpuarray.GPUArray`` (uint8, C-contiguous). The result
  is a NumPy array, or a ``GPUArray`` left on the device when any input was one.

The launch planning and table preparation here are plain NumPy; the test suite runs them,
with the same kernel sources, through a host emulation of CUDA (``cuda_src/cuda_host_emu.h``).
"""
from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass

import numpy as np

from .backends import (_check_no_overflow, _check_out_dtype, _check_table, _check_threads,
                       check_conv_geometry)

__all__ = ["gemm", "conv2d", "is_available", "require", "CudaUnavailableError", "CudaKernelError",
           "prepare_table", "kernel_names", "find_nvcc", "KERNEL_FILES", "SIZE_LIMIT"]

# Source files, and the entry points each defines (also checked by the test suite).
KERNEL_FILES = {
    "axk_gemm.cu": tuple(f"axk_{op}_{acc}_{mode}" for op in ("gemm", "conv2d")
                         for acc, mode in (("i32", "smem16"), ("i64", "smem16"), ("i32", "ldg32"),
                                           ("i64", "ldg32"), ("i32", "exact"))),
    "axk_depthwise.cu": tuple(f"axk_dwconv2d_{acc}_{mode}" for mode in ("smem16", "ldg32")
                              for acc in ("i32", "i64")),
}

# Mirrors of the constants and layout formulas of cuda_src/axk_common.cuh.
THREADS = 256
TM = TN = 4
BK = 16
TABLE_ROWS = 257          # 256 rows + a zero row that masked reduction steps point at
TABLE_ENTRIES = TABLE_ROWS * 256
MODES = ("smem16", "ldg32")
_INT32_MAX = (1 << 31) - 1
# The largest size (M, N, K, N*OH*OW, ...) the kernels take. Their tile counts and K loop are
# 32-bit: ``(M + BM - 1) / BM`` with BM up to 256 and ``k0 += 16`` up to K + 15 would overflow
# for sizes within 256 of 2**31 (no tile would run and an uninitialized buffer come back).
SIZE_LIMIT = _INT32_MAX - 256


def _align16(n):
    return (n + 15) // 16 * 16


def igemm_smem_bytes(mode, bm, bn, conv):
    """Dynamic shared memory of the implicit-GEMM kernels (``axk_igemm_smem_bytes``)."""
    total = _align16(TABLE_ENTRIES * 2) if mode == "smem16" else 0
    total += _align16(BK * (bm + 1) * 4) + _align16(BK * bn * 4)
    if conv:
        total += _align16(3 * bm * 4)
    return total


def dw_smem_bytes(mode):
    """Dynamic shared memory of the depthwise kernels (``axk_dw_smem_bytes``)."""
    return _align16(TABLE_ENTRIES * 2) if mode == "smem16" else 0


def kernel_names():
    """All kernel entry points, in source order."""
    return [name for names in KERNEL_FILES.values() for name in names]


def _source_of(kernel):
    for fname, names in KERNEL_FILES.items():
        if kernel in names:
            return fname
    raise KeyError(kernel)


# ------------------------------------------------------------------------------ availability
class CudaUnavailableError(RuntimeError):
    """The CUDA backend cannot run here: PyCUDA is missing, or no CUDA driver/device exists."""


class CudaKernelError(RuntimeError):
    """A kernel launch failed, or a launched kernel failed on the device (reported when its
    result is copied to the host)."""


_probe_lock = threading.Lock()
_probe_result = None


def is_available():
    """Whether the CUDA backend can run here.

    Returns
    -------
    (bool, str)
        ``(True, device description)`` or ``(False, reason)``; the reason says whether PyCUDA
        is missing or whether no CUDA driver or device was found.
    """
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe()
        return _probe_result


def _probe():
    if importlib.util.find_spec("pycuda") is None:
        return False, ('PyCUDA is not installed: the CUDA backend needs it '
                       '(pip install "axkern[cuda]")')
    try:
        import pycuda.driver as drv
    except ImportError as e:  # pycuda._driver links against libcuda.so
        return False, f"PyCUDA is installed but cannot load the CUDA driver (no NVIDIA driver?): {e}"
    try:
        drv.init()
        count = drv.Device.count()
    except Exception as e:  # pycuda.driver.Error: no driver, driver too old, ...
        return False, f"PyCUDA is installed but the CUDA driver reports no usable device: {e}"
    if count == 0:
        return False, "PyCUDA is installed but no CUDA device was found"
    if find_nvcc() is None:
        return False, ("a CUDA device exists but nvcc was not found (the kernels are compiled at "
                       "first use): put the CUDA toolkit's bin/ on PATH or set CUDA_HOME")
    dev = drv.Device(0)
    major, minor = dev.compute_capability()
    return True, f"{dev.name()} (sm_{major}{minor}), {count} device(s)"


def require():
    """Raise :class:`CudaUnavailableError` (saying what is missing) unless CUDA is usable."""
    ok, reason = is_available()
    if not ok:
        raise CudaUnavailableError(f"the 'cuda' backend is unavailable: {reason}")


# ------------------------------------------------------------------------- table preparation
@dataclass(frozen=True)
class PreparedTable:
    """A table image as the kernels read it.

    ``mode == "smem16"``: ``data`` is uint16 ``T - base`` (staged in shared memory);
    ``mode == "ldg32"``: ``data`` is the int32 table and ``base == 0``. Both have
    ``TABLE_ROWS`` rows of 256 entries, the last one zero.
    """

    mode: str
    base: int
    data: np.ndarray
    key: bytes


def table_span(table):
    """``max(T) - min(T)``: the 16-bit shared-memory image needs it below 65536."""
    return int(table.max()) - int(table.min())


def prepare_table(table, mode):
    """The image of an int32 (256, 256) table for the kernels of ``mode``.

    Raises
    ------
    ValueError
        For ``"smem16"`` when the table spans 65536 values or more.
    """
    table = _check_table(table)
    key = hashlib.sha1(table.tobytes()).digest()
    if mode == "smem16":
        lo = int(table.min())
        if int(table.max()) - lo > 0xFFFF:
            raise ValueError(f"table spans {table_span(table)} values: the 16-bit shared-memory "
                             "image needs fewer than 65536 (use mode 'ldg32')")
        data = np.zeros(TABLE_ENTRIES, np.uint16)
        data[:65536] = (table.astype(np.int64) - lo).ravel()
        return PreparedTable("smem16", lo, data, key)
    if mode == "ldg32":
        data = np.zeros(TABLE_ENTRIES, np.int32)
        data[:65536] = table.ravel()
        return PreparedTable("ldg32", 0, data, key)
    raise ValueError(f"unknown table mode {mode!r}: expected one of {MODES}")


# ---------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class DeviceLimits:
    """What a launch plan needs to know about the device."""

    num_sms: int
    max_smem_optin: int  # bytes of dynamic shared memory a block may opt into


@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: tuple
    block: tuple
    shared: int
    work: int = 0  # work units (tiles, blocks of outputs) the grid-stride loop walks over


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resources, for the number of blocks of a kernel that are resident at once."""

    regs: int = 65536
    smem: int = 228 * 1024
    smem_reserved: int = 1024   # per block, by the system (sm_80 and later)
    threads: int = 2048
    blocks: int = 32


def blocks_per_sm(sm, threads, regs_per_thread, smem_per_block):
    """Blocks of a kernel resident on one SM at once: the occupancy calculator's rule
    (registers allocated per warp in units of 256, shared memory, threads, blocks); at least 1."""
    warps = -(-int(threads) // 32)
    regs_per_warp = -(-max(int(regs_per_thread), 1) * 32 // 256) * 256
    fit = [sm.regs // (regs_per_warp * warps), sm.threads // max(int(threads), 1), sm.blocks]
    if smem_per_block:
        fit.append(sm.smem // (int(smem_per_block) + sm.smem_reserved))
    return max(1, min(fit))


def _tile_bx(ncols):
    # Threads along the output columns: BN = 4 * bx covers a narrow layer without idle lanes.
    return 4 if ncols <= 16 else 8 if ncols <= 32 else 16


def _choose_mode(table, smem_with_table, limits, mode):
    if mode is not None:
        if mode not in MODES + ("exact",):
            raise ValueError(f"unknown table mode {mode!r}: expected one of {MODES + ('exact',)}")
        return mode
    if table_span(table) <= 0xFFFF and smem_with_table <= limits.max_smem_optin:
        return "smem16"
    return "ldg32"


def _persistent_grid(work, limits):
    # One block per SM: what every kernel is built for (__launch_bounds__(256, 1)), and all that
    # fits of the table kernels (smem16: the table fills the shared memory; the others need
    # 128-178 registers x 256 threads). A device that knows a kernel's register use may launch
    # more blocks of the lighter ones (see _PyCudaDevice.launch); the sums do not depend on it.
    return int(max(1, min(work, limits.num_sms)))


def _check_int32(**sizes):
    for name, value in sizes.items():
        if value > SIZE_LIMIT:
            raise ValueError(f"{name} = {value} is too large for the CUDA kernels: their 32-bit "
                             f"tile arithmetic takes at most {SIZE_LIMIT} (2**31 - 257)")


def plan_igemm(M, ncols, groups, out_dtype, table, limits, conv, mode=None):
    """Kernel, grid, block and shared memory of the implicit-GEMM kernels."""
    _check_int32(**{"M (GEMM rows)": M, "ncols (columns per group)": ncols})
    bx = _tile_bx(ncols)
    by = THREADS // bx
    bm, bn = TM * by, TN * bx
    mode = _choose_mode(table, igemm_smem_bytes("smem16", bm, bn, conv), limits, mode)
    shared = igemm_smem_bytes(mode, bm, bn, conv)
    if shared > limits.max_smem_optin:
        raise ValueError(f"mode {mode!r} needs {shared} bytes of shared memory, the device allows "
                         f"{limits.max_smem_optin}")
    acc = "i32" if np.dtype(out_dtype) == np.int32 else "i64"
    if mode == "exact" and acc != "i32":
        raise ValueError("the exact-product kernels accumulate in int32 only")
    tiles = -(-M // bm) * -(-ncols // bn) * groups
    op = "conv2d" if conv else "gemm"
    return Launch(f"axk_{op}_{acc}_{mode}", (_persistent_grid(tiles, limits), 1, 1),
                  (bx, by, 1), shared, tiles)


def plan_depthwise(total, out_dtype, table, limits, mode=None):
    """Kernel, grid, block and shared memory of the depthwise kernels."""
    mode = _choose_mode(table, dw_smem_bytes("smem16"), limits, mode)
    if mode == "exact":
        raise ValueError("there is no exact-product depthwise kernel")
    shared = dw_smem_bytes(mode)
    acc = "i32" if np.dtype(out_dtype) == np.int32 else "i64"
    blocks = -(-total // THREADS)
    return Launch(f"axk_dwconv2d_{acc}_{mode}", (_persistent_grid(blocks, limits), 1, 1),
                  (THREADS, 1, 1), shared, blocks)


def use_depthwise(Cg, cout_per_group):
    """Whether a convolution goes to the depthwise kernel: one input channel per group and
    too few output channels per group to fill the implicit GEMM's column tiles."""
    return Cg == 1 and cout_per_group < 16


# ------------------------------------------------------------------ device-independent core
def _is_numpy(v):
    return isinstance(v, np.ndarray)


def _check_operand(v, name, ndim):
    if _is_numpy(v):
        if v.dtype != np.uint8:
            raise TypeError(f"{name} must hold uint8 table indices, got dtype {v.dtype}")
        if v.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {v.shape}")
        return np.ascontiguousarray(v)
    # A device array (pycuda GPUArray or anything alike): checked by its attributes.
    shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
    if shape is None or dtype is None or not hasattr(v, "gpudata"):
        raise TypeError(f"{name} must be a NumPy array or a pycuda GPUArray, got {type(v).__name__}")
    if np.dtype(dtype) != np.uint8:
        raise TypeError(f"{name} must hold uint8 table indices, got dtype {np.dtype(dtype)}")
    if len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(shape)}")
    flags = getattr(v, "flags", None)
    if flags is not None and not flags.c_contiguous:
        raise ValueError(f"{name} is a non-contiguous GPUArray: pass a C-contiguous one")
    return v


def _zeros_result(device, shape, dtype, keep):
    # An output with nothing to sum: no kernel runs. On the host it is NumPy's zeros; on the
    # device, device.zeros (which launches nothing for an empty array: PyCUDA's fill would).
    if not keep:
        return np.zeros(shape, dtype)
    return device.zeros(shape, dtype)


def gemm_on(device, a, b, table, out_dtype, mode=None):
    """``gemm`` on a device object (PyCUDA, or the test suite's host emulator)."""
    a = _check_operand(a, "a", 2)
    b = _check_operand(b, "b", 2)
    table = _check_table(table)
    out_dtype = _check_out_dtype(out_dtype)
    (M, K), (K2, N) = a.shape, b.shape
    if K != K2:
        raise ValueError(f"gemm operands do not chain: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
                         "(K must match)")
    _check_int32(M=M, N=N, K=K)
    _check_no_overflow(out_dtype, K, table)   # as on the CPU: int32 sums wrap silently
    keep = not (_is_numpy(a) and _is_numpy(b))
    if M == 0 or N == 0 or K == 0:
        return _zeros_result(device, (M, N), out_dtype, keep)
    plan = plan_igemm(M, N, 1, out_dtype, table, device.limits, conv=False, mode=mode)
    tab, base = device.table(table, plan.kernel.rsplit("_", 1)[1])
    out = device.empty((M, N), out_dtype)
    device.launch(plan, [device.array(a), device.array(b), tab, out,
                         np.int32(M), np.int32(N), np.int32(K), np.int64(base)])
    return device.result(out, keep)


def conv2d_on(device, x, w, table, stride, padding, dilation, groups, pad_code, out_dtype,
              mode=None, depthwise=None):
    """``conv2d`` on a device object; ``depthwise`` forces (True/False) the kernel choice."""
    x = _check_operand(x, "x", 4)
    w = _check_operand(w, "w", 4)
    table = _check_table(table)
    out_dtype = _check_out_dtype(out_dtype)
    ((sh, sw), (pt, pb, pl, pr), (dh, dw), groups, pad_code,
     (OH, OW)) = check_conv_geometry(x.shape, w.shape, stride, padding, dilation, groups, pad_code)
    N, H, W, C = (int(v) for v in x.shape)
    KH, KW, Cg, COUT = (int(v) for v in w.shape)
    _check_int32(**{"N*OH*OW": N * OH * OW, "KH*KW*Cg": KH * KW * Cg, "input size": N * H * W * C,
                    "padded height": H + pt + pb, "padded width": W + pl + pr})
    _check_no_overflow(out_dtype, KH * KW * Cg, table)
    keep = not (_is_numpy(x) and _is_numpy(w))
    shape = (N, OH, OW, COUT)
    if N * OH * OW * COUT == 0 or Cg == 0:
        return _zeros_result(device, shape, out_dtype, keep)
    og = COUT // groups
    if depthwise is None:
        depthwise = use_depthwise(Cg, og)
    if depthwise and Cg != 1:
        raise ValueError(f"the depthwise kernel needs one input channel per group, got {Cg}")
    geometry = [np.int32(v) for v in (N, H, W, C, KH, KW)]
    if depthwise:
        plan = plan_depthwise(N * OH * OW * COUT, out_dtype, table, device.limits, mode=mode)
        scalars = geometry + [np.int32(v) for v in (COUT, OH, OW, sh, sw, dh, dw, pt, pl, pad_code)]
    else:
        plan = plan_igemm(N * OH * OW, og, groups, out_dtype, table, device.limits, conv=True, mode=mode)
        scalars = geometry + [np.int32(v) for v in (Cg, COUT, OH, OW, sh, sw, dh, dw, pt, pl, pad_code)]
    tab, base = device.table(table, plan.kernel.rsplit("_", 1)[1])
    out = device.empty(shape, out_dtype)
    device.launch(plan, [device.array(x), device.array(w), tab, out, *scalars, np.int64(base)])
    return device.result(out, keep)


# ---------------------------------------------------------------------------- PyCUDA device
def _device_pointer(gpudata):
    """The address held by a GPUArray's ``gpudata``: a ``DeviceAllocation`` or pooled allocation
    (``int()``), a plain int (what ``reshape``/``view``/slicing of a GPUArray leave there), a
    ``PointerHolderBase`` wrapping foreign memory (``get_pointer()``), or None (an empty array:
    nothing is read or written through it)."""
    if gpudata is None:
        return 0
    get_pointer = getattr(gpudata, "get_pointer", None)
    return int(get_pointer()) if callable(get_pointer) else int(gpudata)


def _kernel_arg(a):
    """A kernel argument as PyCUDA's packer takes it: NumPy scalars as they are, device arrays
    (and allocations) as ``np.uintp`` pointers. The packer refuses a plain int or a pointer
    holder, which ``gpudata`` may be."""
    if isinstance(a, np.generic):
        return a
    return np.uintp(_device_pointer(getattr(a, "gpudata", a)))


class _PyCudaDevice:
    """Compiled modules, uploaded tables and launches on the current PyCUDA context."""

    _TABLE_CACHE_SIZE = 32

    def __init__(self, ctx_key):
        import pycuda.driver as drv
        import pycuda.gpuarray as gpuarray
        from pycuda.tools import DeviceMemoryPool

        self.drv, self.gpuarray = drv, gpuarray
        # Outputs and staged inputs come from a pool: repeated layers reuse the same memory
        # instead of paying cudaMalloc/cudaFree on every call.
        self._pool = DeviceMemoryPool()
        dev = drv.Context.get_device()
        self.arch = "sm_%d%d" % dev.compute_capability()
        attr = drv.device_attribute
        optin = getattr(attr, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", None)
        max_smem = dev.get_attribute(optin if optin is not None else attr.MAX_SHARED_MEMORY_PER_BLOCK)
        self.limits = DeviceLimits(dev.get_attribute(attr.MULTIPROCESSOR_COUNT), int(max_smem))
        per_sm = {}
        for field, name in (("regs", "MAX_REGISTERS_PER_MULTIPROCESSOR"),
                            ("smem", "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR"),
                            ("smem_reserved", "RESERVED_SHARED_MEMORY_PER_BLOCK"),
                            ("threads", "MAX_THREADS_PER_MULTIPROCESSOR"),
                            ("blocks", "MAX_BLOCKS_PER_MULTIPROCESSOR")):
            a = getattr(attr, name, None)   # absent from PyCUDA builds for older CUDA
            try:
                if a is not None:
                    per_sm[field] = int(dev.get_attribute(a))
            except drv.Error:
                pass   # SmLimits' default (sm_90's value)
        self.sm = SmLimits(**per_sm)
        self.ctx_key = ctx_key
        self._modules = {}
        self._functions = {}
        self._optin = {}
        self._occupancy = {}
        self._tables = collections.OrderedDict()
        self._lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self._last = threading.local()   # the kernel this thread launched last

    def _function(self, kernel, shared):
        with self._compile_lock:   # calls from several threads compile each source once
            fn = self._functions.get(kernel)
            if fn is None:
                fname = _source_of(kernel)
                mod = self._modules.get(fname)
                if mod is None:
                    mod = self._modules[fname] = _compile(fname, self.arch)
                fn = self._functions[kernel] = mod.get_function(kernel)
            if shared > 48 * 1024 and shared > self._optin.get(kernel, 0):
                # Above 48 KiB a kernel must opt into large dynamic shared memory.
                fn.set_attribute(self.drv.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, shared)
                self._optin[kernel] = shared
        return fn

    def _grid(self, fn, plan):
        """The persistent grid: as many blocks as are resident at once on all SMs, by the
        compiled kernel's register and shared-memory use, and no more than the work units."""
        if not plan.work:
            return plan.grid
        key = (plan.kernel, plan.shared)
        per_sm = self._occupancy.get(key)
        if per_sm is None:
            try:
                regs, static = int(fn.num_regs), int(fn.shared_size_bytes)
            except (AttributeError, self.drv.Error):
                per_sm = 1
            else:
                threads = plan.block[0] * plan.block[1] * plan.block[2]
                per_sm = blocks_per_sm(self.sm, threads, regs, static + plan.shared)
            self._occupancy[key] = per_sm
        return (int(max(1, min(plan.work, self.limits.num_sms * per_sm))), 1, 1)

    def table(self, table, mode):
        if mode == "exact":
            return np.intp(0), 0
        key = (hashlib.sha1(table.tobytes()).digest(), mode)
        with self._lock:
            hit = self._tables.get(key)
            if hit is not None:
                self._tables.move_to_end(key)
                return hit
        prep = prepare_table(table, mode)
        entry = (self.gpuarray.to_gpu(prep.data), prep.base)
        with self._lock:
            self._tables[key] = entry
            while len(self._tables) > self._TABLE_CACHE_SIZE:
                self._tables.popitem(last=False)
        return entry

    def array(self, v):
        return self.gpuarray.to_gpu(v, allocator=self._pool.allocate) if _is_numpy(v) else v

    def empty(self, shape, dtype):
        return self.gpuarray.empty(shape, dtype, allocator=self._pool.allocate)

    def zeros(self, shape, dtype):
        if int(np.prod(shape)) == 0:
            # PyCUDA's zeros would launch its fill kernel with the None pointer of an empty array.
            return self.gpuarray.empty(shape, dtype, allocator=self._pool.allocate)
        return self.gpuarray.zeros(shape, dtype, allocator=self._pool.allocate)

    def launch(self, plan, args):
        fn = self._function(plan.kernel, plan.shared)
        grid = self._grid(fn, plan)
        # ``args`` keeps the arrays (and so their memory) alive until the launch is queued.
        packed = [_kernel_arg(a) for a in args]
        try:
            fn(*packed, grid=grid, block=plan.block, shared=plan.shared)
        except self.drv.Error as e:
            raise CudaKernelError(f"launching {plan.kernel} (grid {grid}, block {plan.block}, "
                                  f"{plan.shared} bytes of shared memory) failed: {e}") from e
        self._last.kernel = plan.kernel

    def result(self, out, keep_on_device):
        if keep_on_device:
            return out   # asynchronous: a kernel fault shows at the caller's next synchronization
        try:
            return out.get()   # synchronizes with the kernel: its faults are reported here
        except self.drv.Error as e:
            last = getattr(self._last, "kernel", None)
            raise CudaKernelError(
                f"a CUDA kernel failed on the device ({last or 'a kernel'} was launched by this "
                f"call; an earlier asynchronous launch may be the cause too): {e}. The CUDA "
                "context may be unusable after such an error.") from e


def find_nvcc():
    """Path of nvcc: ``$CUDA_HOME/bin`` (or ``$CUDA_PATH/bin``), else ``PATH``; None if absent."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            cand = os.path.join(home, "bin", "nvcc")
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return shutil.which("nvcc")


_compile_lock = threading.Lock()
_devices = {}
_thread_ctx = threading.local()   # the primary context pushed in a thread that had none


def _compile(fname, arch):
    from importlib.resources import files

    from pycuda.compiler import SourceModule

    src_dir = files("axkern._cuda_src")
    source = src_dir.joinpath(fname).read_text()
    nvcc = find_nvcc()
    if nvcc is None:
        raise CudaUnavailableError("the CUDA kernels are compiled at first use, but nvcc was not "
                                   "found: put the CUDA toolkit's bin/ on PATH or set CUDA_HOME")
    try:
        return SourceModule(source, nvcc=nvcc, no_extern_c=True, arch=arch,
                            include_dirs=[str(src_dir)], options=["-O3", "-std=c++17"])
    except Exception as e:  # pycuda.driver.CompileError carries nvcc's output
        raise RuntimeError(f"compiling {fname} for {arch} failed: {e}") from e


def _current_context(drv):
    """The CUDA context current in this thread, making the device's primary context current
    where there is none. Context stacks are per thread: ``pycuda.autoprimaryctx`` pushes the
    primary context only in the thread that first imports it, so a call from any other thread
    (a thread pool, Keras' ``tf.numpy_function`` workers) retains and pushes it here, once."""
    ctx = drv.Context.get_current()
    if ctx is not None:
        return ctx
    try:
        auto = importlib.import_module("pycuda.autoprimaryctx")   # pushes in the first thread
        primary = True
    except ImportError:  # PyCUDA < 2021.1: a context of its own
        auto = importlib.import_module("pycuda.autoinit")
        primary = False
    ctx = drv.Context.get_current()
    if ctx is None:
        # Imported earlier, by another thread: the same context, made current here too (the
        # primary context is retained for this thread; a context may be current in several).
        ctx = auto.device.retain_primary_context() if primary else auto.context
        ctx.push()
        _thread_ctx.context = ctx   # kept current (and referenced) for this thread's lifetime
    return ctx


def _device():
    require()
    import pycuda.driver as drv

    ctx = _current_context(drv)
    # Compiled modules and uploads belong to a context: the state is keyed by its handle (the
    # primary context of a device is one handle in every thread).
    key = int(ctx.handle)
    with _compile_lock:
        dev = _devices.get(key)
        if dev is None:
            dev = _devices[key] = _PyCudaDevice(key)
    return dev


# ------------------------------------------------------------------------------- contract API
def gemm(a, b, table, out_dtype, num_threads=None):
    """``out[m, n] = sum_k table[a[m, k], b[k, n]]`` on the GPU (see :mod:`axkern.backends`).

    Parameters
    ----------
    a, b : ndarray or GPUArray of uint8, shapes (M, K) and (K, N)
        Table indices of the activation (row) and weight (column) operands.
    table : ndarray of int32, shape (256, 256)
    out_dtype : {np.int32, np.int64}
    num_threads : ignored
        Accepted for the common backend signature.

    Returns
    -------
    ndarray or GPUArray of out_dtype, shape (M, N)
        A GPUArray when ``a`` or ``b`` was one.

    Raises
    ------
    CudaUnavailableError
        When PyCUDA or a CUDA device is missing.
    """
    _check_threads(num_threads)   # ignored, but checked as on the CPU
    return gemm_on(_device(), a, b, table, out_dtype)


def conv2d(x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads=None):
    """Grouped 2-D convolution of table lookups on the GPU (see :mod:`axkern.backends`).

    Parameters
    ----------
    x : ndarray or GPUArray of uint8, shape (N, H, W, C)
    w : ndarray or GPUArray of uint8, shape (KH, KW, C // groups, COUT)
    table : ndarray of int32, shape (256, 256)
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    pad_code : int
        Index held by padded input positions (looked up like any other).
    out_dtype : {np.int32, np.int64}
    num_threads : ignored

    Returns
    -------
    ndarray or GPUArray of out_dtype, shape (N, OH, OW, COUT)

    Raises
    ------
    CudaUnavailableError
        When PyCUDA or a CUDA device is missing.
    """
    _check_threads(num_threads)   # ignored, but checked as on the CPU
    return conv2d_on(_device(), x, w, table, stride, padding, dilation, groups, pad_code, out_dtype)
