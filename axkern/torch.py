"""Approximate PyTorch models: ``Conv2d`` and ``Linear`` layers computed through axkern.

:class:`ApproxConv2d` and :class:`ApproxLinear` are ``nn.Conv2d`` / ``nn.Linear`` with the same
parameters and ``state_dict`` keys; their forward quantizes the input and the weights and runs
axkern's exact LUT kernels (:func:`axkern.axconv2d`, :func:`axkern.axdense`) on the tensors'
own memory, and their backward is the straight-through estimator (or the multiplier's
gradient tables, ``grad="table"``). :func:`approximate` swaps every ``Conv2d`` / ``Linear`` of
any module tree, :func:`calibrate` freezes input ranges (AdaPT / pytorch-quantization
semantics), :func:`as_survey_model` and :func:`evaluate` connect a model to ``axkern survey``.

Torch is an optional dependency (``pip install "axkern[torch]"``); ``import axkern`` never
imports it. Only CPU tensors of dtype float32 are accepted: anything else is an error, never
a silent copy or conversion. The full description is docs/torch.md.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Mapping
import numbers
import os
import pickle
import warnings

import numpy as np

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError('axkern.torch needs PyTorch, which is not installed: '
                      'pip install "axkern[torch]"') from e

from ._torch_grad import gradient_tables, quantize_codes
from .backends import check_backend, conv_output_size
from .conv import (QUANT_MODES, _check_format, _host_helpers, conv_with_input_params,
                   make_params, range_params, resolve_quant)
from .lut import Multiplier
from .matmul import dense_with_input_params
from .nn import _resolve_multiplier
from .quant import check_range, symmetric_params, tf_quant_params
from .tune import resolve_tuning

__all__ = ["ApproxConv2d", "ApproxLinear", "approximate", "layers", "calibrate",
           "as_survey_model", "evaluate", "TorchSurveyModel", "gradient_tables"]

_GRADS = ("ste", "table")


# ------------------------------------------------------------------------------ helpers
def _layer_label(layer):
    name = layer.__dict__.get("_axkern_name")
    return f"{type(layer).__name__} {name!r}" if name else type(layer).__name__


def _check_tensor(t, what, layer):
    """A CPU float32 tensor, or a clear error (never a silent copy or conversion)."""
    if isinstance(t, torch.Tensor) and t.dtype is torch.float32 and t.is_cpu and \
            t.layout is torch.strided:
        return   # (every forward checks three: the attributes above are the cheap ones)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_layer_label(layer)}: {what} must be a torch.Tensor, got "
                        f"{type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{_layer_label(layer)}: {what} is on device {t.device}, but axkern's "
                         f"PyTorch layers compute on CPU tensors only (they never copy silently "
                         f"between devices): move the model and its inputs to the CPU with "
                         f".cpu(), or set the layer's multiplier to None for exact float")
    if t.dtype != torch.float32:
        raise TypeError(f"{_layer_label(layer)}: {what} has dtype {t.dtype}, but axkern's "
                        f"PyTorch layers take float32 only (no silent conversion): convert "
                        f"the model with model.float() and the input with x.float()")
    if t.layout != torch.strided or t.is_quantized:
        raise TypeError(f"{_layer_label(layer)}: {what} must be a dense (strided) tensor")


def _is_compiling():
    """Whether torch.compile / torch.export (Dynamo, or export's non-strict tracing) is
    tracing the current call."""
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    return bool(check()) if check is not None else False


_NOT_TRACEABLE = ("axkern's approximate layers compute through NumPy and axkern's compiled "
                  "kernels, which TorchScript (torch.jit.trace / torch.jit.script), "
                  "torch.compile and torch.export cannot record: run the model eagerly (no "
                  "trace, script, compile or export), or set the approximate layers' "
                  "multiplier to None (exact float) to trace, compile or export the float model")


def _check_not_traced(layer):
    """A clear error when the forward is being traced, scripted, compiled or exported (a
    trace would record an uninitialized output: the products are written by NumPy)."""
    if torch.jit.is_tracing():
        raise RuntimeError(f"{_layer_label(layer)}: torch.jit.trace: {_NOT_TRACEABLE}")
    if torch.jit.is_scripting() or _is_compiling():
        raise RuntimeError(f"{_layer_label(layer)}: torch.compile / torch.export / "
                           f"TorchScript: {_NOT_TRACEABLE}")


def _fake_quant(t, p, channel_dim=None):
    """``(dequantized codes, mask of unclipped entries)`` of tensor ``t`` under QuantParams
    ``p``, in float32 with the rounding of :mod:`axkern.quant` (per-channel along
    ``channel_dim``)."""
    q, s, z, mask = quantize_codes(t, p, channel_dim)
    return (q - z) * s, mask


# ------------------------------------------------------------------------------ layers
# nn.Module's containers of forward and backward hooks (and of their flags)
_HOOK_CONTAINERS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                    "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                    "_backward_pre_hooks", "_backward_hooks")


class _ApproxMixin:
    """What ApproxConv2d and ApproxLinear share: the settings, the frozen input range, the
    input checks and the autograd plumbing."""

    def _labelled_forward(self, x, weight, bias):
        """``_approx_forward``, with the layer named in the errors of the NumPy API it calls
        (a NaN weight after a diverged step, a NaN input of a calibrated layer): in a deep
        network the message must say which layer it was."""
        try:
            return self._approx_forward(x, weight, bias)
        except (TypeError, ValueError) as e:
            label = _layer_label(self)
            if str(e).startswith(label):
                raise
            raise type(e)(f"{label}: {e}") from None

    def _init_approx(self, multiplier, quant, tune, grad, backend):
        # A None buffer is left out of state_dict: an uncalibrated layer has exactly the
        # parent's keys (see _load_from_state_dict for the calibrated case).
        self.register_buffer("input_range", None)
        self._multiplier = None
        self.quant = quant
        self.tune = tune
        self.grad = grad
        self.backend = backend
        self.num_threads = None   # axkern's threads (None: OpenMP's default)
        self.multiplier = multiplier

    # multiplier/quant are validated together whenever either changes
    @property
    def multiplier(self):
        """The :class:`axkern.Multiplier`, or None for exact float arithmetic."""
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value):
        m = _resolve_multiplier(value)
        if m is not None:
            resolve_quant(self._quant, m)   # a signed multiplier with unsigned codes etc.
            resolve_tuning(self._tune, m)
        self._multiplier = m

    @property
    def quant(self):
        """"auto", "tfapprox", "asymmetric", "symmetric" or "symmetric-per-channel"."""
        return self._quant

    @quant.setter
    def quant(self, value):
        if not isinstance(value, str) or value not in QUANT_MODES:
            raise ValueError(f"quant must be one of {QUANT_MODES}, got {value!r}")
        m = getattr(self, "_multiplier", None)
        if m is not None:
            resolve_quant(value, m)
        self._quant = value

    @property
    def tune(self):
        """ALWANN weight tuning: False, True or a mapping array (see axkern.axconv2d)."""
        return self._tune

    @tune.setter
    def tune(self, value):
        m = getattr(self, "_multiplier", None)
        if m is not None:
            resolve_tuning(value, m)   # validated now, not at the first forward
        self._tune = value

    @property
    def grad(self):
        """Backward rule: "ste" (straight-through estimator) or "table" (gradient tables)."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value not in _GRADS:
            raise ValueError(f"grad must be one of {_GRADS}, got {value!r}")
        self._grad = value

    @property
    def backend(self):
        """axkern backend of the products: "cpu", "reference", "cuda", "auto" or a backend
        object (validated when set, not at the first forward)."""
        return self._backend

    @backend.setter
    def backend(self, value):
        try:
            self._backend = check_backend(value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{_layer_label(self)}: {e}") from None

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling: a clear error in
        # place of TorchScript's own about the Python code of the forward
        raise RuntimeError(f"{_layer_label(self)}: torch.jit.script: {_NOT_TRACEABLE}")

    @property
    def calibrated(self):
        """Whether the input range is frozen (by :func:`calibrate` or a loaded state_dict)."""
        return self.input_range is not None

    def _spec(self):
        q = self._quant
        if q == "auto" and self._multiplier.signed and self.input_range is not None:
            q = "symmetric-per-channel"   # calibrated: pytorch-quantization's scheme
        return resolve_quant(q, self._multiplier)

    def _grad_tables(self):
        """The multiplier's gradient tables (``grad="table"``), cached per multiplier/tuning."""
        # the multiplier object itself (held, so its id cannot be reused; its table is
        # read-only) and the tuning by value (a mapping array can change in place)
        tune = self.tune if isinstance(self.tune, bool) else np.asarray(self.tune).tobytes()
        cached = getattr(self, "_axkern_gtab", None)
        if cached is None or cached[0] is not self._multiplier or cached[1] != tune:
            cached = self._axkern_gtab = (self._multiplier, tune,
                                          gradient_tables(self._multiplier, self.tune))
        return cached[2]

    def _input_params(self, x, spec):
        """QuantParams of the input: frozen, or from this call's min and max."""
        m = self._multiplier
        if self.input_range is not None:
            lo, hi = (float(v) for v in self.input_range)
            if m.signed:
                return symmetric_params(np.array([lo, hi], np.float32), m.bits)
            return tf_quant_params(lo, hi, m.bits)
        if x.numel() == 0:
            return make_params(np.zeros(0, np.float32), spec.input, m)
        xd = x.detach()
        # the memory as one C-contiguous array (NCHW, or channels_last seen as NHWC) for
        # axkern's one-pass min and max (torch.aminmax and two .item() cost ~20 us a call)
        flat = None
        if xd.is_contiguous():
            flat = xd.numpy()
        elif xd.dim() == 4 and xd.is_contiguous(memory_format=torch.channels_last):
            flat = xd.permute(0, 2, 3, 1).numpy()
        fast = _host_helpers(self.backend, m)
        if fast is not None and flat is not None:
            lo, hi = fast.min_max(flat, self.num_threads)
        else:
            lo, hi = (np.float32(v.item()) for v in torch.aminmax(xd))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{_layer_label(self)}: the input contains NaN or Inf: expected "
                             f"finite values")
        p = range_params(lo, hi, spec.input, m)
        # a per-call range set by a few outliers: the same warning as axconv2d's (a sample
        # of 1024 values, about 15 us)
        check_range(xd.numpy() if flat is None else flat, p, f"{_layer_label(self)} input",
                    remedy="Calibrate the layer (with axkern.torch.calibrate(model, "
                           "method='percentile'): model(batch)) or remove the outliers")
        return p

    def _weight_params(self, w_last, spec):
        """QuantParams of the weights (channel axis last, NumPy) as axkern computes them."""
        return make_params(w_last.reshape(-1, w_last.shape[-1]), spec.weight, self._multiplier,
                           w_last.shape[-1])

    def set_input_range(self, lo, hi):
        """Freeze the input range to ``[lo, hi]`` (None unfreezes: per-call ranges again)."""
        if lo is None and hi is None:
            self.input_range = None
            return
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ValueError(f"input range must be finite with lo <= hi, got [{lo}, {hi}]")
        self.input_range = torch.tensor([lo, hi], dtype=torch.float32,
                                        device=self.weight.device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The frozen input range travels with the checkpoint: present -> calibrated with it,
        # absent (a float nn.Conv2d / nn.Linear checkpoint) -> per-call ranges.
        # A checkpoint holding none of this layer's keys (a partial one, strict=False) leaves
        # the layer as it is.
        key = prefix + "input_range"
        if key in state_dict:
            if self.input_range is None:
                self.input_range = torch.zeros(2, dtype=torch.float32, device=self.weight.device)
        elif any(k.startswith(prefix) and "." not in k[len(prefix):] for k in state_dict):
            self.input_range = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _check_params(self, weight, bias):
        _check_tensor(weight, "the weight", self)
        if bias is not None:
            _check_tensor(bias, "the bias", self)

    def extra_repr(self):
        m = self._multiplier
        s = super().extra_repr()
        s += f", multiplier={None if m is None else m.name!r}"
        if m is not None:
            s += f", quant={self._quant!r}"
            if self.tune is not False:
                s += ", tune=True" if self.tune is True else ", tune=<mapping>"
            if self._grad != "ste":
                s += f", grad={self._grad!r}"
            if self.input_range is not None:
                s += ", calibrated"
        return s

    def _observe(self, x):
        # the per-sample input shape, for layers(); calibrate()'s observer when one is set
        # (through __dict__: nn.Module's own attribute hooks cost several us a call, and a
        # missing attribute raises inside them)
        d = self.__dict__
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            conv = isinstance(self, nn.Conv2d)
            d["_axkern_last_shape"] = tuple(x.shape[-3:] if conv else x.shape[1:])
        obs = d.get("_axkern_observer")
        if obs is None:
            return False
        obs.observe(x)
        return True   # calibrating: the layer computes float

    @classmethod
    def _copy_from(cls, new, module):
        # the same Parameter objects: the float model's optimizer state stays valid
        new.weight = module.weight
        new.bias = module.bias
        new.train(module.training)
        # hooks registered on the float layer (feature extraction, activation logging) go
        # on firing on the approximate one, as torch.ao.quantization's module swap carries
        # them over: the same hook functions in containers of its own (a handle from the
        # float layer removes its hook from the float layer only)
        for name in _HOOK_CONTAINERS:
            src = module.__dict__.get(name)
            if src:
                new.__dict__[name] = type(src)(src)
        if "_is_full_backward_hook" in module.__dict__:
            new.__dict__["_is_full_backward_hook"] = module._is_full_backward_hook
        return new


def _overrides_forward(module):
    """The class (name) of ``module`` that overrides nn.Conv2d's / nn.Linear's forward (or
    Conv2d's _conv_forward), or None: an approximate layer would compute the parent's
    products and drop that code."""
    t = type(module)
    if isinstance(module, nn.Conv2d):
        plain, plain_conv = (nn.Conv2d.forward, ApproxConv2d.forward), nn.Conv2d._conv_forward
        if t.forward not in plain or t._conv_forward is not plain_conv:
            return t.__name__
    elif isinstance(module, nn.Linear):
        if t.forward not in (nn.Linear.forward, ApproxLinear.forward):
            return t.__name__
    return None


def _check_convertible(module, cls_name):
    """Layers an approximate twin cannot stand in for: a clear error, never a layer that
    silently computes something else."""
    label = _layer_label(module)
    sub = _overrides_forward(module)
    if sub is not None:
        base = "nn.Conv2d" if isinstance(module, nn.Conv2d) else "nn.Linear"
        raise TypeError(f"{label}: {cls_name}.from_float cannot convert it: its class {sub} "
                        f"overrides {base}'s forward, which {cls_name} would drop (it computes "
                        f"the plain {base} products); leave the layer in float")
    lazy = getattr(nn.modules.lazy, "LazyModuleMixin", None)
    if lazy is not None and isinstance(module, lazy) and module.has_uninitialized_params():
        raise ValueError(f"{label}: a lazy layer ({type(module).__name__}) whose parameters are "
                         f"not initialized yet (their shapes come from the first input): run "
                         f"the model once on a batch before approximating it")
    for what in ("weight", "bias"):
        value = getattr(module, what, None)
        if value is not None and module._parameters.get(what) is not value:
            raise TypeError(
                f"{label}: its {what} is computed, not a Parameter of the layer (a "
                f"parametrization such as torch.nn.utils.parametrizations.weight_norm or "
                f"spectral_norm, the older torch.nn.utils.weight_norm / spectral_norm hooks, or "
                f"torch.nn.utils.prune): approximate layers of this kind are not supported; "
                f"remove it first (torch.nn.utils.parametrize.remove_parametrizations(layer, "
                f"{what!r}), torch.nn.utils.remove_weight_norm / remove_spectral_norm, "
                f"torch.nn.utils.prune.remove), which bakes the current {what} into a "
                f"Parameter, or leave the layer in float (approximate(..., skip=[name]))")


def _check_module(module, multiplier):
    """The float module's parameters must be CPU float32 for an approximate layer."""
    if multiplier is not None:
        for what, t in (("weight", module.weight), ("bias", module.bias)):
            if t is not None:
                _check_tensor(t, f"the {what}", module)


def _settings_kwargs(multiplier, quant, tune, grad, backend):
    return dict(multiplier=multiplier, quant=quant, tune=tune, grad=grad, backend=backend)


class ApproxConv2d(_ApproxMixin, nn.Conv2d):
    """``nn.Conv2d`` whose products go through an approximate multiplier's table.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
    padding_mode, device, dtype
        As for ``torch.nn.Conv2d`` (the same parameters and ``state_dict`` keys).
    multiplier : Multiplier, str, path or None
        None (default) computes the exact float convolution (``F.conv2d``).
    quant : {"auto", "tfapprox", "asymmetric", "symmetric", "symmetric-per-channel"}
        As for :func:`axkern.axconv2d`; the input range is taken per call unless the layer
        is calibrated (:func:`calibrate`).
    tune : bool or array_like of int
        ALWANN weight tuning, as for :func:`axkern.axconv2d`.
    grad : {"ste", "table"}
        Backward rule (docs/torch.md): the straight-through estimator, or the multiplier's
        gradient tables.
    backend : {"cpu", "reference", "cuda"}
        axkern backend of the products (NumPy in, NumPy out).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 multiplier=None, quant="auto", tune=False, grad="ste", backend="cpu"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self._init_approx(multiplier, quant, tune, grad, backend)

    @classmethod
    def from_float(cls, module, multiplier=None, *, quant="auto", tune=False, grad="ste",
                   backend="cpu"):
        """An ApproxConv2d sharing ``module``'s parameters (``nn.Conv2d``)."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"ApproxConv2d.from_float takes an nn.Conv2d, got {type(module).__name__}")
        _check_convertible(module, "ApproxConv2d")
        _check_module(module, multiplier)
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, module.bias is not None,
                  module.padding_mode, device="meta", dtype=module.weight.dtype,
                  **_settings_kwargs(multiplier, quant, tune, grad, backend))
        cls._copy_from(new, module)
        if isinstance(module, _ApproxMixin) and module.input_range is not None:
            new.input_range = module.input_range.clone()
        return new

    def _explicit_padding(self):
        """((top, bottom), (left, right)) as PyTorch pads ('same': extra at bottom/right)."""
        if self.padding_mode != "zeros":
            return ((0, 0), (0, 0))   # applied by F.pad first
        left_w, right_w, top, bottom = self._reversed_padding_repeated_twice
        return ((top, bottom), (left_w, right_w))

    def macs(self, input_shape):
        """Multiply-accumulates per sample for a per-sample input shape (C, H, W)."""
        _, H, W = input_shape[-3:]
        pl, pr, pt, pb = self._reversed_padding_repeated_twice
        oh, ow = conv_output_size(H, W, *self.kernel_size, self.stride, (pt, pb, pl, pr),
                                  self.dilation)
        return int(oh * ow * self.out_channels * (self.in_channels // self.groups)
                   * self.kernel_size[0] * self.kernel_size[1])

    def forward(self, input):
        x = input   # nn.Conv2d's parameter name: layer(input=x) works as on the parent
        if self._observe(x) or self._multiplier is None:
            return super().forward(x)
        _check_not_traced(self)
        _check_tensor(x, "the input", self)
        weight, bias = self.weight, self.bias   # (nn.Module attribute lookups: once)
        self._check_params(weight, bias)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"{_layer_label(self)} expects a (N, C, H, W) or (C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        if self.padding_mode != "zeros":
            # exactly nn.Conv2d's own order: pad with the mode, then a convolution without padding
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                        (bias is not None and bias.requires_grad)):
            y = _ApproxFunction.apply(x, weight, bias, self)
        else:
            y = self._labelled_forward(x, weight, bias)[0]
        return y.squeeze(0) if unbatched else y

    def _approx_forward(self, x, weight, bias):
        """(output tensor, input QuantParams) of the approximate convolution."""
        m = self._multiplier
        spec = self._spec()
        xp = self._input_params(x, spec)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{_layer_label(self)} expects {self.in_channels} input channels, "
                             f"got input of shape {tuple(x.shape)}")
        pads = self._explicit_padding()   # (an input smaller than the kernel: axkern's error)
        w = weight.detach().numpy()                       # OIHW, a view
        b = None if bias is None else bias.detach().numpy()
        kw = dict(bias=b, stride=self.stride, padding=pads, dilation=self.dilation,
                  groups=self.groups, tune=self.tune, backend=self.backend,
                  num_threads=self.num_threads)
        xd = x.detach()
        # the result in the array the kernels stored into, taken over by the tensor (an
        # output tensor's memory passed as out= cost a small layer's call 13 - 19 us more)
        if not xd.is_contiguous() and xd.is_contiguous(memory_format=torch.channels_last):
            # channels_last memory is NHWC: hand it over as such and return channels_last
            y = torch.from_numpy(conv_with_input_params(
                xd.permute(0, 2, 3, 1).numpy(), w.transpose(2, 3, 1, 0), m, xp, spec,
                data_format="NHWC", **kw)).permute(0, 3, 1, 2)
        else:
            xd = xd.contiguous()   # a copy only for inputs in neither layout
            y = torch.from_numpy(conv_with_input_params(xd.numpy(), w, m, xp, spec,
                                                        data_format="NCHW", **kw))
        return y, xp

    def _float_grads(self, x, w, gy, need_x, need_w):
        """Gradients of F.conv2d(x, w) for the output gradient ``gy`` (PyTorch's own
        convolution backward, without recomputing the forward)."""
        (pt, pb), (pl, pr) = self._explicit_padding()
        if pt != pb or pl != pr:   # PyTorch's odd 'same' split: pad, then no padding
            xin, pad = F.pad(x, (pl, pr, pt, pb)), (0, 0)
        else:
            xin, pad = x, (pt, pl)
        gx, gw, _ = torch.ops.aten.convolution_backward(
            gy, xin, w, None, list(self.stride), list(pad), list(self.dilation), False, [0, 0],
            self.groups, [need_x, need_w, False])
        if need_x and xin is not x:
            gx = gx[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]]
        return gx, gw

    def _weight_last(self, w):
        return w.permute(2, 3, 1, 0)   # OIHW -> HWIO (channel axis last)


class ApproxLinear(_ApproxMixin, nn.Linear):
    """``nn.Linear`` whose products go through an approximate multiplier's table.

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As for ``torch.nn.Linear`` (the same parameters and ``state_dict`` keys).
    multiplier, quant, tune, grad, backend
        As for :class:`ApproxConv2d` (the products of :func:`axkern.axdense`).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                 multiplier=None, quant="auto", tune=False, grad="ste", backend="cpu"):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_approx(multiplier, quant, tune, grad, backend)

    @classmethod
    def from_float(cls, module, multiplier=None, *, quant="auto", tune=False, grad="ste",
                   backend="cpu"):
        """An ApproxLinear sharing ``module``'s parameters (``nn.Linear``)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"ApproxLinear.from_float takes an nn.Linear, got {type(module).__name__}")
        _check_convertible(module, "ApproxLinear")
        _check_module(module, multiplier)
        new = cls(module.in_features, module.out_features, module.bias is not None,
                  device="meta", dtype=module.weight.dtype,
                  **_settings_kwargs(multiplier, quant, tune, grad, backend))
        cls._copy_from(new, module)
        if isinstance(module, _ApproxMixin) and module.input_range is not None:
            new.input_range = module.input_range.clone()
        return new

    def macs(self, input_shape):
        """Multiply-accumulates per sample for a per-sample input shape (..., in)."""
        return int(np.prod(input_shape[:-1], dtype=np.int64)) * self.in_features * self.out_features

    def forward(self, input):
        x = input   # nn.Linear's parameter name: layer(input=x) works as on the parent
        if self._observe(x) or self._multiplier is None:
            return super().forward(x)
        _check_not_traced(self)
        _check_tensor(x, "the input", self)
        weight, bias = self.weight, self.bias   # (nn.Module attribute lookups: once)
        self._check_params(weight, bias)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{_layer_label(self)} expects inputs of shape (..., "
                             f"{self.in_features}), got shape {tuple(x.shape)}")
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                        (bias is not None and bias.requires_grad)):
            return _ApproxFunction.apply(x, weight, bias, self)
        return self._labelled_forward(x, weight, bias)[0]

    def _approx_forward(self, x, weight, bias):
        m = self._multiplier
        spec = self._spec()
        xp = self._input_params(x, spec)
        w = weight.detach().numpy().T                    # (in, out), a view
        b = None if bias is None else bias.detach().numpy()
        y = dense_with_input_params(x.detach().numpy(), w, m, xp, spec, bias=b, tune=self.tune,
                                    backend=self.backend, num_threads=self.num_threads)
        return torch.from_numpy(y), xp   # (as ApproxConv2d's)

    def _float_grads(self, x, w, gy, need_x, need_w):
        """Gradients of F.linear(x, w) for the output gradient ``gy``."""
        gx = gy @ w if need_x else None
        gw = gy.reshape(-1, w.shape[0]).t() @ x.reshape(-1, w.shape[1]) if need_w else None
        return gx, gw

    def _weight_last(self, w):
        return w.t()   # (out, in) -> (in, out) (channel axis last)


class _ApproxFunction(torch.autograd.Function):
    """Forward: the approximate layer. Backward: the straight-through estimator (gradients of
    the float layer on the fake-quantized operands; zero for inputs outside a frozen input
    range) or the gradient tables (``grad="table"``).

    Ranges taken per call are the tensor's own: only the nudging's rounding can leave an
    extreme value a fraction of a step outside, which is not treated as clipping (the weights'
    ranges are always per call)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        y, xp = layer._labelled_forward(x, weight, bias)
        ctx.layer = layer
        ctx.xp = xp
        ctx.frozen = layer.input_range is not None   # only a fixed range clips
        ctx.save_for_backward(x, weight, bias)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable   # a second derivative is a clear error
    def backward(ctx, gy):
        x, weight, bias = ctx.saved_tensors
        layer = ctx.layer
        spec = layer._spec()
        wlast = layer._weight_last(weight.detach())
        wp = layer._weight_params(wlast.numpy(), spec)
        if layer.grad == "table":
            from ._torch_grad import table_backward

            gx, gw = table_backward(layer, x.detach(), weight.detach(), ctx.xp, wp, gy,
                                    ctx.frozen, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        else:
            xq, xmask = _fake_quant(x.detach(), ctx.xp)
            wq = layer._weight_last_inverse(_fake_quant(wlast, wp, wlast.dim() - 1)[0])
            gx, gw = layer._float_grads(xq, wq, gy, ctx.needs_input_grad[0],
                                        ctx.needs_input_grad[1])
            if gx is not None and ctx.frozen:
                gx = gx * xmask
        gb = None
        if bias is not None and ctx.needs_input_grad[2]:
            dims = [0] + list(range(2, gy.dim())) if isinstance(layer, ApproxConv2d) \
                else list(range(gy.dim() - 1))
            # an unbatched Linear input (in_features,): the bias gradient is gy itself
            # (sum(dim=[]) would sum over every axis)
            gb = gy.sum(dim=dims) if dims else gy.clone()
        if gx is not None and not ctx.needs_input_grad[0]:
            gx = None
        if gw is not None and not ctx.needs_input_grad[1]:
            gw = None
        return gx, gw, gb, None


def _conv_weight_last_inverse(self, t):
    return t.permute(3, 2, 0, 1)   # HWIO -> OIHW


def _linear_weight_last_inverse(self, t):
    return t.t()


ApproxConv2d._weight_last_inverse = _conv_weight_last_inverse
ApproxLinear._weight_last_inverse = _linear_weight_last_inverse


# ------------------------------------------------------------------------------ model level
def _float_only(model):
    """{name: reason} of the Conv2d / Linear modules of ``model`` that stay float whatever the
    multiplier: nn.MultiheadAttention's out_proj (F.multi_head_attention_forward reads its
    weight directly, its forward never runs) and subclasses with their own forward."""
    mha = {}
    for n, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention) and isinstance(mod.out_proj, nn.Linear):
            mha.setdefault(id(mod.out_proj), n)
    out = {}
    for n, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        if id(mod) in mha:
            out[n] = (f"the out_proj of nn.MultiheadAttention {mha[id(mod)] or '(the model)'!r}, "
                      f"whose weight F.multi_head_attention_forward uses directly")
        else:
            sub = _overrides_forward(mod)
            if sub is not None:
                base = "nn.Conv2d" if isinstance(mod, nn.Conv2d) else "nn.Linear"
                out[n] = f"its class {sub} overrides {base}'s forward"
    return out


def _compute_modules(model):
    """[(name, module)] of the Conv2d and Linear modules of ``model`` that take a multiplier,
    in named_modules() order: a module shared by several parents (or used twice) once,
    under its first name; those of :func:`_float_only` left out."""
    left = _float_only(model)
    return [(n, mod) for n, mod in model.named_modules()
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and n not in left]


def _aliases(model):
    """{other name: first name} of the modules registered under several names."""
    first, out = {}, {}
    for n, mod in model.named_modules(remove_duplicate=False):
        if id(mod) in first:
            if n != first[id(mod)]:
                out[n] = first[id(mod)]
        else:
            first[id(mod)] = n
    return out


def _name_error(what, unknown, names, model):
    """The ValueError for layer names that are not layers that take a multiplier."""
    notes = []
    aliases, left = ({}, {}) if model is None else (_aliases(model), _float_only(model))
    for k in unknown:
        if k in aliases:
            notes.append(f"{k!r} is the same module as {aliases[k]!r} (a shared module is "
                         f"named once, by its first name)")
        elif k in left:
            notes.append(f"{k!r} stays float: {left[k]}")
    note = f" ({'; '.join(notes)})" if notes else ""
    return ValueError(f"{what} names {unknown}, which are not Conv2d/Linear layers of the model "
                      f"that take a multiplier: expected names from {names}{note}")


def _warn_float_only(model):
    """One warning per kind of layer that approximate leaves float, naming the layers."""
    left = _float_only(model)
    mha = [n for n, r in left.items() if r.startswith("the out_proj")]
    subs = [f"{n!r} ({r.split()[2]})" for n, r in left.items() if n not in mha]
    if mha:
        owners = [n for n, mod in model.named_modules() if isinstance(mod, nn.MultiheadAttention)]
        warnings.warn(f"axkern.torch: the nn.MultiheadAttention layers {owners} compute their "
                      f"projections (in_proj and out_proj {mha}) in float: "
                      f"F.multi_head_attention_forward uses their weights directly, so they "
                      f"cannot be approximated", UserWarning, stacklevel=3)
    if subs:
        warnings.warn(f"axkern.torch: the layers {', '.join(subs)} stay float: their classes "
                      f"override the forward of nn.Conv2d / nn.Linear, which an approximate "
                      f"layer would drop", UserWarning, stacklevel=3)


def _per_layer(multiplier, names, what="multiplier", model=None):
    """{name: value} for every layer name from a single value, a mapping or a callable."""
    if isinstance(multiplier, Mapping):
        unknown = [k for k in multiplier if k not in names]
        if unknown:
            raise _name_error(f"{what} mapping", unknown, names, model)
        return {n: multiplier.get(n) for n in names}
    if callable(multiplier) and not isinstance(multiplier, Multiplier):
        return {n: multiplier(n) for n in names}
    return {n: multiplier for n in names}


def approximate(model, multiplier, *, quant="auto", tune=False, skip=(), inplace=False,
                grad="ste", backend="cpu"):
    """Replace every ``nn.Conv2d`` / ``nn.Linear`` of a module tree by its approximate twin.

    Parameters
    ----------
    model : torch.nn.Module
        Any module tree (residual blocks, custom ``forward``s, nested containers); a bare
        ``nn.Conv2d`` / ``nn.Linear`` is returned converted. A module registered in several
        places (or called twice by a forward) is one layer, named by its first name in
        ``named_modules()``, and every place gets the same approximate layer.
    multiplier : Multiplier, str, path, None, mapping or callable
        One multiplier (a shipped name or a path loads through :func:`axkern.load_multiplier`)
        for every layer, or a mapping / callable from the layer names of
        ``model.named_modules()`` to one (None: that layer computes exact float). Layers a
        mapping does not name compute exact float; a name that is not a Conv2d/Linear layer
        of the model is an error.
    quant, tune, grad, backend
        Settings of every layer (see :class:`ApproxConv2d`).
    skip : iterable of str
        Layer names to leave as they are (the original float modules).
    inplace : bool, default False
        Modify ``model`` itself instead of a deep copy.

    Returns
    -------
    torch.nn.Module
        The model with :class:`ApproxConv2d` / :class:`ApproxLinear` layers. Their parameters
        are the same tensors as those of the (copied) float layers.

    Warns
    -----
    UserWarning
        Naming the layers left in float: subclasses of ``nn.Conv2d`` / ``nn.Linear`` with
        their own ``forward``, and the projections of ``nn.MultiheadAttention``.

    Raises
    ------
    ValueError, TypeError
        Naming the layer: lazy layers not run yet, layers with a computed weight
        (parametrizations, weight_norm, spectral_norm, pruning), parameters that are not
        CPU float32, bad settings.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_backend(backend)
    found = _compute_modules(model)
    if not found:
        left = _float_only(model)
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Conv2d or nn.Linear "
                         f"layer: nothing to approximate"
                         + (f" (left float: {left})" if left else ""))
    names = [n for n, _ in found]
    skip = [skip] if isinstance(skip, str) else list(skip)
    bad = [s for s in skip if s not in names]
    if bad:
        raise _name_error("skip", bad, names, model)
    per = _per_layer(multiplier, names, model=model)
    loaded = {}
    for n in names:   # load each distinct multiplier once
        v = per[n]
        key = os.fspath(v) if isinstance(v, (str, os.PathLike)) else id(v)
        if key not in loaded:
            loaded[key] = _resolve_multiplier(v)
        per[n] = loaded[key]
    for n, mod in found:   # before the deep copy (which some of these cannot take)
        if n not in skip:
            try:
                _check_convertible(mod, "ApproxConv2d" if isinstance(mod, nn.Conv2d)
                                   else "ApproxLinear")
            except (TypeError, ValueError) as e:
                raise type(e)(f"layer {n!r}: {e}") from None
    _warn_float_only(model)
    if not inplace:
        model = copy.deepcopy(model)   # (keeps shared modules shared)
    new_of = {}   # id(float module) -> its approximate layer
    for n, mod in _compute_modules(model):
        if n in skip:
            continue
        cls = ApproxConv2d if isinstance(mod, nn.Conv2d) else ApproxLinear
        try:
            new = cls.from_float(mod, per[n], quant=quant, tune=tune, grad=grad, backend=backend)
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer {n!r}: {e}") from None
        new._axkern_name = n or type(mod).__name__
        if n == "":
            return new
        new_of[id(mod)] = new
    # every place that holds a converted module gets its (one) approximate layer
    for owner in list(model.modules()):
        for key, child in list(owner._modules.items()):
            if child is not None and id(child) in new_of:
                owner._modules[key] = new_of[id(child)]
    _keep_transformer_slow_path(model)
    return model


def _no_fast_path(module, args):
    """A forward pre-hook that does nothing: its presence turns off the fused fast path of
    ``nn.TransformerEncoderLayer`` (eval mode without gradients), which reads
    ``linear1.weight`` / ``linear2.weight`` directly instead of calling the layers."""
    return None


def _keep_transformer_slow_path(model):
    """Transformer encoders whose feed-forward layers are approximate must call them: the
    layers get :func:`_no_fast_path`, and ``nn.TransformerEncoder`` stops packing padded
    batches into nested tensors (``use_nested_tensor = False``; positions masked by
    ``src_key_padding_mask`` then hold computed values instead of zeros)."""
    for mod in model.modules():
        if isinstance(mod, nn.TransformerEncoderLayer) and any(
                isinstance(getattr(mod, n, None), _ApproxMixin) for n in ("linear1", "linear2")):
            if _no_fast_path not in mod._forward_pre_hooks.values():
                mod.register_forward_pre_hook(_no_fast_path)
    for mod in model.modules():
        if isinstance(mod, nn.TransformerEncoder) and any(
                _no_fast_path in layer._forward_pre_hooks.values() for layer in mod.layers):
            mod.use_nested_tensor = False


def layers(model, input_shape=None):
    """The Conv2d / Linear layers of a model: name, type, multiplier and MACs per sample.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int, optional
        Per-sample input shape (e.g. ``(3, 32, 32)``): the model is run once on a zero
        batch of one sample (``torch.no_grad``, eval mode, the training flags restored) to
        find each layer's input shape; ``macs`` is None for a layer that does not run in
        that forward (a training-only head), and counts every call of a layer that runs
        several times. Without it, the shapes recorded by the last forward pass of an
        approximate layer are used (``macs`` is None for a layer that has not run; a layer
        called several times counts its last call only).

    Returns
    -------
    list of dict
        ``name``, ``type`` (class name), ``multiplier`` (name or None), ``quant``,
        ``calibrated`` and ``macs`` (multiply-accumulates per sample) of each layer that
        takes a multiplier, in ``named_modules()`` order; a shared module once, under its
        first name.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = _compute_modules(model)
    if not found:
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Conv2d or nn.Linear layer")
    shapes = None
    if input_shape is not None:
        shapes = {}
        shape = tuple(int(s) for s in input_shape)

        def record(n, args, kwargs):
            # the input, passed by position or (nn.Conv2d's / nn.Linear's name) as `input`
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, torch.Tensor):
                shapes.setdefault(n, []).append(tuple(x.shape[1:]))

        handles = [mod.register_forward_pre_hook(
            lambda mod, args, kwargs, n=n: record(n, args, kwargs), with_kwargs=True)
            for n, mod in found]
        modes = {mod: mod.training for mod in model.modules()}
        try:
            model.eval()
            with torch.no_grad():
                p = next(model.parameters(), None)
                model(torch.zeros((1, *shape), dtype=torch.float32 if p is None else p.dtype))
        finally:
            for h in handles:
                h.remove()
            for mod, flag in modes.items():
                mod.training = flag
    out = []
    for n, mod in found:
        if shapes is not None:
            calls = shapes.get(n, [])
        else:
            last = getattr(mod, "_axkern_last_shape", None)
            calls = [] if last is None else [last]
        count = ApproxConv2d.macs if isinstance(mod, nn.Conv2d) else ApproxLinear.macs
        macs = sum(count(mod, shp) for shp in calls) if calls else None
        m = getattr(mod, "multiplier", None)
        out.append({"name": n, "type": type(mod).__name__,
                    "multiplier": None if m is None else m.name,
                    "quant": getattr(mod, "quant", None) if m is not None else None,
                    "calibrated": bool(getattr(mod, "calibrated", False)),
                    "macs": macs})
    return out


# ------------------------------------------------------------------------------ calibration
_METHODS = ("max", "percentile", "mse")


# A calibration histogram grows to at most this many times num_bins bins a side before its
# bins are merged (see _RangeObserver).
_MAX_GROWTH = 16


class _RangeObserver:
    """Running min/max and a histogram of one layer's inputs.

    The histogram covers ``[-A, A]`` in ``2 * half`` bins of a width set by the first batch
    (``A / num_bins``); when a later batch reaches beyond ``A`` the histogram grows by whole
    bins, so counts are never split. A batch that would need more than ``_MAX_GROWTH *
    num_bins`` bins a side (a first batch of a tiny range, then a wide one) first merges
    every ``f`` neighbouring bins into one (counts summed; ``f`` the whole factor that brings
    the new range back to about ``num_bins`` a side). ``|x|`` folds it at 0.
    """

    def __init__(self, num_bins, histogram):
        self.num_bins = num_bins
        self.histogram = histogram
        self.batches = 0
        self.lo = self.hi = None
        self.width = None
        self.half = 0
        self.counts = None

    def observe(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"calibration input must be a float tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.device.type != "cpu":
            raise ValueError(f"calibration input is on device {x.device}: axkern's PyTorch "
                             f"layers compute on CPU tensors only; move the model and its "
                             f"inputs to the CPU with .cpu()")
        x = x.detach()
        if x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("a calibration batch contains NaN or Inf: expected finite values")
        self.batches += 1
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        if not self.histogram:
            return
        amax = max(-lo, hi)
        if self.width is None:
            self.width = (amax if amax > 0 else 1.0) / self.num_bins
            self.half = self.num_bins
            self.counts = torch.zeros(2 * self.half, dtype=torch.float64)
        need = int(np.ceil(amax / self.width))
        if need > _MAX_GROWTH * self.num_bins:
            self._merge(-(-need // self.num_bins))
            need = int(np.ceil(amax / self.width))
        if need > self.half:
            grow = need - self.half
            self.counts = F.pad(self.counts, (grow, grow))
            self.half = need
        top = self.half * self.width
        self.counts += torch.histc(x.to(torch.float64).reshape(-1), bins=2 * self.half,
                                   min=-top, max=top)

    def _merge(self, f):
        """Every ``f`` neighbouring bins into one: bin ``i`` (``-half <= i < half``, covering
        ``[i w, (i + 1) w)``) into bin ``floor(i / f)`` of width ``f w``, so the bins still
        meet at 0 and each count lands in the bin that covers its old one."""
        half = -(-self.half // f)
        old = np.arange(-self.half, self.half)
        merged = np.bincount(np.floor_divide(old, f) + half, weights=self.counts.numpy(),
                             minlength=2 * half)
        self.counts = torch.from_numpy(merged)
        self.half, self.width = half, self.width * f

    # --- ranges
    def _edges(self):
        return (np.arange(-self.half, self.half + 1, dtype=np.float64)) * self.width

    def signed_amax(self, method, percentile, bits):
        if method == "max":
            return max(-self.lo, self.hi)
        counts = self.counts.numpy()
        folded = counts[self.half:] + counts[:self.half][::-1]       # |x| in [0, A]
        edges = np.arange(self.half + 1, dtype=np.float64) * self.width
        if method == "percentile":
            cdf = np.cumsum(folded) / folded.sum()
            i = int(np.searchsorted(cdf, percentile / 100.0))
            return min(float(edges[min(i, self.half - 1) + 1]), max(-self.lo, self.hi))
        # mse: the amax (a bin edge) whose fake quantization of the histogram's bin centres
        # has the least squared error (as pytorch-quantization searches, from 1/16 of range)
        centres = (edges[:-1] + edges[1:]) / 2
        qmax = (1 << (bits - 1)) - 1
        cands = _candidates(edges[max(1, self.half // 16):])
        used = folded > 0                       # empty bins add nothing to the error
        centres, folded = centres[used], folded[used]
        s = cands[:, None] / qmax
        fq = np.clip(np.rint(centres[None, :] / s), -qmax, qmax) * s
        err = ((fq - centres[None, :]) ** 2 * folded[None, :]).sum(axis=1)
        return min(float(cands[int(np.argmin(err))]), max(-self.lo, self.hi))

    def unsigned_range(self, method, percentile, bits):
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if method == "max":
            return lo, hi
        counts = self.counts.numpy()
        edges = self._edges()
        if method == "percentile":
            cdf = np.cumsum(counts) / counts.sum()
            i_lo = int(np.searchsorted(cdf, (100.0 - percentile) / 100.0))
            i_hi = int(np.searchsorted(cdf, percentile / 100.0))
            return (min(max(float(edges[i_lo]), lo), 0.0),
                    max(min(float(edges[min(i_hi, len(counts) - 1) + 1]), hi), 0.0))
        # mse: the upper end (a bin edge above 0) with the least squared error of the nudged
        # unsigned fake quantization over the bin centres; the lower end stays min(x.min(), 0)
        centres = (edges[:-1] + edges[1:]) / 2
        qmax = float((1 << bits) - 1)
        start = self.half + max(1, self.half // 16)
        cands = _candidates(edges[start:])
        if cands.size == 0 or hi <= 0:
            return lo, hi
        used = counts > 0                       # empty bins add nothing to the error
        centres, counts = centres[used], counts[used]
        scale = (cands - lo) / qmax
        zp = np.clip(np.floor(-lo / scale + 0.5), 0, qmax)
        nmin, nmax = -zp * scale, (qmax - zp) * scale
        c = np.clip(centres[None, :], nmin[:, None], nmax[:, None])
        fq = np.floor((c - nmin[:, None]) / scale[:, None] + 0.5) * scale[:, None] + nmin[:, None]
        err = ((fq - centres[None, :]) ** 2 * counts[None, :]).sum(axis=1)
        return lo, min(float(cands[int(np.argmin(err))]), hi)


def _candidates(edges, most=512):
    """At most ``most`` evenly spaced bin edges (the MSE search's candidate ranges)."""
    if edges.size <= most:
        return edges
    return edges[np.unique(np.linspace(0, edges.size - 1, most).round().astype(np.int64))]


@contextlib.contextmanager
def calibrate(model, method="max", *, percentile=99.99, num_bins=2048):
    """Freeze the input range of every approximate layer from calibration batches.

    Use as ``with axkern.torch.calibrate(model): model(batch) ...``. Inside the block the
    approximate layers compute in float and record their inputs; on leaving it, each
    layer's input range is frozen (the ``input_range`` buffer, saved in ``state_dict``):

    - signed multipliers (AdaPT / pytorch-quantization): ``amax`` from ``method``, symmetric
      8-bit codes ``clamp(round_half_to_even(x / (amax / 127)), -127, 127)``; a layer with
      ``quant="auto"`` also takes its weights per output channel (``amax`` of each filter
      at each call);
    - unsigned multipliers: the nudged asymmetric range of :mod:`axkern.quant` over
      ``[min(lo, 0), max(hi, 0)]``; the weights keep the layer's per-call mode.

    Parameters
    ----------
    model : torch.nn.Module
        Holding :class:`ApproxConv2d` / :class:`ApproxLinear` layers (see :func:`approximate`).
    method : {"max", "percentile", "mse"}
        ``"max"``: the extreme values seen. ``"percentile"``: the ``percentile`` of ``|x|``
        (signed; of ``x`` at both ends for unsigned) from a histogram. ``"mse"``: the range
        whose fake quantization of the histogram has the least squared error.
    percentile : float, default 99.99
    num_bins : int, default 2048
        Histogram bins over ``[0, amax]`` of the first batch (more as the range grows).

    Raises
    ------
    ValueError
        When a layer with a multiplier saw no batch (nothing is frozen then), or the model
        has no approximate layer. (A layer left in float that saw no batch stays
        uncalibrated.)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in _METHODS:
        raise ValueError(f"unknown calibration method {method!r}: expected one of {_METHODS}")
    if not (isinstance(percentile, numbers.Real) and 50 < percentile <= 100):
        raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral) or num_bins < 16:
        raise ValueError(f"num_bins must be an integer >= 16, got {num_bins!r}")
    targets = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, _ApproxMixin)]
    if not targets:
        raise ValueError("the model has no ApproxConv2d/ApproxLinear layer to calibrate: "
                         "call axkern.torch.approximate(model, multiplier) first")
    observers = {}
    for n, mod in targets:
        if getattr(mod, "_axkern_observer", None) is not None:
            raise RuntimeError(f"layer {n!r} is already being calibrated")
        observers[n] = mod._axkern_observer = _RangeObserver(int(num_bins), method != "max")
    try:
        yield model
    finally:
        for _, mod in targets:
            mod._axkern_observer = None
    # (not reached when the block raised: nothing is frozen then)
    # a layer left in float (multiplier None) that did not run (a training-only head) needs
    # no range: it stays uncalibrated; one with a multiplier would silently take per-call
    # ranges whenever it does run
    idle = {n for n, _ in targets if observers[n].batches == 0}
    unseen = [n for n, mod in targets if n in idle and mod.multiplier is not None]
    if unseen:
        raise ValueError(f"calibrate saw no batch for the layers {unseen}: run the model on "
                         f"calibration data inside the `with calibrate(model):` block (layers "
                         f"that do not run in eval mode, such as training-only heads, can be "
                         f"left out with approximate(..., skip=[...]) or a mapping to None)")
    for n, mod in targets:
        if n in idle:
            continue
        obs, m = observers[n], mod.multiplier
        bits = 8 if m is None else m.bits
        if m is not None and m.signed:
            amax = obs.signed_amax(method, percentile, bits)
            mod.set_input_range(-amax, amax)
        else:
            mod.set_input_range(*obs.unsigned_range(method, percentile, bits))


# ------------------------------------------------------------------------------ survey
_UNSET = object()
_LAYOUTS = ("NCHW", "NHWC")


def _first_output(out):
    """The prediction of a module's forward: the output itself, or the first of a tuple or
    list of outputs (a main head before auxiliary ones), as the ONNX engine takes the graph's
    first output."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model's forward returned {type(out).__name__}: the survey needs a "
                        f"tensor of scores, or a tuple or list whose first item is one")
    return out


class TorchSurveyModel:
    """A PyTorch module seen through the survey's model protocol (``axkern.survey``).

    Made by :func:`as_survey_model`: a copy of the module whose Conv2d / Linear layers are
    approximate layers (exact float until configured), named as in ``named_modules()``.
    Picklable (``axkern survey --jobs N`` sends it to spawned processes).
    """

    def __init__(self, module, input_layout="NCHW", name=None, metadata=None):
        self.module = module
        self.input_layout = input_layout
        self.name = name
        self.metadata = dict(metadata or {})

    @property
    def compute_layers(self):
        """Names of the layers that take a multiplier, in ``named_modules()`` order."""
        return [n for n, mod in self.module.named_modules() if isinstance(mod, _ApproxMixin)]

    def _layer(self, name):
        mod = dict(self.module.named_modules()).get(name)
        if not isinstance(mod, _ApproxMixin):
            raise ValueError(f"{name!r} is not a Conv2d/Linear layer of the model: expected one "
                             f"of {self.compute_layers}")
        return mod

    def configure(self, layers=None, *, multiplier=_UNSET, quant=_UNSET, tune=_UNSET):
        """Set multiplier, quantization and/or tuning of some layers (all when omitted)."""
        names = self.compute_layers if layers is None else (
            [layers] if isinstance(layers, str) else list(layers))
        targets = [self._layer(n) for n in names]
        if multiplier is not _UNSET:
            multiplier = _resolve_multiplier(multiplier)
        for mod in targets:
            if quant is not _UNSET:
                mod.quant = "auto" if quant is None else quant
            if tune is not _UNSET:
                mod.tune = tune
            if multiplier is not _UNSET:
                mod.multiplier = multiplier
        return self

    def settings(self):
        """``{layer: (multiplier name or None, quant, tune)}``."""
        return {n: (None if mod.multiplier is None else mod.multiplier.name, mod.quant, mod.tune)
                for n, mod in self.module.named_modules() if isinstance(mod, _ApproxMixin)}

    def _tensor(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = torch.from_numpy(x)
        if self.input_layout == "NHWC":
            if t.dim() != 4:
                raise ValueError(f"input_layout='NHWC' needs 4-D inputs, got shape {x.shape}")
            t = t.permute(0, 3, 1, 2)   # a channels_last view, no copy
        return t

    def forward(self, x, *, batch_size=None, backend="auto", num_threads=None):
        """The module's output (NumPy float32) on NumPy inputs, in eval mode, no gradients."""
        if isinstance(backend, str) and backend == "auto":
            backend = "cpu"
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"the input must hold at least one sample, got shape {x.shape}")
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, numbers.Integral) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        step = x.shape[0] if batch_size is None else int(batch_size)
        approx = [mod for mod in self.module.modules() if isinstance(mod, _ApproxMixin)]
        saved = [(mod.backend, mod.num_threads) for mod in approx]
        modes = {mod: mod.training for mod in self.module.modules()}
        outs = []
        torch_threads = torch.get_num_threads()
        try:
            for mod in approx:
                mod.backend, mod.num_threads = backend, num_threads
            if num_threads is not None:   # the float layers too (survey jobs share the cores)
                torch.set_num_threads(int(num_threads))
            self.module.eval()
            with torch.no_grad():
                for i in range(0, x.shape[0], step):
                    outs.append(_first_output(self.module(self._tensor(x[i:i + step]))).numpy())
        finally:
            torch.set_num_threads(torch_threads)
            for mod, (be, nt) in zip(approx, saved):
                mod.backend, mod.num_threads = be, nt
            for mod, flag in modes.items():
                mod.training = flag
        return np.concatenate(outs, axis=0)

    def accuracy(self, x, y, *, batch_size=None, backend="auto", num_threads=None):
        """Share of samples (0..1) whose argmax output equals the label."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != np.shape(x)[0]:
            raise ValueError(f"labels must be a vector with one entry per sample "
                             f"({np.shape(x)[0]}), got shape {y.shape}")
        out = self.forward(x, batch_size=batch_size, backend=backend, num_threads=num_threads)
        return float(np.mean(np.argmax(out.reshape(out.shape[0], -1), axis=-1) == y))

    def layer_macs(self, input_shape):
        """``{layer: multiply-accumulates per sample}`` for a per-sample input shape given in
        ``input_layout`` (what ``axkern search`` weighs multiplier costs with). A layer that
        does not run in the eval-mode forward (a training-only head) counts 0 MACs, with a
        warning naming it; a layer that runs several times counts every call."""
        shape = tuple(int(v) for v in input_shape)
        if self.input_layout == "NHWC":
            if len(shape) != 3:
                raise ValueError(f"input_layout='NHWC' needs a per-sample shape (H, W, C), got "
                                 f"{shape}")
            shape = (shape[2], shape[0], shape[1])
        rows = layers(self.module, input_shape=shape)
        idle = [r["name"] for r in rows if r["macs"] is None]
        if idle:
            warnings.warn(f"axkern.torch: the layers {idle} do not run in the model's eval-mode "
                          f"forward (training-only heads, or modules whose weights another "
                          f"layer reads directly): 0 MACs per sample; their multiplier does not "
                          f"change the model's output", UserWarning, stacklevel=2)
        return {r["name"]: 0 if r["macs"] is None else int(r["macs"]) for r in rows}

    def copy(self):
        """An independent copy (the module deep-copied, settings included)."""
        return TorchSurveyModel(copy.deepcopy(self.module), self.input_layout, self.name,
                                copy.deepcopy(self.metadata))

    def fingerprint(self):
        """Bytes identifying the module's structure, weights and buffers and the input
        layout (``axkern search --resume`` compares them). Not the pickle: PyTorch's pickles
        name each storage by its memory address, so two pickles of one module differ."""
        h = hashlib.sha256()
        h.update(f"{self.input_layout}\0{self.module!r}\0".encode())
        for key, t in self.module.state_dict(keep_vars=False).items():
            if not isinstance(t, torch.Tensor):   # a module's extra state: any picklable value
                h.update(f"{key}\0".encode() + pickle.dumps(t, protocol=4) + b"\0")
                continue
            t = t.detach().cpu()
            if t.layout != torch.strided:         # sparse and other layouts: their values
                t = t.to_dense()
            t = t.contiguous()
            h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.digest()


def as_survey_model(module, *, input_layout="NCHW", name=None, metadata=None):
    """A PyTorch module as a model of ``axkern.survey`` / ``axkern.survey.evaluate``.

    Parameters
    ----------
    module : torch.nn.Module
        Any module with Conv2d / Linear layers (approximate ones keep their settings and
        calibration). It is deep-copied: the original is not changed.
    input_layout : {"NCHW", "NHWC"}
        Layout of the NumPy inputs the survey passes (NHWC inputs become channels_last
        tensors, without a copy).
    name : str, optional
        The model's name in the survey's table (default: the module's class name).
    metadata : dict, optional
        As for :class:`axkern.nn.Sequential` (``{"signed": True}`` picks signed multipliers).

    Returns
    -------
    TorchSurveyModel
        Layers named as in ``module.named_modules()``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    layout = _check_format(input_layout)
    found = _compute_modules(module)
    if not found:
        raise ValueError(f"the model ({type(module).__name__}) has no nn.Conv2d or nn.Linear "
                         f"layer: nothing to approximate")
    plain = {n for n, mod in found if not isinstance(mod, _ApproxMixin)}
    mod = copy.deepcopy(module)
    if plain:
        mod = approximate(mod, None, skip=[n for n, _ in found if n not in plain], inplace=True)
    else:
        _warn_float_only(module)
    mod.eval()
    return TorchSurveyModel(mod, layout, name or type(module).__name__, metadata)


def evaluate(model, multiplier, data, *, tune=False, assign=None, quant=None, limit=None,
             batch_size=None, input_layout="NCHW", backend="auto", num_threads=None):
    """Held-out accuracy of a PyTorch model under a multiplier (:func:`axkern.survey.evaluate`).

    Parameters
    ----------
    model : torch.nn.Module
    multiplier : Multiplier, str, path or None
        In every Conv2d / Linear layer (None: the float model).
    data : (x, y) or path to an .npz
        Inputs in ``input_layout`` and integer labels.
    tune, assign, quant, limit, batch_size, backend, num_threads
        As for :func:`axkern.survey.evaluate` (``assign`` names layers as ``named_modules()``).
    input_layout : {"NCHW", "NHWC"}

    Returns
    -------
    dict
        ``accuracy`` and ``float_accuracy`` (percent), ``samples``, ``data``, ``settings``.
    """
    from .survey import evaluate as _evaluate

    return _evaluate(as_survey_model(model, input_layout=input_layout), multiplier, tune=tune,
                     assign=assign, data=data, limit=limit, quant=quant, batch_size=batch_size,
                     backend=backend, num_threads=num_threads)
