"""Quantization helpers: TensorFlow-style asymmetric (TFApprox) and symmetric (AdaPT) schemes.

Asymmetric, unsigned codes (what TFApprox does)
-----------------------------------------------
Ranges are nudged exactly as TensorFlow's ``FakeQuantWithMinMaxVars`` (``num_bits`` bits,
``narrow_range=False``) in the formulation of ``fake_quant_ops_functor.h`` that TFApprox was
built on, all in float32::

    scale       = (max - min) / (quant_max - quant_min)
    zp_from_min = quant_min - min / scale
    zero_point  = quant_min if zp_from_min < quant_min
                  quant_max if zp_from_min > quant_max
                  round_half_away_from_zero(zp_from_min) otherwise
    nudged_min  = (quant_min - zero_point) * scale
    nudged_max  = (quant_max - zero_point) * scale
    code        = floor((clamp(x, nudged_min, nudged_max) - nudged_min) * inv_scale + 0.5)

with ``inv_scale = 1 / scale`` computed once in float32. (Recent TensorFlow releases compute
``floor(x * inv_scale - zero_point + 0.5) + zero_point`` instead, which differs at a few
half-way points; axkern follows the formula above.) The fake-quantized value is
``code * scale + nudged_min``.

Symmetric, signed codes (what AdaPT does)
-----------------------------------------
``scale = amax / (2**(bits-1) - 1)``, ``q = clamp(round_half_to_even(x / scale), -qmax, qmax)``,
no zero point; ``amax`` per tensor or per output channel.

Ranges
------
``quant="tfapprox"`` takes the raw ``[x.min(), x.max()]`` of the tensor at every call, as
TFApprox's ``FakeApproxConv2D`` does (``reduce_min``/``reduce_max`` fed to
``FakeQuantWithMinMaxVars``). Like TensorFlow, it keeps the consequence for a tensor whose
values are all positive (or all negative): nudging moves the range to ``[0, max - min]`` and
the largest values are clipped. ``quant="asymmetric"`` is the same unsigned scheme with the
range ``[min(x.min(), 0), max(x.max(), 0)]``, which never clips; the two agree whenever the
data's range contains 0 (post-ReLU activations, most weight tensors).
:func:`fake_quant` and :func:`calibrate` use the zero-including range by default.

A constant tensor ``c`` gets the range ``[min(c, 0), max(c, 0)]`` (so ``c`` itself is exactly
representable); an all-zero tensor gets scale 1 and zero point 0. NaN or Inf raise ValueError,
and so does a range too wide for float32 (``max - min`` overflows).

Outliers
--------
A per-call range is set by the extreme values, so one huge value (``1e30`` among values near
1) gives a scale under which every other value quantizes to the zero point: the layer's
output is then 0 (or the bias) nearly everywhere. :func:`check_range` detects this and warns
with a :class:`QuantizationRangeWarning`, once per call site (per layer in
:class:`axkern.nn.Sequential`). The rule: fewer than 1% of the tensor's non-zero values
quantize to a code other than the zero point's, i.e. have ``|x| > scale / 2``, counted on an
evenly spaced sample of at most 1024 values and confirmed on the whole tensor. The remedy is
a calibrated range: :func:`calibrate` with ``method="percentile"`` on representative data,
passed as ``quant=(input_params, weight_params)``, clips the outliers instead. The same
category warns when the dequantized result overflows float32 (``inf`` from finite inputs:
the scales' product is too large).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import sys
import threading
import warnings

import numpy as np

__all__ = [
    "QuantParams", "QuantSpec", "tf_nudge", "tf_quant_params", "fake_quant", "symmetric_params",
    "quantize", "quantize_float", "dequantize", "calibrate", "check_finite",
    "QuantizationRangeWarning", "check_range",
]

_F32 = np.float32


def _smallest_invertible():
    with np.errstate(over="ignore"):
        s = _F32(1) / np.finfo(_F32).max
        while not np.isfinite(_F32(1) / s):
            s = np.nextafter(s, _F32(1))
    return _F32(s)


# the smallest float32 scale whose float32 reciprocal is finite (about 2.94e-39)
_MIN_SCALE = _smallest_invertible()
_MIN_SCALE_F = float(_MIN_SCALE)
# float64 values from here on round to float32 infinity (the midpoint above the largest
# float32 rounds to even, upwards)
_F32_INF_FROM = 2.0 ** 128 - 2.0 ** 103


def _f32(v):
    """The float64 ``v`` rounded to float32, as a Python float (infinite beyond its range,
    without the overflow warning). A float32 operation is the float64 one rounded so: for
    +, -, * and / of float32 operands float64 is wide enough that the two roundings give
    the float32 result exactly."""
    if abs(v) >= _F32_INF_FROM:
        return math.copysign(math.inf, v)
    return float(_F32(v))


class QuantizationRangeWarning(UserWarning):
    """A per-call quantization range is dominated by a few extreme values, or the result of
    a product overflowed float32 because of the scales."""


_RANGE_SAMPLE = 1024       # values looked at on every call
_RANGE_MIN_SHARE = 0.01    # share of non-zero values that must keep a non-zero code
_LAYER = contextvars.ContextVar("axkern_layer", default=None)
_WARNED = set()
_WARNED_LOCK = threading.Lock()
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def layer_context(name, owner=None):
    """Name the layer whose products run inside the block (for warnings).

    Parameters
    ----------
    name : str
        The layer's name, shown in the warning.
    owner : hashable, optional
        Identifies the layer instance (its model), so that two models with a layer of the
        same name each get their own warning; None: the name alone.
    """
    token = _LAYER.set((name, owner))
    try:
        yield
    finally:
        _LAYER.reset(token)


def _inside_package(filename):
    d = os.path.dirname(os.path.abspath(filename))
    return d == _PACKAGE_DIR or d.startswith(_PACKAGE_DIR + os.sep)


def _call_site():
    """(file, line) of the first frame outside axkern, and how many levels up it is."""
    f, level = sys._getframe(1), 1
    while f is not None and _inside_package(f.f_code.co_filename):
        f, level = f.f_back, level + 1
    return ((None, 0), level) if f is None else ((f.f_code.co_filename, f.f_lineno), level)


def warn_once(key, message):
    """Warn (QuantizationRangeWarning) once per ``key`` and call site or layer instance."""
    current = _LAYER.get()
    site, level = _call_site()
    # a layer is keyed by its owner too: another model's layer of the same name warns again
    full_key = (key, current if current is not None else site)
    with _WARNED_LOCK:
        if full_key in _WARNED:
            return
        _WARNED.add(full_key)
    layer = None if current is None else current[0]
    if layer is not None:
        message = f"layer {layer!r}: {message}"
    warnings.warn(message, QuantizationRangeWarning, stacklevel=level)


_FAST = []   # [axkern._fast or None], looked up on first use


def _fast_helpers():
    """:mod:`axkern._fast`, or None where it is not compiled (NumPy and Python do the same
    work)."""
    if not _FAST:
        try:
            from . import _fast
        except ImportError:
            _fast = None
        _FAST.append(_fast)
    return _FAST[0]


def _off_zero(v, half, step=1):
    """(count of |v| > half, count of v != 0) over every step-th value of v (flat, in C
    order)"""
    fast = _fast_helpers()
    if fast is not None and v.dtype == _F32 and (v.ndim == 1 or v.flags.c_contiguous):
        return fast.off_zero(v, half, step)
    v = v.reshape(-1)[::step] if v.flags.c_contiguous else v.flat[np.arange(0, v.size, step)]
    return (int(np.count_nonzero(v > half)) + int(np.count_nonzero(v < -half)),
            int(np.count_nonzero(v)))


def check_range(x, params, name="x", remedy=None):
    """Warn if a per-tensor range leaves almost every non-zero value of ``x`` at code zero.

    ``remedy`` replaces the advice at the end of the warning (an adapter's own way to
    calibrate).

    Implements the rule of the module docstring (fewer than 1% of the non-zero values with
    ``|x| > scale / 2``) on every ``ceil(x.size / 1024)``-th value of ``x`` (all of a small x),
    confirmed on all of ``x`` before warning. Per-channel parameters are not checked.

    Returns
    -------
    bool
        True if the range is dominated by a few values (a warning was issued or had been).
    """
    if params.per_channel or x.size == 0:
        return False
    half = _f32(0.5 * float(params.scale))   # float32's half of the scale
    step = -(-x.size // _RANGE_SAMPLE)   # every step-th value: at most _RANGE_SAMPLE of them
    off, nnz = _off_zero(x, half, step)
    if nnz == 0 or off >= _RANGE_MIN_SHARE * nnz:
        return False
    if step > 1:
        off, nnz = _off_zero(x, half)   # rare: confirm on the whole tensor
        if nnz == 0 or off >= _RANGE_MIN_SHARE * nnz:
            return False
    lo, hi = float(np.min(x)), float(np.max(x))
    warn_once(("range", name),
              f"{name}: the quantization range [{lo:.3g}, {hi:.3g}] is dominated by a few "
              f"extreme values: only {off} of its {nnz} non-zero values ({100.0 * off / nnz:.2g}%) "
              f"quantize to a non-zero code, the rest become 0. "
              + (remedy or "Use a calibrated range (axkern.quant.calibrate(..., "
                 "method='percentile'), passed as quant=(input_params, weight_params)) or "
                 "remove the outliers"))
    return True


def check_finite(x, name="x"):
    """Raise ValueError if the float array ``x`` holds NaN or Inf."""
    if x.size and not np.isfinite(x).all():
        bad = "NaN" if np.isnan(x).any() else "Inf"
        raise ValueError(f"{name} contains {bad} values: expected finite numbers only")


def _as_float32(x, name):
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    check_finite(arr, name)
    return arr


def _check_bits(bits):
    if type(bits) is int and 2 <= bits <= 8:   # (every QuantParams of every call asks)
        return bits
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")
    return int(bits)


class QuantParams:
    """Quantization parameters ``x ~ scale * (q - zero_point)``, reusable across batches.

    Parameters
    ----------
    scale : float or 1-D array_like of float
        Positive step size (stored as float32). A 1-D array means one scale per channel
        (per output channel for weights); see :func:`quantize` for the channel axis.
    zero_point : int or 1-D array_like of int, default 0
        The code of 0.0. Must lie in ``[qmin, qmax]``.
    bits : int, default 8
        Code width.
    signed : bool, default False
        Unsigned codes ``0 .. 2**bits - 1`` rounded as TensorFlow does (see the module
        docstring), or signed codes ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1`` rounded half to
        even.

    Examples
    --------
    >>> p = QuantParams(0.5, 10)
    >>> quantize([0.0, 1.0, -5.0], p).tolist()
    [10, 12, 0]
    """

    def __init__(self, scale, zero_point=0, bits=8, signed=False):
        self.bits = _check_bits(bits)
        self.signed = bool(signed)
        if type(scale) is _F32 and type(zero_point) is int and self._set_scalar(scale,
                                                                              zero_point):
            return
        s = np.asarray(scale)
        if s.dtype == object or not np.issubdtype(s.dtype, np.number) or s.ndim > 1:
            raise TypeError(f"scale must be a positive float or a 1-D array of them, got {scale!r}")
        with np.errstate(over="ignore"):
            s = s.astype(np.float32)
        if s.size == 0 or not np.all(np.isfinite(s)) or not np.all(s > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale!r}")
        with np.errstate(over="ignore", divide="ignore"):
            inv_ok = np.isfinite(_F32(1) / s)
        if not np.all(inv_ok):
            # quantization multiplies by 1 / scale in float32 (as tf_nudge guards too): an
            # infinite reciprocal would turn every code into garbage
            raise ValueError(f"scale {scale!r} is too small: 1 / scale overflows float32 "
                             f"(expected scale >= {float(_MIN_SCALE):.4g})")
        z = np.asarray(zero_point)
        if z.ndim > 1 or not (np.issubdtype(z.dtype, np.integer)
                              or (np.issubdtype(z.dtype, np.floating) and np.all(z == np.round(z)))):
            raise TypeError(f"zero_point must be an integer or a 1-D array of integers, got {zero_point!r}")
        z = z.astype(np.int64)
        if z.size == 0 or z.min() < self.qmin or z.max() > self.qmax:
            raise ValueError(f"zero_point {zero_point!r} out of range: expected {self.qmin}..{self.qmax}")
        if s.ndim == 1 and z.ndim == 1 and s.shape != z.shape:
            raise ValueError(f"per-channel scale and zero_point differ in length: {s.shape} vs {z.shape}")
        if not self.signed:
            with np.errstate(over="ignore"):
                nmin = (_F32(self.qmin) - z.astype(np.float32)) * s
            if not np.all(np.isfinite(nmin)):
                # unsigned codes are clamped to [(qmin - zp) s, (qmax - zp) s] in float32
                # and counted from the lower end: an infinite one turned every code into qmax
                raise ValueError(f"scale {scale!r} is too large for zero_point {zero_point!r}: "
                                 f"the lower end of the range, (qmin - zero_point) * scale, "
                                 f"overflows float32")
        self.scale = s if s.ndim else _F32(s)
        self.zero_point = z if z.ndim else int(z)

    def _set_scalar(self, s, z):
        """Per-tensor parameters given as a float32 scale and an int zero point (what
        :func:`tf_nudge` and the symmetric scales give, on every call of a layer): the
        checks of the general path in scalar arithmetic (its array checks took 25 us).
        False where one fails, for the general path to raise its error."""
        f = float(s)
        if not (_MIN_SCALE_F <= f < math.inf and self.qmin <= z <= self.qmax):
            return False
        # (qmin - z) * s exactly (an integer of at most 9 bits times a float32), then its
        # float32 rounding's overflow
        if not self.signed and abs((self.qmin - z) * f) >= _F32_INF_FROM:
            return False
        self.scale, self.zero_point = s, z
        return True

    @property
    def qmin(self):
        """Smallest code."""
        return -((1 << (self.bits - 1)) - 1) if self.signed else 0

    @property
    def qmax(self):
        """Largest code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def per_channel(self):
        """Whether scale or zero point is an array (one entry per channel)."""
        if type(self.zero_point) is int and type(self.scale) is _F32:
            return False   # as __init__ leaves per-tensor parameters (asked on every call)
        return np.ndim(self.scale) == 1 or np.ndim(self.zero_point) == 1

    @property
    def channels(self):
        """Number of channels of a per-channel parameter set, else None."""
        if np.ndim(self.scale) == 1:
            return self.scale.shape[0]
        if np.ndim(self.zero_point) == 1:
            return self.zero_point.shape[0]
        return None

    def quantize(self, x, channel_axis=-1):
        """Codes of ``x`` (int64); see :func:`quantize`."""
        return quantize(x, self, channel_axis=channel_axis)

    def dequantize(self, q, channel_axis=-1):
        """Float32 values ``scale * (q - zero_point)``; see :func:`dequantize`."""
        return dequantize(q, self, channel_axis=channel_axis)

    def __repr__(self):
        kind = "signed" if self.signed else "unsigned"
        return f"QuantParams(scale={self.scale!r}, zero_point={self.zero_point!r}, bits={self.bits}, {kind})"


class QuantSpec:
    """How to quantize the input and the weights of one layer call.

    Parameters
    ----------
    input : {"tfapprox", "asymmetric", "symmetric"} or QuantParams
        Per-call scheme or fixed (calibrated) parameters for the activation operand.
    weight : {"tfapprox", "asymmetric", "symmetric", "symmetric-per-channel"} or QuantParams
        Per-call scheme or fixed parameters for the weight operand. Per-channel parameters
        hold one entry per output channel.
    """

    INPUT_MODES = ("tfapprox", "asymmetric", "symmetric")
    WEIGHT_MODES = ("tfapprox", "asymmetric", "symmetric", "symmetric-per-channel")

    def __init__(self, input, weight):
        for name, v, modes in (("input", input, self.INPUT_MODES), ("weight", weight, self.WEIGHT_MODES)):
            if isinstance(v, str):
                if v not in modes:
                    raise ValueError(f"unknown {name} quantization {v!r}: expected one of {modes} or QuantParams")
            elif not isinstance(v, QuantParams):
                raise TypeError(f"{name} quantization must be a string or QuantParams, got {type(v).__name__}")
        if isinstance(input, QuantParams) and input.per_channel:
            raise ValueError("input quantization must be per tensor: got per-channel QuantParams")
        self.input = input
        self.weight = weight

    def signedness(self):
        """(input_signed, weight_signed) of the codes this spec produces."""
        def one(v):
            return v.signed if isinstance(v, QuantParams) else v.startswith("symmetric")
        return one(self.input), one(self.weight)

    def __repr__(self):
        return f"QuantSpec(input={self.input!r}, weight={self.weight!r})"


def tf_nudge(x_min, x_max, bits=8):
    """TensorFlow's ``Nudge`` of a float range (``narrow_range=False``), in float32.

    Parameters
    ----------
    x_min, x_max : float
        The observed range, ``x_min <= x_max``.
    bits : int, default 8

    Returns
    -------
    nudged_min, nudged_max, scale : numpy.float32
    zero_point : int

    Notes
    -----
    Degenerate ranges (``x_min == x_max``, or a range so small that ``1 / scale`` overflows)
    are widened to include 0; an all-zero range gets scale 1 and zero point 0.
    """
    bits = _check_bits(bits)
    scale, zp = _tf_scale_zp(x_min, x_max, bits)
    qmax = float((1 << bits) - 1)
    return _F32(_f32((0.0 - zp) * scale)), _F32(_f32((qmax - zp) * scale)), _F32(scale), zp


def _tf_scale_zp(x_min, x_max, bits):
    """The scale (a float holding a float32 value) and zero point of :func:`tf_nudge`, the
    range checked: axkern._fast's Nudge where compiled, else :func:`_nudge_scale_zp`."""
    lo, hi = float(_F32(x_min)), float(_F32(x_max))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"quantization range must be finite, got min={x_min!r}, max={x_max!r}")
    if lo > hi:
        raise ValueError(f"quantization range has min > max: min={x_min!r}, max={x_max!r}")
    fast = _fast_helpers()
    sz = fast.nudge_scale_zp(lo, hi, bits) if fast is not None else None
    return sz if sz is not None else _nudge_scale_zp(lo, hi, bits)


def _nudge_scale_zp(lo, hi, bits):
    """``(scale, zero_point)`` of :func:`tf_nudge` for the float32 values ``lo <= hi``: float32
    arithmetic as float64 operations rounded by _f32 (for +, -, * and / the same results).
    axkern._fast's ``nudge_scale_zp`` computes the same in C float; this serves where it is
    not compiled, and raises for a range too wide, where that returns None."""
    # a float32 reciprocal is finite exactly from _MIN_SCALE on, and 0 - v is exact
    qmin, qmax = 0.0, float((1 << bits) - 1)
    for attempt in range(2):
        scale = _f32(_f32(hi - lo) / (qmax - qmin))
        if scale >= _MIN_SCALE_F:
            break
        # Constant tensor: widen to include 0 so the constant itself is representable.
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    else:
        return 1.0, 0
    if math.isinf(scale):
        raise ValueError(f"quantization range [{lo:.3g}, {hi:.3g}] is too "
                         f"wide: the scale (max - min) / {int(qmax)} overflows float32")
    zp_from_min = qmin - _f32(lo / scale)
    if zp_from_min < qmin:
        return scale, int(qmin)
    if zp_from_min > qmax:
        return scale, int(qmax)
    # std::round: half away from zero (zp_from_min >= 0 here).
    return scale, int(math.floor(zp_from_min + 0.5))


def tf_quant_params(x_min, x_max, bits=8):
    """Unsigned :class:`QuantParams` from a range, nudged as TensorFlow does (:func:`tf_nudge`)."""
    bits = _check_bits(bits)
    scale, zp = _tf_scale_zp(x_min, x_max, bits)   # (the nudged ends are not needed here)
    return QuantParams(_F32(scale), zp, bits=bits, signed=False)


def fake_quant(x, x_min=None, x_max=None, bits=8):
    """TensorFlow ``FakeQuantWithMinMaxVars`` (float32 in, float32 out).

    Parameters
    ----------
    x : array_like
    x_min, x_max : float, optional
        The range, used as given (TensorFlow's behaviour, even if it excludes 0); default
        ``min(x.min(), 0)`` and ``max(x.max(), 0)``, the per-call range of
        ``axconv2d(..., quant="asymmetric")``; pass ``x.min(), x.max()`` for TFApprox's.
    bits : int, default 8

    Returns
    -------
    ndarray of float32
        ``code * scale + nudged_min``.
    """
    x = _as_float32(x, "x")
    if x_min is None:
        x_min = min(x.min(), 0.0) if x.size else 0.0
    if x_max is None:
        x_max = max(x.max(), 0.0) if x.size else 0.0
    nmin, nmax, scale, _ = tf_nudge(x_min, x_max, bits)
    inv = _F32(1) / scale
    codes = np.floor((np.clip(x, nmin, nmax) - nmin) * inv + _F32(0.5))
    return (codes * scale + nmin).astype(np.float32)


def symmetric_params(x, bits=8, channel_axis=None):
    """Symmetric signed :class:`QuantParams` with ``scale = amax / (2**(bits-1) - 1)``.

    Parameters
    ----------
    x : array_like
    bits : int, default 8
    channel_axis : int, optional
        If given, one scale per index along this axis (per output channel for weights);
        otherwise one scale for the whole tensor.

    Notes
    -----
    A channel (or tensor) whose ``amax`` is 0 gets scale 1: all its codes are 0 either way.
    """
    bits = _check_bits(bits)
    x = _as_float32(x, "x")
    qmax = _F32((1 << (bits - 1)) - 1)
    if channel_axis is None:
        amax = np.abs(x).max() if x.size else _F32(0)
    else:
        ax = _norm_axis(channel_axis, x.ndim)
        other = tuple(i for i in range(x.ndim) if i != ax)
        if x.size:
            amax = np.abs(x).max(axis=other)
        else:
            amax = np.zeros(x.shape[ax], np.float32)
    amax = np.asarray(amax, np.float32)
    return _symmetric_from_amax(amax, qmax, bits, channel_axis is not None)


def _symmetric_from_amax(amax, qmax, bits, per_channel):
    if not per_channel:   # in float64 rounded per operation, as tf_nudge
        scale = _f32(float(amax) / float(qmax))
        if not scale >= _MIN_SCALE_F:   # 0, or 1 / scale overflows
            scale = 1.0
        return QuantParams(_F32(scale), 0, bits=bits, signed=True)
    amax = np.asarray(amax, np.float32)
    with np.errstate(all="ignore"):
        scale = amax / qmax
        # amax 0 (all-zero channel) or so tiny that 1/scale overflows: every code is 0 anyway.
        ok = (scale > 0) & np.isfinite(_F32(1) / scale)
    scale = np.where(ok, scale, _F32(1)).astype(np.float32)
    return QuantParams(scale if per_channel else _F32(scale), 0, bits=bits, signed=True)


def _norm_axis(axis, ndim):
    if ndim == 0:
        raise ValueError(f"channel_axis {axis!r} given for a 0-d tensor (a scalar), which has "
                         "no channel axis: expected an array with at least one dimension")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) \
            or not -ndim <= axis < ndim:
        raise ValueError(f"channel_axis {axis!r} out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _channel_axis(params, shape, channel_axis):
    """The axis per-channel ``params`` run along in an array of ``shape`` (0 for per-tensor
    ones), checked against their channel count."""
    if not params.per_channel:
        return 0
    if len(shape) == 0:
        raise ValueError("per-channel quantization needs an array with a channel axis")
    ax = _norm_axis(channel_axis, len(shape))
    if shape[ax] != params.channels:
        raise ValueError(f"per-channel QuantParams have {params.channels} channels but the "
                         f"tensor has {shape[ax]} along axis {ax}")
    return ax


def _broadcast_param(v, ndim, axis, dtype):
    v = np.asarray(v, dtype)
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def quantize(x, params, channel_axis=-1):
    """Codes of ``x`` under ``params`` (int64 array of operand values).

    Parameters
    ----------
    x : array_like of float
    params : QuantParams
    channel_axis : int, default -1
        The axis that per-channel parameters run along.

    Returns
    -------
    ndarray of int64
        Unsigned: TensorFlow's formula of the module docstring. Signed:
        ``clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)``.
    """
    return quantize_float(x, params, channel_axis).astype(np.int64)


def quantize_float(x, params, channel_axis=-1):
    """The codes of :func:`quantize` as an integer-valued float32 array (exact: |q| < 2**24).

    Saves a conversion where the caller wants narrow integers (table indices) anyway.
    """
    if not isinstance(params, QuantParams):
        raise TypeError(f"params must be QuantParams, got {type(params).__name__}")
    x = _as_float32(x, "x")
    ax = _channel_axis(params, x.shape, channel_axis)
    s = _broadcast_param(params.scale, x.ndim, ax, np.float32)
    z = _broadcast_param(params.zero_point, x.ndim, ax, np.int64)
    zf = z.astype(np.float32)
    # In-place float32 passes, each rounding exactly as the formula of the module docstring.
    if params.signed:
        t = np.divide(x, s)
        np.rint(t, out=t)
        t += zf                                    # exact: |codes| < 2**24 where it matters
        np.maximum(t, _F32(params.qmin), out=t)
        np.minimum(t, _F32(params.qmax), out=t)
        return t
    nmin = (_F32(params.qmin) - zf) * s
    nmax = (_F32(params.qmax) - zf) * s
    inv = _F32(1) / s
    t = np.maximum(x, nmin)
    np.minimum(t, nmax, out=t)
    t -= nmin
    t *= inv
    t += _F32(0.5)
    np.floor(t, out=t)
    np.minimum(t, _F32(params.qmax - params.qmin), out=t)  # guards a last-ulp overshoot only
    if params.qmin:
        t += _F32(params.qmin)
    return t


def dequantize(q, params, channel_axis=-1):
    """Float32 values ``scale * (q - zero_point)`` of codes ``q``.

    Parameters
    ----------
    q : array_like of int
    params : QuantParams
    channel_axis : int, default -1
        The axis that per-channel parameters run along; it must hold one entry per channel,
        as in :func:`quantize`.

    Returns
    -------
    ndarray of float32, the shape of ``q``
    """
    if not isinstance(params, QuantParams):
        raise TypeError(f"params must be QuantParams, got {type(params).__name__}")
    q = np.asarray(q)
    # checked as quantize does: a mismatched axis would broadcast to a wrong shape silently
    ax = _channel_axis(params, q.shape, channel_axis)
    s = _broadcast_param(params.scale, q.ndim, ax, np.float32)
    z = _broadcast_param(params.zero_point, q.ndim, ax, np.int64)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def calibrate(data, scheme="tfapprox", method="minmax", percentile=99.99, bits=8, channel_axis=None):
    """Quantization parameters fitted to data, for use across batches.

    Parameters
    ----------
    data : array_like or iterable of array_like
        One tensor, or several batches (their union is used).
    scheme : {"tfapprox", "symmetric"}
        Unsigned nudged asymmetric codes, or signed symmetric codes.
    method : {"minmax", "percentile"}
        Use the extreme values, or clip outliers at ``percentile`` (and ``100 - percentile``
        for the minimum; of ``|x|`` for the symmetric scheme).
    percentile : float, default 99.99
    bits : int, default 8
    channel_axis : int, optional
        Symmetric scheme only: one scale per index along this axis.

    Returns
    -------
    QuantParams
    """
    if scheme not in ("tfapprox", "symmetric"):
        raise ValueError(f"unknown scheme {scheme!r}: expected 'tfapprox' or 'symmetric'")
    if method not in ("minmax", "percentile"):
        raise ValueError(f"unknown method {method!r}: expected 'minmax' or 'percentile'")
    if not (isinstance(percentile, numbers.Real) and 50 < percentile <= 100):
        raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
    if channel_axis is not None and scheme != "symmetric":
        raise ValueError("per-channel calibration is only available for the symmetric scheme")
    if isinstance(data, np.ndarray) or np.isscalar(data):
        batches = [data]
    else:
        batches = list(data)
        if batches and all(np.isscalar(b) for b in batches):
            batches = [np.asarray(batches)]
    arrs = [_as_float32(b, "data") for b in batches]
    if channel_axis is None:
        flat = np.concatenate([a.ravel() for a in arrs]) if arrs else np.zeros(0, np.float32)
    elif not arrs:
        flat = np.zeros(0, np.float32)
    else:
        ax = _norm_axis(channel_axis, arrs[0].ndim)
        # per-channel batches must agree on the layout (their union is taken per channel)
        for i, a in enumerate(arrs[1:], 1):
            if a.ndim != arrs[0].ndim:
                raise ValueError(f"calibrate: batch {i} has {a.ndim} dimensions (shape "
                                 f"{a.shape}) but batch 0 has {arrs[0].ndim} (shape "
                                 f"{arrs[0].shape}): per-channel batches must share their rank")
            if a.shape[ax] != arrs[0].shape[ax]:
                raise ValueError(f"calibrate: batch {i} has {a.shape[ax]} channels along "
                                 f"channel_axis {channel_axis} but batch 0 has "
                                 f"{arrs[0].shape[ax]}: expected the same channel count")
        flat = np.concatenate([np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1) for a in arrs], axis=1)
    if flat.size == 0:
        raise ValueError("cannot calibrate on empty data")
    if scheme == "tfapprox":
        if method == "minmax":
            lo, hi = flat.min(), flat.max()
        else:
            lo, hi = np.percentile(flat, 100 - percentile), np.percentile(flat, percentile)
        # Include 0, as the per-call ranges of axconv2d do (0 must be representable).
        return tf_quant_params(min(lo, 0.0), max(hi, 0.0), bits)
    if method == "minmax":
        amax = np.abs(flat).max(axis=-1)
    else:
        amax = np.percentile(np.abs(flat), percentile, axis=-1)
    return _symmetric_from_amax(amax, _F32((1 << (bits - 1)) - 1), bits, channel_axis is not None)
