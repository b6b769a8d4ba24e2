"""Kernel backends and the contract they all implement.

Every backend is a module with two functions, which take table INDICES (uint8; signed operands
already as their two's-complement bit pattern) and an int32 C-contiguous (256, 256) table
(smaller tables sit in its top-left corner):

``gemm(a, b, table, out_dtype, num_threads)``
    ``a`` (M, K), ``b`` (K, N) -> ``out[m, n] = sum_k table[a[m, k], b[k, n]]``.
``conv2d(x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads)``
    ``x`` (N, H, W, C) NHWC, ``w`` (KH, KW, C // groups, COUT) HWIO, ``stride=(sh, sw)``,
    ``dilation=(dh, dw)``, ``padding=(top, bottom, left, right)``; padded positions hold the
    index ``pad_code`` and are looked up like any other; ``out`` (N, OH, OW, COUT).

``out_dtype`` is int32 or int64 (see :func:`accumulator_dtype`); kernels are exact for both.
Zero-point corrections are not part of the kernels (see :mod:`axkern.conv`).

Backends: ``"reference"`` (plain NumPy, :mod:`axkern._reference`), ``"cpu"`` (the compiled CPU
kernels named in ``BACKENDS["cpu"]``: the SIMD kernels of :mod:`axkern._fast`),
``"cuda"`` (PyCUDA, :mod:`axkern.cuda`) and ``"auto"`` (CUDA when a usable device is present,
else the CPU kernels).
"""
from __future__ import annotations

import collections
import functools
import importlib
import itertools
import numbers
import os
import sys
import threading
import weakref
import zlib

import numpy as np

__all__ = ["as_multiplier", "get_backend", "available_backends", "table256", "accumulator_dtype",
           "check_gemm_args", "check_conv_args", "BACKENDS", "MAX_THREADS", "MAX_GEOMETRY"]

# name -> module implementing the contract. Switching the CPU kernels is a one-line change here.
BACKENDS = {
    "reference": "axkern._reference",
    "cpu": "axkern._fast",
    "cuda": "axkern.cuda",
}

_INT32_LIMIT = 1 << 31

#: Largest ``num_threads`` accepted: four threads per core (at least 16). OpenMP aborts the
#: whole process when it cannot create a thread, so absurd requests are refused up front.
MAX_THREADS = max(16, 4 * (os.cpu_count() or 1))

#: Largest stride, dilation and padding (per side) of a convolution or pooling window.
MAX_GEOMETRY = 1 << 16


def check_backend(value):
    """``value`` when :func:`get_backend` takes it (a backend name, or an object with ``gemm``
    and ``conv2d``), checked without importing anything: for settings checked when given,
    not at the first call."""
    if isinstance(value, str):
        if value != "auto" and value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}: expected one of "
                             f"{('auto', *BACKENDS)}")
    elif not (callable(getattr(value, "gemm", None)) and callable(getattr(value, "conv2d", None))):
        raise TypeError(f"backend must be a name {('auto', *BACKENDS)} or an object with gemm "
                        f"and conv2d, got {type(value).__name__}")
    return value


def get_backend(name="auto"):
    """The backend module called ``name``.

    Parameters
    ----------
    name : {"auto", "reference", "cpu", "cuda"} or module
        ``"auto"`` picks CUDA if :func:`axkern.cuda.is_available` says a device is usable,
        else ``"cpu"``. A module (or any object) with ``gemm`` and ``conv2d`` is returned as is.

    Returns
    -------
    module
        An object with ``gemm`` and ``conv2d`` following the contract of this module.
    """
    if not isinstance(check_backend(name), str):
        return name
    if name == "auto":
        return _module(BACKENDS["cuda" if _cuda_usable() else "cpu"])
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        if name == "cpu":
            raise ImportError(f"the 'cpu' backend ({BACKENDS['cpu']}) is not compiled: rebuild "
                              "axkern with `pip install .` or `python setup.py build_ext --inplace`") from e
        raise


def _module(name):
    """The module ``name``, from sys.modules when imported already (``import_module`` costs
    a few us, on every call of every layer)."""
    mod = sys.modules.get(name)
    return mod if mod is not None else importlib.import_module(name)


def _cuda_usable():
    try:
        mod = _module(BACKENDS["cuda"])
        check = getattr(mod, "is_available", None)
        if not callable(check):
            return False
        ok = check()  # axkern.cuda answers (usable, reason)
        return bool(ok[0] if isinstance(ok, tuple) else ok)
    except Exception:  # no PyCUDA, no driver, no device: the CPU is the fastest available
        return False


def available_backends():
    """Names of the backends that work on this machine (``"auto"`` not included)."""
    names = ["reference"]
    try:
        importlib.import_module(BACKENDS["cpu"])
        names.append("cpu")
    except ImportError:
        pass
    if _cuda_usable():
        names.append("cuda")
    return names


@functools.lru_cache(maxsize=None)
def _multiplier_class():
    from .lut import Multiplier
    return Multiplier


def as_multiplier(multiplier):
    """A :class:`~axkern.lut.Multiplier` from a Multiplier or an unsigned table array.

    An array gives the same Multiplier while its entries stay the same (and an equal array
    the same one too), so the tables and weights prepared for it are found again; entries
    that fit a signed multiplier far better give a
    :class:`~axkern.lut.SignednessWarning` (once per table).

    Raises
    ------
    TypeError
        For anything else.
    ValueError
        For a table that is not of shape (2**n, 2**n), n from 2 to 8.
    """
    Multiplier = _multiplier_class()   # (imported once: an import per call cost a few us)
    if isinstance(multiplier, Multiplier):
        return multiplier
    if isinstance(multiplier, np.ndarray):
        return _array_multiplier(multiplier, Multiplier)
    raise TypeError(f"multiplier must be an axkern.Multiplier (or an unsigned table array of "
                    f"shape (2**n, 2**n)), got {type(multiplier).__name__}")


def _caller_level():
    """The stacklevel for check_signedness (whose warnings.warn is one frame below the
    caller of this function) that points at the first frame outside the axkern package: the
    user's line, whichever API (axdense, a Keras layer, ...) passed the table along."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None:
        d = os.path.dirname(os.path.abspath(frame.f_code.co_filename))
        if d != here and not d.startswith(here + os.sep):
            break
        frame, level = frame.f_back, level + 1
    return level


_ARRAY_MULTIPLIERS = {}  # id(array) -> (weakref to it, Multiplier made from it)
_ARRAY_CONTENTS = {}     # (shape, crc32 of the entries as int32) -> Multiplier
_ARRAY_LOCK = threading.RLock()


def _array_multiplier(arr, Multiplier):
    # The same Multiplier for a table array of the same entries: a new one per call would
    # make a new frozen table every call, and every cache keyed by it (prepared weights, the
    # kernels' prepared tables, the table's factors: several ms) would miss. Found by the
    # array's identity (then its entries are compared: about 20 us) or, for a fresh view or
    # copy, by its entries (a CRC-32, then a full comparison: about 0.1 ms); an array
    # changed in place gets a new Multiplier.
    key = id(arr)
    hit = _ARRAY_MULTIPLIERS.get(key)
    if hit is not None and hit[0]() is arr:
        m = hit[1]
        if arr.shape == m.table.shape and np.array_equal(arr, m.table):
            return m
    ckey = None
    if arr.dtype != object and arr.ndim == 2:
        with np.errstate(all="ignore"):
            ckey = (arr.shape, zlib.crc32(np.ascontiguousarray(arr, dtype=np.int32)))
        m = _ARRAY_CONTENTS.get(ckey)
        if m is None or not np.array_equal(arr, m.table):
            m = None
    else:
        m = None
    if m is None:
        m = Multiplier(arr, signed=False)
        # A raw array is read as unsigned: say so when the entries are those of a signed
        # multiplier (once per table: the Multiplier is remembered).
        from .lut import check_signedness

        check_signedness(m, "a table array passed as the multiplier",
                         "raw arrays are unsigned; axkern.Multiplier(table, signed=True) makes "
                         "a signed one", stacklevel=_caller_level())
        if ckey is not None:
            with _ARRAY_LOCK:   # (threads evict and insert at once)
                _remember_at_most(_ARRAY_CONTENTS, ckey, m, 16)

    def gone(ref, key=key):
        with _ARRAY_LOCK:
            held = _ARRAY_MULTIPLIERS.get(key)
            if held is not None and held[0] is ref:
                del _ARRAY_MULTIPLIERS[key]

    try:
        ref = weakref.ref(arr, gone)
    except TypeError:   # (ndarray subclasses without weak references are not remembered)
        return m
    with _ARRAY_LOCK:
        _remember_at_most(_ARRAY_MULTIPLIERS, key, (ref, m), 16)
    return m


def _remember_at_most(d, key, value, n):
    # d[key] = value, the oldest entries dropped beyond n (dicts keep insertion order)
    d.pop(key, None)
    while len(d) >= n:
        d.pop(next(iter(d)))
    d[key] = value


_INTERNED = {}  # (bits, signed, crc32 of the entries) -> weak reference to a frozen table
_RECENT = collections.deque(maxlen=32)


def _interned(out, kind):
    """The frozen table already made for a multiplier of the same kind (bits, signedness)
    and entries as ``out``, else ``out`` frozen: multipliers equal in all but the object
    (``load_multiplier`` called per layer, a table array passed as a fresh view each call)
    share one table, so every cache keyed by it (prepared weights, the kernels' prepared
    tables, factors, folded tables, the ALWANN tuning: ms each) hits. The kind is part of
    the key: the weights' quantization and the folds depend on it."""
    key = kind + (zlib.crc32(out),)
    ref = _INTERNED.get(key)
    held = ref() if ref is not None else None
    if held is not None and np.array_equal(held, out):
        _RECENT.append(held)
        return held
    freeze_table(out)
    # the 32 most recent stay alive: a Multiplier made per call (load_multiplier per call)
    # would otherwise take its table with it, and the next call would start over
    _RECENT.append(out)

    def gone(r, key=key):
        if _INTERNED.get(key) is r:
            _INTERNED.pop(key, None)

    _INTERNED[key] = weakref.ref(out, gone)
    return out


def table256(multiplier):
    """The multiplier's table as an int32 C-contiguous (256, 256) array, cached per object
    and shared by multipliers of the same kind and entries (frozen: see :func:`_interned`).

    Tables of fewer than 8 bits are placed in the top-left corner (the rest is 0); their
    indices never exceed ``2**bits - 1``.
    """
    cached = getattr(multiplier, "_axkern_table256", None)
    if cached is not None:
        return cached
    t = np.asarray(multiplier.table)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] > 256:
        raise ValueError(f"multiplier table has shape {t.shape}: expected (2**n, 2**n), n <= 8")
    out = np.zeros((256, 256), np.int32)
    out[: t.shape[0], : t.shape[1]] = t
    out = _interned(out, (getattr(multiplier, "bits", None), bool(getattr(multiplier, "signed",
                                                                              False))))
    try:
        multiplier._axkern_table256 = out
    except AttributeError:  # objects without a __dict__ are simply not cached
        pass
    return out


def _max_abs(multiplier):
    cached = getattr(multiplier, "_axkern_max_abs", None)
    if cached is None:
        cached = int(np.abs(np.asarray(multiplier.table, np.int64)).max())
        try:
            multiplier._axkern_max_abs = cached
        except AttributeError:
            pass
    return cached


def accumulator_dtype(K, multiplier):
    """int32 when ``K * max|T| < 2**31`` (no sum of K table entries can overflow), else int64."""
    if not isinstance(K, numbers.Integral) or K < 0:
        raise ValueError(f"K must be a non-negative integer, got {K!r}")
    return np.dtype(np.int32) if int(K) * _max_abs(multiplier) < _INT32_LIMIT else np.dtype(np.int64)


# ---------------------------------------------------------------------------------- checks
def _check_table(table):
    if not isinstance(table, np.ndarray):
        raise TypeError(f"table must be a NumPy array, got {type(table).__name__}")
    if table.shape != (256, 256):
        raise ValueError(f"table must have shape (256, 256), got {table.shape}")
    if table.dtype != np.int32:
        raise TypeError(f"table must be int32, got {table.dtype}")
    return np.ascontiguousarray(table)


def _check_index_array(v, name, ndim):
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(v).__name__}")
    if v.dtype != np.uint8:
        raise TypeError(f"{name} must hold uint8 table indices, got dtype {v.dtype}")
    if v.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {v.shape}")
    return np.ascontiguousarray(v)


def check_out_array(out, shape, dtype, name="out"):
    """``out`` checked to be a writeable C-contiguous array of exactly ``shape`` and ``dtype``
    (a caller's buffer for a result)."""
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype) or \
            tuple(out.shape) != tuple(shape) or not out.flags.c_contiguous or \
            not out.flags.writeable:
        if not isinstance(out, np.ndarray):
            got = type(out).__name__
        else:
            # say which of the conditions failed
            got = [f"{out.dtype} {out.shape}"] + \
                ([] if out.flags.c_contiguous else ["not C-contiguous"]) + \
                ([] if out.flags.writeable else ["read-only"])
            got = ", ".join(got)
        raise ValueError(f"{name} must be a writeable C-contiguous {np.dtype(dtype)} array of "
                         f"shape {tuple(shape)}, got {got}")
    return out


def _check_out_dtype(out_dtype):
    dt = np.dtype(out_dtype)
    if dt not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise TypeError(f"out_dtype must be int32 or int64, got {dt}")
    return dt


def _check_threads(num_threads):
    if num_threads is None:
        return None
    if type(num_threads) is int and 1 <= num_threads <= MAX_THREADS:
        return num_threads
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    if num_threads > MAX_THREADS:
        raise ValueError(f"num_threads={num_threads} is too many: expected at most "
                         f"{MAX_THREADS} (MAX_THREADS: four per core, at least 16)")
    return int(num_threads)


def _check_limit(values, name):
    """Refuse geometry beyond :data:`MAX_GEOMETRY` (no real layer comes near it; beyond it the
    C kernels' int32 offsets and the padded buffers would overflow or exhaust memory)."""
    if max(values) > MAX_GEOMETRY:
        raise ValueError(f"{name} {tuple(values) if len(values) > 1 else values[0]} is too large: "
                         f"expected at most {MAX_GEOMETRY} (2**16)")
    return values


def _pair(v, name, minimum):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    try:
        v = tuple(v)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if len(v) != 2 or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if min(v) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return _check_limit((int(v[0]), int(v[1])), name)


_FROZEN = {}   # id(table) -> (weakref to it, token, max|T|): the tables freeze_table froze
_TOKENS = itertools.count(1)
_FACTORS = {}  # token -> int16 factors (U, V) of a frozen table, or None (see table_factors)
_TUNINGS = {}  # token -> the uniform ALWANN weight mapping of a frozen table's multiplier


def freeze_table(table):
    """Make ``table``, an int32 (256, 256) array that axkern created (a multiplier's padded
    table, a folded table), read-only for good and register it: :func:`table_token` then
    gives it a token that is never reused, by which the compiled kernels' cache of prepared
    tables recognizes it without comparing its 65536 entries (about 10 us a call), and its
    max|T| is computed once. Never for arrays a caller owns, which could be changed."""
    table.setflags(write=False)
    key = id(table)

    token = next(_TOKENS)

    def gone(ref, key=key, token=token):
        hit = _FROZEN.get(key)
        if hit is not None and hit[0] is ref:
            _FROZEN.pop(key, None)
        _FACTORS.pop(token, None)
        _TUNINGS.pop(token, None)

    _FROZEN[key] = (weakref.ref(table, gone), token, max(-int(table.min()), int(table.max())))
    return table


def _frozen(table):
    hit = _FROZEN.get(id(table))
    if hit is not None and hit[0]() is table and not table.flags.writeable:
        return hit
    return None


def table_token(table):
    """The token of a table registered by :func:`freeze_table`, else 0."""
    hit = _frozen(table)
    return 0 if hit is None else hit[1]


def table_factors(table):
    """Exact int16 factors ``(U, V)`` of a table registered by :func:`freeze_table`
    (``table[a, b] == sum_i U[a, i] * V[b, i]``, see :func:`axkern.lowrank.factor_table`),
    found once per table (a few ms); None for tables without factors of rank at most
    :data:`axkern.lowrank.MAX_RANK` and for tables that were not frozen, whose entries could
    change after the factors were checked."""
    hit = _frozen(table)
    if hit is None:
        return None
    try:
        return _FACTORS[hit[1]]
    except KeyError:
        pass
    from .lowrank import factor_table

    f = factor_table(table)
    _FACTORS[hit[1]] = f
    return f


def _table_max_abs(table):
    # The tables axkern froze cannot change: their max|T| is remembered (the min and max of
    # 65536 entries cost about 12 us a call, a tenth of a small layer's fixed cost).
    hit = _frozen(table)
    return hit[2] if hit is not None else max(-int(table.min()), int(table.max()))


def _check_no_overflow(out_dtype, K, table):
    # The kernels accumulate int32 outputs in int32: refuse a request that could overflow.
    if out_dtype == np.int32 and K:
        # max|T| from min and max: no int64 copy of the table on every call.
        bound = _table_max_abs(table) * int(K)
        if bound >= _INT32_LIMIT:
            raise ValueError(f"out_dtype int32 can overflow: K={K} times max|table| reaches "
                             f"{bound} >= 2**31; use int64 (see accumulator_dtype)")


def check_gemm_args(a, b, table, out_dtype, num_threads):
    """Validate and normalize ``gemm`` arguments; returns them C-contiguous."""
    a = _check_index_array(a, "a", 2)
    b = _check_index_array(b, "b", 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm operands do not chain: a is {a.shape}, b is {b.shape} (K must match)")
    table = _check_table(table)
    out_dtype = _check_out_dtype(out_dtype)
    _check_no_overflow(out_dtype, a.shape[1], table)
    return a, b, table, out_dtype, _check_threads(num_threads)


def conv_output_size(H, W, KH, KW, stride, padding, dilation):
    """``(OH, OW)`` of a convolution with explicit padding ``(top, bottom, left, right)``."""
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = padding
    oh = (H + top + bottom - dh * (KH - 1) - 1) // sh + 1
    ow = (W + left + right - dw * (KW - 1) - 1) // sw + 1
    return max(oh, 0), max(ow, 0)


def _plain(v):
    """Whether ``v`` is an exact int, a str or a tuple of those (nested too; no bools, no
    NumPy integers, no lists): an argument whose validation may be remembered by value."""
    t = type(v)
    if t is int or t is str:
        return True
    if t is not tuple:
        return False
    for e in v:   # (ints without a call each: this runs on every kernel call)
        te = type(e)
        if te is not int and te is not str and not (te is tuple and _plain(e)):
            return False
    return True


def _remember(memo, key, compute, limit=1024):
    """``compute(*key)``, remembered in the dict ``memo`` (emptied when it holds ``limit``
    entries): for validations of plain arguments (see :func:`_plain`) that run on every
    call."""
    hit = memo.get(key)
    if hit is None:
        hit = compute(*key)
        if len(memo) >= limit:
            memo.clear()
        memo[key] = hit
    return hit


_GEOMETRY = {}   # plain arguments -> check_conv_geometry's result (~8 us to validate)


def check_conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, pad_code):
    """Validate the geometry of a ``conv2d`` call from the operands' shapes alone (so that
    device arrays need not be converted).

    Returns
    -------
    tuple
        ``(stride, padding, dilation, groups, pad_code, (OH, OW))`` as plain ints.
    """
    key = (tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, pad_code)
    if all(map(_plain, key[2:])):
        return _remember(_GEOMETRY, key, _checked_conv_geometry)
    return _checked_conv_geometry(*key)


def _checked_conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, pad_code):
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    try:
        padding = tuple(padding)
    except TypeError:
        raise TypeError(f"padding must be (top, bottom, left, right), got {padding!r}") from None
    if len(padding) != 4 or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding):
        raise TypeError(f"padding must be four ints (top, bottom, left, right), got {padding!r}")
    padding = tuple(int(p) for p in padding)
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    _check_limit(padding, "padding")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    groups = int(groups)
    if isinstance(pad_code, bool) or not isinstance(pad_code, numbers.Integral) or not 0 <= pad_code <= 255:
        raise ValueError(f"pad_code must be a table index 0..255, got {pad_code!r}")
    N, H, W, C = (int(v) for v in x_shape)
    KH, KW, Cg, COUT = (int(v) for v in w_shape)
    if C % groups or COUT % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({C}) and the output "
                         f"channels ({COUT})")
    if Cg != C // groups:
        raise ValueError(f"filter has {Cg} input channels per group, expected C // groups = "
                         f"{C} // {groups} = {C // groups}")
    if KH < 1 or KW < 1:
        raise ValueError(f"filter must have a positive size, got {KH}x{KW}")
    return (stride, padding, dilation, groups, int(pad_code),
            conv_output_size(H, W, KH, KW, stride, padding, dilation))


def check_conv_args(x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads,
                    x_format="NHWC"):
    """Validate and normalize ``conv2d`` arguments (``x`` in ``x_format``, NHWC or NCHW).

    Returns
    -------
    tuple
        ``(x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads,
        (OH, OW))`` with contiguous arrays (``x`` in its own layout) and plain-int tuples.
    """
    x = _check_index_array(x, "x", 4)
    w = _check_index_array(w, "w", 4)
    table = _check_table(table)
    nhwc_shape = x.shape if x_format == "NHWC" else (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    stride, padding, dilation, groups, pad_code, out_hw = check_conv_geometry(
        nhwc_shape, w.shape, stride, padding, dilation, groups, pad_code)
    KH, KW, Cg, _ = w.shape
    out_dtype = _check_out_dtype(out_dtype)
    _check_no_overflow(out_dtype, KH * KW * Cg, table)
    return (x, w, table, stride, padding, dilation, groups, pad_code,
            out_dtype, _check_threads(num_threads), out_hw)
