"""Keras 3 layers whose products go through an approximate multiplier (TensorFlow backend).

:class:`ApproxConv2D`, :class:`ApproxDepthwiseConv2D` and :class:`ApproxDense` subclass
``keras.layers.Conv2D``, ``DepthwiseConv2D`` and ``Dense``: the same arguments and weights,
plus ``multiplier``, ``quant`` and ``tune``. Their forward pass is a host call
(``tf.numpy_function``) into :func:`axkern.axconv2d` / :func:`axkern.axdense` on the layer's
input, kernel and bias, so it gives exactly what the NumPy API gives; the activation is then
applied in Keras. The backward pass is a straight-through estimate (see :func:`_ste_grads`):
the gradient of Keras' own float op evaluated at the fake-quantized input and kernel, so
``model.fit`` trains the float weights through the approximate forward pass.

:class:`FakeApproxConv2D` takes TFApprox's arguments (``mul_map_file=`` a ``.bin`` table), and
:func:`approximate` clones a Sequential or functional model with the approximate layers in
place of its Conv2D / DepthwiseConv2D / Dense layers.

Needs Keras 3 on the TensorFlow backend: ``pip install "axkern[keras]"``.
"""
from __future__ import annotations

import base64
import inspect
import os
import threading
import zlib

import numpy as np

try:
    import keras
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f'axkern.keras needs Keras 3 and TensorFlow ({exc}): '
                      f'pip install "axkern[keras]"') from None
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(f"axkern.keras needs Keras 3, found Keras {keras.__version__}: "
                      f'pip install "axkern[keras]"')

from .backends import as_multiplier
from .conv import QUANT_MODES, axconv2d, make_params, resolve_quant
from .library import _looks_like_path, _shipped_files, load_multiplier
from .lut import Multiplier
from .matmul import axdense
from .quant import dequantize, quantize_float
from .tune import resolve_tuning

__all__ = ["ApproxConv2D", "ApproxDepthwiseConv2D", "ApproxDense", "FakeApproxConv2D",
           "approximate", "as_survey_model", "KerasSurveyModel"]

_PACKAGE = "axkern"


# ------------------------------------------------------------------ multiplier (de)serialization
def _encode_table(m):
    raw = np.ascontiguousarray(m.table, dtype="<i4").tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def _decode_table(text, bits):
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as e:
        raise ValueError(f"multiplier config holds a corrupt table ({e})") from None
    size = 1 << bits
    if len(raw) != 4 * size * size:
        raise ValueError(f"multiplier config table has {len(raw)} bytes, expected "
                         f"{4 * size * size} for {bits} bits")
    return np.frombuffer(raw, "<i4").reshape(size, size)


def _is_shipped_name(text):
    return isinstance(text, str) and not _looks_like_path(text) and text in _shipped_files()


def resolve_multiplier(multiplier):
    """``(Multiplier, config)`` for a layer's ``multiplier`` argument.

    ``multiplier`` is a :class:`~axkern.Multiplier`, a shipped name, a path (``.c``, ``.bin``,
    ``.h``, ``.npy``, read as :func:`axkern.load_multiplier` reads it), an unsigned table array,
    or a config dict written by :func:`get_config`. The config names a shipped multiplier by
    its name; anything else is stored as its table (so a saved model never depends on the
    file it was built from), encoded when the layer's config is written (``"table": None``
    until then).
    """
    if isinstance(multiplier, dict):
        return _from_config(multiplier)
    if multiplier is None:
        raise ValueError("multiplier is required: a Multiplier, a shipped name (axkern list), "
                         "or a path to a .c/.bin/.h/.npy table (axkern.Multiplier.exact(8) for "
                         "the exact product)")
    if isinstance(multiplier, Multiplier):
        m = multiplier
    elif isinstance(multiplier, np.ndarray):
        # as axconv2d / axdense read an array: unsigned, with a SignednessWarning for a table
        # that a signed reading fits far better, and the same Multiplier for equal tables
        m = as_multiplier(multiplier)
    elif isinstance(multiplier, (str, os.PathLike)):
        m = load_multiplier(multiplier)
        if _is_shipped_name(multiplier):
            return m, {"name": multiplier, "signed": m.signed}
    else:
        raise TypeError(f"multiplier must be an axkern.Multiplier, a shipped name, a path to a "
                        f".c/.bin/.h/.npy table or a table array, got {type(multiplier).__name__}")
    # the table is encoded when a config is written (_approx_config), not on every switch
    return m, {"name": m.name, "signed": m.signed, "bits": m.bits, "table": None}


def _from_config(cfg):
    unknown = set(cfg) - {"name", "signed", "bits", "table"}
    if unknown or "name" not in cfg:
        raise ValueError(f"multiplier config must have the keys 'name', 'signed' and optionally "
                         f"'bits' and 'table', got {sorted(cfg)}")
    signed = bool(cfg.get("signed", False))
    if cfg.get("table") is None:
        m = load_multiplier(cfg["name"], signed=signed)
        return m, {"name": cfg["name"], "signed": m.signed}
    table = _decode_table(cfg["table"], int(cfg.get("bits", 8)))
    m = Multiplier(table, signed=signed, name=cfg["name"])
    return m, {"name": m.name, "signed": m.signed, "bits": m.bits, "table": cfg["table"]}


# ------------------------------------------------------------------ shared layer logic
def _check_backend(cls_name):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"{cls_name} runs on Keras' TensorFlow backend (KERAS_BACKEND="
                           f"tensorflow); the current backend is {keras.backend.backend()!r}")


def _check_args(layer, parent, args, kwargs, padding=True):
    """Backend, padding and activation of a layer's constructor arguments (as ``parent``
    binds them, positional ones included), before Keras sees them."""
    name = type(layer).__name__
    _check_backend(name)
    try:
        bound = inspect.signature(parent.__init__).bind(layer, *args, **kwargs).arguments
    except TypeError as e:
        raise TypeError(f"{name}: {e}") from None
    if padding:
        _check_padding(name, bound.get("padding", "valid"))
    _check_activation(name, bound.get("activation"))


def _check_padding(cls_name, padding):
    if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
        raise ValueError(f"{cls_name}: padding {padding!r} cannot be honored: expected 'same' "
                         f"(TensorFlow's split, the extra row/column at the bottom/right) or "
                         f"'valid'")


def _check_activation(cls_name, activation):
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{cls_name}: activation {activation!r} cannot be honored: expected "
                         f"None, a Keras activation name or a callable ({e})") from None


_SHAPE_PROBE = threading.local()


class _ApproxMixin:
    """multiplier / quant / tune handling, configs and the host call shared by the layers."""

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        # KerasSurveyModel.layer_macs: the output elements per sample, by the layers' own
        # shape rules whatever the model's graph (a dict set on the layer would be copied
        # by Keras' attribute tracking, hence the thread-local)
        probe = getattr(_SHAPE_PROBE, "sizes", None)
        if probe is not None:   # every call counts: a layer shared by two branches runs twice
            probe[id(self)] = probe.get(id(self), 0) + int(np.prod(tuple(out.shape)[1:],
                                                                    dtype=np.int64))
        return out

    def _reduction_length(self):
        """Multiply-accumulates per output element: the kernel's reduction axes."""
        k = tuple(int(v) for v in self.kernel.shape)
        if isinstance(self, keras.layers.DepthwiseConv2D):
            return k[0] * k[1]
        if isinstance(self, keras.layers.Conv2D):
            return k[0] * k[1] * k[2]
        return k[0]   # Dense: (in, units)

    def _init_approx(self, multiplier, quant, tune):
        try:
            self.multiplier, self._multiplier_config = resolve_multiplier(multiplier)
        except (TypeError, ValueError, OSError) as e:   # name the layer (docs/keras.md)
            raise type(e)(f"layer {self.name!r}: {e}") from None
        self._config_multiplier = self.multiplier   # what the config describes
        if not isinstance(quant, str) or quant not in QUANT_MODES:
            raise ValueError(f"{type(self).__name__}: unknown quant {quant!r}: expected one of "
                             f"{', '.join(map(repr, QUANT_MODES))}")
        if isinstance(tune, (list, tuple)):
            tune = np.asarray(tune)
        try:
            self._spec = resolve_quant(quant, self.multiplier)   # signedness checked here
            self._mapping = resolve_tuning(tune, self.multiplier)
        except (TypeError, ValueError) as e:   # name the layer (docs/keras.md)
            raise type(e)(f"layer {self.name!r}: {e}") from None
        self.quant = quant
        self.tune = tune if isinstance(tune, bool) or tune is None else self._mapping
        # the host call cannot be compiled by XLA: keeps compile(jit_compile="auto") off it
        self.supports_jit = False
        # the NumPy API's backend and threads (set by the survey adapter, read at call time)
        self._host_options = {"backend": "auto", "num_threads": None}

    def _set_arithmetic(self, multiplier, quant="auto", tune=False):
        """Switch the layer's multiplier (``None``: Keras' float op), quant and tune in place;
        takes effect at the next eager call (a traced function keeps what it traced). For the
        survey adapter; the config keeps the last multiplier given."""
        if multiplier is None:
            self.multiplier = None
            return
        options = self._host_options
        self._init_approx(multiplier, quant, tune)
        self._host_options = options

    def _approx_config(self):
        tune = self.tune
        if isinstance(tune, np.ndarray):
            tune = [int(v) for v in tune]
        cfg = self._multiplier_config
        if "table" in cfg and cfg["table"] is None:
            cfg["table"] = _encode_table(self._config_multiplier)
        return {"multiplier": dict(cfg), "quant": self.quant,
                "tune": bool(tune) if tune is None or isinstance(tune, bool) else tune}

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} quantizes through its multiplier "
                                  f"(quant={self.quant!r}); Keras' quantize() does not apply")

    def _fake_quant(self, x, w):
        """The dequantized codes of ``x`` and ``w`` (channel axis last) that the forward pass
        multiplies: the same parameters as axconv2d / axdense (tuning not applied)."""
        m, spec = self.multiplier, self._spec
        x = np.asarray(x, np.float32)
        w = np.asarray(w, np.float32)
        xp = make_params(x, spec.input, m)
        wp = make_params(w.reshape(-1, w.shape[-1]), spec.weight, m, w.shape[-1])
        xq = dequantize(quantize_float(x, xp), xp)
        wq = dequantize(quantize_float(w, wp, channel_axis=-1), wp, channel_axis=-1)
        return xq.astype(np.float32), wq.astype(np.float32)

    def _conv_call(self, inputs, cout_of, groups_of, w_host=None):
        """The convolution layers' call: NHWC operands, ``axconv2d`` as the host op with
        ``cout_of(C)`` output channels in ``groups_of(C)`` groups (``w_host`` reshapes the
        kernel for it), the layout restored and the activation applied in Keras."""
        dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32)
        if self.data_format == "channels_first":
            x = tf.transpose(x, [0, 2, 3, 1])
        w = tf.cast(self.kernel, tf.float32)
        b = tf.cast(self.bias, tf.float32) if self.use_bias else None
        N, H, W, C = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        out_shape = (N, _conv_out(H, kh, sh, dh, self.padding),
                     _conv_out(W, kw, sw, dw, self.padding), cout_of(C))
        m, quant, tune, groups = self.multiplier, self._spec, self.tune, groups_of(C)
        opts = self._host_options
        stride, dilation, padding = tuple(self.strides), tuple(self.dilation_rate), self.padding.upper()
        reshape = w_host or (lambda wv: wv)

        def host(xv, wv, *bv):
            return axconv2d(xv, reshape(wv), m, bias=bv[0] if bv else None, stride=stride,
                            padding=padding, dilation=dilation, groups=groups,
                            data_format="NHWC", quant=quant, tune=tune, **opts)

        y = self._approx_call(x, w, b, host, self._float_op, out_shape, w_host=w_host)
        if self.data_format == "channels_first":
            y = tf.transpose(y, [0, 3, 1, 2])
        y = tf.cast(y, dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _approx_call(self, x, w, b, host, float_op, out_shape, w_host=None):
        """``host(x, w, b)`` as a TF op with the straight-through gradient of ``float_op``.

        ``w_host`` reshapes the kernel the way ``host`` sees it (for the fake-quantization
        parameters); the gradients are those of ``float_op(x_fq, w_fq)`` with respect to its
        operands, passed unchanged to ``x`` and ``w`` (the quantizer's derivative taken as 1),
        and the sum of the output gradient over all but the last axis for the bias.
        """
        layer = self
        args = [x, w] + ([b] if b is not None else [])

        def fq(xv, wv):
            if w_host is None:
                return layer._fake_quant(xv, wv)
            xq, wq = layer._fake_quant(xv, w_host(wv))
            return xq, wq.reshape(wv.shape)

        def checked(*a):
            try:
                return host(*a)
            except (TypeError, ValueError) as e:   # name the layer (a graph shows no stack)
                raise type(e)(f"layer {layer.name!r} ({type(layer).__name__}): {e}") from None

        @tf.custom_gradient
        def op(*t):
            y = tf.numpy_function(checked, list(t), tf.float32, stateful=False,
                                  name=f"{layer.name}_axkern")
            y.set_shape(out_shape)

            def grad(dy):
                xq, wq = tf.numpy_function(fq, [t[0], t[1]], [tf.float32, tf.float32],
                                           stateful=False, name=f"{layer.name}_fake_quant")
                xq.set_shape(t[0].shape)
                wq.set_shape(t[1].shape)
                with tf.GradientTape() as tape:
                    tape.watch([xq, wq])
                    yf = float_op(xq, wq)
                gx, gw = tape.gradient(yf, [xq, wq], output_gradients=dy)
                grads = [gx, gw]
                if len(t) == 3:
                    grads.append(tf.reduce_sum(dy, axis=list(range(len(out_shape) - 1))))
                return grads

            return y, grad

        return op(*args)


def _conv_out(size, k, s, d, padding):
    if size is None:
        return None
    if padding == "same":
        return -(-size // s)
    return (size - (k - 1) * d - 1) // s + 1


# ------------------------------------------------------------------ the layers
@keras.saving.register_keras_serializable(package=_PACKAGE)
class ApproxConv2D(_ApproxMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` computed through an approximate multiplier.

    Parameters
    ----------
    filters, kernel_size, strides, padding, data_format, dilation_rate, groups, activation, \
use_bias, ... :
        As ``keras.layers.Conv2D``. ``padding`` is ``"same"`` (TensorFlow's split, the extra
        row/column at the bottom/right, as axconv2d's "SAME") or ``"valid"``; both data
        formats work (channels_first is transposed around the NHWC call).
    multiplier : Multiplier or str or path or ndarray
        A :class:`~axkern.Multiplier`, a shipped name, a ``.c``/``.bin``/``.h``/``.npy`` path
        or an unsigned table array.
    quant : {"auto", "tfapprox", "asymmetric", "symmetric", "symmetric-per-channel"}
        As :func:`axkern.axconv2d` (per-call ranges).
    tune : bool or array_like of int, default False
        ALWANN weight tuning, as :func:`axkern.axconv2d`.

    Notes
    -----
    The output equals ``axkern.axconv2d(x, kernel, multiplier, bias=bias, stride=strides,
    padding=padding.upper(), dilation=dilation_rate, groups=groups, data_format="NHWC",
    quant=quant, tune=tune)`` followed by the activation.
    """

    def __init__(self, filters, kernel_size, *args, multiplier, quant="auto", tune=False,
                 **kwargs):
        _check_args(self, keras.layers.Conv2D, (filters, kernel_size) + args, kwargs)
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_approx(multiplier, quant, tune)

    def get_config(self):
        return {**super().get_config(), **self._approx_config()}

    def _float_op(self, x, w):
        return keras.ops.conv(x, w, strides=list(self.strides), padding=self.padding,
                              dilation_rate=self.dilation_rate, data_format="channels_last")

    def call(self, inputs):
        if self.multiplier is None:
            return super().call(inputs)
        return self._conv_call(inputs, lambda C: self.filters, lambda C: self.groups)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ApproxDepthwiseConv2D(_ApproxMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` computed through an approximate multiplier.

    The arguments are those of ``keras.layers.DepthwiseConv2D`` (``depth_multiplier``
    included) plus ``multiplier``, ``quant`` and ``tune`` as in :class:`ApproxConv2D`. The
    kernel ``(kh, kw, C, depth_multiplier)`` is passed to :func:`axkern.axconv2d` as the
    grouped HWIO filter ``(kh, kw, 1, C * depth_multiplier)`` with ``groups=C`` (output
    channel ``c * depth_multiplier + j``, Keras' order).
    """

    def __init__(self, kernel_size, *args, multiplier, quant="auto", tune=False, **kwargs):
        _check_args(self, keras.layers.DepthwiseConv2D, (kernel_size,) + args, kwargs)
        super().__init__(kernel_size, *args, **kwargs)
        self._init_approx(multiplier, quant, tune)

    def get_config(self):
        return {**super().get_config(), **self._approx_config()}

    def _float_op(self, x, w):
        return keras.ops.depthwise_conv(x, w, strides=self.strides, padding=self.padding,
                                        dilation_rate=self.dilation_rate,
                                        data_format="channels_last")

    def call(self, inputs):
        if self.multiplier is None:
            return super().call(inputs)

        def grouped(wv):   # (kh, kw, C, dm) -> (kh, kw, 1, C * dm)
            return wv.reshape(wv.shape[0], wv.shape[1], 1, -1)

        return self._conv_call(inputs, lambda C: C * self.depth_multiplier, lambda C: C,
                               w_host=grouped)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ApproxDense(_ApproxMixin, keras.layers.Dense):
    """``keras.layers.Dense`` computed through an approximate multiplier.

    The arguments are those of ``keras.layers.Dense`` plus ``multiplier``, ``quant`` and
    ``tune`` as in :class:`ApproxConv2D`; the output equals ``axkern.axdense(x, kernel,
    multiplier, bias, quant=quant, tune=tune)`` followed by the activation (inputs of any
    rank, the last axis contracted). Keras' own quantization (``quantization_config``,
    ``quantize()``) does not apply.
    """

    def __init__(self, units, *args, multiplier, quant="auto", tune=False, **kwargs):
        _check_args(self, keras.layers.Dense, (units,) + args, kwargs, padding=False)
        if kwargs.get("quantization_config") is not None:
            raise ValueError(f"{type(self).__name__}: quantization_config does not apply: the "
                             f"layer quantizes through its multiplier (quant=...)")
        super().__init__(units, *args, **kwargs)
        self._init_approx(multiplier, quant, tune)

    def get_config(self):
        return {**super().get_config(), **self._approx_config()}

    def call(self, inputs, training=None):
        if self.multiplier is None:
            return super().call(inputs, training=training)
        dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32)
        w = tf.cast(self.kernel, tf.float32)
        b = tf.cast(self.bias, tf.float32) if self.bias is not None else None
        out_shape = tuple(x.shape[:-1]) + (self.units,)
        m, quant, tune = self.multiplier, self._spec, self.tune
        opts = self._host_options

        def host(xv, wv, *bv):
            return axdense(xv, wv, m, bv[0] if bv else None, quant=quant, tune=tune, **opts)

        y = self._approx_call(x, w, b, host, keras.ops.matmul, out_shape)
        y = tf.cast(y, dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FakeApproxConv2D(ApproxConv2D):
    """TFApprox's ``FakeApproxConv2D``: a Conv2D through the table of ``mul_map_file``.

    Takes ``keras.layers.Conv2D``'s arguments plus ``mul_map_file``, the path of a TFApprox
    ``.bin`` table (256 x 256 little-endian uint16, row = activation code, column = weight
    code); ``None`` or ``""`` gives the exact 8-bit product, as in TFApprox. Input and filter
    are quantized with their per-call min/max nudged as TensorFlow's
    ``FakeQuantWithMinMaxVars`` (``quant="tfapprox"``), which is what TFApprox computes.
    ``multiplier=`` may be given instead of ``mul_map_file`` (a saved layer stores its table
    that way, so the ``.bin`` is not needed to load it).
    """

    def __init__(self, filters, kernel_size, *args, mul_map_file=None, multiplier=None,
                 quant="tfapprox", tune=False, **kwargs):
        if mul_map_file and multiplier is not None:
            raise ValueError("FakeApproxConv2D: give mul_map_file or multiplier, not both")
        if multiplier is None:
            if mul_map_file:
                path = os.fspath(mul_map_file)
                if not path.lower().endswith(".bin"):
                    raise ValueError(f"FakeApproxConv2D: mul_map_file must be a TFApprox .bin "
                                     f"table, got {path!r}")
                multiplier = Multiplier.from_bin(path)
            else:
                multiplier = Multiplier.exact(8)
        super().__init__(filters, kernel_size, *args, multiplier=multiplier, quant=quant,
                         tune=tune, **kwargs)
        self.mul_map_file = None if not mul_map_file else os.fspath(mul_map_file)


# ------------------------------------------------------------------ model conversion
def _replaceable():
    return {keras.layers.Conv2D: ApproxConv2D, keras.layers.DepthwiseConv2D: ApproxDepthwiseConv2D,
            keras.layers.Dense: ApproxDense, ApproxConv2D: ApproxConv2D,
            ApproxDepthwiseConv2D: ApproxDepthwiseConv2D, ApproxDense: ApproxDense,
            FakeApproxConv2D: ApproxConv2D}


def _walk(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def approximate(model, multiplier, *, quant="auto", tune=False, skip=()):
    """A copy of a Keras model with approximate layers in place of its float ones.

    Every ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` layer (exactly those classes, or the
    approximate ones of this module; nested Sequential/functional models included) becomes
    :class:`ApproxConv2D`, :class:`ApproxDepthwiseConv2D` or :class:`ApproxDense` with the same
    configuration and a copy of its weights; every other layer is cloned with its weights.
    The original model is left unchanged.

    Parameters
    ----------
    model : keras.Sequential or functional keras.Model
    multiplier : Multiplier or str or path or dict
        One multiplier for every replaceable layer, or a mapping ``layer name -> multiplier``
        (``None`` keeps that layer float; layers the mapping does not name stay float).
    quant : str, default "auto"
        As :class:`ApproxConv2D`.
    tune : bool, default False
    skip : iterable of str
        Names of replaceable layers to keep float.

    Returns
    -------
    keras.Model
        Of the same kind (Sequential or functional).

    Raises
    ------
    ValueError
        A name in ``multiplier`` or ``skip`` that is no replaceable layer (the message lists
        them), or a layer quantized by Keras' own ``quantize()``.
    TypeError
        A model that is not Sequential or functional.
    """
    _check_model(model)
    kinds = _replaceable()
    targets = [layer.name for layer in _walk(model) if type(layer) in kinds]
    skip = [skip] if isinstance(skip, str) else list(skip)
    for name in skip:
        if name not in targets:
            raise ValueError(f"skip names {name!r}, which is no Conv2D/DepthwiseConv2D/Dense "
                             f"layer of the model: expected one of {targets}")
    cache = {}

    def resolved(spec):
        # one Multiplier per distinct spec (a path or name is read once)
        key = ("s", os.fspath(spec)) if isinstance(spec, (str, os.PathLike)) else id(spec)
        if key not in cache:
            cache[key] = resolve_multiplier(spec)[0]
        return cache[key]

    if isinstance(multiplier, dict):
        for name in multiplier:
            if name not in targets:
                raise ValueError(f"multiplier names layer {name!r}, which is no Conv2D/"
                                 f"DepthwiseConv2D/Dense layer of the model: expected one of "
                                 f"{targets}")
        chosen = {n: multiplier[n] for n in targets if multiplier.get(n) is not None}
    else:
        if multiplier is None:
            raise ValueError("multiplier is required (or a mapping layer name -> multiplier)")
        chosen = {n: multiplier for n in targets}
    for name in skip:
        chosen.pop(name, None)
    # shipped names stay names in the layers' configs; other specs are resolved once
    chosen = {n: (spec if _is_shipped_name(spec) else resolved(spec)) for n, spec in chosen.items()}
    if not isinstance(quant, str) or quant not in QUANT_MODES:
        raise ValueError(f"unknown quant {quant!r}: expected one of "
                         f"{', '.join(map(repr, QUANT_MODES))}")
    for name, spec in chosen.items():
        m = spec if isinstance(spec, Multiplier) else resolved(spec)
        try:
            resolve_quant(quant, m)
            resolve_tuning(tune, m)
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None

    return _clone(model, chosen, quant, tune)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Sequential or functional keras.Model, got "
                        f"{type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
            or type(model).__name__ == "Functional"):
        raise TypeError(f"{type(model).__name__} is a subclassed Keras model: only Sequential "
                        f"and functional models can be cloned with approximate layers (build "
                        f"it with ApproxConv2D/ApproxDense layers instead)")


def _clone(model, chosen, quant, tune):
    """clone_model with the layers named in ``chosen`` approximated, weights copied."""
    kinds = _replaceable()
    pairs = []

    def clone(layer):
        cls = kinds.get(type(layer))
        if cls is not None and layer.name in chosen:
            if getattr(layer, "quantization_mode", None):
                raise ValueError(f"layer {layer.name!r} is quantized by Keras "
                                 f"({layer.quantization_mode}); approximate the float model")
            config = layer.get_config()
            for key in ("multiplier", "quant", "tune", "quantization_config"):
                config.pop(key, None)
            new = cls.from_config({**config, "multiplier": chosen[layer.name], "quant": quant,
                                   "tune": tune})
        else:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    out = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        weights = old.get_weights()
        if weights:
            new.set_weights(weights)
    return out


# ------------------------------------------------------------------ the survey's model protocol
_UNSET = object()


def _first_output(out):
    """A model's prediction: its output, or the first of a list or tuple of outputs (a main
    head before auxiliary ones), as the ONNX engine takes the graph's first output."""
    if isinstance(out, (list, tuple)) and out:
        out = out[0]
    if isinstance(out, dict) or out is None:
        raise TypeError(f"the model returned {type(out).__name__}: the survey needs a tensor of "
                        f"scores, or a list or tuple of outputs whose first one holds them")
    return out


class KerasSurveyModel:
    """A Keras model seen through the survey's model protocol (``axkern.survey.MODEL_PROTOCOL``).

    Made by :func:`as_survey_model`. It keeps a clone of the model in which every Conv2D,
    DepthwiseConv2D and Dense layer is an approximate layer, each switched between Keras'
    float op (multiplier ``None``, the start) and a multiplier by :meth:`configure`.
    """

    def __init__(self, model, name=None, metadata=None):
        _check_model(model)
        kinds = _replaceable()
        self.compute_layers = [layer.name for layer in _walk(model) if type(layer) in kinds]
        exact = Multiplier.exact(8)
        self._model = _clone(model, {n: exact for n in self.compute_layers}, "auto", False)
        self._layers = {layer.name: layer for layer in _walk(self._model)
                        if layer.name in self.compute_layers}
        self._settings = {n: [None, "auto", False] for n in self.compute_layers}
        for layer in self._layers.values():
            layer._set_arithmetic(None)
        self.name = model.name if name is None else name
        self.metadata = dict(metadata or {})

    def configure(self, layers=None, *, multiplier=_UNSET, quant=_UNSET, tune=_UNSET):
        """Set the multiplier (None: float), quant and/or tune of the named layers (default
        all of :attr:`compute_layers`); returns ``self``."""
        names = self.compute_layers if layers is None else (
            [layers] if isinstance(layers, str) else list(layers))
        for n in names:
            if n not in self._settings:
                raise ValueError(f"no Conv2D/DepthwiseConv2D/Dense layer named {n!r}: expected "
                                 f"one of {self.compute_layers}")
        if multiplier is not _UNSET and multiplier is not None:
            multiplier = resolve_multiplier(multiplier)[0]
        for n in names:
            entry = self._settings[n]
            for i, v in enumerate((multiplier, quant, tune)):
                if v is not _UNSET:
                    entry[i] = v
        return self

    def settings(self):
        """``{layer: (multiplier name or None, quant, tune)}``."""
        return {n: (None if m is None else m.name, q, t) for n, (m, q, t) in self._settings.items()}

    def _apply(self, backend, num_threads):
        for n, (m, q, t) in self._settings.items():
            layer = self._layers[n]
            try:
                layer._set_arithmetic(m, q, t)
            except (TypeError, ValueError) as e:
                msg = str(e)   # _init_approx names the layer already
                raise type(e)(msg if msg.startswith(f"layer {n!r}") else f"layer {n!r}: {msg}") \
                    from None
            layer._host_options.update({"backend": backend, "num_threads": num_threads})

    def forward(self, x, *, batch_size=None, backend="auto", num_threads=None):
        """The model's outputs on ``x`` (NumPy, float32), whole batch per call unless
        ``batch_size`` is given (the per-call quantization ranges depend on the batch)."""
        self._apply(backend, num_threads)
        x = np.asarray(x, np.float32)
        step = len(x) if batch_size is None else int(batch_size)
        if step < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        outs = [np.asarray(_first_output(self._model(x[i:i + step], training=False)))
                for i in range(0, len(x), step)]
        return np.concatenate(outs)

    def accuracy(self, x, y, *, batch_size=None, backend="auto", num_threads=None):
        """Share of samples (0..1) whose argmax output equals ``y``."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != np.shape(x)[0] or y.shape[0] == 0:
            raise ValueError(f"labels must be a non-empty vector with one entry per sample "
                             f"({np.shape(x)[0]}), got shape {y.shape}")
        out = self.forward(x, batch_size=batch_size, backend=backend, num_threads=num_threads)
        return float(np.mean(np.argmax(out, axis=-1) == y))

    def layer_macs(self, input_shape):
        """``{layer: multiply-accumulates per sample}`` for a per-sample input shape (what
        ``axkern search`` weighs multiplier costs with): each layer's output elements, from
        one float forward pass on a sample of zeros, times its kernel's reduction length; a
        layer called several times (shared by two branches) counts every call."""
        shape = tuple(int(v) for v in input_shape)
        probe = {}
        saved = {n: layer.multiplier for n, layer in self._layers.items()}
        try:
            for layer in self._layers.values():
                layer.multiplier = None   # Keras' float op: shapes only
            _SHAPE_PROBE.sizes = probe
            self._model(np.zeros((1,) + shape, np.float32), training=False)
        finally:
            _SHAPE_PROBE.sizes = None
            for n, layer in self._layers.items():
                layer.multiplier = saved[n]
        missing = [n for n in self.compute_layers if id(self._layers[n]) not in probe]
        if missing:
            raise ValueError(f"layers {missing} did not run on an input of shape {shape}: "
                             f"give the search macs= for them")
        return {n: probe[id(self._layers[n])] * self._layers[n]._reduction_length()
                for n in self.compute_layers}

    def copy(self):
        """An independent copy, settings included."""
        new = KerasSurveyModel.__new__(KerasSurveyModel)
        new.__setstate__(self.__getstate__())
        return new

    def __getstate__(self):
        return {"json": self._model.to_json(), "weights": self._model.get_weights(),
                "compute_layers": list(self.compute_layers), "name": self.name,
                "metadata": dict(self.metadata),
                "settings": {n: list(v) for n, v in self._settings.items()}}

    def __setstate__(self, state):
        # the clone's layers are approximate ones switched to float: rebuilt from their
        # configs, then switched back
        self._model = keras.models.model_from_json(state["json"])
        self._model.set_weights(state["weights"])
        self.compute_layers = state["compute_layers"]
        self._layers = {layer.name: layer for layer in _walk(self._model)
                        if layer.name in self.compute_layers}
        self._settings = {n: list(v) for n, v in state["settings"].items()}
        for layer in self._layers.values():
            layer._set_arithmetic(None)
        self.name, self.metadata = state["name"], dict(state["metadata"])


def as_survey_model(model, *, name=None, metadata=None):
    """Wrap a Keras Sequential or functional model for :func:`axkern.survey.survey` and
    :func:`axkern.survey.evaluate`.

    Parameters
    ----------
    model : keras.Sequential or functional keras.Model
        A classifier: the argmax of its output is the predicted class. It is cloned (weights
        copied); the original is not changed.
    name : str, optional
        Default: the model's name.
    metadata : dict, optional
        ``{"signed": True}`` makes the survey's default multiplier list the signed ones.

    Returns
    -------
    KerasSurveyModel
    """
    return KerasSurveyModel(model, name=name, metadata=metadata)
