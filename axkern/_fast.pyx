# cython: language_level=3
"""Fast CPU backend: table lookups without a gather per multiply-accumulate, with runtime ISA
dispatch.

Implements the kernel contract of :mod:`axkern.backends` (``gemm`` and ``conv2d`` on uint8
table indices, an int32 (256, 256) table, int32 or int64 outputs) with C kernels in
``axkern/_simd``. Three methods (``method=``):

``"expand"`` (expanded tables, ``expand.c``)
    For 16 reduction steps at a time and a block of 16 output columns, the entries
    ``T[v, b[k, j]]`` of every streamed code ``v`` are laid out as one row of 16 uint16
    (built once per tile of up to 4096 rows); a streamed code then fetches the entries of
    all the block's columns with one vector load, and the sums stay in registers (blocks of
    8 columns on the AVX2 code for groups of at most 8; on the ``"avx512_vbmi"`` path blocks
    of 32 for groups of more than 16, one zmm row of 32 entries per code and step; there,
    on a CPU with VNNI, near-exact tables take rows of 64 byte residuals for groups of more
    than 32, the exact product summed by ``vpdpbusd``; on ``"avx2"`` rows of 32 byte
    residuals for groups of more than 16, the exact product summed by ``vpmaddwd``; a
    group's columns past its whole blocks of byte residuals take one block of 16-bit rows
    where that costs less: see :func:`byte_residual`).
    16-bit-class tables and int32 sums only. The default wherever its cost model beats
    direct lookups (on ``"avx2"`` and ``"scalar"`` every layer with more than a few output
    channels, depthwise aside; on ``"avx512_vbmi"`` layers with many rows: batches of
    images, large feature maps).
``"direct"``
    One lookup per multiply-accumulate, the fixed operand's table column held in registers:
    ``"avx512_vbmi"`` keeps it as two 256-byte planes in eight zmm registers (``vpermi2b``
    looks up 64 streamed codes per instruction; the default there for layers of few rows:
    batch-1 layers at 14 x 14 or less, GEMMs of few rows),
    ``"avx2"`` uses ``vpshufb`` on XOR-chained 16-entry chunks, ``"scalar"`` plain loads.
    Tiny shapes, int64 sums and tables of the generic class take it, and on the
    ``"avx512_vbmi"`` path depthwise layers of generic-class tables with fewer than 128
    outputs. Convolutions of fewer
    output pixels than filters (batch-1 layers of small images) stream the filters past an
    im2col copy of the pixels instead, as GEMMs of few rows stream the columns of ``b``
    (and so do the expanded tables of such layers, ``groups=1``).
``"depthwise"`` (``depthwise.c``, ``conv2d`` only)
    Depthwise layers (``groups`` equal to the input and output channels, horizontal
    dilation 1, at most 4 filter columns; wider ones up to 64 off the ``"scalar"`` path with
    a 16-bit-class table, by groups of 4 columns): for each channel and filter row, the entries of
    a code for all filter columns sit in one row of 4 lanes; walking an output row, one
    vector load per filter row and input column feeds a register shifted one lane per
    column, whose low lane completes an output every ``stride`` columns (two channels per
    register on AVX2, four on AVX-512). On the ``"avx512_vbmi"`` path, for strides 1 and 2
    and a 16-bit-class table, the direct kernel's lookups instead, streamed along each
    channel's plane (at stride 2 along the four phase planes, row and column parities, of
    each padded plane) and stored pixel-major through register transposes; taking a tap at
    a time, that variant also serves filters of up to 64 columns (5 x 5, 7 x 7, 1 x 9);
    elsewhere wider filters run through the rows of E in groups of 4 columns. The default
    for such layers on every path (on ``"avx512_vbmi"`` with a generic-class table from 128
    outputs; tables with factors of rank 1 or 2 aside on ``"avx2"`` and ``"avx512_vbmi"``,
    see below; int64 sums need a 16-bit-class table).

``"factored"`` (``factored.c``)
    Tables that are exactly a sum of ``r`` products of int16 factors, ``T[a, b] = sum_i
    U[a, i] * V[b, i]`` (DRUM, perforated and exact multipliers at ``r = 1``; see
    :mod:`axkern.lowrank`): the streamed codes become rows of factor values, the fixed ones
    columns, and ``vpmaddwd`` multiplies and adds 16 pairs per instruction into int32
    lanes (modulo ``2**32``, exact like the other methods): an integer GEMM, no lookups.
    Only for tables that axkern froze (:func:`axkern.backends.freeze_table`: a multiplier's
    own table and folded tables, whose entries cannot change after their factors were
    checked) and int32 sums; chosen by the cost model where it is cheaper (rank 1 and 2
    nearly everywhere; packing large weights on every call counts against it, which
    :func:`factored_weights` does once instead). Depthwise layers of rank 1 or 2 take a
    kernel of their own: a pair of values per channel and pixel (rank 1: the values of two
    columns a filter row's pair of taps meets), one ``vpmaddwd`` per tap (rank 2) or pair
    of taps (rank 1) for 8 channels (NHWC) or 8 pixels of a plane (NCHW indices to a
    dequantized NCHW output); the default for them on ``"avx2"`` and ``"avx512_vbmi"``
    (higher ranks take the general kernel when forced). On ``"avx512_vbmi"`` the codes
    become values by ``vpermi2b`` lookups in byte planes of the factors.

Paths (the instruction set): ``"avx512_vbmi"``, ``"avx2"``, ``"scalar"`` (portable C; the
compiler may vectorize it for the baseline ISA). The path is chosen once at import: the
environment variable ``AXKERN_CPU_PATH`` if set, else the best one the CPU supports. Every
function also takes ``path=`` to force one. Forcing a path that is unknown or that this CPU
cannot run raises ``ValueError``; no path is ever replaced silently by another. Every path
and method gives the same exact sums.

Tables whose entries span more than 65535 (``max - min``) take the portable int64 code on
every path (same arithmetic, exact, slower).

``gemm`` and ``conv2d`` can also dequantize as they store (``dequant=``): the float-level
layer's zero-point correction and scaling without an integer copy of the output.
"""
import os

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.math cimport floor
from libc.string cimport memcmp
from cython.parallel cimport prange

from .backends import (_check_index_array, _check_table, _check_threads, _table_max_abs,
                       check_conv_args, check_conv_geometry, check_gemm_args, check_out_array,
                       table_factors, table_token)

cnp.import_array()

__all__ = ["gemm", "conv2d", "factored_weights", "quantize_indices", "window_sums", "epilogue",
           "min_max", "same_bytes", "available_paths", "default_path", "max_threads", "PATHS",
           "METHODS"]

#: gemm and conv2d take packed= (see factored_weights)
SUPPORTS_PACKED = True

cdef extern from "axsimd.h" nogil:
    int AXS_PATH_SCALAR, AXS_PATH_AVX2, AXS_PATH_AVX512_VBMI
    int AXS_OK, AXS_ENOMEM, AXS_EPATH, AXS_EARG, AXS_EMETHOD
    int AXS_METHOD_AUTO, AXS_METHOD_DIRECT, AXS_METHOD_EXPAND, AXS_METHOD_DEPTHWISE
    int AXS_METHOD_FACTORED
    int64_t axs_set_fchunk(int64_t bytes)
    void axs_forked_child()
    int axs_byte_residual(const int32_t *table, uint64_t token, int path)

cdef extern from "axs_internal.h" nogil:
    int axs_threads(int nthreads)
    ctypedef struct axs_factors:
        int r
        const int16_t *U
        const int16_t *V
        const int16_t *packed
        int64_t packed_size
    int64_t axs_fpacked_size(int64_t ntap, int64_t CG, int64_t OG, int64_t groups, int r)
    void axs_fpack(const uint8_t *w, int64_t ntap, int64_t CG, int64_t OG, int64_t groups,
                   const axs_factors *fac, int16_t *Bp, int nthreads, int path)
    int axs_path_supported(int path)
    ctypedef struct axs_dequant:
        const double *scale
        const int64_t *corr
        const float *bias
        const int64_t *zw
        const int64_t *sumx
        const int64_t *gcol
        int64_t groups
        int64_t nchw
        int64_t bound
    int axs_gemm(const uint8_t *a, const uint8_t *b, const int32_t *table, uint64_t token,
                 const axs_factors *fac, int64_t M, int64_t K, int64_t N, int out64,
                 void *out, const axs_dequant *dq, int nthreads, int path, int method)
    int axs_conv2d(const uint8_t *x, const uint8_t *w, const int32_t *table, uint64_t token,
                   const axs_factors *fac, int64_t N, int64_t H, int64_t W, int64_t C,
                   int64_t KH, int64_t KW, int64_t COUT, int sh, int sw, int pt, int pb,
                   int pl, int pr, int dh, int dw, int64_t groups, int pad_code, int out64,
                   void *out, const axs_dequant *dq, int nthreads, int path, int method,
                   int in_nchw)
    int64_t axs_quantize(const float *x, int64_t rows, int64_t cols, int is_signed, float scale,
                      int32_t zp, float nmin, float nmax, float inv, int32_t qmin, int32_t qmax,
                      uint8_t mask, uint8_t *idx, int64_t *rowsum, int nthreads)
    int64_t axs_quantize_nchw(const float *x, int64_t N, int64_t C, int64_t HW, int is_signed,
                              float scale, int32_t zp, float nmin, float nmax, float inv,
                              int32_t qmin, int32_t qmax, uint8_t mask, uint8_t *idx,
                              int nthreads)
    int64_t axs_minmax(const float *x, int64_t n, float *lo, float *hi, int nthreads)
    int axs_window_sums(const uint8_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                        int64_t G, const int64_t *values, int64_t KH, int64_t KW, int sh, int sw,
                        int pt, int pl, int dh, int dw, int64_t OH, int64_t OW, int pad_code,
                        int64_t *out, int nthreads)
    void axs_im2col_codes(const uint8_t *x, int64_t N, int64_t C, int64_t H, int64_t W,
                          int64_t G, int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt,
                          int pl, int dh, int dw, int64_t OH, int64_t OW, int pad_code,
                          uint8_t *out, int nthreads)
    void axs_col2im_add(const double *ga, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G,
                        int64_t g, int64_t KH, int64_t KW, int sh, int sw, int pt, int pl,
                        int dh, int dw, int64_t OH, int64_t OW, double *gx, int nthreads)
    int axs_table_grads(const uint8_t *a, const uint8_t *b, int64_t M, int64_t K, int64_t N,
                         const float *DA, const float *DB, const double *gs, const double *g,
                         double *ga, double *gb, int nthreads)
    int axs_epilogue(const void *total, int in64, int64_t rows, int64_t cols, int64_t groups,
                      const int64_t *sumx, const int64_t *zw, const int64_t *corr,
                      const double *scale, const float *bias, float *y, int nthreads)

#: Every path this module knows, fastest first.
PATHS = ("avx512_vbmi", "avx2", "scalar")
_CODES = {"avx512_vbmi": AXS_PATH_AVX512_VBMI, "avx2": AXS_PATH_AVX2, "scalar": AXS_PATH_SCALAR}
_ENV = "AXKERN_CPU_PATH"
_QuantParams = None   # axkern.quant.QuantParams, imported on first use (quantize_indices)

#: ``conv2d``, ``quantize_indices`` and ``window_sums`` take ``out=`` (a caller's buffer:
#: the float-level layer reuses its work buffers, fresh pages cost page faults per call).
SUPPORTS_OUT = True
#: ``gemm`` and ``conv2d`` take ``dequant=`` (the float-level layer's epilogue, fused).
SUPPORTS_DEQUANT = True
#: ``conv2d`` takes ``out_format="NCHW"`` with ``dequant=`` (the store writes NCHW directly).
SUPPORTS_NCHW = True
#: ``conv2d`` takes ``in_format="NCHW"`` (NCHW indices; the depthwise method, and the
#: factored one on depthwise layers with a dequantized NCHW output, read them as they are,
#: the other methods from an NHWC copy).
SUPPORTS_NCHW_IN = True


def _out_array(out, shape, dtype, name="out", inputs=()):
    """``out`` checked to be a writeable C-contiguous array of exactly ``shape`` and ``dtype``
    that shares no memory with ``inputs`` (the kernels read them while writing it), or a new
    one when ``out`` is None."""
    if out is None:
        return np.empty(shape, dtype)
    out = check_out_array(out, shape, dtype, name)
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} overlaps an input of the call: expected a separate buffer")
    return out


def available_paths():
    """Names of the dispatch paths this CPU can run, fastest first.

    Returns
    -------
    tuple of str
        A subset of :data:`PATHS`; always ends with ``"scalar"``.
    """
    return tuple(p for p in PATHS if axs_path_supported(_CODES[p]))


# GNU OpenMP does not rebuild its thread pool in a child made by fork(): a parallel region
# of two or more threads there waits forever for the parent's threads (a multiprocessing
# pool or DataLoader worker with the 'fork' start method, after the parent ran a kernel).
# The child's calls run on one thread instead, with the same results (sums never depend on
# the thread count); the 'spawn' start method keeps them parallel.
os.register_at_fork(after_in_child=lambda: axs_forked_child())


def max_threads():
    """The number of threads a call with ``num_threads=None`` uses (OpenMP's default; 1 in
    a process made by ``fork()``, where every call runs on one thread)."""
    return axs_threads(0)


def _check_path(path, origin):
    if not isinstance(path, str):
        raise TypeError(f"{origin} must be a path name {PATHS}, got {type(path).__name__}")
    if path not in _CODES:
        raise ValueError(f"unknown CPU path {path!r} ({origin}): expected one of {PATHS}")
    if not axs_path_supported(_CODES[path]):
        raise ValueError(f"CPU path {path!r} ({origin}) is not supported by this CPU: "
                         f"available paths are {available_paths()}")
    return path


def _path_from_env():
    forced = os.environ.get(_ENV)
    if forced is None or forced == "":
        return available_paths()[0], None
    try:
        return _check_path(forced.strip(), f"environment variable {_ENV}"), None
    except ValueError as e:
        return None, e


# Chosen once at import. A bad AXKERN_CPU_PATH is reported when a kernel is first called
# (and by default_path()), never replaced by another path.
_DEFAULT, _DEFAULT_ERROR = _path_from_env()


def default_path():
    """The path used when ``path`` is not given (chosen at import).

    Raises
    ------
    ValueError
        If ``AXKERN_CPU_PATH`` named an unknown path or one this CPU cannot run.
    """
    if _DEFAULT_ERROR is not None:
        raise ValueError(str(_DEFAULT_ERROR))
    return _DEFAULT


def _resolve(path):
    if path is None:
        return _CODES[default_path()]
    return _CODES[_check_path(path, "path argument")]


def byte_residual(table, path=None):
    """Whether the expanded tables of ``table`` take the byte-residual form on ``path``.

    That form serves tables whose entries are the exact product of the operands' values
    plus a residual that spans at most 255 for every weight code (near-exact circuits:
    truncated or perforated products of small error, and EvoApproxLib-style circuits whose
    worst-case error stays within about a byte). The residual is summed by byte rows, twice
    the columns per load of the 16-bit rows, and the exact part by integer multiply-adds:
    on the ``"avx512_vbmi"`` path (a CPU with AVX-512 VNNI) rows of 64 columns and
    ``vpdpbusd``, for groups of more than 32 columns; on ``"avx2"`` rows of 32 and
    ``vpmaddwd``, for groups of more than 16. The sums are the same either way.

    Parameters
    ----------
    table : ndarray of int32, shape (256, 256)
        Indexed ``[activation code, weight code]``; values are the codes themselves
        (unsigned) or their int8 bit patterns (signed), whichever fits.
    path : {"avx512_vbmi", "avx2", "scalar"}, optional

    Returns
    -------
    bool
    """
    cdef int p = _resolve(path)
    table = _check_table(table)
    cdef cnp.ndarray tt = table
    cdef uint64_t token = table_token(table)
    cdef int rc
    with nogil:
        rc = axs_byte_residual(<const int32_t *>cnp.PyArray_DATA(tt), token, p)
    if rc < 0:
        raise MemoryError("byte_residual: out of memory preparing the table")
    return rc == 1


#: Kernel methods (``method=``): ``"auto"`` picks by a cost model of the call's shape.
METHODS = ("auto", "direct", "expand", "depthwise", "factored")
_METHOD_CODES = {"auto": AXS_METHOD_AUTO, "direct": AXS_METHOD_DIRECT,
                 "expand": AXS_METHOD_EXPAND, "depthwise": AXS_METHOD_DEPTHWISE,
                 "factored": AXS_METHOD_FACTORED}


def _method(method):
    if method is None:
        return AXS_METHOD_AUTO
    if not isinstance(method, str) or method not in _METHOD_CODES:
        raise ValueError(f"unknown kernel method {method!r}: expected one of {METHODS}")
    return _METHOD_CODES[method]


_METHOD_NEEDS = {
    "expand": "a table whose entries span at most 65535 (max - min) and int32 accumulation",
    "depthwise": ("a conv2d with groups equal to the input and output channels, horizontal "
                  "dilation 1 and at most 64 filter columns (more than 4 only off the "
                  "'scalar' path and with a table whose entries span at most 65535), and "
                  "int32 accumulation or a table whose entries span at most 65535 "
                  "(max - min)"),
    "factored": ("a table that axkern froze (a multiplier's own or folded table, see "
                 "axkern.backends.freeze_table) with exact int16 factors of rank at most 4 "
                 "(axkern.lowrank.factor_table), and int32 accumulation"),
}


def _check_reduction(int64_t K, what):
    # the kernels count reduction steps in int32 (AXS_EARG otherwise, an unclear message),
    # in blocks of up to 2**16 steps whose counters must not pass 2**31 - 1 either
    if K > 0x7fff0000:
        raise ValueError(f"{what}: the reduction length K = {K} exceeds 2**31 - 2**16, the most "
                         "the kernels sum (their step counters are 32-bit)")


def _raise(int code, what, method=None):
    if code == AXS_EMETHOD:
        raise ValueError(f"{what}: method {method!r} needs {_METHOD_NEEDS.get(method, '?')}; "
                         "use method 'direct' or 'auto'")
    if code == AXS_ENOMEM:
        raise MemoryError(f"{what}: out of memory for the kernel's work buffers")
    if code == AXS_EPATH:
        raise ValueError(f"{what}: the requested CPU path is not supported by this CPU")
    if code != AXS_OK:
        raise ValueError(f"{what}: invalid arguments (code {code})")



cdef class _Dequant:
    """A validated ``dequant=`` argument: the arrays, kept alive, and the C struct."""
    cdef axs_dequant dq
    cdef object keep

    def __init__(self, spec, int64_t rows, int64_t cols):
        if not isinstance(spec, dict) or "scale" not in spec or \
                set(spec) - {"scale", "corr", "bias", "zw", "sumx"}:
            raise ValueError("dequant must be a dict with the key 'scale' and optionally 'corr', "
                             f"'bias', 'zw' and 'sumx', got {spec!r:.200}")
        if (spec.get("zw") is None) != (spec.get("sumx") is None):
            raise ValueError("dequant: 'sumx' and 'zw' go together: give both or neither")
        cdef cnp.ndarray sc = _vec(spec["scale"], cols, np.float64, "dequant scale")
        if not np.isfinite(sc).all():
            raise ValueError("dequant scale must be finite")
        keep = [sc]
        self.dq.scale = <const double *>cnp.PyArray_DATA(sc)
        self.dq.corr = NULL
        self.dq.bias = NULL
        self.dq.zw = NULL
        self.dq.sumx = NULL
        self.dq.gcol = NULL
        self.dq.groups = 1
        self.dq.nchw = 0
        self.dq.bound = 0
        cdef cnp.ndarray a
        if spec.get("corr") is not None:
            a = _vec(spec["corr"], cols, np.int64, "dequant corr")
            keep.append(a)
            self.dq.corr = <const int64_t *>cnp.PyArray_DATA(a)
        if spec.get("bias") is not None:
            a = _vec(spec["bias"], cols, np.float32, "dequant bias")
            keep.append(a)
            self.dq.bias = <const float *>cnp.PyArray_DATA(a)
        if spec.get("sumx") is not None:
            sx = np.asarray(spec["sumx"])
            groups = sx.shape[sx.ndim - 1] if sx.ndim else 0
            if sx.dtype != np.int64 or sx.ndim < 1 or groups < 1 or cols % groups or \
                    sx.size != rows * groups:
                raise ValueError(f"dequant sumx must be an int64 array of {rows} rows by a number "
                                 f"of groups dividing {cols}, got dtype {sx.dtype} and shape "
                                 f"{sx.shape}")
            a = np.ascontiguousarray(sx)
            keep.append(a)
            self.dq.sumx = <const int64_t *>cnp.PyArray_DATA(a)
            a = _vec(spec["zw"], cols, np.int64, "dequant zw")
            keep.append(a)
            self.dq.zw = <const int64_t *>cnp.PyArray_DATA(a)
            a = np.ascontiguousarray(np.arange(cols, dtype=np.int64) // (cols // groups))
            keep.append(a)
            self.dq.gcol = <const int64_t *>cnp.PyArray_DATA(a)
            self.dq.groups = groups
        self.keep = keep


def _factored_chunk(nbytes=0):
    """The bytes of a convolution's input values that the factored method builds at a time
    (whole images; for tests that take a batch in several chunks): sets it when ``nbytes``
    > 0 and returns the previous value."""
    return axs_set_fchunk(nbytes)


cdef class _Factors:
    """The C view of a frozen table's factors (U, V), int16 (256, r) each."""
    cdef axs_factors f
    cdef object keep, packed

    def __init__(self, pair):
        cdef cnp.ndarray U = np.ascontiguousarray(pair[0], dtype=np.int16)
        cdef cnp.ndarray V = np.ascontiguousarray(pair[1], dtype=np.int16)
        if U.ndim != 2 or U.shape[0] != 256 or V.ndim != 2 or V.shape[0] != 256 \
                or U.shape[1] != V.shape[1] or not 1 <= U.shape[1] <= 8:
            raise ValueError("table factors must be two int16 arrays of shape (256, r), "
                             "1 <= r <= 8")
        self.keep = (U, V)
        self.f.r = <int>U.shape[1]
        self.f.U = <const int16_t *>cnp.PyArray_DATA(U)
        self.f.V = <const int16_t *>cnp.PyArray_DATA(V)
        self.f.packed = NULL
        self.f.packed_size = 0

    cdef use(self, FactoredWeights fw):
        cdef cnp.ndarray buf = fw.buf
        self.packed = buf
        self.f.packed = <const int16_t *>cnp.PyArray_DATA(buf)
        self.f.packed_size = buf.size


cdef class FactoredWeights:
    """Weight codes packed for the factored method, once (see :func:`factored_weights`):
    the fixed side that every factored call would otherwise pack from the codes again."""
    cdef readonly object w
    cdef readonly uint64_t token
    cdef readonly int64_t groups
    cdef object buf

    @property
    def nbytes(self):
        return self.buf.nbytes

    def __repr__(self):
        return (f"FactoredWeights(shape={self.w.shape}, groups={self.groups}, "
                f"{self.buf.nbytes} bytes)")


def factored_weights(w, table, groups=1, num_threads=None):
    """The fixed side of the factored method packed once for weight codes ``w``, for
    ``gemm(..., packed=)`` / ``conv2d(..., packed=)`` calls that pass the same ``w`` again.

    Parameters
    ----------
    w : ndarray of uint8
        ``b`` of :func:`gemm` (K, N) or the HWIO filters of :func:`conv2d`, C-contiguous and
        read-only (weights that may change cannot be packed once).
    table : ndarray of int32, shape (256, 256)
        A table registered by :func:`axkern.backends.freeze_table`.
    groups : int
        The convolution's groups (1 for a GEMM).

    Returns
    -------
    FactoredWeights or None
        None when the table has no factors (see :mod:`axkern.lowrank`).
    """
    if not isinstance(w, np.ndarray) or w.dtype != np.uint8 or w.ndim not in (2, 4) \
            or not w.flags.c_contiguous or not _unchangeable(w):
        raise ValueError("w must be a read-only C-contiguous uint8 array of 2 (K, N) or 4 "
                         f"(KH, KW, C / groups, COUT) dimensions, with no writeable array "
                         f"behind it, got {getattr(w, 'dtype', None)} {getattr(w, 'shape', None)}"
                         + (" (a read-only view of a writeable array)"
                            if isinstance(w, np.ndarray) and not w.flags.writeable else ""))
    cdef uint64_t token = table_token(table)
    if token == 0:
        raise ValueError("table must be a table registered by axkern.backends.freeze_table")
    cols = w.shape[w.ndim - 1]
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1 \
            or cols % groups:
        raise ValueError(f"groups must be an int >= 1 dividing the {cols} columns, "
                         f"got {groups!r}")
    pair = table_factors(table)
    if pair is None:
        return None
    cdef _Factors fac = _Factors(pair)
    cdef int64_t ntap = 1 if w.ndim == 2 else w.shape[0] * w.shape[1]
    cdef int64_t CG = w.shape[0] if w.ndim == 2 else w.shape[2]
    cdef int64_t OG = cols // groups, g = groups
    cdef cnp.ndarray buf = np.empty(axs_fpacked_size(ntap, CG, OG, g, fac.f.r), np.int16)
    cdef cnp.ndarray ww = w
    cdef int nt = 0 if num_threads is None else _check_threads(num_threads)
    cdef int p = _resolve(None)
    with nogil:
        axs_fpack(<const uint8_t *>cnp.PyArray_DATA(ww), ntap, CG, OG, g, &fac.f,
                  <int16_t *>cnp.PyArray_DATA(buf), nt, p)
    buf.setflags(write=False)
    cdef FactoredWeights fw = FactoredWeights.__new__(FactoredWeights)
    fw.w, fw.token, fw.groups, fw.buf = w, token, groups, buf
    return fw


def _unchangeable(a):
    """Whether nothing can write ``a``'s memory through NumPy: ``a`` and every array it views
    read-only (a read-only view of a writeable array still changes with it), the chain
    ending in an array that owns its memory or in an immutable object (bytes)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        if a.base is None:
            return True
        a = a.base
    return isinstance(a, bytes)


cdef _Factors _factors_for(table, int meth, int out64, w, packed, int64_t groups):
    # only the methods that may use them look them up (found once per frozen table)
    if packed is not None and not isinstance(packed, FactoredWeights):
        raise TypeError(f"packed must come from factored_weights, got {type(packed).__name__}")
    if out64 or (meth != AXS_METHOD_AUTO and meth != AXS_METHOD_FACTORED):
        return None
    pair = table_factors(table)
    if pair is None:
        return None
    cdef _Factors fac = _Factors(pair)
    cdef FactoredWeights fw
    if packed is not None:
        fw = packed
        if fw.w is not w or fw.token != table_token(table) or fw.groups != groups:
            raise ValueError("packed weights were made for other weights, table or groups")
        if not _unchangeable(w):
            raise ValueError("packed weights were made for weights that have been made "
                             "writeable since: pack them again")
        fac.use(fw)
    return fac


cdef const axs_factors *_fac_ptr(_Factors f):
    return NULL if f is None else &f.f


cdef void _sum_bound(_Dequant dq, table, uint64_t token, int64_t K):
    # K entries of a frozen table sum to at most K max|T| (its max|T| remembered when it was
    # frozen): the bound that lets the stores add the correction in int32 (axs_xdeq_init)
    if dq is not None and token and 0 < K <= 0x7fffffff:
        dq.dq.bound = K * _table_max_abs(table)


cdef const axs_dequant *_dq_ptr(_Dequant d):
    return NULL if d is None else &d.dq


def gemm(a, b, table, out_dtype=np.int64, num_threads=None, path=None, out=None,
         dequant=None, method=None, packed=None):
    """``out[m, n] = sum_k table[a[m, k], b[k, n]]``, exactly (or dequantized, see below).

    Parameters
    ----------
    a : ndarray of uint8, shape (M, K)
        Activation table indices (rows of the table).
    b : ndarray of uint8, shape (K, N)
        Weight table indices (columns of the table).
    table : ndarray of int32, shape (256, 256)
    out_dtype : {numpy.int32, numpy.int64}
        Accumulator and output type; int32 is exact whenever every true sum fits int32.
    num_threads : int, optional
        OpenMP threads; default ``OMP_NUM_THREADS`` or all cores.
    path : {"avx512_vbmi", "avx2", "scalar"}, optional
        Force a dispatch path (default: :func:`default_path`).
    out : ndarray of out_dtype, shape (M, N), optional
        C-contiguous buffer for the result (not overlapping the inputs); float32 with
        ``dequant``.
    dequant : dict, optional
        Dequantize in the kernel instead of returning the sums: ``scale`` (N,) float64 and
        optionally ``corr`` (N,) int64, ``bias`` (N,) float32, ``zw`` (N,) int64 with
        ``sumx`` (M, G) int64 give, from each exact sum ``v`` (accumulated as ``out_dtype``),
        ``float32(float64(v + corr[n] - zw[n] * sumx[m, n // (N // G)]) * scale[n])`` plus
        ``bias[n]`` in float32: what :func:`epilogue` does to the sums.
    method : {"auto", "direct", "expand", "factored"}, optional
        ``"direct"``: one table lookup per multiply-accumulate (the path's micro-kernel).
        ``"expand"``: expanded tables, one row of entries of all output columns per
        streamed code and step, loaded as vectors (16-bit-class tables and int32 sums only,
        else ``ValueError``). ``"factored"``: integer products of the table's exact factors
        (frozen tables with factors of rank at most 4 and int32 sums only, else
        ``ValueError``). ``"auto"`` (default) estimates each from the shape and runs the
        cheapest; every method gives the same exact sums.
    packed : FactoredWeights, optional
        ``factored_weights(b, table)``: the factored method's packing of these weights,
        made once for calls that pass the same ``b`` and ``table`` again (``ValueError``
        when it was made for other ones).

    Returns
    -------
    ndarray of out_dtype (float32 with ``dequant``), shape (M, N)
    """
    cdef int p = _resolve(path)
    cdef int meth = _method(method)
    b_given = b
    a, b, table, out_dtype, num_threads = check_gemm_args(a, b, table, out_dtype, num_threads)
    cdef int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef _Dequant dq = None if dequant is None else _Dequant(dequant, M, N)
    _check_reduction(K, "gemm")
    out = _out_array(out, (M, N), out_dtype if dq is None else np.float32,
                     inputs=(a, b, table) + (() if dq is None else tuple(dq.keep)))
    cdef cnp.ndarray aa = a, bb = b, tt = table, oo = out
    cdef int out64 = out_dtype == np.int64
    cdef int nt = 0 if num_threads is None else num_threads
    cdef int rc
    cdef const axs_dequant *dqp = _dq_ptr(dq)
    cdef uint64_t token = table_token(table)
    _sum_bound(dq, table, token, K)
    cdef _Factors fac = _factors_for(table, meth, out64, b_given, packed, 1)
    cdef const axs_factors *facp = _fac_ptr(fac)
    with nogil:
        rc = axs_gemm(<const uint8_t *>cnp.PyArray_DATA(aa), <const uint8_t *>cnp.PyArray_DATA(bb),
                      <const int32_t *>cnp.PyArray_DATA(tt), token, facp, M, K, N, out64,
                      cnp.PyArray_DATA(oo), dqp, nt, p, meth)
    _raise(rc, "gemm", method)
    return out


def conv2d(x, w, table, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           pad_code=0, out_dtype=np.int64, num_threads=None, path=None, out=None,
           dequant=None, method=None, out_format="NHWC", in_format="NHWC", packed=None):
    """Grouped 2-D convolution of table lookups, NHWC input and HWIO filters, exactly.

    Parameters
    ----------
    x : ndarray of uint8, shape (N, H, W, C), or (N, C, H, W) with ``in_format="NCHW"``
        Activation table indices.
    w : ndarray of uint8, shape (KH, KW, C // groups, COUT)
        Weight table indices.
    table : ndarray of int32, shape (256, 256)
    stride, dilation : pair of int
    padding : (top, bottom, left, right)
        Padded positions hold ``pad_code`` and are looked up like any other position.
    groups : int
    pad_code : int
        Table index of the padding value (0..255).
    out_dtype : {numpy.int32, numpy.int64}
    num_threads : int, optional
    path : {"avx512_vbmi", "avx2", "scalar"}, optional
    out : ndarray of out_dtype, shape (N, OH, OW, COUT), optional
        C-contiguous buffer for the result (not overlapping the inputs); float32 with
        ``dequant``.
    dequant : dict, optional
        As in :func:`gemm`, with output rows ``(n, oy, ox)`` and ``sumx`` of shape
        (N, OH, OW, G).
    method : {"auto", "direct", "expand", "depthwise", "factored"}, optional
        As in :func:`gemm`; ``"depthwise"`` (depthwise layers only, see the module notes)
        is the default for depthwise layers on every path (on ``"avx512_vbmi"`` with a
        generic-class table from 128 outputs); on ``"avx2"`` and ``"avx512_vbmi"`` a table
        with factors of rank 1 or 2 takes ``"factored"`` instead (its depthwise kernel).
    out_format : {"NHWC", "NCHW"}
        Layout of the dequantized output: ``"NCHW"`` (with ``dequant`` only) stores
        ``(N, COUT, OH, OW)`` directly, every method and path, the same values as the
        NHWC output transposed.
    packed : FactoredWeights, optional
        ``factored_weights(w, table, groups)``, as for :func:`gemm`.
    in_format : {"NHWC", "NCHW"}
        Layout of ``x``. The depthwise method works on planes and reads NCHW indices as
        they are (an NCHW input, e.g. PyTorch's, then needs no transposition at all), as
        does the factored method on depthwise layers with a dequantized NCHW output at
        horizontal stride 1 without window sums; the other methods and calls take an NHWC
        copy. The same sums either way.

    Returns
    -------
    ndarray of out_dtype (float32 with ``dequant``), shape (N, OH, OW, COUT) (or
    (N, COUT, OH, OW) with ``out_format="NCHW"``)
        ``out[n, oy, ox, o] = sum_{ky, kx, c} table[xpad[n, oy*sh + ky*dh, ox*sw + kx*dw,
        g*Cg + c], w[ky, kx, c, o]]`` with ``g = o // (COUT // groups)``.
    """
    cdef int p = _resolve(path)
    cdef int meth = _method(method)
    if in_format not in ("NHWC", "NCHW"):
        raise ValueError(f"in_format must be 'NHWC' or 'NCHW', got {in_format!r}")
    cdef int in_nchw = in_format == "NCHW"
    w_given = w
    (x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads,
     (OH, OW)) = check_conv_args(x, w, table, stride, padding, dilation, groups, pad_code,
                                 out_dtype, num_threads, x_format=in_format)
    cdef int64_t N = x.shape[0], H, W, C
    if in_nchw:
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
    else:
        H, W, C = x.shape[1], x.shape[2], x.shape[3]
    cdef int64_t KH = w.shape[0], KW = w.shape[1], COUT = w.shape[3]
    if out_format not in ("NHWC", "NCHW"):
        raise ValueError(f"out_format must be 'NHWC' or 'NCHW', got {out_format!r}")
    nchw = out_format == "NCHW"
    if nchw and dequant is None:
        raise ValueError("out_format='NCHW' needs dequant= (NCHW stores are dequantizing)")
    cdef _Dequant dq = None if dequant is None else _Dequant(dequant, N * OH * OW, COUT)
    if nchw:
        dq.dq.nchw = OH * OW
    _check_reduction(KH * KW * (w.shape[2]), "conv2d")
    out = _out_array(out, (N, COUT, OH, OW) if nchw else (N, OH, OW, COUT),
                     out_dtype if dq is None else np.float32,
                     inputs=(x, w, table) + (() if dq is None else tuple(dq.keep)))
    cdef cnp.ndarray xx = x, ww = w, tt = table, oo = out
    cdef int out64 = out_dtype == np.int64
    cdef int nt = 0 if num_threads is None else num_threads
    cdef int sh = stride[0], sw = stride[1], dh = dilation[0], dw = dilation[1]
    cdef int pt = padding[0], pb = padding[1], pl = padding[2], pr = padding[3]
    cdef int64_t g = groups
    cdef int pc = pad_code
    cdef int rc
    cdef const axs_dequant *dqp = _dq_ptr(dq)
    cdef uint64_t token = table_token(table)
    _sum_bound(dq, table, token, KH * KW * w.shape[2])
    cdef _Factors fac = _factors_for(table, meth, out64, w_given, packed, g)
    cdef const axs_factors *facp = _fac_ptr(fac)
    with nogil:
        rc = axs_conv2d(<const uint8_t *>cnp.PyArray_DATA(xx), <const uint8_t *>cnp.PyArray_DATA(ww),
                        <const int32_t *>cnp.PyArray_DATA(tt), token, facp, N, H, W, C, KH,
                        KW, COUT, sh, sw, pt, pb, pl, pr, dh, dw, g, pc, out64,
                        cnp.PyArray_DATA(oo), dqp, nt, p, meth, in_nchw)
    _raise(rc, "conv2d", method)
    return out


def quantize_indices(x, params, index_mask=255, row_sums=False, num_threads=None, out=None,
                     from_nchw=False):
    """Table indices of ``x`` under per-tensor ``params`` in one parallel pass.

    Bit-identical to ``axkern.quant.quantize_float(x, params)`` followed by the conversion
    of the codes to table indices (``code & index_mask``; two's complement for signed
    codes), without NumPy's temporaries: the float-level layers spend more time quantizing
    than the fast kernels spend on the products.

    Parameters
    ----------
    x : array_like of float
        Finite values (NaN or Inf raise ValueError).
    params : axkern.quant.QuantParams
        Per-tensor parameters (a scalar scale and zero point).
    index_mask : int, default 255
        ``2**bits - 1`` of the multiplier's table.
    row_sums : bool, default False
        Also return the sum of the codes (not the indices) along the last axis, as int64.
    num_threads : int, optional
    out : ndarray of uint8, shaped as ``x``, optional
        C-contiguous buffer for the indices.
    from_nchw : bool, default False
        ``x`` is a 4-D (N, C, H, W) array and the indices come back as (N, H, W, C): the
        layout change made while quantizing (the same indices as quantizing
        ``x.transpose(0, 2, 3, 1)``), in parallel over images and blocks of pixels. Not with
        ``row_sums``.

    Returns
    -------
    indices : ndarray of uint8, shaped as ``x`` (NHWC with ``from_nchw``)
    sums : ndarray of int64, shaped as ``x.shape[:-1]`` (only with ``row_sums=True``)
    """
    global _QuantParams
    if _QuantParams is None:
        from .quant import QuantParams as _QuantParams
    if not isinstance(params, _QuantParams):
        raise TypeError(f"params must be QuantParams, got {type(params).__name__}")
    if params.per_channel:
        raise ValueError("quantize_indices takes per-tensor parameters only (a scalar scale and "
                         "zero point); use axkern.quant.quantize for per-channel ones")
    if isinstance(index_mask, bool) or not isinstance(index_mask, (int, np.integer)) \
            or index_mask not in (3, 7, 15, 31, 63, 127, 255):
        raise ValueError(f"index_mask must be 2**bits - 1 for bits 2..8, got {index_mask!r}")
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:
        arr = x   # the float-level layer's case: no dtype inquiries
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
                or np.iscomplexobj(arr):
            raise TypeError(f"x must be a real numeric array, got dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float32, order="C")  # (keeps 0-d arrays 0-d)
    qlo, qhi = int(params.qmin), int(params.qmax)
    if max(abs(qlo), abs(qhi)) > 65535:
        raise ValueError(f"quantize_indices takes codes of at most 16 bits, got the range "
                         f"[{params.qmin}, {params.qmax}]")
    num_threads = _check_threads(num_threads)
    if from_nchw and (arr.ndim != 4 or row_sums):
        raise ValueError(f"from_nchw takes a 4-D (N, C, H, W) array and no row_sums, got shape "
                         f"{arr.shape}{' with row_sums' if row_sums else ''}")
    shape = arr.shape
    nd = arr.ndim  # (no negative indices: this module is compiled with wraparound=False)
    cdef int64_t cols = shape[nd - 1] if nd else 1
    cdef int64_t rows = arr.size // cols if cols else 0
    idx = _out_array(out, (shape[0], shape[2], shape[3], shape[1]) if from_nchw else shape,
                     np.uint8, inputs=(arr,))
    sums = np.empty(shape[:nd - 1] if nd else (), np.int64) if row_sums else None
    # The float32 parameters exactly as axkern.quant computes them (float32 operations in
    # C: one rounding each, as NumPy's float32 scalars; no multiply-add to contract).
    cdef int32_t zp = int(params.zero_point), qmin = qlo, qmax = qhi
    cdef float c_s = np.float32(params.scale), zf = <float>zp
    cdef float c_nmin = (<float>qmin - zf) * c_s, c_nmax = (<float>qmax - zf) * c_s
    cdef float c_inv = <float>1 / c_s
    cdef int is_signed = bool(params.signed)
    cdef uint8_t mask = int(index_mask)
    cdef int nt = 0 if num_threads is None else int(num_threads)
    cdef cnp.ndarray xa = arr, ia = idx
    cdef int64_t *sp = NULL
    cdef int64_t nbad = 0
    cdef cnp.ndarray sa
    if sums is not None:
        sa = sums
        sp = <int64_t *>cnp.PyArray_DATA(sa)
    cdef int64_t n4 = 0, c4 = 0, hw4 = 0
    if from_nchw:
        n4, c4, hw4 = shape[0], shape[1], shape[2] * shape[3]
        if n4 and c4 and hw4:
            with nogil:
                nbad = axs_quantize_nchw(<const float *>cnp.PyArray_DATA(xa), n4, c4, hw4,
                                         is_signed, c_s, zp, c_nmin, c_nmax, c_inv, qmin, qmax,
                                         mask, <uint8_t *>cnp.PyArray_DATA(ia), nt)
            if nbad < 0:
                raise MemoryError("quantize_indices: out of memory for the tiles")
    elif rows and cols:
        with nogil:
            nbad = axs_quantize(<const float *>cnp.PyArray_DATA(xa), rows, cols, is_signed, c_s, zp,
                         c_nmin, c_nmax, c_inv, qmin, qmax, mask,
                         <uint8_t *>cnp.PyArray_DATA(ia), sp, nt)
    elif sums is not None:
        sums[...] = 0
    if nbad:  # checked in the same pass (a separate np.isfinite pass costs as much again)
        raise ValueError("x holds NaN or Inf: quantization needs finite values")
    return (idx, sums) if row_sums else idx


def window_sums(x, values, ksize, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                pad_code=0, num_threads=None, path=None, out=None):
    """Sum of the operand values over each output's receptive field, per group.

    The zero-point correction ``z_w * sum_window(q_x)`` of a convolution: the same as a
    convolution with one all-zero filter per group through the table ``T[a, 0] = values[a]``
    (padded positions count ``values[pad_code]``, as the convolution looks them up), computed
    directly in one parallel pass (per-pixel channel sums per image, then the taps added),
    which costs a small fraction of a table-lookup convolution.

    Parameters
    ----------
    x : ndarray of uint8, shape (N, H, W, C)
        Table indices (NHWC).
    values : array_like of int, shape (256,) or (2**bits,)
        Operand value of every index (``Multiplier.values()``).
    ksize : (KH, KW)
    stride, padding, dilation, groups, pad_code, num_threads, path
        As in :func:`conv2d` (``path`` is validated alike; every path runs the same portable
        code, which needs no table lookups).
    out : ndarray of int64, shape (N, OH, OW, groups), optional
        C-contiguous buffer for the result.

    Returns
    -------
    ndarray of int64, shape (N, OH, OW, groups)
    """
    cdef cnp.ndarray vals = _window_values(values)
    try:
        KH, KW = (int(k) for k in ksize)
    except (TypeError, ValueError):
        raise TypeError(f"ksize must be a pair of ints, got {ksize!r}") from None
    if KH < 1 or KW < 1:
        raise ValueError(f"ksize must be positive, got {ksize!r}")
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"x must be a 4-D NHWC array of uint8 indices, got {getattr(x, 'shape', x)!r}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1 \
            or x.shape[3] % groups:
        raise ValueError(f"groups must be an integer >= 1 dividing the {x.shape[3]} channels, "
                         f"got {groups!r}")
    _resolve(path)  # validated for the same errors as the kernels; the sums need no lookups
    # the checks of conv2d's, on the shape of one all-zero filter per group (no lookups: no
    # table, and the sums are int64)
    x = _check_index_array(x, "x", 4)
    stride, padding, dilation, groups, pad_code, (OH, OW) = check_conv_geometry(
        x.shape, (KH, KW, x.shape[3] // groups, int(groups)), stride, padding, dilation,
        groups, pad_code)
    num_threads = _check_threads(num_threads)
    out = _out_array(out, (x.shape[0], OH, OW, groups), np.int64, inputs=(x,))
    cdef cnp.ndarray xx = x, vv = vals, oo = out
    cdef int64_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3], G = groups
    cdef int64_t c_kh = KH, c_kw = KW, c_oh = OH, c_ow = OW
    cdef int sh = stride[0], sw = stride[1], dh = dilation[0], dw = dilation[1]
    cdef int pt = padding[0], pl = padding[2], pc = pad_code
    cdef int nt = 0 if num_threads is None else num_threads
    cdef int rc = 0
    if out.size:
        with nogil:
            rc = axs_window_sums(<const uint8_t *>cnp.PyArray_DATA(xx), N, H, W, C, G,
                                 <const int64_t *>cnp.PyArray_DATA(vv), c_kh, c_kw, sh, sw, pt,
                                 pl, dh, dw, c_oh, c_ow, pc, <int64_t *>cnp.PyArray_DATA(oo), nt)
    _raise(rc, "window_sums")
    return out

_VALUES = {}   # the bytes of a checked values argument -> its 256 int64 values


def _window_values(values):
    """window_sums' ``values`` checked and as 256 int64 (zero past its length), remembered
    by their bytes: the float-level layer passes the multiplier's values on every call, and
    checking them again cost several us."""
    v = np.asarray(values)
    key = (v.dtype.str, v.shape, v.tobytes()) if v.dtype.kind in "iu" and v.ndim == 1 else None
    vals = None if key is None else _VALUES.get(key)
    if vals is not None:
        return vals
    if v.ndim != 1 or not 1 <= v.shape[0] <= 256 or not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"values must be a 1-D integer array of at most 256 operand values, "
                         f"got shape {v.shape} and dtype {v.dtype}")
    if v.size and (int(v.min()) < -(1 << 15) or int(v.max()) >= 1 << 16):
        raise ValueError("values must be 16-bit operand values")
    vals = np.zeros(256, np.int64)
    vals[:v.shape[0]] = v
    vals.setflags(write=False)
    if len(_VALUES) >= 64:
        _VALUES.clear()
    _VALUES[key] = vals
    return vals


def _vec(v, n, dtype, name):
    """``v`` as a C-contiguous length-``n`` vector of ``dtype`` (scalars broadcast)."""
    if type(v) is np.ndarray and v.dtype == dtype and v.ndim == 1 and v.shape[0] == n \
            and v.flags.c_contiguous:
        return v   # as the float-level layer passes them: no conversions (a few us each)
    if type(v) is np.ndarray and v.ndim == 0 and v.dtype == dtype:
        # a per-tensor term (the weight zero point): filled directly (the general path's
        # checks took 6 - 8 us)
        return np.full(n, v[()], dtype)
    a = _numbers(v, dtype, name)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got shape {a.shape}")
    return np.ascontiguousarray(np.broadcast_to(a.astype(dtype, copy=False), (n,)))


def _numbers(v, dtype, name):
    """``v`` as an array that converts to ``dtype`` without changing a value: real numbers
    for a float type, integers (or floats that hold them) for an integer type; a None, a
    NaN scale or a fractional correction would otherwise pass as garbage."""
    a = np.asarray(v)
    if a.dtype == object or a.dtype == bool or not np.issubdtype(a.dtype, np.number) \
            or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got {type(v).__name__} of dtype "
                        f"{a.dtype}")
    if np.issubdtype(np.dtype(dtype), np.integer) and not np.issubdtype(a.dtype, np.integer):
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"{name} must hold integers, got {a.dtype} values that are not")
    return a


def epilogue(total, scale, zw=None, sumx=None, corr=None, bias=None, groups=1,
             num_threads=None):
    """Zero-point correction and dequantization of integer sums in one parallel pass.

    Computes, per output row ``r`` (all axes but the last) and channel ``o`` of group
    ``g = o // (cols // groups)``::

        v = total[r, o] - zw[o] * sumx[r, g] + corr[o]      # int64, exact
        y[r, o] = float32(float64(v) * scale[o]) + bias[o]  # bias added in float32

    i.e. exactly what ``axconv2d``/``axmatmul`` compute with NumPy (int64 arithmetic, one
    float64 product rounded to float32, a float32 addition), without temporaries the size
    of the output.

    Parameters
    ----------
    total : ndarray of int32 or int64, shape (..., cols)
        The kernel's exact sums of table entries.
    scale : float or array_like of float, shape (cols,)
        ``s_x * s_w`` (float64).
    zw : int or array_like of int, shape (cols,), optional
        Weight zero points; needed with ``sumx``.
    sumx : ndarray of int64, shape (..., groups), optional
        Sums of the activation codes over each output's terms (per group).
    corr : array_like of int, shape (cols,), optional
        The per-channel constant ``K z_x z_w - z_x sum q_w``.
    bias : array_like of float32, shape (cols,), optional
    groups : int, default 1
        Must divide ``cols``.
    num_threads : int, optional

    Returns
    -------
    ndarray of float32, shaped as ``total``
    """
    t = np.asarray(total)
    if t.dtype not in (np.dtype(np.int32), np.dtype(np.int64)) or t.ndim < 1:
        raise TypeError(f"total must be an int32 or int64 array with a channel axis, got "
                        f"dtype {t.dtype} and shape {t.shape}")
    t = np.ascontiguousarray(t)
    cdef int64_t cols = t.shape[t.ndim - 1]
    cdef int64_t rows = t.size // cols if cols else 0
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1 \
            or (cols and cols % groups):
        raise ValueError(f"groups must be an integer >= 1 dividing the {cols} channels, got "
                         f"{groups!r}")
    num_threads = _check_threads(num_threads)
    if (sumx is None) != (zw is None):
        raise ValueError("sumx and zw go together: give both or neither")
    cdef cnp.ndarray sc = _vec(scale, cols, np.float64, "scale")
    if not np.isfinite(sc).all():
        raise ValueError("scale must be finite")
    cdef cnp.ndarray zz, cc, bb, ss
    cdef const int64_t *zp = NULL
    cdef const int64_t *cp = NULL
    cdef const int64_t *sp = NULL
    cdef const float *bp = NULL
    if sumx is not None:
        sx = np.ascontiguousarray(_numbers(sumx, np.int64, "sumx"), np.int64)
        want = tuple(t.shape)[:t.ndim - 1] + (int(groups),)
        if tuple(sx.shape) != want:
            raise ValueError(f"sumx must have shape {want}, got {sx.shape}")
        ss = sx
        sp = <const int64_t *>cnp.PyArray_DATA(ss)
        zz = _vec(zw, cols, np.int64, "zw")
        zp = <const int64_t *>cnp.PyArray_DATA(zz)
    if corr is not None:
        cc = _vec(corr, cols, np.int64, "corr")
        cp = <const int64_t *>cnp.PyArray_DATA(cc)
    if bias is not None:
        bb = _vec(bias, cols, np.float32, "bias")
        bp = <const float *>cnp.PyArray_DATA(bb)
    y = np.empty(t.shape, np.float32)
    cdef cnp.ndarray ta = t, ya = y
    cdef int in64 = t.dtype == np.int64
    cdef int64_t g = groups
    cdef int nt = 0 if num_threads is None else int(num_threads)
    cdef int rc = 0
    if rows and cols:
        with nogil:
            rc = axs_epilogue(cnp.PyArray_DATA(ta), in64, rows, cols, g, sp, zp, cp,
                         <const double *>cnp.PyArray_DATA(sc), bp,
                         <float *>cnp.PyArray_DATA(ya), nt)
    _raise(rc, "epilogue")
    return y


def table_grads(a, b, da, db, gs, g, need_a=True, need_b=True, num_threads=None):
    """The backward products of a LUT GEMM through difference tables (``axkern.torch``'s
    ``grad="table"``), in float64.

    ``ga[m, k] = sum_n da[a[m, k], b[k, n]] * gs[m, n]`` and
    ``gb[k, n] = sum_m db[a[m, k], b[k, n]] * g[m, n]``.

    Parameters
    ----------
    a : ndarray of uint8, shape (M, K)
    b : ndarray of uint8, shape (K, N)
        Operand indices into the tables.
    da, db : ndarray of float32, shape (256, 256)
    gs, g : ndarray of float64, shape (M, N)
    need_a, need_b : bool
        Compute ``ga`` / ``gb`` (None in their place otherwise).
    num_threads : int, optional

    Returns
    -------
    ga : ndarray of float64, shape (M, K), or None
    gb : ndarray of float64, shape (K, N), or None
    """
    num_threads = _check_threads(num_threads)
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.dtype != np.uint8 or a.ndim != 2 or b.dtype != np.uint8 or b.ndim != 2 \
            or a.shape[1] != b.shape[0]:
        raise ValueError(f"a (M, K) and b (K, N) must be uint8 index matrices that chain, got "
                         f"{a.dtype} {a.shape} and {b.dtype} {b.shape}")
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    tabs = []
    for name, t in (("da", da), ("db", db)):
        t = np.ascontiguousarray(t)
        if t.dtype != np.float32 or t.shape != (256, 256):
            raise ValueError(f"{name} must be a float32 (256, 256) table, got {t.dtype} {t.shape}")
        tabs.append(t)
    mats = []
    for name, v in (("gs", gs), ("g", g)):
        v = np.ascontiguousarray(v)
        if v.dtype != np.float64 or v.shape != (M, N):
            raise ValueError(f"{name} must be float64 of shape ({M}, {N}), got {v.dtype} {v.shape}")
        mats.append(v)
    ga = np.empty((M, K), np.float64) if need_a else None
    gb = np.empty((K, N), np.float64) if need_b else None
    cdef cnp.ndarray aa = a, bb = b, ta = tabs[0], tb = tabs[1], ms = mats[0], mg = mats[1]
    cdef double *pa = NULL
    cdef double *pb = NULL
    if ga is not None:
        pa = <double *>cnp.PyArray_DATA(ga)
    if gb is not None:
        pb = <double *>cnp.PyArray_DATA(gb)
    cdef int nt = 0 if num_threads is None else num_threads
    cdef int64_t cM = M, cK = K, cN = N
    cdef int rc
    with nogil:
        rc = axs_table_grads(<const uint8_t *>cnp.PyArray_DATA(aa), <const uint8_t *>cnp.PyArray_DATA(bb),
                        cM, cK, cN, <const float *>cnp.PyArray_DATA(ta),
                        <const float *>cnp.PyArray_DATA(tb), <const double *>cnp.PyArray_DATA(ms),
                        <const double *>cnp.PyArray_DATA(mg), pa, pb, nt)
    _raise(rc, "table_grads")
    return ga, gb


def _im2col_geometry(shape, groups, group, ksize, stride, padding, dilation):
    """(N, C, H, W, KH, KW, OH, OW, Kg) of one group's im2col, validated."""
    N, C, H, W = (int(v) for v in shape)
    KH, KW = (int(v) for v in ksize)
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    if groups < 1 or C % groups or not 0 <= group < groups or KH < 1 or KW < 1 or \
            min(sh, sw, dh, dw) < 1 or min(pt, pb, pl, pr) < 0:
        raise ValueError(f"bad im2col geometry: C={C}, groups={groups}, group={group}, "
                         f"ksize={ksize}, stride={stride}, padding={padding}, dilation={dilation}")
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"the filter does not fit the padded {H}x{W} input")
    return N, C, H, W, KH, KW, OH, OW, C // groups * KH * KW


def im2col_codes(x, groups, group, ksize, stride, padding, dilation, pad_code, num_threads=None):
    """The im2col rows of one group of NCHW uint8 codes (``axkern.torch``'s gradient tables).

    Row ``(n * OH + oy) * OW + ox``, column ``(c * KH + ky) * KW + kx`` (``c`` within the
    group, the order of ``torch.nn.functional.unfold``); ``pad_code`` outside the image.
    ``padding`` is ``(top, bottom, left, right)``.

    Returns
    -------
    ndarray of uint8, shape (N * OH * OW, C // groups * KH * KW)
    """
    num_threads = _check_threads(num_threads)
    x = np.ascontiguousarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"x must be 4-D NCHW uint8 codes, got {x.dtype} {x.shape}")
    if not 0 <= int(pad_code) <= 255:
        raise ValueError(f"pad_code must be 0..255, got {pad_code}")
    N, C, H, W, KH, KW, OH, OW, Kg = _im2col_geometry(x.shape, groups, group, ksize, stride,
                                                      padding, dilation)
    out = np.empty((N * OH * OW, Kg), np.uint8)
    cdef cnp.ndarray xx = x, oo = out
    cdef int64_t cN = N, cC = C, cH = H, cW = W, cG = groups, cg = group, cKH = KH, cKW = KW
    cdef int64_t cOH = OH, cOW = OW
    cdef int sh = stride[0], sw = stride[1], pt = padding[0], pl = padding[2]
    cdef int dh = dilation[0], dw = dilation[1], pc = int(pad_code)
    cdef int nt = 0 if num_threads is None else num_threads
    with nogil:
        axs_im2col_codes(<const uint8_t *>cnp.PyArray_DATA(xx), cN, cC, cH, cW, cG, cg, cKH, cKW,
                         sh, sw, pt, pl, dh, dw, cOH, cOW, pc, <uint8_t *>cnp.PyArray_DATA(oo), nt)
    return out


def col2im_add(ga, gx, groups, group, ksize, stride, padding, dilation, num_threads=None):
    """``gx`` (float64 NCHW, C-contiguous, modified in place) += the im2col columns ``ga`` of
    one group, as :func:`im2col_codes` lays them out; padded positions take nothing."""
    num_threads = _check_threads(num_threads)
    if not isinstance(gx, np.ndarray) or gx.dtype != np.float64 or gx.ndim != 4 or \
            not gx.flags.c_contiguous or not gx.flags.writeable:
        raise ValueError("gx must be a writeable C-contiguous float64 NCHW array")
    N, C, H, W, KH, KW, OH, OW, Kg = _im2col_geometry(gx.shape, groups, group, ksize, stride,
                                                      padding, dilation)
    ga = np.ascontiguousarray(ga)
    if ga.dtype != np.float64 or ga.shape != (N * OH * OW, Kg):
        raise ValueError(f"ga must be float64 of shape ({N * OH * OW}, {Kg}), got {ga.dtype} "
                         f"{ga.shape}")
    cdef cnp.ndarray aa = ga, xx = gx
    cdef int64_t cN = N, cC = C, cH = H, cW = W, cG = groups, cg = group, cKH = KH, cKW = KW
    cdef int64_t cOH = OH, cOW = OW
    cdef int sh = stride[0], sw = stride[1], pt = padding[0], pl = padding[2]
    cdef int dh = dilation[0], dw = dilation[1]
    cdef int nt = 0 if num_threads is None else num_threads
    with nogil:
        axs_col2im_add(<const double *>cnp.PyArray_DATA(aa), cN, cC, cH, cW, cG, cg, cKH, cKW,
                       sh, sw, pt, pl, dh, dw, cOH, cOW, <double *>cnp.PyArray_DATA(xx), nt)
    return gx


def min_max(x, num_threads=None):
    """``(x.min(), x.max())`` of a non-empty float32 array in one parallel pass.

    The per-call quantization range reads every activation; NumPy needs a pass for each.

    Parameters
    ----------
    x : ndarray of float32
        Non-empty; non-contiguous arrays are copied first.
    num_threads : int, optional

    Returns
    -------
    (numpy.float32, numpy.float32)
        Both NaN when ``x`` holds a NaN, as NumPy's ``min`` and ``max`` give. (Which zero
        comes back when ``-0.0`` and ``0.0`` tie may differ from NumPy.)
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.size:
        raise ValueError(f"x must be a non-empty float32 ndarray, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} of size {getattr(x, 'size', '?')}")
    num_threads = _check_threads(num_threads)
    cdef cnp.ndarray xa = np.ascontiguousarray(x)
    cdef int64_t n = x.size, nan
    cdef float lo = 0, hi = 0
    cdef int nt = 0 if num_threads is None else int(num_threads)
    with nogil:
        nan = axs_minmax(<const float *>cnp.PyArray_DATA(xa), n, &lo, &hi, nt)
    if nan:
        return np.float32(np.nan), np.float32(np.nan)
    return np.float32(lo), np.float32(hi)


def off_zero(v, half, step=1):
    """``(count of |v| > half, count of v != 0)`` over every ``step``-th value of a float32
    array, in one pass: a 1-D array of any stride, or a C-contiguous one of any shape (its
    values in memory order). The range check's counts (:func:`axkern.quant.check_range`) on
    its sample, taken in place (three NumPy passes and their temporaries took about 9 us a
    call, the sample's view about 1)."""
    if not isinstance(v, np.ndarray) or v.dtype != np.float32 or \
            not (v.ndim == 1 or v.flags.c_contiguous):
        raise ValueError(f"v must be a float32 ndarray, 1-D or C-contiguous, got "
                         f"{getattr(v, 'dtype', type(v).__name__)} of shape "
                         f"{getattr(v, 'shape', '?')}")
    if type(step) is not int or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    cdef cnp.ndarray va = v
    cdef const char *p = <const char *>cnp.PyArray_DATA(va)
    cdef Py_ssize_t size = va.size
    cdef Py_ssize_t st = (va.strides[0] if va.ndim == 1 else 4) * step
    cdef Py_ssize_t n = (size + step - 1) // step, i
    cdef float h = half, e
    cdef int64_t off = 0, nnz = 0
    with nogil:
        for i in range(n):
            e = (<const float *>(p + i * st))[0]
            off += (e > h) + (e < -h)
            nnz += e != 0
    return int(off), int(nnz)


cdef inline bint _invertible(float s) nogil:
    # a scale whose float32 reciprocal is finite (0 is not; +inf is, and is refused later)
    cdef float inv = <float>1.0 / s
    return s > 0 and inv - inv == 0


def nudge_scale_zp(lo, hi, int bits):
    """``(scale, zero_point)`` of TensorFlow's Nudge of the float32 range ``[lo, hi]`` for the
    codes ``0 .. 2**bits - 1`` (:func:`axkern.quant.tf_nudge`: the per-call parameters of a
    layer's input) in C float arithmetic; its Python form took 4.5 us.

    ``scale`` is a float holding a float32 value. A range whose scale's reciprocal overflows
    is widened to include 0, an all-zero one gets ``(1.0, 0)``; None where the scale itself
    overflows float32 (a range too wide), for the caller's error.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2 .. 8, got {bits}")
    cdef float l = lo, h = hi, s, zf
    if not (l - l == 0 and h - h == 0 and l <= h):
        raise ValueError(f"expected a finite range with lo <= hi, got {lo!r}, {hi!r}")
    cdef float qmax = (1 << bits) - 1
    s = (h - l) / qmax
    if not _invertible(s):
        # a constant (or nearly constant) tensor: widened to include 0 (as Python's min(l,
        # 0.0) and max(h, 0.0)) so that the constant itself is representable
        l = 0 if 0 < l else l
        h = 0 if 0 > h else h
        s = (h - l) / qmax
        if not _invertible(s):
            return 1.0, 0   # all zeros
    if s - s != 0:
        return None
    zf = 0 - l / s
    if zf < 0:
        return float(s), 0
    if zf > qmax:
        return float(s), int(qmax)
    return float(s), <int>floor(<double>zf + 0.5)   # std::round (zf >= 0)


def address(a):
    """The address of an ndarray's first element (``a.ctypes.data`` without its ctypes
    object: 0.05 us instead of 1, for keys looked up on every call)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"address: expected an ndarray, got {type(a).__name__}")
    return <size_t>cnp.PyArray_DATA(<cnp.ndarray>a)


def same_bytes(a, b, num_threads=None):
    """Whether two C-contiguous arrays hold the same bytes (``memcmp``; no temporary).

    Large arrays are compared in 1 MiB chunks on ``num_threads`` threads (default: OpenMP's).

    Bitwise, unlike ``numpy.array_equal``: ``-0.0`` and ``0.0`` differ, a NaN equals
    itself. Arrays of different byte sizes are never the same.
    """
    cdef cnp.ndarray x = np.ascontiguousarray(a), y = np.ascontiguousarray(b)
    cdef size_t n = x.nbytes
    if <size_t>y.nbytes != n:
        return False
    cdef const char *px = <const char *>cnp.PyArray_DATA(x)
    cdef const char *py = <const char *>cnp.PyArray_DATA(y)
    cdef int r = 0
    # 1 MiB chunks on all threads for large arrays: the weight cache compares every filter
    # of a layer on every call, and one thread does not use the memory bandwidth of two
    cdef size_t chunk = 1 << 20
    cdef Py_ssize_t i, nchunk = <Py_ssize_t>((n + chunk - 1) // chunk)
    num_threads = _check_threads(num_threads)   # (bounded: OpenMP would try any count)
    cdef int nt = axs_threads(0 if num_threads is None else int(num_threads))
    with nogil:
        if nchunk < 4:
            r = memcmp(px, py, n)
        else:
            for i in prange(nchunk, schedule="static", num_threads=nt):
                r |= memcmp(px + i * chunk, py + i * chunk,
                            chunk if <size_t>(i + 1) * chunk <= n else n - <size_t>i * chunk) != 0
    return r == 0
