"""A small inference graph whose convolutions and dense layers run through approximate multipliers.

:class:`Sequential` chains :class:`Conv2D`, :class:`Dense`, :class:`ReLU`, :class:`MaxPool2D`,
:class:`AvgPool2D`, :class:`Flatten` and :class:`BatchNorm` layers. Activations are NHWC
float32 arrays, convolution weights are HWIO (TensorFlow's layout) and dense weights are
``(in, out)``. Every :class:`Conv2D` and :class:`Dense` layer has its own ``multiplier``,
``quant`` and ``tune`` setting: with a multiplier it runs through :func:`axkern.axconv2d` /
:func:`axkern.axdense` (quantized, every product looked up in the multiplier's table), with
``multiplier=None`` it runs as a plain float32 convolution or matrix product (the "float mode"
that approximate results are compared with).

A :class:`BatchNorm` that directly follows a Conv2D or Dense layer is folded into that layer's
weights and bias on load (:meth:`Sequential.fold_batchnorm`), so that the approximate
arithmetic sees the weights a deployed accelerator would hold. A BatchNorm anywhere else stays
a per-channel float affine step.

The ``.npz`` layout (version 1)
-------------------------------
A model file is a NumPy ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``:

``__axkern__``
    0-d unicode array holding a JSON object::

        {"format": "axkern.nn.Sequential", "version": 1, "name": "...",
         "input_shape": [H, W, C] or null, "metadata": {...},
         "layers": [{"type": "Conv2D", "name": "conv1", "stride": [1, 1],
                     "padding": "SAME", "dilation": [1, 1], "groups": 1}, ...]}

    Layer types and their keys: ``Conv2D`` (stride, padding, dilation, groups), ``Dense``,
    ``ReLU``, ``MaxPool2D`` / ``AvgPool2D`` (pool_size, strides, padding), ``Flatten``,
    ``BatchNorm`` (eps). ``padding`` is ``"SAME"``, ``"VALID"`` or ``[[top, bottom], [left,
    right]]``. ``metadata`` is free-form JSON (the shipped model records its data set, input
    scaling and held-out indices there).
``<layer name>/weight``, ``<layer name>/bias``
    float32 arrays of Conv2D (HWIO, shape ``(KH, KW, C // groups, COUT)``) and Dense
    (``(in, out)``) layers; the bias is optional.
``<layer name>/gamma``, ``/beta``, ``/mean``, ``/var``
    float32 arrays of a BatchNorm layer, one value per channel (last axis).

Layer names are unique within a model and consist of letters, digits, ``_``, ``-`` and ``.``.

Bringing weights from elsewhere
-------------------------------
- Keras / TensorFlow: ``Conv2D`` kernels are already HWIO and ``Dense`` kernels ``(in, out)``;
  ``Flatten`` of a channels-last tensor has the same (H, W, C) order as axkern's. Use
  :meth:`Conv2D.from_keras`, :meth:`Dense.from_keras`, :meth:`BatchNorm.from_keras`
  (Keras' default ``epsilon`` is 1e-3).
- PyTorch: convolution weights are OIHW and are transposed to HWIO by
  :meth:`Conv2D.from_torch`; ``Linear`` weights are ``(out, in)`` and are transposed by
  :meth:`Dense.from_torch`. PyTorch flattens NCHW tensors in (C, H, W) order while axkern
  flattens NHWC tensors in (H, W, C) order, so a ``Linear`` layer that follows a flatten must
  be given ``input_shape=(C, H, W)``: its input rows are then permuted to axkern's order.
  :meth:`Sequential.from_torch` converts a whole ``torch.nn.Sequential`` and does this itself.
  PyTorch's BatchNorm ``eps`` default is 1e-5 (:meth:`BatchNorm.from_torch` reads it).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from .backends import _check_limit, _check_threads
from .lut import Multiplier

__all__ = ["Layer", "Conv2D", "Dense", "ReLU", "MaxPool2D", "AvgPool2D", "Flatten", "BatchNorm",
           "Sequential", "load", "save", "FORMAT", "FORMAT_VERSION"]

FORMAT = "axkern.nn.Sequential"
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_UNSET = object()


# ---------------------------------------------------------------------------------- helpers
def _whole(u):
    """``u`` as a Python int when it is an integer (an int, a NumPy integer or an integral
    float, as JSON headers may hold), else ValueError: 2.5 is not truncated to 2."""
    if isinstance(u, (bool, np.bool_)):
        raise ValueError
    if isinstance(u, (int, np.integer)):
        return int(u)
    if isinstance(u, (float, np.floating)) and float(u).is_integer():
        return int(u)
    raise ValueError


def _pair(v, what):
    """An int or a pair of ints >= 1, as a tuple of two Python ints."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        t = tuple(_whole(u) for u in v)
        ok = len(t) == 2
    except (TypeError, ValueError):
        ok = False
    if not ok or t[0] < 1 or t[1] < 1:
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {v!r}")
    return _check_limit(t, what)


def _padding_spec(padding):
    """Normalize a padding argument to "SAME", "VALID" or ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        p = padding.upper()
        if p not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or explicit pairs, got {padding!r}")
        return p
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        p = int(padding)
        spec = ((p, p), (p, p))
    else:
        try:
            items = list(padding)
            if len(items) == 2 and all(isinstance(i, (int, np.integer)) for i in items):
                spec = ((_whole(items[0]),) * 2, (_whole(items[1]),) * 2)
            elif len(items) == 4:
                spec = ((_whole(items[0]), _whole(items[1])), (_whole(items[2]), _whole(items[3])))
            elif len(items) == 2:
                spec = tuple((_whole(a), _whole(b)) for a, b in items)
            else:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                "padding must be 'SAME', 'VALID', an int, (ph, pw), (top, bottom, left, right) or "
                f"((top, bottom), (left, right)), got {padding!r}") from None
    if any(v < 0 for pair in spec for v in pair):
        raise ValueError(f"padding must not be negative, got {padding!r}")
    _check_limit([v for pair in spec for v in pair], "padding")
    return spec


def _resolve_pads(padding, size, kernel, stride, dilation):
    """Explicit (top, bottom, left, right) for a spec from :func:`_padding_spec`.

    "SAME" splits as TensorFlow does: output size ceil(in / stride), the odd pixel at the end.
    """
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding == "SAME":
        out = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            o = -(-n // s)
            total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return (padding[0][0], padding[0][1], padding[1][0], padding[1][1])


def _padding_to_json(p):
    return p if isinstance(p, str) else [list(p[0]), list(p[1])]


def _as_float_array(a, what, ndim=None):
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or Inf values")
    return arr


def _check_not_empty(w, what, layout):
    # a zero-size kernel would load and then fail (or silently give zeros) at the first call
    if 0 in w.shape:
        raise ValueError(f"{what} has a weight of shape {w.shape} {layout} with an empty "
                         f"dimension: every dimension must be at least 1")


def _resolve_multiplier(m):
    if m is None or isinstance(m, Multiplier):
        return m
    if isinstance(m, (str, os.PathLike)):
        from .library import load_multiplier

        return load_multiplier(m)
    raise TypeError(f"multiplier must be an axkern.Multiplier, a shipped name, a path or None, "
                    f"got {type(m).__name__}")


def _window_view(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """(N, OH, OW, KH, KW, C) strided view of the padded NHWC input (no copy)."""
    n, _, _, c = xp.shape
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, oh, ow, kh, kw, c),
        strides=(s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)


# ---------------------------------------------------------------------------------- layers
class Layer:
    """Base class of the graph's layers.

    Parameters
    ----------
    name : str, optional
        Unique name within a :class:`Sequential`; one is assigned when omitted.
    """

    kind = "Layer"
    has_weights = False

    def __init__(self, name=None):
        if name is not None:
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(f"layer name must be a non-empty string of letters, digits, '_', "
                                 f"'-' and '.', got {name!r}")
        self.name = name

    def forward(self, x, *, backend="auto", num_threads=None):
        """Apply the layer to an activation array."""
        raise NotImplementedError

    def output_shape(self, shape):
        """Per-sample output shape for a per-sample input shape (without the batch axis)."""
        raise NotImplementedError

    def config(self):
        """JSON-serializable configuration (without arrays)."""
        return {"type": self.kind, "name": self.name}

    def arrays(self):
        """The layer's arrays, keyed by their name within the layer."""
        return {}

    def copy(self):
        cfg = self.config()
        layer = _from_config(cfg, {k: v.copy() for k, v in self.arrays().items()})
        if isinstance(self, _Compute):
            layer.multiplier, layer.quant, layer.tune = self.multiplier, self.quant, self.tune
        return layer

    def __repr__(self):
        return f"{self.kind}(name={self.name!r})"


class _Compute(Layer):
    """A layer whose products run through a multiplier (Conv2D and Dense)."""

    has_weights = True

    def __init__(self, weight, bias, *, name=None, multiplier=None, quant="auto", tune=False):
        super().__init__(name)
        self.weight = weight
        if bias is not None:
            bias = _as_float_array(bias, f"bias of layer {name or self.kind}", ndim=1)
            if bias.shape[0] != weight.shape[-1]:
                raise ValueError(f"bias of layer {name or self.kind} has {bias.shape[0]} values: "
                                 f"expected one per output channel ({weight.shape[-1]})")
        self.bias = bias
        self.multiplier = _resolve_multiplier(multiplier)
        self.quant = quant
        self.tune = tune

    def _warn_key(self):
        # a token of this layer instance for the once-per-layer range warnings: unique per
        # model (copies get their own), and kept by the warning registry instead of the layer
        key = self.__dict__.get("_warn_token")
        if key is None:
            key = self._warn_token = object()
        return key

    @property
    def out_channels(self):
        return int(self.weight.shape[-1])

    def arrays(self):
        d = {"weight": self.weight}
        if self.bias is not None:
            d["bias"] = self.bias
        return d

    def num_params(self):
        return int(self.weight.size + (0 if self.bias is None else self.bias.size))

    def macs_per_sample(self, in_shape):
        """Multiply-accumulates per sample for a per-sample input shape."""
        raise NotImplementedError

    def _setting(self):
        if self.multiplier is None:
            return "float"
        return f"{self.multiplier.name}" + (" tuned" if self.tune is not False else "")


class Conv2D(_Compute):
    """2-D convolution on NHWC activations with HWIO weights.

    Parameters
    ----------
    weight : array_like, shape (KH, KW, C // groups, COUT)
        HWIO filter (TensorFlow / Keras layout).
    bias : array_like, shape (COUT,), optional
    stride, dilation : int or pair of int
    padding : {"SAME", "VALID"}, int or explicit pairs
        "SAME" splits as TensorFlow does (the odd pixel at the bottom/right).
    groups : int
        Grouped convolution; ``groups == C`` with one filter per channel is depthwise.
    name : str, optional
    multiplier : Multiplier, str or None
        None computes in float32; otherwise every product goes through the multiplier's table.
    quant : str or object
        Passed to :func:`axkern.axconv2d` (``"auto"``, ``"tfapprox"``, ``"symmetric"``, ...).
    tune : bool or mapping
        ALWANN weight tuning, passed to :func:`axkern.axconv2d`.
    """

    kind = "Conv2D"

    def __init__(self, weight, bias=None, *, stride=1, padding="SAME", dilation=1, groups=1,
                 name=None, multiplier=None, quant="auto", tune=False):
        w = _as_float_array(weight, f"weight of Conv2D layer {name or ''}".rstrip(), ndim=4)
        _check_not_empty(w, f"Conv2D layer {name or ''}".rstrip(), "(KH, KW, C // groups, COUT)")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if w.shape[-1] % int(groups):
            raise ValueError(f"Conv2D weight has {w.shape[-1]} output channels, not divisible by "
                             f"groups={groups}")
        super().__init__(w, bias, name=name, multiplier=multiplier, quant=quant, tune=tune)
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.padding = _padding_spec(padding)
        self.groups = int(groups)

    @classmethod
    def from_keras(cls, kernel, bias=None, *, strides=1, padding="valid", dilation_rate=1,
                   groups=1, name=None):
        """A layer from a Keras ``Conv2D`` kernel (already HWIO) and bias.

        Keras' default padding is "valid".
        """
        return cls(kernel, bias, stride=strides, padding=padding, dilation=dilation_rate,
                   groups=groups, name=name)

    @classmethod
    def from_torch(cls, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
                   name=None):
        """A layer from a PyTorch ``Conv2d`` weight of shape (COUT, C // groups, KH, KW) (OIHW).

        ``padding`` follows PyTorch (an int, a pair (ph, pw), or "same"/"valid").
        """
        w = np.asarray(weight)
        if w.ndim != 4:
            raise ValueError(f"PyTorch Conv2d weight must be OIHW with 4 dimensions, got shape {w.shape}")
        return cls(np.transpose(w, (2, 3, 1, 0)), bias, stride=stride, padding=padding,
                   dilation=dilation, groups=groups, name=name)

    def _check_input(self, x):
        if x.ndim != 4:
            raise ValueError(f"Conv2D layer {self.name!r} expects NHWC input with 4 dimensions, "
                             f"got shape {x.shape}")
        cin = self.weight.shape[2] * self.groups
        if x.shape[3] != cin:
            raise ValueError(f"Conv2D layer {self.name!r} expects {cin} input channels (NHWC, last "
                             f"axis), got input of shape {x.shape}")

    def _pads(self, h, w):
        kh, kw = self.weight.shape[:2]
        return _resolve_pads(self.padding, (h, w), (kh, kw), self.stride, self.dilation)

    def output_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"Conv2D layer {self.name!r} expects (H, W, C) samples, got {shape}")
        h, w, c = shape
        cin = self.weight.shape[2] * self.groups
        if c != cin:
            raise ValueError(f"Conv2D layer {self.name!r} expects {cin} input channels, got "
                             f"samples of shape {tuple(shape)}")
        kh, kw = self.weight.shape[:2]
        t, b, l, r = self._pads(h, w)
        oh = (h + t + b - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + l + r - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D layer {self.name!r}: input {h}x{w} is smaller than the "
                             f"dilated {kh}x{kw} filter")
        return (oh, ow, self.out_channels)

    def macs_per_sample(self, in_shape):
        oh, ow, o = self.output_shape(in_shape)
        kh, kw, cg, _ = self.weight.shape
        return oh * ow * o * kh * kw * cg

    def forward(self, x, *, backend="auto", num_threads=None):
        self._check_input(x)
        if self.multiplier is not None:
            from .conv import axconv2d
            from .quant import layer_context

            # range warnings name the layer, once per layer of this model
            with layer_context(self.name, self._warn_key()):
                y = axconv2d(x, self.weight, self.multiplier, bias=self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups,
                             data_format="NHWC", quant=self.quant, tune=self.tune,
                             backend=backend, num_threads=num_threads)
            return np.asarray(y, dtype=np.float32)
        return self._float_forward(x)

    def _float_forward(self, x):
        n, h, w, c = x.shape
        kh, kw, cg, o = self.weight.shape
        oh, ow, _ = self.output_shape((h, w, c))
        t, b, l, r = self._pads(h, w)
        xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
        win = _window_view(xp, kh, kw, *self.stride, *self.dilation, oh, ow)
        og = o // self.groups
        out = np.empty((n, oh, ow, o), dtype=np.float32)
        for g in range(self.groups):
            # im2col per group then one float32 GEMM: plain float arithmetic, no quantization
            cols = win[..., g * cg:(g + 1) * cg].reshape(n * oh * ow, kh * kw * cg)
            wg = self.weight[..., g * og:(g + 1) * og].reshape(kh * kw * cg, og)
            out[..., g * og:(g + 1) * og] = (cols @ wg).reshape(n, oh, ow, og)
        if self.bias is not None:
            out += self.bias
        return out

    def config(self):
        d = super().config()
        d.update(stride=list(self.stride), padding=_padding_to_json(self.padding),
                 dilation=list(self.dilation), groups=self.groups)
        return d

    def __repr__(self):
        kh, kw, cg, o = self.weight.shape
        return (f"Conv2D(name={self.name!r}, {kh}x{kw}, {cg * self.groups}->{o}, "
                f"stride={self.stride}, padding={self.padding!r}, groups={self.groups}, "
                f"{self._setting()})")


class Dense(_Compute):
    """Fully connected layer ``y = x @ weight + bias`` with ``weight`` of shape (in, out).

    Parameters
    ----------
    weight : array_like, shape (in, out)
    bias : array_like, shape (out,), optional
    name, multiplier, quant, tune
        As for :class:`Conv2D`; the products go through :func:`axkern.axdense`.
    """

    kind = "Dense"

    def __init__(self, weight, bias=None, *, name=None, multiplier=None, quant="auto", tune=False):
        w = _as_float_array(weight, f"weight of Dense layer {name or ''}".rstrip(), ndim=2)
        _check_not_empty(w, f"Dense layer {name or ''}".rstrip(), "(in, out)")
        super().__init__(w, bias, name=name, multiplier=multiplier, quant=quant, tune=tune)

    @classmethod
    def from_keras(cls, kernel, bias=None, *, name=None):
        """A layer from a Keras ``Dense`` kernel (already (in, out))."""
        return cls(kernel, bias, name=name)

    @classmethod
    def from_torch(cls, weight, bias=None, *, input_shape=None, name=None):
        """A layer from a PyTorch ``Linear`` weight of shape (out, in).

        Parameters
        ----------
        input_shape : tuple (C, H, W), optional
            Give it when the layer follows ``torch.flatten`` of an NCHW tensor: PyTorch's input
            index is ``c*H*W + h*W + w`` while axkern's NHWC flatten gives ``(h*W + w)*C + c``,
            so the rows are permuted accordingly.
        """
        w = np.asarray(weight)
        if w.ndim != 2:
            raise ValueError(f"PyTorch Linear weight must be (out, in), got shape {w.shape}")
        w = w.T
        if input_shape is not None:
            c, h, wd = (int(v) for v in input_shape)
            if c * h * wd != w.shape[0]:
                raise ValueError(f"input_shape {tuple(input_shape)} (C, H, W) has {c * h * wd} "
                                 f"elements but the Linear layer takes {w.shape[0]} inputs")
            w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
        return cls(w, bias, name=name)

    def output_shape(self, shape):
        if len(shape) != 1 or shape[0] != self.weight.shape[0]:
            raise ValueError(f"Dense layer {self.name!r} expects per-sample input of shape "
                             f"({self.weight.shape[0]},), got {tuple(shape)} (add a Flatten?)")
        return (self.out_channels,)

    def macs_per_sample(self, in_shape):
        return int(self.weight.size)

    def forward(self, x, *, backend="auto", num_threads=None):
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"Dense layer {self.name!r} expects input of shape (N, "
                             f"{self.weight.shape[0]}), got {x.shape} (add a Flatten?)")
        if self.multiplier is not None:
            from .matmul import axdense
            from .quant import layer_context

            with layer_context(self.name, self._warn_key()):
                y = axdense(x, self.weight, self.multiplier, bias=self.bias, quant=self.quant,
                            tune=self.tune, backend=backend, num_threads=num_threads)
            return np.asarray(y, dtype=np.float32)
        out = x @ self.weight
        if self.bias is not None:
            out += self.bias
        return out

    def __repr__(self):
        return (f"Dense(name={self.name!r}, {self.weight.shape[0]}->{self.weight.shape[1]}, "
                f"{self._setting()})")


class ReLU(Layer):
    """``max(x, 0)``."""

    kind = "ReLU"

    def forward(self, x, *, backend="auto", num_threads=None):
        return np.maximum(x, np.float32(0))

    def output_shape(self, shape):
        return tuple(shape)


class Flatten(Layer):
    """Flatten each sample in C order; for NHWC activations the order is (H, W, C)."""

    kind = "Flatten"

    def forward(self, x, *, backend="auto", num_threads=None):
        # (N, -1) cannot be solved for an empty batch
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class _Pool(Layer):
    def __init__(self, pool_size=2, strides=None, padding="VALID", name=None):
        super().__init__(name)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        p = padding.upper() if isinstance(padding, str) else padding
        if p not in ("SAME", "VALID"):
            raise ValueError(f"pooling padding must be 'SAME' or 'VALID', got {padding!r}")
        self.padding = p

    def _geometry(self, h, w):
        ph, pw = self.pool_size
        t, b, l, r = _resolve_pads(self.padding, (h, w), (ph, pw), self.strides, (1, 1))
        oh = (h + t + b - ph) // self.strides[0] + 1
        ow = (w + l + r - pw) // self.strides[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.kind} layer {self.name!r}: input {h}x{w} is smaller than "
                             f"the {ph}x{pw} window")
        return (t, b, l, r), oh, ow

    def output_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"{self.kind} layer {self.name!r} expects (H, W, C) samples, got {shape}")
        _, oh, ow = self._geometry(shape[0], shape[1])
        return (oh, ow, shape[2])

    def _windows(self, x, fill):
        if x.ndim != 4:
            raise ValueError(f"{self.kind} layer {self.name!r} expects NHWC input with 4 "
                             f"dimensions, got shape {x.shape}")
        (t, b, l, r), oh, ow = self._geometry(x.shape[1], x.shape[2])
        xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
        return _window_view(xp, *self.pool_size, *self.strides, 1, 1, oh, ow), (t, b, l, r)

    def config(self):
        d = super().config()
        d.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding)
        return d


class MaxPool2D(_Pool):
    """Max pooling over NHWC windows; "SAME" padding never wins the maximum (TensorFlow)."""

    kind = "MaxPool2D"

    def forward(self, x, *, backend="auto", num_threads=None):
        win, _ = self._windows(x, -np.inf)
        return win.max(axis=(3, 4)).astype(np.float32)


class AvgPool2D(_Pool):
    """Average pooling over NHWC windows; "SAME" padding is left out of the count (TensorFlow)."""

    kind = "AvgPool2D"

    def forward(self, x, *, backend="auto", num_threads=None):
        win, pads = self._windows(x, 0.0)
        total = win.sum(axis=(3, 4), dtype=np.float32)
        if pads == (0, 0, 0, 0):
            return total / np.float32(self.pool_size[0] * self.pool_size[1])
        ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.float32)
        cwin, _ = self._windows(ones, 0.0)
        return total / cwin.sum(axis=(3, 4), dtype=np.float32)


class BatchNorm(Layer):
    """Inference-time batch normalization over the last (channel) axis.

    ``y = (x - mean) / sqrt(var + eps) * gamma + beta``. Folded into a directly preceding
    Conv2D or Dense layer by :meth:`Sequential.fold_batchnorm`.
    """

    kind = "BatchNorm"

    def __init__(self, gamma, beta, mean, var, eps=1e-3, name=None):
        super().__init__(name)
        arrs = [_as_float_array(a, f"BatchNorm {k}", ndim=1)
                for k, a in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        if len({a.shape for a in arrs}) != 1:
            raise ValueError("BatchNorm gamma, beta, mean and var must have the same length, got "
                             f"{[a.shape[0] for a in arrs]}")
        if arrs[0].shape[0] == 0:
            raise ValueError(f"BatchNorm layer {name!r} has no channels: expected at least one")
        if np.any(arrs[3] < 0):
            raise ValueError("BatchNorm var must not be negative")
        eps = float(eps)
        if not eps >= 0:
            raise ValueError(f"BatchNorm eps must be >= 0, got {eps}")
        if np.any(arrs[3].astype(np.float64) + eps <= 0):
            label = "BatchNorm" if name is None else f"BatchNorm layer {name!r}"
            raise ValueError(f"{label}: var + eps must be > 0 in every channel (it divides), "
                             f"got var 0 with eps {eps}")
        self.gamma, self.beta, self.mean, self.var = arrs
        self.eps = eps

    @classmethod
    def from_keras(cls, gamma, beta, moving_mean, moving_variance, *, epsilon=1e-3, name=None):
        """From Keras ``BatchNormalization.get_weights()`` (gamma, beta, mean, variance)."""
        return cls(gamma, beta, moving_mean, moving_variance, eps=epsilon, name=name)

    @classmethod
    def from_torch(cls, weight, bias, running_mean, running_var, *, eps=1e-5, name=None):
        """From PyTorch ``BatchNorm1d/2d`` (weight = gamma, bias = beta)."""
        return cls(weight, bias, running_mean, running_var, eps=eps, name=name)

    def scale_shift(self):
        """(scale, shift) in float64 with ``y = x * scale + shift``."""
        scale = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return scale, self.beta.astype(np.float64) - self.mean.astype(np.float64) * scale

    def forward(self, x, *, backend="auto", num_threads=None):
        if x.shape[-1] != self.gamma.shape[0]:
            raise ValueError(f"BatchNorm layer {self.name!r} has {self.gamma.shape[0]} channels, "
                             f"input has {x.shape[-1]} (last axis)")
        inv = (np.float32(1) / np.sqrt(self.var + np.float32(self.eps))).astype(np.float32)
        return ((x - self.mean) * inv * self.gamma + self.beta).astype(np.float32)

    def output_shape(self, shape):
        return tuple(shape)

    def arrays(self):
        return {"gamma": self.gamma, "beta": self.beta, "mean": self.mean, "var": self.var}

    def config(self):
        d = super().config()
        d["eps"] = self.eps
        return d


_TYPES = {cls.kind: cls for cls in (Conv2D, Dense, ReLU, Flatten, MaxPool2D, AvgPool2D, BatchNorm)}
_PREFIX = {"Conv2D": "conv", "Dense": "dense", "ReLU": "relu", "Flatten": "flatten",
           "MaxPool2D": "maxpool", "AvgPool2D": "avgpool", "BatchNorm": "bn"}


def _from_config(cfg, arrays):
    """Build a layer from its JSON configuration and arrays (used by load and copy)."""
    if not isinstance(cfg, dict) or cfg.get("type") not in _TYPES:
        raise ValueError(f"unknown layer description {cfg!r}: expected a type among {sorted(_TYPES)}")
    kind, name = cfg["type"], cfg.get("name")
    try:
        if kind == "Conv2D":
            pad = cfg.get("padding", "SAME")
            pad = pad if isinstance(pad, str) else tuple(tuple(p) for p in pad)
            return Conv2D(arrays["weight"], arrays.get("bias"), stride=cfg.get("stride", 1),
                          padding=pad, dilation=cfg.get("dilation", 1),
                          groups=cfg.get("groups", 1), name=name)
        if kind == "Dense":
            return Dense(arrays["weight"], arrays.get("bias"), name=name)
        if kind in ("MaxPool2D", "AvgPool2D"):
            return _TYPES[kind](cfg.get("pool_size", 2), cfg.get("strides"),
                                cfg.get("padding", "VALID"), name=name)
        if kind == "BatchNorm":
            return BatchNorm(arrays["gamma"], arrays["beta"], arrays["mean"], arrays["var"],
                             eps=cfg.get("eps", 1e-3), name=name)
    except KeyError as e:
        raise ValueError(f"{kind} layer {name!r} lacks its array {e.args[0]!r}") from None
    return _TYPES[kind](name=name)


# ---------------------------------------------------------------------------------- model
class Sequential:
    """A chain of layers evaluated in order.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple (H, W, C) or (features,), optional
        Per-sample input shape; checked against inputs and used by :meth:`summary`.
    name : str, optional
    metadata : dict, optional
        Free-form JSON-serializable facts saved with the model (data set, preprocessing).

    Examples
    --------
    >>> import numpy as np, axkern
    >>> from axkern.survey import shipped_model_path
    >>> model = axkern.nn.load(shipped_model_path())             # the shipped digits CNN
    >>> _ = model.configure(multiplier="mul8u_trunc4", tune=True)  # every Conv2D / Dense layer
    >>> _ = model.configure(["conv1"], multiplier=None)          # conv1 back to float
    >>> model(np.zeros((2, 8, 8, 1), np.float32)).shape         # NHWC in, logits out
    (2, 10)
    """

    def __init__(self, layers, input_shape=None, name=None, metadata=None):
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, expected an axkern.nn.Layer")
        counts = {}
        taken = {layer.name for layer in layers if layer.name is not None}
        seen = set()
        for layer in layers:
            if layer.name is None:
                prefix = _PREFIX.get(layer.kind, layer.kind.lower())
                while True:
                    counts[prefix] = counts.get(prefix, 0) + 1
                    cand = f"{prefix}{counts[prefix]}"
                    if cand not in taken:
                        break
                layer.name = cand
                taken.add(cand)
            if layer.name in seen:
                raise ValueError(f"layer name {layer.name!r} is used twice: names must be unique")
            seen.add(layer.name)
        self.layers = layers
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        if self.input_shape is not None and (not self.input_shape
                                             or min(self.input_shape) < 1):
            raise ValueError(f"input_shape must be positive sizes (H, W, C) or (features,), got "
                             f"{input_shape}")
        self.name = name
        self.metadata = dict(metadata or {})
        if self.input_shape is not None:
            self.shapes()  # validates the chain

    # ----------------------------------------------------------------- access
    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.layers[key]
        for layer in self.layers:
            if layer.name == key:
                return layer
        raise KeyError(f"no layer named {key!r}; layers are {[l.name for l in self.layers]}")

    @property
    def compute_layers(self):
        """Names of the Conv2D and Dense layers (those that take a multiplier)."""
        return [layer.name for layer in self.layers if isinstance(layer, _Compute)]

    def shapes(self, input_shape=None):
        """Per-sample output shape of every layer, as a list of (name, shape)."""
        shape = tuple(input_shape or self.input_shape or ())
        if not shape:
            raise ValueError("the model has no input_shape: pass one")
        out = []
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
            out.append((layer.name, shape))
        return out

    def layer_macs(self, input_shape=None):
        """``{layer: multiply-accumulates per sample}`` of the Conv2D and Dense layers for a
        per-sample input shape (default: the model's ``input_shape``)."""
        shape = tuple(input_shape or self.input_shape or ())
        if not shape:
            raise ValueError("the model has no input_shape: pass one")
        out = {}
        for layer in self.layers:
            if isinstance(layer, _Compute):
                out[layer.name] = layer.macs_per_sample(shape)
            shape = tuple(layer.output_shape(shape))
        return out

    def copy(self):
        """An independent copy (arrays and per-layer settings included)."""
        return Sequential([layer.copy() for layer in self.layers], self.input_shape, self.name,
                          json.loads(json.dumps(self.metadata)))

    # ----------------------------------------------------------------- configuration
    def configure(self, layers=None, *, multiplier=_UNSET, quant=_UNSET, tune=_UNSET):
        """Set the multiplier, quantization and/or tuning of Conv2D/Dense layers.

        Parameters
        ----------
        layers : str, int or list of them, optional
            Layer names (or positions in the model, as ``model[i]`` takes them); all Conv2D
            and Dense layers when omitted.
        multiplier : Multiplier, str, path or None, optional
            None switches the layers to exact float32 arithmetic; a string is a shipped name or
            a path (.c, .bin, .h, .npy) for :func:`axkern.load_multiplier`.
        quant, tune : optional
            Passed on to :func:`axkern.axconv2d` / :func:`axkern.axdense`.

        Returns
        -------
        Sequential
            ``self``, for chaining.
        """
        if layers is None:
            names = self.compute_layers
        elif isinstance(layers, (str, int, np.integer)) and not isinstance(layers, bool):
            names = [layers]
        else:
            try:
                names = list(layers)
            except TypeError:
                raise TypeError(f"layers must be a layer name, an index or a list of them, got "
                                f"{layers!r}: expected some of {self._layer_keys()}") from None
        targets = []
        for n in names:
            targets.append(self._compute_layer(n))
        if multiplier is not _UNSET:
            multiplier = _resolve_multiplier(multiplier)
        for layer in targets:
            if multiplier is not _UNSET:
                layer.multiplier = multiplier
            if quant is not _UNSET:
                layer.quant = quant
            if tune is not _UNSET:
                layer.tune = tune
        return self

    def _layer_keys(self):
        """The Conv2D/Dense layers as "name (index)" for error messages."""
        return ", ".join(f"{l.name!r} ({i})" for i, l in enumerate(self.layers)
                         if isinstance(l, _Compute))

    def _compute_layer(self, key):
        """The Conv2D/Dense layer named (or indexed) by ``key``; clear errors otherwise."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not -len(self.layers) <= key < len(self.layers):
                raise IndexError(f"layer index {key} is out of range: the model has "
                                 f"{len(self.layers)} layers (indices 0..{len(self.layers) - 1}); "
                                 f"its Conv2D/Dense layers are {self._layer_keys()}")
            layer = self.layers[key]
        elif isinstance(key, str):
            layer = next((l for l in self.layers if l.name == key), None)
            if layer is None:
                raise KeyError(f"no layer named {key!r}: the model's Conv2D/Dense layers are "
                               f"{self._layer_keys()}")
        else:
            raise TypeError(f"layer key {key!r} is a {type(key).__name__}: expected a layer "
                            f"name or index, one of {self._layer_keys()}")
        if not isinstance(layer, _Compute):
            raise ValueError(f"layer {key!r} is a {layer.kind}: only Conv2D and Dense layers "
                             f"take a multiplier ({self._layer_keys()})")
        return layer

    def assign(self, mapping, *, tune=_UNSET, quant=_UNSET):
        """Give each named layer its own multiplier: ``{"conv1": m1, "dense1": "mul8u_exact"}``."""
        if not isinstance(mapping, dict):
            raise TypeError(f"mapping must be a dict of layer name -> multiplier, got "
                            f"{type(mapping).__name__}")
        for name, m in mapping.items():
            self.configure([name], multiplier=m, tune=tune, quant=quant)
        return self

    def settings(self):
        """``{layer: (multiplier name or None, quant, tune)}`` for the Conv2D/Dense layers."""
        return {l.name: (None if l.multiplier is None else l.multiplier.name, l.quant, l.tune)
                for l in self.layers if isinstance(l, _Compute)}

    # ----------------------------------------------------------------- inference
    def forward(self, x, *, batch_size=None, backend="auto", num_threads=None):
        """Run the model on a batch.

        Parameters
        ----------
        x : array_like, shape (N, *input_shape)
            NHWC images (or (N, features) for dense-only models).
        batch_size : int, optional
            Evaluate in chunks of this many samples. Quantization ranges of the "tfapprox" mode
            are taken per call, so results depend on the chunking, as they do in TFApprox.
        backend, num_threads
            Passed to the kernels.

        Returns
        -------
        ndarray of float32
            The last layer's output.
        """
        x = _as_float_array(x, "model input")
        num_threads = _check_threads(num_threads)
        if x.ndim < 2:
            raise ValueError(f"model input must have a batch axis, got shape {x.shape}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model input has per-sample shape {tuple(x.shape[1:])}: expected "
                             f"{self.input_shape} (NHWC)")
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, (int, np.integer)) or
                                       batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size is None or x.shape[0] <= batch_size:
            return self._run(x, backend, num_threads)
        parts = [self._run(x[i:i + batch_size], backend, num_threads)
                 for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(parts, axis=0)

    __call__ = forward

    def _run(self, x, backend, num_threads):
        for layer in self.layers:
            try:
                x = layer.forward(x, backend=backend, num_threads=num_threads)
            except ValueError as e:
                # "x contains NaN" means little without the layer whose input x was
                if str(e).startswith("layer "):
                    raise
                raise ValueError(f"layer {layer.name!r}: {e}") from None
        return x

    def predict(self, x, **kw):
        """Class index (argmax of the output) of each sample."""
        return np.argmax(self.forward(x, **kw), axis=-1)

    def accuracy(self, x, y, **kw):
        """Share of samples (0..1) whose predicted class equals ``y``."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != np.shape(x)[0]:
            raise ValueError(f"labels must be a vector with one entry per sample "
                             f"({np.shape(x)[0]}), got shape {y.shape}")
        if y.shape[0] == 0:
            raise ValueError("accuracy of an empty set is undefined")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_ or
                (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
            # string labels compared unequal to every predicted index: 0.0, silently
            raise TypeError(f"labels must be class indices (integers), got dtype {y.dtype}")
        return float(np.mean(self.predict(x, **kw) == y))

    # ----------------------------------------------------------------- batchnorm
    def fold_batchnorm(self):
        """Fold every BatchNorm that directly follows a Conv2D or Dense layer into it (in place).

        ``W' = W * s`` along the output axis and ``b' = (b - mean) * s + beta`` with
        ``s = gamma / sqrt(var + eps)``, computed in float64. Other BatchNorms stay.

        Returns
        -------
        Sequential
            ``self``.
        """
        out = []
        folded = {}   # id(layer) -> (layer, weight, bias): set once every fold succeeded
        for layer in self.layers:
            prev = out[-1] if out else None
            if isinstance(layer, BatchNorm) and isinstance(prev, _Compute):
                if layer.gamma.shape[0] != prev.out_channels:
                    raise ValueError(f"BatchNorm {layer.name!r} has {layer.gamma.shape[0]} channels "
                                     f"but {prev.name!r} produces {prev.out_channels}")
                _, w, b = folded.get(id(prev), (prev, prev.weight, prev.bias))
                scale, shift = layer.scale_shift()
                bias = np.zeros(prev.out_channels) if b is None else b.astype(np.float64)
                with np.errstate(over="ignore"):   # checked just below
                    weight = np.ascontiguousarray(w.astype(np.float64) * scale, dtype=np.float32)
                    bias = (bias * scale + shift).astype(np.float32)
                if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
                    raise ValueError(f"folding BatchNorm {layer.name!r} into {prev.name!r} gives "
                                     f"weights beyond the float32 range (gamma / sqrt(var + eps) "
                                     f"up to {float(np.max(np.abs(scale))):.3g}): expected a "
                                     f"BatchNorm of moderate scale")
                folded[id(prev)] = (prev, weight, bias)
                continue
            out.append(layer)
        for prev, weight, bias in folded.values():
            prev.weight, prev.bias = weight, bias
        self.layers = out
        return self

    # ----------------------------------------------------------------- io
    def save(self, path):
        """Write the model to ``path`` in the ``.npz`` layout of the module docstring."""
        header = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
                  "input_shape": None if self.input_shape is None else list(self.input_shape),
                  "metadata": self.metadata, "layers": [l.config() for l in self.layers]}
        try:
            text = json.dumps(header)
        except TypeError as e:
            raise TypeError(f"model metadata must be JSON-serializable: {e}") from None
        arrays = {"__axkern__": np.array(text)}
        for layer in self.layers:
            for k, v in layer.arrays().items():
                arrays[f"{layer.name}/{k}"] = np.asarray(v, dtype=np.float32)
        path = os.fspath(path)
        with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path, *, fold_bn=True):
        """Read a model saved by :meth:`save` (BatchNorm folded unless ``fold_bn=False``)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        from ._npyio import read_npz

        # checked reading: a damaged or hostile file is a ValueError naming it, never a
        # zlib/zipfile error or an allocation the file cannot back
        data = read_npz(path, what="an axkern model (.npz layout of axkern.nn)", kinds="biufU")
        if "__axkern__" not in data:
            raise ValueError(f"{path}: no '__axkern__' header: not an axkern model (.npz "
                             "layout of axkern.nn)")
        try:
            header = json.loads(str(data["__axkern__"][()]))
        except (ValueError, IndexError, RecursionError) as e:
            raise ValueError(f"{path}: the '__axkern__' header is not valid JSON ({e})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{path}: header format is {header.get('format') if isinstance(header, dict) else header!r}, "
                             f"expected {FORMAT!r}")
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model layout version {header.get('version')!r} is not "
                             f"supported (this axkern reads version {FORMAT_VERSION})")
        layers = []
        cfgs = header.get("layers", [])
        if not isinstance(cfgs, list):
            raise ValueError(f"{path}: the header's 'layers' is {type(cfgs).__name__}: expected a list")
        for cfg in cfgs:
            if not (isinstance(cfg, dict) and isinstance(cfg.get("type"), str)
                    and isinstance(cfg.get("name"), (str, type(None)))):
                raise ValueError(f"{path}: layer description {str(cfg)[:80]} is not an object "
                                 "with a string 'type' (and 'name')")
            name = cfg.get("name")
            prefix = f"{name}/"
            arrays = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
            try:
                layers.append(_from_config(cfg, arrays))
            except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                    OverflowError, RecursionError) as e:
                raise ValueError(f"{path}: layer {name!r}: {e}") from None
        if not layers:
            raise ValueError(f"{path}: the model has no layers: expected at least one")
        try:
            model = cls(layers, header.get("input_shape"), header.get("name"),
                        header.get("metadata"))
            if fold_bn:
                model.fold_batchnorm()
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, RecursionError) as e:
            raise ValueError(f"{path}: {e}") from None
        return model

    @classmethod
    def from_torch(cls, module, input_shape, *, name=None):
        """Convert a ``torch.nn.Sequential`` (inference mode) into an axkern model.

        Supported modules: Conv2d, Linear, ReLU, MaxPool2d and AvgPool2d (without padding),
        Flatten, BatchNorm1d/2d, Dropout and Identity (skipped). Nested Sequentials are
        flattened. Weights are converted to HWIO / (in, out), and the first Linear after a
        Flatten of an image tensor gets its rows permuted from PyTorch's (C, H, W) order to
        axkern's (H, W, C) order, as do the statistics of a BatchNorm1d between them.

        Parameters
        ----------
        module : torch.nn.Module
        input_shape : tuple (C, H, W) or (features,)
            PyTorch's per-sample input shape; axkern's model takes (H, W, C).
        """
        def leaves(m):
            kids = list(m.children()) if hasattr(m, "children") else []
            if type(m).__name__ == "Sequential" or (kids and type(m).__name__ == "ModuleList"):
                for k in kids:
                    yield from leaves(k)
            else:
                yield m

        def arr(t):
            return None if t is None else t.detach().cpu().numpy()

        def ints(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

        shape = tuple(int(v) for v in input_shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"input_shape must be (C, H, W) or (features,), got {input_shape}")
        ax_input = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
        cur = ax_input
        pending_flatten = None  # (C, H, W) of the image tensor that was flattened
        layers = []
        for m in leaves(module):
            t = type(m).__name__
            if t == "Conv2d":
                pad = m.padding if isinstance(m.padding, str) else ints(m.padding)
                if getattr(m, "padding_mode", "zeros") != "zeros":
                    raise ValueError(f"Conv2d padding_mode {m.padding_mode!r} is not supported (zeros only)")
                layer = Conv2D.from_torch(arr(m.weight), arr(m.bias), stride=ints(m.stride),
                                          padding=pad, dilation=ints(m.dilation), groups=m.groups)
            elif t == "Linear":
                layer = Dense.from_torch(arr(m.weight), arr(m.bias), input_shape=pending_flatten)
                pending_flatten = None
            elif t == "ReLU":
                layer = ReLU()
            elif t in ("MaxPool2d", "AvgPool2d"):
                if any(ints(m.padding)) or getattr(m, "ceil_mode", False) or any(
                        d != 1 for d in ints(getattr(m, "dilation", 1))):
                    raise ValueError(f"{t} with padding, ceil_mode or dilation is not supported")
                if getattr(m, "divisor_override", None) is not None:
                    raise ValueError(f"AvgPool2d(divisor_override={m.divisor_override}) is not "
                                     "supported (axkern's AvgPool2D divides by the window size)")
                k = ints(m.kernel_size)
                s = ints(m.stride) if m.stride is not None else k
                layer = (MaxPool2D if t == "MaxPool2d" else AvgPool2D)(k, s, "VALID")
            elif t == "Flatten":
                if getattr(m, "start_dim", 1) != 1 or getattr(m, "end_dim", -1) != -1:
                    raise ValueError("only Flatten(start_dim=1, end_dim=-1) is supported")
                if len(cur) == 3:
                    pending_flatten = (cur[2], cur[0], cur[1])
                layer = Flatten()
            elif t in ("BatchNorm2d", "BatchNorm1d"):
                if m.running_mean is None:
                    raise ValueError(f"{t} without running statistics cannot be converted")
                w = arr(m.weight) if m.weight is not None else np.ones(m.num_features)
                b = arr(m.bias) if m.bias is not None else np.zeros(m.num_features)
                stats = [w, b, arr(m.running_mean), arr(m.running_var)]
                if t == "BatchNorm1d" and pending_flatten is not None:
                    # features of a flattened image: PyTorch's (C, H, W) order to axkern's
                    # (H, W, C), as the Linear after it gets
                    c, h, wd = pending_flatten
                    if m.num_features != c * h * wd:
                        raise ValueError(f"BatchNorm1d({m.num_features}) after a Flatten of "
                                         f"{c * h * wd} features")
                    stats = [np.asarray(a).reshape(c, h, wd).transpose(1, 2, 0).ravel()
                             for a in stats]
                layer = BatchNorm.from_torch(*stats, eps=m.eps)
            elif t in ("Dropout", "Identity", "Dropout2d"):
                continue
            else:
                raise ValueError(f"PyTorch module {t} is not supported by axkern.nn.Sequential.from_torch")
            layers.append(layer)
            cur = layer.output_shape(cur)
        return cls(layers, ax_input, name).fold_batchnorm()

    # ----------------------------------------------------------------- report
    def summary(self):
        """A readable table: layer, type, output shape, parameters, MACs, setting."""
        rows = [("layer", "type", "output", "params", "MACs/sample", "arithmetic")]
        shape = self.input_shape
        for layer in self.layers:
            out = layer.output_shape(shape) if shape is not None else None
            if isinstance(layer, _Compute):
                macs = layer.macs_per_sample(shape) if shape is not None else ""
                setting = layer._setting()
                if layer.multiplier is not None:
                    setting += f" ({layer.quant})"
                params = layer.num_params()
            else:
                macs, setting, params = "", "", sum(a.size for a in layer.arrays().values()) or ""
            rows.append((layer.name, layer.kind, "" if out is None else "x".join(map(str, out)),
                         str(params), str(macs), setting))
            shape = out
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def __repr__(self):
        return f"Sequential(name={self.name!r}, layers={[l.name for l in self.layers]})"


def load(path, *, fold_bn=True):
    """Load a model file (see the module docstring for the layout)."""
    return Sequential.load(path, fold_bn=fold_bn)


def save(model, path):
    """Save a :class:`Sequential` model to ``path``."""
    if not isinstance(model, Sequential):
        raise TypeError(f"expected an axkern.nn.Sequential, got {type(model).__name__}")
    model.save(path)
