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
from collections.abc import Mapping
import numbers
import os

import numpy as np

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError('axkern.torch needs PyTorch, which is not installed: '
                      'pip install "axkern[torch]"') from e

from .conv import _check_format, make_params, resolve_quant
from .lut import Multiplier
from .quant import QuantParams, QuantSpec, symmetric_params, tf_quant_params

__all__ = ["ApproxConv2d", "ApproxLinear", "approximate", "layers", "calibrate",
           "as_survey_model", "evaluate", "TorchSurveyModel", "gradient_tables"]

_GRADS = ("ste", "table")


# ------------------------------------------------------------------------------ helpers
def _resolve_multiplier(m):
    if m is None or isinstance(m, Multiplier):
        return m
    if isinstance(m, (str, os.PathLike)):
        from .library import load_multiplier

        return load_multiplier(m)
    raise TypeError(f"multiplier must be an axkern.Multiplier, a shipped name, a path or None, "
                    f"got {type(m).__name__}")


def _layer_label(layer):
    name = getattr(layer, "_axkern_name", None)
    return f"{type(layer).__name__} {name!r}" if name else type(layer).__name__


def _check_tensor(t, what, layer):
    """A CPU float32 tensor, or a clear error (never a silent copy or conversion)."""
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


def _range_params(lo, hi, mode, m):
    """QuantParams of a tensor whose min is ``lo`` and max ``hi``, as axkern computes them."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("the layer input contains NaN or Inf: expected finite values")
    return make_params(np.array([lo, hi], np.float32), mode, m)


def _fake_quant(t, p, channel_dim=None):
    """``(dequantized codes, mask of unclipped entries)`` of tensor ``t`` under QuantParams
    ``p``, in float32 with the rounding of :mod:`axkern.quant` (per-channel along
    ``channel_dim``)."""
    shape = [1] * t.dim()
    if p.per_channel:
        shape[channel_dim] = -1
    s = torch.as_tensor(np.asarray(p.scale, np.float32)).reshape(shape)
    z = torch.as_tensor(np.asarray(p.zero_point, np.float32)).reshape(shape)
    if p.signed:
        q = torch.round(t / s) + z
        lo, hi = float(p.qmin), float(p.qmax)
        mask = (q >= lo) & (q <= hi)
        q = q.clamp(lo, hi)
        return (q - z) * s, mask
    nmin = (float(p.qmin) - z) * s
    nmax = (float(p.qmax) - z) * s
    mask = (t >= nmin) & (t <= nmax)
    c = torch.minimum(torch.maximum(t, nmin), nmax)
    q = torch.floor((c - nmin) * (1.0 / s) + 0.5).clamp(max=float(p.qmax - p.qmin)) + p.qmin
    return (q - z) * s, mask


# ------------------------------------------------------------------------------ layers
class _ApproxMixin:
    """What ApproxConv2d and ApproxLinear share: the settings, the frozen input range, the
    input checks and the autograd plumbing."""

    def _init_approx(self, multiplier, quant, tune, grad, backend):
        # A None buffer is left out of state_dict: an uncalibrated layer has exactly the
        # parent's keys (see _load_from_state_dict for the calibrated case).
        self.register_buffer("input_range", None)
        self._multiplier = None
        self.quant = quant
        self.tune = tune
        self.grad = grad
        self.backend = backend
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
        self._multiplier = m

    @property
    def quant(self):
        """"auto", "tfapprox", "asymmetric", "symmetric" or "symmetric-per-channel"."""
        return self._quant

    @quant.setter
    def quant(self, value):
        modes = ("auto", "tfapprox", "asymmetric", "symmetric", "symmetric-per-channel")
        if not isinstance(value, str) or value not in modes:
            raise ValueError(f"quant must be one of {modes}, got {value!r}")
        m = getattr(self, "_multiplier", None)
        if m is not None:
            resolve_quant(value, m)
        self._quant = value

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
    def calibrated(self):
        """Whether the input range is frozen (by :func:`calibrate` or a loaded state_dict)."""
        return self.input_range is not None

    def _spec(self):
        return resolve_quant(self._quant, self._multiplier)

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
        lo, hi = torch.aminmax(x.detach())
        return _range_params(np.float32(lo.item()), np.float32(hi.item()), spec.input, m)

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
        key = prefix + "input_range"
        if key in state_dict:
            if self.input_range is None:
                self.input_range = torch.zeros(2, dtype=torch.float32, device=self.weight.device)
        else:
            self.input_range = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _check_params(self):
        _check_tensor(self.weight, "the weight", self)
        if self.bias is not None:
            _check_tensor(self.bias, "the bias", self)

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
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            self._axkern_last_shape = tuple(x.shape[1:])
        obs = getattr(self, "_axkern_observer", None)
        if obs is not None:
            obs(x)

    @classmethod
    def _copy_from(cls, new, module):
        # the same Parameter objects: the float model's optimizer state stays valid
        new.weight = module.weight
        new.bias = module.bias
        new.train(module.training)
        return new


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
        oh = (H + pt + pb - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        ow = (W + pl + pr - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        return int(oh * ow * self.out_channels * (self.in_channels // self.groups)
                   * self.kernel_size[0] * self.kernel_size[1])

    def forward(self, x):
        self._observe(x)
        if self._multiplier is None:
            return super().forward(x)
        _check_tensor(x, "the input", self)
        self._check_params()
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"{_layer_label(self)} expects a (N, C, H, W) or (C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        if self.padding_mode != "zeros":
            # exactly nn.Conv2d's own order: pad with the mode, then a convolution without padding
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad or
                                        (self.bias is not None and self.bias.requires_grad)):
            y = _ApproxFunction.apply(x, self.weight, self.bias, self)
        else:
            y = self._approx_forward(x, self.weight, self.bias)[0]
        return y.squeeze(0) if unbatched else y

    def _approx_forward(self, x, weight, bias):
        """(output tensor, input QuantParams) of the approximate convolution."""
        from .conv import axconv2d

        m = self._multiplier
        spec = self._spec()
        xp = self._input_params(x, spec)
        N, C, H, W = x.shape
        if C != self.in_channels:
            raise ValueError(f"{_layer_label(self)} expects {self.in_channels} input channels, "
                             f"got input of shape {tuple(x.shape)}")
        pads = self._explicit_padding()
        oh = (H + pads[0][0] + pads[0][1] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) \
            // self.stride[0] + 1
        ow = (W + pads[1][0] + pads[1][1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) \
            // self.stride[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{_layer_label(self)}: the input of shape {tuple(x.shape)} is "
                             f"smaller than the (dilated) kernel")
        w = weight.detach().numpy()                       # OIHW, a view
        b = None if bias is None else bias.detach().numpy()
        kw = dict(bias=b, stride=self.stride, padding=pads, dilation=self.dilation,
                  groups=self.groups, quant=QuantSpec(xp, spec.weight), tune=self.tune,
                  backend=self.backend)
        xd = x.detach()
        if not xd.is_contiguous() and xd.is_contiguous(memory_format=torch.channels_last):
            # channels_last memory is NHWC: hand it over as such and return channels_last
            out = torch.empty((N, oh, ow, self.out_channels), dtype=torch.float32)
            axconv2d(xd.permute(0, 2, 3, 1).numpy(), w.transpose(2, 3, 1, 0), m,
                     data_format="NHWC", out=out.numpy(), **kw)
            y = out.permute(0, 3, 1, 2)
        else:
            xd = xd.contiguous()   # a copy only for inputs in neither layout
            out = torch.empty((N, self.out_channels, oh, ow), dtype=torch.float32)
            axconv2d(xd.numpy(), w, m, data_format="NCHW", out=out.numpy(), **kw)
            y = out
        return y, xp

    def _float_op(self, x, w, b):
        """The float layer on (possibly fake-quantized) operands, as F.conv2d computes it."""
        (pt, pb), (pl, pr) = self._explicit_padding()
        if pt != pb or pl != pr:
            x = F.pad(x, (pl, pr, pt, pb))
            pt = pl = 0
        return F.conv2d(x, w, b, self.stride, (pt, pl), self.dilation, self.groups)

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

    def forward(self, x):
        self._observe(x)
        if self._multiplier is None:
            return super().forward(x)
        _check_tensor(x, "the input", self)
        self._check_params()
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{_layer_label(self)} expects inputs of shape (..., "
                             f"{self.in_features}), got shape {tuple(x.shape)}")
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad or
                                        (self.bias is not None and self.bias.requires_grad)):
            return _ApproxFunction.apply(x, self.weight, self.bias, self)
        return self._approx_forward(x, self.weight, self.bias)[0]

    def _approx_forward(self, x, weight, bias):
        from .matmul import axdense

        m = self._multiplier
        spec = self._spec()
        xp = self._input_params(x, spec)
        w = weight.detach().numpy().T                    # (in, out), a view
        b = None if bias is None else bias.detach().numpy()
        out = torch.empty((*x.shape[:-1], self.out_features), dtype=torch.float32)
        axdense(x.detach().numpy(), w, m, b, quant=QuantSpec(xp, spec.weight), tune=self.tune,
                backend=self.backend, out=out.numpy())
        return out, xp

    def _float_op(self, x, w, b):
        return F.linear(x, w, b)

    def _weight_last(self, w):
        return w.t()   # (out, in) -> (in, out) (channel axis last)


class _ApproxFunction(torch.autograd.Function):
    """Forward: the approximate layer. Backward: the straight-through estimator (gradients of
    the float layer on the fake-quantized operands, zero where an operand was clipped) or the
    gradient tables (``grad="table"``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        y, xp = layer._approx_forward(x, weight, bias)
        ctx.layer = layer
        ctx.xp = xp
        ctx.save_for_backward(x, weight, bias)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, bias = ctx.saved_tensors
        layer = ctx.layer
        spec = layer._spec()
        wlast = layer._weight_last(weight.detach())
        wp = layer._weight_params(wlast.numpy(), spec)
        if layer.grad == "table":
            from ._torch_grad import table_backward

            gx, gw = table_backward(layer, x.detach(), weight.detach(), ctx.xp, wp, gy)
        else:
            xq, xmask = _fake_quant(x.detach(), ctx.xp)
            wq_last, wmask_last = _fake_quant(wlast, wp, channel_dim=wlast.dim() - 1)
            wq = layer._weight_last_inverse(wq_last)
            wmask = layer._weight_last_inverse(wmask_last)
            with torch.enable_grad():
                xv = xq.detach().requires_grad_(ctx.needs_input_grad[0])
                wv = wq.detach().requires_grad_(ctx.needs_input_grad[1])
                yv = layer._float_op(xv, wv, None)
                wanted = [t for t, need in ((xv, ctx.needs_input_grad[0]),
                                            (wv, ctx.needs_input_grad[1])) if need]
                grads = list(torch.autograd.grad(yv, wanted, gy)) if wanted else []
            gx = grads.pop(0) * xmask if ctx.needs_input_grad[0] else None
            gw = grads.pop(0) * wmask if ctx.needs_input_grad[1] else None
        gb = None
        if bias is not None and ctx.needs_input_grad[2]:
            dims = [0] + list(range(2, gy.dim())) if isinstance(layer, ApproxConv2d) \
                else list(range(gy.dim() - 1))
            gb = gy.sum(dim=dims)
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
def _compute_modules(model):
    """[(name, module)] of the Conv2d and Linear modules of ``model`` (named_modules order)."""
    return [(n, mod) for n, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]


def _set_submodule(model, name, new):
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    if isinstance(owner, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        owner[int(child)] = new
    else:
        setattr(owner, child, new)


def _per_layer(multiplier, names, what="multiplier"):
    """{name: value} for every layer name from a single value, a mapping or a callable."""
    if isinstance(multiplier, Mapping):
        unknown = [k for k in multiplier if k not in names]
        if unknown:
            raise ValueError(f"{what} mapping names {unknown}, which are not Conv2d/Linear layers "
                             f"of the model: expected names from {names}")
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
        ``nn.Conv2d`` / ``nn.Linear`` is returned converted.
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
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = _compute_modules(model)
    if not found:
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Conv2d or nn.Linear "
                         f"layer: nothing to approximate")
    names = [n for n, _ in found]
    skip = [skip] if isinstance(skip, str) else list(skip)
    bad = [s for s in skip if s not in names]
    if bad:
        raise ValueError(f"skip names {bad}, which are not Conv2d/Linear layers of the model: "
                         f"expected names from {names}")
    per = _per_layer(multiplier, names)
    loaded = {}
    for n in names:   # load each distinct multiplier once
        v = per[n]
        key = os.fspath(v) if isinstance(v, (str, os.PathLike)) else id(v)
        if key not in loaded:
            loaded[key] = _resolve_multiplier(v)
        per[n] = loaded[key]
    if not inplace:
        model = copy.deepcopy(model)
    for n, mod in _compute_modules(model):
        if n in skip:
            continue
        cls = ApproxConv2d if isinstance(mod, nn.Conv2d) else ApproxLinear
        new = cls.from_float(mod, per[n], quant=quant, tune=tune, grad=grad, backend=backend)
        new._axkern_name = n or type(mod).__name__
        if n == "":
            return new
        _set_submodule(model, n, new)
    return model


def layers(model, input_shape=None):
    """The Conv2d / Linear layers of a model: name, type, multiplier and MACs per sample.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int, optional
        Per-sample input shape (e.g. ``(3, 32, 32)``): the model is run once on a zero
        batch of one sample (``torch.no_grad``, eval mode, the training flags restored) to
        find each layer's input shape. Without it, the shapes recorded by the last forward
        pass of an approximate layer are used (``macs`` is None for a layer that has not run).

    Returns
    -------
    list of dict
        ``name``, ``type`` (class name), ``multiplier`` (name or None), ``quant``,
        ``calibrated`` and ``macs`` (multiply-accumulates per sample) of each layer, in
        ``named_modules()`` order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = _compute_modules(model)
    if not found:
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Conv2d or nn.Linear layer")
    shapes = {}
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        handles = [mod.register_forward_pre_hook(
            lambda mod, args, n=n: shapes.__setitem__(n, tuple(args[0].shape[1:]))) for n, mod in found]
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
        shp = shapes.get(n, getattr(mod, "_axkern_last_shape", None))
        macs = None
        if shp is not None:
            macs = (ApproxConv2d.macs if isinstance(mod, nn.Conv2d) else ApproxLinear.macs)(mod, shp)
        m = getattr(mod, "multiplier", None)
        out.append({"name": n, "type": type(mod).__name__,
                    "multiplier": None if m is None else m.name,
                    "quant": getattr(mod, "quant", None) if m is not None else None,
                    "calibrated": bool(getattr(mod, "calibrated", False)),
                    "macs": macs})
    return out
