"""2-D convolution through an approximate multiplier's lookup table.

:func:`axconv2d` takes float tensors, quantizes them, sends every code product through the
table and applies the exact zero-point correction (docs/conventions.md)::

    y = s_x s_w [ sum T[q_x, q_w] - z_w sum q_x - z_x sum q_w + K z_x z_w ]

where the sums run over the K = kh * kw * cin / groups terms of each output, ``sum q_x``
includes padded positions (which hold the code ``z_x``), and everything inside the brackets
is exact integer arithmetic. :func:`lut_conv2d` returns the integer sums of table entries
for given codes.
"""
from __future__ import annotations

import collections
import functools
import math
import numbers
import sys
import threading
import weakref

import numpy as np

from .backends import (_check_limit, _check_threads, _plain, _remember, accumulator_dtype,
                       as_multiplier, check_out_array, conv_output_size, freeze_table,
                       get_backend, table256, table_factors, table_token)
from .lut import operand_values
from .quant import (QuantParams, QuantSpec, _symmetric_from_amax, check_range, quantize,
                    quantize_float, symmetric_params, tf_quant_params, warn_once)
from .tune import resolve_tuning

__all__ = ["axconv2d", "lut_conv2d"]

_FORMATS = ("NHWC", "NCHW")
_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------ shared helpers
def _float_array(v, name, ndim=None, check_finite=True):
    if type(v) is np.ndarray and v.dtype == _F32:
        arr = v   # the common case, without the dtype inquiries (a few us a call)
    else:
        arr = np.asarray(v)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
                or np.iscomplexobj(arr):
            raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
        try:
            with np.errstate(over="raise"):
                arr = arr.astype(np.float32, copy=False)
        except FloatingPointError:
            raise ValueError(f"{name} holds finite values beyond the float32 range (|x| up to "
                             f"{float(np.nanmax(np.abs(arr[np.isfinite(arr)]))):.3g}): the "
                             f"layers compute in float32, whose largest value is "
                             f"{float(np.finfo(np.float32).max):.4g}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if check_finite:
        _check_finite(arr, name)
    return arr


def _check_finite(arr, name):
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf: expected finite values")


def _code_array(v, name, multiplier, ndim=None):
    """Integer operand values of ``multiplier`` -> uint8 table indices (validated)."""
    arr = np.asarray(v)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer codes, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    lo, hi = _value_range(multiplier)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} holds codes outside [{lo}, {hi}], the operand range of the "
                         f"{multiplier.bits}-bit {'signed' if multiplier.signed else 'unsigned'} "
                         f"multiplier")
    return _to_index(arr, multiplier)


def _value_range(m):
    return (-(1 << (m.bits - 1)), (1 << (m.bits - 1)) - 1) if m.signed else (0, (1 << m.bits) - 1)


def _to_index(values, m):
    # Two's-complement bit pattern of the (range-checked) operand value; the identity for
    # unsigned codes. The integer cast keeps the low 8 bits (wraps modulo 256).
    idx = np.asarray(values).astype(np.uint8)
    if m.signed and m.bits < 8:
        idx &= (1 << m.bits) - 1
    return idx


def _float_codes_to_index(q, m):
    """Table indices (uint8) of integer-valued float32 codes in the operand range of ``m``."""
    if not m.signed:
        return q.astype(np.uint8)
    idx = q.astype(np.int8).view(np.uint8)
    if m.bits < 8:
        idx = idx & np.uint8((1 << m.bits) - 1)
    return idx


def _pair(v, name):
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, numbers.Integral):
        v = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v):
        v = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if min(v) < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return _check_limit(v, name)


def _check_format(data_format):
    if not isinstance(data_format, str) or data_format.upper() not in _FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}: expected 'NHWC' (HWIO filters) "
                         f"or 'NCHW' (OIHW filters)")
    return data_format.upper()


def resolve_padding(padding, H, W, KH, KW, stride, dilation):
    """Explicit ``(top, bottom, left, right)`` padding.

    Parameters
    ----------
    padding : {"SAME", "VALID"} or int or (int, int) or ((int, int), (int, int))
        "SAME" splits as TensorFlow does (the extra row/column at the bottom/right).
    """
    (sh, sw), (dh, dw) = stride, dilation
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return (0, 0, 0, 0)
        if mode == "SAME":
            pads = []
            for size, k, s, d in ((H, KH, sh, dh), (W, KW, sw, dw)):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"unknown padding {padding!r}: expected 'SAME', 'VALID', an int, "
                         f"(ph, pw) or ((top, bottom), (left, right))")

    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if is_int(padding):
        pads = (padding,) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(map(is_int, padding)):
        pads = (padding[0], padding[0], padding[1], padding[1])
    elif (isinstance(padding, (tuple, list)) and len(padding) == 2
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(map(is_int, p)) for p in padding)):
        pads = (padding[0][0], padding[0][1], padding[1][0], padding[1][1])
    else:
        raise ValueError(f"unknown padding {padding!r}: expected 'SAME', 'VALID', an int, "
                         f"(ph, pw) or ((top, bottom), (left, right))")
    pads = tuple(int(p) for p in pads)
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {pads}")
    return _check_limit(pads, "padding")


_SPECS = {}   # (quant name, signed, bits) -> QuantSpec (see resolve_quant)


def resolve_quant(quant, m):
    """The :class:`~axkern.quant.QuantSpec` for a ``quant`` argument and multiplier ``m``."""
    if type(quant) is str:
        # a named scheme resolves the same way for every multiplier of that kind
        key = (quant, m.signed, m.bits)
        spec = _SPECS.get(key)
        if spec is None:
            spec = _SPECS[key] = _resolve_quant(quant, m)
        return spec
    return _resolve_quant(quant, m)


#: The quantization modes a layer takes by name.
QUANT_MODES = ("auto", "tfapprox", "asymmetric", "symmetric", "symmetric-per-channel")


def _resolve_quant(quant, m):
    if isinstance(quant, str):
        modes = {"tfapprox": ("tfapprox", "tfapprox"), "asymmetric": ("asymmetric", "asymmetric"),
                 "symmetric": ("symmetric", "symmetric"),
                 "symmetric-per-channel": ("symmetric", "symmetric-per-channel")}
        if quant == "auto":
            quant = "symmetric" if m.signed else "tfapprox"
        if quant not in modes:
            raise ValueError(f"unknown quant {quant!r}: expected 'auto', 'tfapprox', 'asymmetric', "
                             f"'symmetric', 'symmetric-per-channel', a QuantSpec or (input, weight) QuantParams")
        spec = QuantSpec(*modes[quant])
    elif isinstance(quant, QuantSpec):
        spec = quant
    elif isinstance(quant, dict):
        unknown = set(quant) - {"input", "weight"}
        if unknown or len(quant) != 2:
            raise ValueError(f"quant dict must have exactly the keys 'input' and 'weight', got {sorted(quant)}")
        spec = QuantSpec(quant["input"], quant["weight"])
    elif isinstance(quant, (tuple, list)) and len(quant) == 2:
        spec = QuantSpec(quant[0], quant[1])
    else:
        raise ValueError(f"unknown quant {quant!r}: expected 'auto', 'tfapprox', 'asymmetric', 'symmetric', "
                         f"'symmetric-per-channel', a QuantSpec or (input, weight) QuantParams")
    kind = "signed" if m.signed else "unsigned"
    for name, v, sgn in (("input", spec.input, spec.signedness()[0]),
                         ("weight", spec.weight, spec.signedness()[1])):
        if sgn != m.signed:
            raise ValueError(
                f"{name} quantization {v!r} gives {'signed' if sgn else 'unsigned'} codes but the "
                f"multiplier {m.name!r} is {kind}: use quant="
                f"{'symmetric' if m.signed else 'tfapprox'!r} or {'a signed' if sgn else 'an unsigned'} "
                f"multiplier")
        if isinstance(v, QuantParams) and v.bits != m.bits:
            raise ValueError(f"{name} QuantParams have {v.bits} bits but the multiplier has {m.bits}")
    return spec


def make_params(v, mode, m, channels=None):
    """QuantParams for tensor ``v`` (float32, channel axis last) under ``mode``."""
    if isinstance(mode, QuantParams):
        if mode.per_channel and mode.channels != channels:
            raise ValueError(f"per-channel QuantParams have {mode.channels} entries, expected one "
                             f"per output channel ({channels})")
        return mode
    if mode in ("tfapprox", "asymmetric"):
        lo, hi = (v.min(), v.max()) if v.size else (0.0, 0.0)
        return _tf_range_params(lo, hi, mode, m)
    if mode == "symmetric":
        return symmetric_params(v, m.bits)
    return symmetric_params(v, m.bits, channel_axis=-1)


def _tf_range_params(lo, hi, mode, m):
    """The "tfapprox" parameters of a tensor whose min and max are ``lo`` and ``hi``
    (TFApprox's per-call reduce_min / reduce_max, as given: see axkern.quant), or the
    "asymmetric" ones (the range widened to include 0)."""
    if mode == "asymmetric":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return tf_quant_params(lo, hi, m.bits)


_PARAMS = {}   # (mode, bits, range bits) -> per-tensor QuantParams (see checked_params)


def range_params(lo, hi, mode, m):
    """Per-tensor QuantParams of a tensor whose min and max are the finite ``lo`` and ``hi``
    under ``mode`` ("tfapprox", "asymmetric" or "symmetric"): :func:`make_params` of
    ``[lo, hi]``, whose min, max and max|.| are those of the tensor, so the same parameters
    bit for bit. They depend on (mode, bits, lo, hi) alone: remembered by the bit patterns
    of the range (computing them costs more than quantizing a small layer's input)."""
    lo, hi = np.float32(lo), np.float32(hi)
    if not isinstance(mode, str):   # fixed parameters: nothing to compute
        return make_params(np.array([lo, hi], np.float32), mode, m)
    # the values and the signs of their zeros
    key = (mode, m.bits, float(lo), float(hi), math.copysign(1.0, lo), math.copysign(1.0, hi))
    p = _PARAMS.get(key)
    if p is None:
        # (the range itself, not make_params of an array [lo, hi]: 41 us a new range before)
        if mode in ("tfapprox", "asymmetric"):
            p = _tf_range_params(lo, hi, mode, m)
        elif mode == "symmetric":
            p = _symmetric_from_amax(max(abs(lo), abs(hi)),
                                     np.float32((1 << (m.bits - 1)) - 1), m.bits, False)
        else:
            p = make_params(np.array([lo, hi], np.float32), mode, m)
        if len(_PARAMS) >= 256:
            _PARAMS.clear()
        _PARAMS[key] = p
    return p


def checked_params(x, mode, m, name, channels=None, fast=None, num_threads=None):
    """QuantParams of ``x`` (float32, not yet checked) and the check that it is finite.

    The same as :func:`make_params` after a finiteness check. The per-tensor modes depend on
    ``x`` through its min and max only, and those also tell whether ``x`` is finite (NaN
    propagates through both, an Inf shows up in one): two passes over a large tensor instead
    of four (one with ``fast``, :mod:`axkern._fast`, whose ``min_max`` reads x once, on
    ``num_threads`` threads: the call's own count, so that it wakes no idle worker).
    """
    if isinstance(mode, str) and mode in ("tfapprox", "asymmetric", "symmetric") and x.size:
        lo, hi = fast.min_max(x, num_threads) if fast is not None else (x.min(), x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or Inf: expected finite values")
        p = range_params(lo, hi, mode, m)
        check_range(x, p, name)   # a sample of x: warns if a few outliers set the range
        return p
    if isinstance(mode, QuantParams) and not mode.per_channel and fast is not None:
        # Fixed per-tensor parameters on the fast path: x is quantized by
        # fast.quantize_indices, which rejects NaN and Inf in that same pass.
        return make_params(x, mode, m, channels)
    _check_finite(x, name)
    return make_params(x, mode, m, channels)


def check_overflow(y, scale, K, m, bias, scale_max=None):
    """Warn if the dequantized result ``y`` holds inf although its inputs were finite.

    Only looks at ``y`` when a bound on ``|y|`` (``max scale * K * (2**31 + 3 * 4**bits)``
    plus ``max |bias|``) exceeds the float32 range, so ordinary calls pay nothing.
    ``scale_max`` is ``max|scale|`` when the caller knows it.
    """
    if scale_max is None:
        scale_max = float(np.max(np.abs(scale)))
    bound = scale_max * K * (2.0 ** 31 + 3.0 * 4 ** m.bits)
    if bias is not None and bias.size:
        bound += float(np.max(np.abs(bias)))
    if bound < _F32_MAX or y.size == 0:
        return
    n = int(np.count_nonzero(np.isinf(y)))
    if n:
        warn_once(("overflow",),
                  f"{n} of {y.size} outputs overflow float32 (inf) from finite inputs: the "
                  f"product of the input and weight scales ({float(np.max(np.abs(scale))):.3g}) "
                  f"is too large (scale overflow); use a calibrated range or rescale the data")


def scale_and_zp(p, channels=None):
    """(float64 scale, int64 zero point), per-channel parameters as length-``channels`` arrays."""
    s = np.asarray(p.scale, np.float64)
    z = np.asarray(p.zero_point, np.int64)
    if channels is not None and p.per_channel:
        s = np.broadcast_to(s, (channels,))
        z = np.broadcast_to(z, (channels,))
    return s, z


# ------------------------------------------------------------------------ code level
def _run_conv(xi, wi, m, stride, pads, dilation, groups, pad_index, backend, num_threads,
              out_shape=None):
    """The backend's integer sums; into a reused work buffer when ``out_shape`` is given and
    the backend takes ``out=``."""
    KH, KW, Cg, _ = wi.shape
    dtype = accumulator_dtype(KH * KW * Cg, m)
    be = get_backend(backend)
    if out_shape is not None and getattr(be, "SUPPORTS_OUT", False):
        return be.conv2d(xi, wi, table256(m), stride, pads, dilation, groups, pad_index, dtype,
                         num_threads, out=work_buffer("sums", out_shape, dtype))
    return be.conv2d(xi, wi, table256(m), stride, pads, dilation, groups, pad_index, dtype,
                     num_threads)


_WORK = threading.local()


def work_buffer(role, shape, dtype):
    """A reusable C-contiguous work array, one per ``role`` and thread, grown as needed.

    The float-level layer's intermediates (table indices, integer sums, window sums) live
    only during one call; in fresh memory each of their pages costs a page fault on every
    call (a measurable part of a layer's time), so they reuse these buffers. They hold the
    largest size asked for so far (a quarter of the largest float32 input plus the largest
    int32 output, typically) until the thread ends. Never returned to the caller.
    """
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None:
        bufs = _WORK.bufs = {}
        _WORK.views = {}
    key = (role, shape, dtype)
    view = _WORK.views.get(key)   # the same layer's view again (making one costs ~5 us)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = bufs.get(role)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[role] = np.empty(max(nbytes, 8), np.uint8)
        _WORK.views = {k: v for k, v in _WORK.views.items() if k[0] != role}
    if len(_WORK.views) >= 256:
        _WORK.views.clear()
    view = _WORK.views[key] = buf[:nbytes].view(dtype).reshape(shape)
    return view


_GEOMETRY = {}   # plain arguments -> _geometry's result (validating costs ~8 us a call)


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    key = (x_shape, w_shape, stride, padding, dilation, groups)
    if _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
        return _remember(_GEOMETRY, key, _checked_geometry)
    return _checked_geometry(*key)


def _checked_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    N, H, W, C = x_shape
    KH, KW, Cg, COUT = w_shape
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    if C % groups:
        raise ValueError(f"groups={groups} does not divide the {C} input channels")
    if COUT % groups:
        raise ValueError(f"groups={groups} does not divide the {COUT} output channels")
    if Cg != C // groups:
        raise ValueError(f"channel mismatch: the input has {C} channels, so with groups={groups} "
                         f"the filter needs {C // groups} input channels, but it has {Cg}")
    if KH < 1 or KW < 1 or COUT < 1:
        raise ValueError(f"filter of shape (KH, KW, Cin/groups, Cout) = {tuple(w_shape)} is empty")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    pads = resolve_padding(padding, H, W, KH, KW, stride, dilation)
    OH, OW = conv_output_size(H, W, KH, KW, stride, pads, dilation)
    if OH < 1 or OW < 1:
        raise ValueError(f"the dilated {KH}x{KW} filter does not fit the padded {H}x{W} input")
    return stride, dilation, pads, (OH, OW)


def lut_conv2d(x_codes, w_codes, multiplier, *, stride=1, padding="VALID", dilation=1, groups=1,
               data_format="NHWC", pad_code=0, backend="auto", num_threads=None):
    """Exact integer sums of table entries over a 2-D convolution of codes.

    ``out[n, oy, ox, o] = sum_{ky, kx, c} T[x[n, oy*sh + ky*dh - top, ox*sw + kx*dw - left,
    g*Cg + c], w[ky, kx, c, o]]`` with padded positions holding ``pad_code``.

    Parameters
    ----------
    x_codes : array_like of int, shape (N, H, W, C) or (N, C, H, W)
        Activation operand values (unsigned ``0 .. 2**n - 1`` or signed
        ``-2**(n-1) .. 2**(n-1) - 1`` as the multiplier is).
    w_codes : array_like of int, shape (KH, KW, C // groups, COUT) or (COUT, C // groups, KH, KW)
        Weight operand values: HWIO with NHWC, OIHW with NCHW.
    multiplier : Multiplier
    stride, dilation : int or (int, int)
    padding : {"VALID", "SAME"} or int or (int, int) or ((top, bottom), (left, right))
    groups : int
    data_format : {"NHWC", "NCHW"}
    pad_code : int
        Operand value of padded input positions (looked up like any other position).
    backend : {"auto", "reference", "cpu", "cuda"}
        With "cuda", device arrays (e.g. PyCUDA GPUArrays) are passed to the CUDA backend
        unchanged: they must already hold uint8 table indices, NHWC/HWIO.
    num_threads : int, optional
        CPU threads (default: OpenMP's, honouring ``OMP_NUM_THREADS``).

    Returns
    -------
    ndarray of int32 or int64
        int32 when ``K * max|T| < 2**31`` (K = KH * KW * C / groups), else int64; shape
        (N, OH, OW, COUT) or (N, COUT, OH, OW).

    Examples
    --------
    >>> import numpy as np, axkern
    >>> m = axkern.Multiplier.exact(8)
    >>> x = np.full((1, 3, 3, 1), 2); w = np.full((2, 2, 1, 1), 3)
    >>> axkern.lut_conv2d(x, w, m)[0, :, :, 0].tolist()
    [[24, 24], [24, 24]]
    """
    m = as_multiplier(multiplier)
    num_threads = _check_threads(num_threads)
    fmt = _check_format(data_format)
    if backend == "cuda" and not (isinstance(x_codes, np.ndarray) and isinstance(w_codes, np.ndarray)):
        return _device_conv(x_codes, w_codes, m, stride, padding, dilation, groups, fmt,
                            pad_code, num_threads)
    xi = _code_array(x_codes, "x_codes", m, 4)
    wi = _code_array(w_codes, "w_codes", m, 4)
    if fmt == "NCHW":
        xi, wi = xi.transpose(0, 2, 3, 1), wi.transpose(2, 3, 1, 0)
    if isinstance(pad_code, bool) or not isinstance(pad_code, numbers.Integral):
        raise TypeError(f"pad_code must be an integer operand value, got {pad_code!r}")
    lo, hi = _value_range(m)
    if not lo <= pad_code <= hi:
        raise ValueError(f"pad_code {pad_code} is outside the operand range [{lo}, {hi}]")
    stride, dilation, pads, (OH, OW) = _geometry(xi.shape, wi.shape, stride, padding, dilation,
                                                 groups)
    if xi.shape[0] == 0 or wi.shape[2] == 0:   # empty batch or empty sums: no kernel call
        KH, KW, Cg, COUT = wi.shape
        out = np.zeros((xi.shape[0], OH, OW, COUT), accumulator_dtype(KH * KW * Cg, m))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if fmt == "NCHW" else out
    out = _run_conv(np.ascontiguousarray(xi), np.ascontiguousarray(wi), m, stride, pads, dilation,
                    groups, int(_to_index(pad_code, m)), backend, num_threads)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if fmt == "NCHW" else out


def _device_conv(x, w, m, stride, padding, dilation, groups, fmt, pad_code, num_threads):
    # Device arrays go to the CUDA backend untouched (no host round trip).
    if fmt != "NHWC":
        raise ValueError("device arrays must be NHWC/HWIO: data_format='NCHW' needs NumPy arrays")
    xs, ws = tuple(getattr(x, "shape", ())), tuple(getattr(w, "shape", ()))
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"x_codes and w_codes must have 4 dimensions, got shapes {xs} and {ws}")
    if not isinstance(pad_code, numbers.Integral) or not 0 <= pad_code <= 255:
        raise ValueError(f"pad_code for device arrays must be a table index 0..255, got {pad_code!r}")
    stride, dilation, pads, _ = _geometry(xs, ws, stride, padding, dilation, groups)
    return _run_conv(x, w, m, stride, pads, dilation, groups, int(pad_code), "cuda", num_threads)


# ------------------------------------------------------------------------ float level
def _host_helpers(backend, m):
    """:mod:`axkern._fast` for the float-level host work, or None for the NumPy code.

    The fused helpers (quantization to indices, window sums, epilogue) give bit-identical
    results to the NumPy code below at kernel speed; ``backend="reference"`` keeps the plain
    NumPy path, which stays independent of the compiled code.
    """
    if (isinstance(backend, str) and backend == "reference") or not 2 <= m.bits <= 8:
        return None
    fast = sys.modules.get(__package__ + "._fast")   # (an import statement: a few us a call)
    if fast is not None:
        return fast
    try:
        from . import _fast
    except ImportError:  # not compiled: the NumPy code does the same work
        return None
    return _fast


def _fold_zero_point(table, m, zw, K):
    """``(T', dtype)``: ``T'[a, b] = T[a, b] - zw * value(a)`` as an int32 table and the
    accumulator dtype of ``K`` of its entries (as :func:`accumulator_dtype`), or None when
    the fold would leave the 16-bit class of ``table`` (entries spanning at most 65535, see
    :mod:`axkern._fast`) or int32."""
    f = _fold(table, m, zw)
    return None if f is None else (f[0], _sum_dtype(K, f[1]))


def _sum_dtype(K, bound):
    # int32 sums whenever K entries of magnitude at most bound cannot overflow them
    return np.dtype(np.int64 if K * bound >= 2**31 else np.int32)


def _fold(table, m, zw):
    """``(T', max|T'|)`` of :func:`_fold_zero_point`, or None."""
    values = np.zeros(256, np.int64)
    values[: 1 << m.bits] = m.values()
    shift = int(zw) * values
    # the range of T' from the range of each row: no int64 copy of the table
    rows_lo, rows_hi = table.min(axis=1).astype(np.int64), table.max(axis=1).astype(np.int64)
    lo, hi = int(rows_lo.min()), int(rows_hi.max())
    nlo, nhi = int((rows_lo - shift).min()), int((rows_hi - shift).max())
    if nlo < -2**31 or nhi >= 2**31 or (hi - lo <= 65535 < nhi - nlo):
        return None
    # every entry and every result fits int32 (checked above): int32 arithmetic is exact
    # (|shift| <= 255 * 255 also fits it)
    return table - shift.astype(np.int32)[:, None], max(-nlo, nhi)


_FOLDED = collections.OrderedDict()   # (table token, zw) -> (frozen T', max|T'|) or None
_FOLD_LOCK = threading.Lock()


def _folded_table(table, m, zw, K):
    """:func:`_fold_zero_point` of a frozen table (``table256``) with the folded table
    frozen too, remembered per table and zero point (the 64 most recent): weights prepared
    again (a weight cache miss: calibrated parameters, more layers than the cache holds)
    then find the same folded table, its factors and the kernels' prepared copy (several ms
    a miss otherwise)."""
    key = (table_token(table), zw)
    if not key[0]:   # (a table axkern did not freeze: nothing to key it by)
        return _fold_zero_point(table, m, zw, K)
    with _FOLD_LOCK:
        hit = _FOLDED.get(key, False)
        if hit is not False:
            _FOLDED.move_to_end(key)
    if hit is False:
        hit = _fold(table, m, zw)
        if hit is not None:
            hit = (freeze_table(hit[0]), hit[1])
        with _FOLD_LOCK:
            _FOLDED[key] = hit
            while len(_FOLDED) > 64:
                _FOLDED.popitem(last=False)
    return None if hit is None else (hit[0], _sum_dtype(K, hit[1]))


def _fold_adds_factor(table, folded, w):
    """Whether folding costs the factored kernels (axkern._fast) a factor: they take time in
    proportion to the rank of the table's factors (axkern.lowrank), and T' = T - zw value(a)
    has one more unless value(a) is among them (DRUM: 1 -> 2, twice the kernel's time), where
    the window sums that carry the correction instead cost a fraction of one factor. Not for
    depthwise filters (one input channel per group): their factored kernel takes rank 2 at
    about the cost of rank 1, and the window sums would cost as much as the layer itself
    (and keep an NCHW input from being read as planes)."""
    if w.shape[-2] == 1:
        return False
    f = table_factors(table)
    if f is None:
        return False
    g = table_factors(folded)
    return g is None or g[0].shape[1] > f[0].shape[1]


@functools.lru_cache(maxsize=None)
def _operand_values(bits, signed):
    """A multiplier's ``values()``, one read-only array per bit width and signedness (a
    fresh one per call cost microseconds, and the window sums' check of it more)."""
    v = operand_values(bits, signed)
    v.setflags(write=False)
    return v


def _window_sums(q, pads, stride, dilation, ksize, out_hw, groups, fill):
    """``sum q`` over each output's receptive field, per group (padded positions = ``fill``)."""
    N, H, W, C = q.shape
    top, bottom, left, right = pads
    (sh, sw), (dh, dw), (KH, KW), (OH, OW) = stride, dilation, ksize, out_hw
    Cg = C // groups
    per_group = q.reshape(N, H, W, groups, Cg).sum(axis=-1, dtype=np.int64)
    padded = np.full((N, H + top + bottom, W + left + right, groups), fill * Cg, np.int64)
    padded[:, top:top + H, left:left + W] = per_group
    out = np.zeros((N, OH, OW, groups), np.int64)
    for ky in range(KH):
        for kx in range(KW):
            out += padded[:, ky * dh:ky * dh + sh * (OH - 1) + 1:sh, kx * dw:kx * dw + sw * (OW - 1) + 1:sw]
    return out


def _numpy_epilogue(total, qx, xi, qw, m, zx, zw, scale, bias, K, pads, stride, dilation,
                    ksize, out_hw, groups):
    """Zero-point correction and dequantization in NumPy (the reference backend's path)."""
    N, OH, OW, COUT = total.shape
    if zx != 0 or np.any(zw != 0):
        total = total.astype(np.int64)  # the corrections can leave the int32 range
        Og = COUT // groups
        # Unsigned codes are their own table indices: sum the uint8 array.
        sum_x = _window_sums(qx.astype(np.int64) if m.signed else xi, pads, stride, dilation,
                             ksize, out_hw, groups, zx)
        sum_w = qw.reshape(K, COUT).sum(axis=0, dtype=np.int64)   # original codes (see tune.py)
        # Output channel o belongs to group o // Og: view the channels as (groups, Og).
        by_group = total.reshape(N, OH, OW, groups, Og)
        if np.ndim(zw) == 0:
            if zw:
                by_group -= (int(zw) * sum_x)[..., None]
        else:
            by_group -= zw.reshape(groups, Og) * sum_x[..., None]
        total -= zx * sum_w - K * zx * zw
    # Exact integers -> float64 -> float32 in one buffered pass.
    y = np.empty(total.shape, np.float32)
    np.multiply(total, np.asarray(scale, np.float64), out=y, casting="unsafe")
    if bias is not None:
        y += bias
    return y


class _PreparedWeights:
    """The weight side of a fused layer call: what depends only on the weights, the
    multiplier's table, the weight quantization and the tuning."""

    __slots__ = ("key", "w", "perm", "mapping", "wp", "sw", "zw", "wi", "sum_w", "table",
                 "dtype", "folded", "K", "zw_any", "sw_max", "corr", "packed")

    def packed_for(self, be, groups):
        """``{"packed": ...}`` for the kernels' ``conv2d``/``gemm`` of backend ``be``: these
        weights packed once for the factored method (``factored_weights``; the packing is
        otherwise redone on every call: 0.3 ms of the 2.2 ms 256 x 1024 x 1024 call), or
        ``{}`` where it does not apply (a backend without it, a table without factors,
        depthwise filters, whose kernel puts their few values in place itself)."""
        if not getattr(be, "SUPPORTS_PACKED", False):
            return {}
        fw = self.packed.get(groups, False)
        if fw is False:
            fw = None
            if self.wi.shape[-2] > 1 and table_factors(self.table) is not None:
                fw = be.factored_weights(self.wi, self.table, groups)
            self.packed[groups] = fw
        return {} if fw is None else {"packed": fw}

    def dequant(self, sx, zx, bias):
        """The kernels' ``dequant=`` for an input of scale ``sx`` and zero point ``zx`` (an
        int), and ``max|scale|`` for :func:`check_overflow`. The zero-point correction
        ``K zx zw - zx sum q_w`` is remembered per ``zx``: a few us of small-array
        arithmetic on every call otherwise."""
        dq = {"scale": sx * self.sw, "bias": bias}
        if zx:
            corr = self.corr.get(zx)
            if corr is None:
                corr = self.K * zx * self.zw - zx * self.sum_w
                corr.setflags(write=False)
                if len(self.corr) >= 64:
                    self.corr.clear()
                self.corr[zx] = corr
            dq["corr"] = corr
        # |sx| * max|sw| is max|sx * sw| exactly (rounding is monotonic)
        return dq, abs(float(sx)) * self.sw_max


class _WeightCache:
    """Prepared weights of recent layers, so that a network run batch after batch quantizes
    each filter once. A hit needs the same table object (held by weak reference: tables are
    read-only and shared by equal multipliers), the same weight mode and tuning, and weights equal
    byte for byte to the cached copy (one memcmp pass instead of quantization, index
    conversion, column sums and the folded table). Holds at most ``max_bytes`` of copies."""

    def __init__(self, slots=512, max_bytes=256 << 20):
        self._entries = []
        # (table id, mode, weight memory and layout) -> the entry put for them: a network's
        # layers pass the same weight memory batch after batch, so the entry to compare is
        # found first, not after the other cached layers of the same shape
        self._where = {}
        self._slots, self._max_bytes = slots, max_bytes
        self._lock = threading.Lock()

    def _key(self, mode, w):
        """The weight mode as part of a key (fixed parameters by their values: calibrated
        ones are passed call after call), or None when these weights are not cached."""
        if 4 * w.nbytes > self._max_bytes:
            return None
        if isinstance(mode, str):
            return mode
        if isinstance(mode, QuantParams):
            return ("params", mode.bits, mode.signed, np.asarray(mode.scale).tobytes(),
                    np.ndim(mode.scale), np.asarray(mode.zero_point).tobytes(),
                    np.ndim(mode.zero_point))
        return None

    @staticmethod
    def _memory(w):
        """``w``'s memory as a C-contiguous array and the axes that give ``w`` back from it:
        a transposed view (PyTorch's OIHW filters as HWIO, a linear layer's ``w.T``) is
        compared in its own memory order, with no copy (a copy per call took longer than
        the comparison)."""
        if w.flags.c_contiguous:
            return w, None
        order = sorted(range(w.ndim), key=w.strides.__getitem__, reverse=True)
        m = w.transpose(order)
        if not m.flags.c_contiguous:
            return np.ascontiguousarray(w), None
        return m, tuple(order)

    @staticmethod
    def _matches(e, table, mode, w, mem, perm, mapping, fast, num_threads):
        ref, emode, shape = e.key
        return (ref() is table and emode == mode and shape == w.shape and e.perm == perm
                and (e.mapping is None) == (mapping is None)
                and (mapping is None or np.array_equal(e.mapping, mapping))
                and fast.same_bytes(e.w, mem, num_threads))

    def get(self, table, mode, w, mapping, fast, num_threads=None):
        mode = self._key(mode, w)
        if mode is None:
            return None
        mem, perm = self._memory(w)
        where = (id(table), mode, fast.address(w), w.shape, w.strides)
        e = self._where.get(where)
        # the same memory may hold other weights by now: the bytes decide, as below
        if e is not None and self._matches(e, table, mode, w, mem, perm, mapping, fast,
                                           num_threads):
            return e
        with self._lock:
            entries = list(self._entries)
        for e in entries:
            if self._matches(e, table, mode, w, mem, perm, mapping, fast, num_threads):
                with self._lock:   # (put rebuilds the index under the lock)
                    if len(self._where) >= 4 * self._slots:
                        # hits at ever new addresses (a fresh copy of the weights per call)
                        # would grow it without end: start over, the scan refills it
                        self._where.clear()
                    self._where[where] = e
                return e
        return None

    def put(self, entry, table, mode, w, mapping):
        mode = self._key(mode, w)
        if mode is None:
            return
        entry.key = (weakref.ref(table), mode, w.shape)
        mem, entry.perm = self._memory(w)
        entry.w = np.array(mem, order="C")
        entry.mapping = None if mapping is None else np.array(mapping)
        with self._lock:
            self._entries.insert(0, entry)
            del self._entries[self._slots:]
            held = 0
            for i, e in enumerate(self._entries):
                # (a list first: packed_for may add to e.packed meanwhile, without the lock)
                held += e.w.nbytes + e.wi.nbytes + e.table.nbytes + sum(
                    p.nbytes for p in list(e.packed.values()) if p is not None)
                if held > self._max_bytes:
                    del self._entries[i:]
                    break
            kept = {id(e) for e in self._entries}
            self._where = {k: e for k, e in self._where.items() if id(e) in kept}
            self._where[(id(table), mode, w.ctypes.data, w.shape, w.strides)] = entry


_WEIGHTS = _WeightCache()


def _prepare_weights(w, mode, m, mapping, fast, fold, name="w", num_threads=None):
    """Quantization parameters, table indices (tuned; shaped as ``w``) and per-column code
    sums of weights ``w`` (channel axis last, reduction over the others), and with ``fold``
    the table with a per-tensor weight zero point folded in (cached, see _WeightCache)."""
    table = table256(m)
    hit = _WEIGHTS.get(table, mode, w, mapping, fast, num_threads)
    if hit is not None:
        return hit
    COUT = w.shape[-1]
    w2 = w.reshape(-1, COUT)
    K = w2.shape[0]
    _check_finite(w2, name)
    e = _PreparedWeights()
    e.wp = checked_params(w2, mode, m, name, COUT, fast=fast)
    sw, e.zw = scale_and_zp(e.wp, COUT)
    # one scale per column: the kernels take vectors (a scalar was broadcast on every call)
    e.sw = np.ascontiguousarray(np.broadcast_to(sw, (COUT,)), np.float64)
    if not e.wp.per_channel and (not m.signed or m.bits == 8):
        # one pass: the indices are the codes (unsigned) or their int8 bit patterns
        wi = fast.quantize_indices(w2, e.wp, index_mask=(1 << m.bits) - 1)
        codes = wi.view(np.int8) if m.signed else wi
        acc = np.int32 if K < (1 << 23) else np.int64   # |sum| <= 255 K: int32 is exact
        e.sum_w = codes.sum(axis=0, dtype=acc).astype(np.int64)
    else:
        qw = quantize(w2, e.wp, channel_axis=-1)
        wi = _to_index(qw, m)
        e.sum_w = qw.sum(axis=0, dtype=np.int64)   # original codes (see tune.py)
    if mapping is not None:
        wi = mapping[wi].astype(np.uint8)
    # an array of its own, read-only: nothing can change it behind the packing kept below
    wi = np.ascontiguousarray(wi)
    if wi.base is not None:
        wi = wi.copy()
    wi.setflags(write=False)
    e.wi = wi.reshape(w.shape)
    e.table, e.dtype, e.folded = table, accumulator_dtype(K, m), False
    e.K, e.zw_any, e.sw_max, e.corr = K, bool(np.any(e.zw != 0)), float(np.max(np.abs(e.sw))), {}
    e.packed = {}
    if fold and np.ndim(e.zw) == 0 and e.zw != 0:
        folded = _folded_table(table, m, int(e.zw), K)
        if folded is not None and not _fold_adds_factor(table, folded[0], w):
            (e.table, e.dtype), e.folded = folded, True
    _WEIGHTS.put(e, table, mode, w, mapping)
    return e


def check_out(out, shape):
    """``out`` validated as a writeable C-contiguous float32 array of ``shape``."""
    return check_out_array(out, shape, np.float32)


def axconv2d(x, w, multiplier, *, bias=None, stride=1, padding="SAME", dilation=1, groups=1,
             data_format="NHWC", quant="auto", tune=False, backend="auto", num_threads=None,
             out=None):
    """2-D convolution of float tensors computed through an approximate multiplier.

    The input and the filter are quantized, every code product is looked up in the
    multiplier's table, the sums are exact integers and the zero-point correction of the
    module docstring is exact; the result is dequantized to float32.

    Parameters
    ----------
    x : array_like of float, shape (N, H, W, C) or (N, C, H, W)
    w : array_like of float, shape (KH, KW, C // groups, COUT) (HWIO) or (COUT, C // groups, KH, KW) (OIHW)
    multiplier : Multiplier or ndarray
        Activations are its row operand, weights its column operand. A (2**n, 2**n) table
        array is read as an unsigned multiplier (see :func:`axkern.backends.as_multiplier`).
    bias : array_like of shape (COUT,), optional
        Added in float32 after dequantization.
    stride, dilation : int or (int, int)
    padding : {"SAME", "VALID"} or int or (int, int) or ((top, bottom), (left, right))
        "SAME" splits as TensorFlow does. Padded positions hold the input's zero-point code.
    groups : int
        ``groups == C`` gives a depthwise convolution.
    data_format : {"NHWC", "NCHW"}
        NHWC takes HWIO filters (TensorFlow), NCHW takes OIHW filters (PyTorch).
    quant : str or QuantSpec or (QuantParams, QuantParams), default "auto"
        "tfapprox" (per-call raw min/max nudged as TensorFlow's FakeQuantWithMinMaxVars, unsigned
        codes, exactly TFApprox), "asymmetric" (the same with the range widened to include 0,
        which never clips all-positive tensors), "symmetric" (signed, amax / 127 per tensor), "symmetric-per-channel" (weights
        per output channel), fixed calibrated ``(input_params, weight_params)``, or "auto"
        (tfapprox for unsigned multipliers, symmetric for signed ones).
    tune : bool or array_like of int, default False
        ALWANN weight tuning: True computes :func:`axkern.tune_weights` (uniform), an array is
        used as the mapping. The lookup becomes ``T[q_x, w'(q_w)]``; correction terms keep the
        original weight codes.
    backend : {"auto", "reference", "cpu", "cuda"}
    num_threads : int, optional
    out : ndarray of float32, optional
        A writeable C-contiguous array shaped as the result (memory of the caller's, e.g. a
        PyTorch tensor's): the result is written there and ``out`` is returned. Must not
        overlap ``x``, ``w`` or ``bias``.

    Returns
    -------
    ndarray of float32, shape (N, OH, OW, COUT) or (N, COUT, OH, OW)

    Examples
    --------
    >>> import numpy as np, axkern
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 8, 8, 3), dtype=np.float32)
    >>> w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    >>> y = axkern.axconv2d(x, w, axkern.Multiplier.exact(8))
    >>> y.shape, y.dtype
    ((1, 8, 8, 4), dtype('float32'))
    """
    m = as_multiplier(multiplier)
    num_threads = _check_threads(num_threads)
    fmt = _check_format(data_format)
    x = _float_array(x, "x", 4, check_finite=False)   # checked by checked_params
    # the weights' finiteness: checked when they are prepared (a cache hit holds the same
    # bytes as checked weights), or below on the NumPy path
    w = _float_array(w, "w", 4, check_finite=False)
    x_given = x   # its range does not depend on the layout: read in the caller's order
    if fmt == "NCHW":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    N, H, W, C = x.shape
    KH, KW, Cg, COUT = w.shape
    stride, dilation, pads, (OH, OW) = _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    spec = resolve_quant(quant, m)
    mapping = resolve_tuning(tune, m)
    if bias is not None:
        bias = _float_array(bias, "bias")
        if bias.shape != (COUT,):
            raise ValueError(f"bias must have shape ({COUT},), one per output channel, got {bias.shape}")
    if out is not None:
        check_out(out, (N, OH, OW, COUT) if fmt == "NHWC" else (N, COUT, OH, OW))
    if N == 0 or Cg == 0:
        # An empty batch, or sums over no input channels: as a float convolution, the result
        # is the bias (or 0) everywhere; no data to take quantization ranges from.
        _check_finite(w, "w")
        y = np.zeros((N, OH, OW, COUT), np.float32)
        if bias is not None:
            y += bias
        y = y.transpose(0, 3, 1, 2) if fmt == "NCHW" else y
        if out is not None:
            np.copyto(out, y)
            return out
        return np.ascontiguousarray(y)

    fast = _host_helpers(backend, m)
    xp = checked_params(x_given, spec.input, m, "x", fast=fast, num_threads=num_threads)
    be = get_backend(backend)
    if fast is not None and not xp.per_channel and getattr(be, "SUPPORTS_DEQUANT", False):
        return _fused_conv(x, w, m, xp, spec, mapping, bias, stride, pads, dilation, groups,
                           fmt, (OH, OW), fast, be, num_threads, out)
    _check_finite(w, "w")
    wp = make_params(w, spec.weight, m, COUT)
    qw = quantize(w, wp, channel_axis=-1)   # the filter is small: NumPy is fine
    sx, zx = scale_and_zp(xp)
    sw_, zw = scale_and_zp(wp, COUT)
    zx = int(zx)
    if fast is not None and not xp.per_channel:
        # One parallel pass float32 -> uint8 indices (NumPy needs a float32 temporary and
        # seven passes); bit-identical to quantize_float + _float_codes_to_index.
        qx = None
        xi = fast.quantize_indices(x, xp, index_mask=(1 << m.bits) - 1, num_threads=num_threads,
                                   out=work_buffer("indices", x.shape, np.uint8))
    else:
        qx = quantize_float(x, xp)  # integer-valued float32: converted once, to table indices
        xi = np.ascontiguousarray(_float_codes_to_index(qx, m))
    wi = _to_index(qw, m)
    if mapping is not None:
        wi = mapping[wi].astype(np.uint8)
    wi = np.ascontiguousarray(wi)
    pad_index = int(_to_index(zx, m))
    K = KH * KW * Cg
    total = _run_conv(xi, wi, m, stride, pads, dilation, groups, pad_index, backend, num_threads,
                      (N, OH, OW, COUT) if qx is None else None)

    if qx is None:
        # Fused correction + dequantization: no int64 copy of the output, one pass.
        sum_x = None
        if np.any(zw != 0):
            # sum q_x over each receptive field, padded positions holding z_x, computed by
            # the convolution kernel itself (T[a, 0] = value of index a).
            sum_x = fast.window_sums(xi, _operand_values(m.bits, m.signed), (KH, KW), stride,
                                     pads, dilation, groups, pad_index, num_threads,
                                     out=work_buffer("window", (N, OH, OW, groups), np.int64))
        corr = None
        if zx:
            sum_w = qw.reshape(K, COUT).sum(axis=0, dtype=np.int64)   # original codes
            corr = K * zx * zw - zx * sum_w
        y = fast.epilogue(total, sx * sw_, zw if sum_x is not None else None, sum_x, corr,
                          bias, groups, num_threads)
    else:
        y = _numpy_epilogue(total, qx, xi, qw, m, zx, zw, sx * sw_, bias, K, pads, stride,
                            dilation, (KH, KW), (OH, OW), groups)
    check_overflow(y, sx * sw_, K, m, bias)
    if fmt == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    if out is not None:
        np.copyto(out, y)
        return out
    return np.ascontiguousarray(y)


def conv_with_input_params(x, w, m, xp, spec, *, bias, stride, padding, dilation, groups,
                           tune, backend, num_threads, data_format):
    """``axconv2d(x, w, m, quant=QuantSpec(xp, spec.weight), ...)`` for a caller that has
    already checked its float32 arrays and computed the input's parameters ``xp`` under its
    resolved ``spec`` (the PyTorch layers, on every forward): the fused path without
    axconv2d's checks of its arguments, whose code on every call of every layer made a small
    layer's call 20 - 25 us slower; axconv2d itself wherever the fused path does not serve
    (and for every error, so that the messages are the same)."""
    fast = _host_helpers(backend, m)
    be = get_backend(backend) if fast is not None else None
    four = x.ndim == 4 and w.ndim == 4 and data_format in ("NCHW", "NHWC")
    xs, ws = (x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)) \
        if four and data_format == "NCHW" else (x, w)
    if fast is None or xp.per_channel or not getattr(be, "SUPPORTS_DEQUANT", False) \
            or not four or x.dtype != np.float32 or w.dtype != np.float32 \
            or xs.shape[0] == 0 or ws.shape[2] == 0 or not (
                bias is None or (bias.dtype == np.float32 and bias.shape == (ws.shape[3],))):
        return axconv2d(x, w, m, bias=bias, stride=stride, padding=padding, dilation=dilation,
                        groups=groups, quant=QuantSpec(xp, spec.weight), tune=tune,
                        backend=backend, num_threads=num_threads, data_format=data_format)
    num_threads = _check_threads(num_threads)
    stride, dilation, pads, out_hw = _geometry(xs.shape, ws.shape, stride, padding, dilation,
                                               groups)
    return _fused_conv(xs, ws, m, xp, spec, resolve_tuning(tune, m), bias, stride, pads,
                       dilation, groups, data_format, out_hw, fast, be, num_threads)


def _small_factored_planes(table, out_hw, images):
    """Whether a depthwise layer's NCHW input should reach the kernels as NHWC indices
    although they could read its planes: a table of one or two factors takes the factored
    kernel (axkern._fast), whose planes cost per plane, and its NHWC indices come from the
    same quantizing pass. Two threads, mul8u_drum4, alternating (docs/performance.md): on
    batches of planes under 32 x 32 outputs NHWC indices ran 1.0 - 1.8 times as fast as the
    planes (32 x 16 x 16 x 64, 4 x 14 x 14 x 256, 8 x 7 x 7 x 512; 2 images mostly so), on
    one image the planes 1.0 - 1.4 times as fast as NHWC indices (1 x 14 x 14 x 512,
    1 x 7 x 7 x 1024, 1 x 16 x 16 x 64), and on planes of 32 x 32 outputs and more 1.0 -
    1.25 times as fast. (Tables without factors take the depthwise method, which makes its
    own planar copy of NHWC indices: a small cost next to its lookups.)"""
    f = table_factors(table)
    return f is not None and f[0].shape[1] <= 2 and out_hw[0] * out_hw[1] < 1024 \
        and images > 1


def _fused_conv(x, w, m, xp, spec, mapping, bias, stride, pads, dilation, groups, fmt, out_hw,
                fast, be, num_threads, out=None):
    """axconv2d on a backend that dequantizes in the kernel (axkern._fast): the input
    quantized to table indices in one pass, the weight side from :func:`_prepare_weights`,
    the correction and the dequantization applied as the kernel stores: no integer copy of
    the output."""
    N = x.shape[0]
    KH, KW, Cg, COUT = w.shape
    OH, OW = out_hw
    K = KH * KW * Cg
    pw = _prepare_weights(w, spec.weight, m, mapping, fast, fold=True, num_threads=num_threads)
    sx, zx = scale_and_zp(xp)
    zx, zw = int(zx), pw.zw
    dq, scale_max = pw.dequant(sx, zx, bias)
    # One parallel pass float32 -> uint8 indices (NumPy needs a float32 temporary and seven
    # passes); bit-identical to quantize_float + _float_codes_to_index. An NCHW input is
    # read planar and written NHWC in that same pass (no transposed copy), or, for a
    # depthwise layer, quantized as it is.
    x_nchw = x.transpose(0, 3, 1, 2) if fmt == "NCHW" else None
    from_nchw = x_nchw is not None and x_nchw.flags.c_contiguous
    pad_index = int(_to_index(zx, m))
    # A depthwise layer works on planes: its NCHW input is quantized as it is and the kernel
    # reads NCHW indices (no transposition on either side). Not with window sums, which
    # take NHWC indices, nor for small planes of a table the factored kernel takes.
    planes = from_nchw and groups > 1 and groups == x.shape[3] == COUT \
        and (pw.folded or not pw.zw_any) \
        and getattr(be, "SUPPORTS_NCHW_IN", False) and getattr(be, "SUPPORTS_NCHW", False) \
        and not _small_factored_planes(pw.table, out_hw, N)
    src = x_nchw if from_nchw else x
    xi = fast.quantize_indices(src, xp, index_mask=(1 << m.bits) - 1, num_threads=num_threads,
                               from_nchw=from_nchw and not planes,
                               out=work_buffer("indices", src.shape if planes else x.shape,
                                               np.uint8))
    if not pw.folded and pw.zw_any:
        # The weight zero point was not folded into the table (T'[a, b] = T[a, b] - z_w
        # value(a) sums to the corrected total directly, see _fold_zero_point): per channel,
        # or the fold would leave the table's class. The window sums of the activation
        # codes carry the correction instead (per group: as costly as a depthwise
        # convolution itself).
        dq["zw"] = zw
        dq["sumx"] = fast.window_sums(
            xi, _operand_values(m.bits, m.signed), (KH, KW), stride, pads, dilation, groups,
            pad_index, num_threads, out=work_buffer("window", (N, OH, OW, groups), np.int64))
    if fmt == "NCHW" and getattr(be, "SUPPORTS_NCHW", False):
        # the dequantizing store writes the NCHW output directly
        y = be.conv2d(xi, pw.wi, pw.table, stride, pads, dilation, groups, pad_index,
                      pw.dtype, num_threads, dequant=dq, out_format="NCHW",
                      **({"in_format": "NCHW"} if planes else {}),
                      **({"out": out} if out is not None else {}), **pw.packed_for(be, groups))
        check_overflow(y, dq["scale"], K, m, bias, scale_max)
        return y
    # NHWC: the kernel stores straight into the caller's ``out``.
    y = be.conv2d(xi, pw.wi, pw.table, stride, pads, dilation, groups, pad_index, pw.dtype,
                  num_threads, dequant=dq, **pw.packed_for(be, groups),
                  **({"out": out} if out is not None and fmt == "NHWC" else {}))
    check_overflow(y, dq["scale"], K, m, bias, scale_max)
    if fmt == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    if out is not None:
        if y is not out:
            np.copyto(out, y)
        return out
    return np.ascontiguousarray(y)
