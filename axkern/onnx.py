"""ONNX graphs in the survey: a small executor whose Conv, Gemm and MatMul nodes run through
approximate multipliers.

:func:`load_model` reads an ``.onnx`` file (exported from PyTorch, Keras/TensorFlow or any
other framework) and returns an :class:`OnnxModel`, which has the model protocol of
:mod:`axkern.survey` (``compute_layers``, ``configure``, ``settings``, ``accuracy``, ``copy``,
``name``, ``metadata``), so ``axkern survey --model net.onnx`` and ``axkern eval net.onnx``
work as with the ``.npz`` models.

The engine is an interpreter written in NumPy for a documented subset of the ONNX operators
(:data:`SUPPORTED_OPS`); the ``onnx`` package only parses the file. Every ``Conv`` (2-D), every
``Gemm`` whose ``B`` operand is a stored weight and every ``MatMul`` whose second operand is a
stored 2-D weight is an *approximable layer*: with a multiplier it runs through
:func:`axkern.axconv2d` (``data_format="NCHW"``) / :func:`axkern.axdense` /
:func:`axkern.axmatmul`, with ``multiplier=None`` in float32. Everything else runs in float32
NumPy. A ``BatchNormalization`` that directly follows such a Conv or Gemm (whose output has no
other consumer) is folded into its weights and bias at load, as :mod:`axkern.nn` folds, and so
is a per-channel constant ``Mul``/``Add`` after a Conv (tf2onnx's form of such a BatchNorm);
any other BatchNormalization is a per-channel affine step.

Layers are named by their ONNX node name; a node without a name (or whose name is shared
with another node) is named by its first output's name.

Everything that can be checked without data is checked at load: an op outside the subset, a
weight given as a graph input instead of an initializer, unsupported attributes (``ceil_mode``,
dilated pooling, ...), more than one data input. The data's shape is checked against the
graph's declared input shape at each run (the batch axis is free).
"""
from __future__ import annotations

import os

import numpy as np

from .backends import conv_output_size
from .nn import _resolve_multiplier

__all__ = ["load_model", "OnnxModel", "SUPPORTED_OPS", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "axkern[onnx]"'
_UNSET = object()
_COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        from .survey import MissingDependency

        raise MissingDependency("reading ONNX models needs the optional package 'onnx', which "
                                f"is not installed: {INSTALL_HINT}") from None
    return onnx


# ------------------------------------------------------------------------------ graph pieces
class _Node:
    """One ONNX node as plain Python data (picklable, no protobuf objects)."""

    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "label")

    def __init__(self, op, name, inputs, outputs, attrs):
        self.op, self.name = op, name
        self.inputs, self.outputs, self.attrs = list(inputs), list(outputs), dict(attrs)
        self.label = name or (outputs[0] if outputs else op)

    def __repr__(self):
        return f"{self.op} node {self.label!r}"


class _Layer:
    """An approximable node: Conv (OIHW weight) or Gemm/MatMul ((K, N) weight)."""

    __slots__ = ("name", "op", "input", "output", "weight", "bias", "extra", "stride", "pads",
                 "auto_pad", "dilation", "groups", "trans_a", "multiplier", "quant", "tune")

    def __init__(self, name, op, input, output, weight, bias):
        self.name, self.op, self.input, self.output = name, op, input, output
        self.weight, self.bias = weight, bias
        self.extra = None          # Gemm: beta * C when C is not one value per output column
        self.stride = self.dilation = (1, 1)
        self.pads, self.auto_pad, self.groups, self.trans_a = (0, 0, 0, 0), "NOTSET", 1, False
        self.multiplier, self.quant, self.tune = None, "auto", False

    def setting(self):
        return (None if self.multiplier is None else self.multiplier.name, self.quant, self.tune)


def _ints(v):
    return tuple(int(u) for u in v)


def _onnx_dtype_to_numpy(onnx, code):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(code)))
    except Exception:
        return None


def _attr_value(onnx, node_label, op, a):
    """An attribute as plain Python / NumPy data."""
    from onnx import numpy_helper

    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, (list, tuple)):
        if v and isinstance(v[0], bytes):
            return [s.decode("utf-8", "replace") for s in v]
        if v and isinstance(v[0], onnx.TensorProto):
            return [numpy_helper.to_array(t) for t in v]
        if v and not isinstance(v[0], (int, float)):
            raise ValueError(f"{op} node {node_label!r}: attribute {a.name!r} holds a subgraph or "
                             "another kind of value the ONNX engine does not support")
        return list(v)
    if isinstance(v, (int, float)):
        return v
    raise ValueError(f"{op} node {node_label!r}: attribute {a.name!r} holds a subgraph or "
                     "another kind of value the ONNX engine does not support")


# ------------------------------------------------------------------------------ float ops
def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == np.float64 else a


def _opt(ins, i):
    return ins[i] if len(ins) > i else None


def _axes(node, ins, pos, opset, since):
    """Axes from the attribute (opset < since) or from input ``pos``."""
    if opset >= since:
        a = _opt(ins, pos)
        return None if a is None else [int(v) for v in np.asarray(a).ravel()]
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def _same_pads(size, kernel, stride, dilation, upper):
    out = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        o = -(-n // s)
        total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if upper else (big, small))
    return out


def _spatial_pads(node, auto_pad, pads, hw, kernel, stride, dilation):
    """((top, bottom), (left, right)) for a 2-D Conv/pooling node on an input of size hw."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return tuple(_same_pads(hw, kernel, stride, dilation, auto_pad == "SAME_UPPER"))
    if auto_pad == "VALID":
        return ((0, 0), (0, 0))
    t, l, b, r = pads
    return ((t, b), (l, r))


def _windows(xp, kernel, stride, dilation, out_hw):
    """(N, C, OH, OW, KH, KW) strided view of a padded NCHW array (no copy)."""
    n, c = xp.shape[:2]
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, out_hw[0], out_hw[1], kernel[0], kernel[1]),
        strides=(s[0], s[1], s[2] * stride[0], s[3] * stride[1], s[2] * dilation[0],
                 s[3] * dilation[1]), writeable=False)


def _out_size(hw, pads, kernel, stride, dilation):
    (t, b), (l, r) = pads
    return conv_output_size(hw[0], hw[1], kernel[0], kernel[1], stride, (t, b, l, r), dilation)


def _conv_float(x, w, bias, stride, pads, dilation, groups):
    """Float32 NCHW convolution with an OIHW filter: im2col per group, then one BLAS GEMM.

    Computed in NHWC memory order (contiguous channels make the im2col copy cheap); the result
    is an NCHW view of NHWC memory, which NumPy's elementwise ops keep and which
    :func:`axkern.axconv2d` turns back into NHWC without a copy.
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = _out_size((h, wd), pads, (kh, kw), stride, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(f"the dilated {kh}x{kw} filter does not fit the padded {h}x{wd} input")
    xh = x.transpose(0, 2, 3, 1)
    if any(map(any, pads)):
        xh = np.pad(xh, ((0, 0),) + tuple(pads) + ((0, 0),))
    s = xh.strides
    win = np.lib.stride_tricks.as_strided(
        xh, shape=(n, oh, ow, kh, kw, c),
        strides=(s[0], s[1] * stride[0], s[2] * stride[1], s[1] * dilation[0], s[2] * dilation[1],
                 s[3]), writeable=False)
    wt = w.transpose(2, 3, 1, 0)  # HWIO
    og = o // groups
    out = np.empty((n, oh, ow, o), dtype=np.float32)
    for g in range(groups):
        cols = win[..., g * cg:(g + 1) * cg].reshape(n * oh * ow, kh * kw * cg)
        wg = wt[..., g * og:(g + 1) * og].reshape(kh * kw * cg, og)
        out[..., g * og:(g + 1) * og] = (cols @ wg).reshape(n, oh, ow, og)
    if bias is not None:
        out += bias
    return out.transpose(0, 3, 1, 2)


def _pool(node, x, kind):
    if x.ndim != 4:
        raise ValueError(f"only 2-D pooling (4-D NCHW input) is supported, got shape {x.shape}")
    a = node.attrs
    kernel = _ints(a["kernel_shape"])
    stride = _ints(a.get("strides", (1, 1)))
    dil = _ints(a.get("dilations", (1, 1)))
    pads = _spatial_pads(node, a.get("auto_pad", "NOTSET"), _ints(a.get("pads", (0, 0, 0, 0))),
                         x.shape[2:], kernel, stride, dil)
    oh, ow = _out_size(x.shape[2:], pads, kernel, stride, dil)
    if oh < 1 or ow < 1:
        raise ValueError(f"the {kernel[0]}x{kernel[1]} window does not fit the input {x.shape}")
    padded = any(map(any, pads))
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads), constant_values=fill) if padded else x
    win = _windows(xp, kernel, stride, dil, (oh, ow))
    if kind == "max":
        return win.max(axis=(4, 5)).astype(x.dtype)
    total = win.sum(axis=(4, 5), dtype=np.float32)
    if not padded or a.get("count_include_pad", 0):
        return total / np.float32(kernel[0] * kernel[1])
    ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), ((0, 0), (0, 0)) + tuple(pads))
    count = _windows(ones, kernel, stride, dil, (oh, ow)).sum(axis=(4, 5), dtype=np.float32)
    return total / count


def _int_div(a, b):
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))


def _softmax(x, axis, opset, log=False):
    if opset < 13:
        # before opset 13 the input is coerced to 2-D at `axis` and normalized over the rest
        shape = x.shape
        axis = axis % x.ndim if x.ndim else 0
        x2 = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
        return _softmax(x2, -1, 13, log).reshape(shape)
    m = x - x.max(axis=axis, keepdims=True)
    e = np.exp(m)
    s = e.sum(axis=axis, keepdims=True)
    return (m - np.log(s)) if log else e / s


def _reduce(node, ins, opset, fn, since):
    x = ins[0]
    axes = _axes(node, ins, 1, opset, since)
    keep = bool(node.attrs.get("keepdims", 1))
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0) and opset >= since:
            return x
        axes = list(range(x.ndim))
    return fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=keep)


def _reshape(node, x, shape):
    shape = [int(v) for v in np.asarray(shape).ravel()]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _flatten(x, axis):
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for very negative x: y = 0
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(x.dtype)


def _unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _slice(node, ins, opset):
    x = ins[0]
    if opset >= 10:
        starts, ends = np.asarray(ins[1]).ravel(), np.asarray(ins[2]).ravel()
        axes = _opt(ins, 3)
        steps = _opt(ins, 4)
    else:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).ravel()]
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        n = x.shape[a]
        s, e = int(max(min(int(s), 2 ** 62), -2 ** 62)), int(max(min(int(e), 2 ** 62), -2 ** 62))
        if st < 0 and e < -n:
            e = None  # "before the first element" when walking backwards
        index[a % x.ndim] = slice(s, e, st)
    return x[tuple(index)]


def _pad(node, ins, opset):
    x = ins[0]
    a = node.attrs
    if opset >= 11:
        pads = [int(v) for v in np.asarray(ins[1]).ravel()]
        value = _opt(ins, 2)
        value = 0.0 if value is None else np.asarray(value).ravel()[0]
        axes = _opt(ins, 3)
    else:
        pads, value, axes = list(a["pads"]), a.get("value", 0.0), None
    axes = list(range(x.ndim)) if axes is None else [int(v) % x.ndim for v in np.asarray(axes).ravel()]
    k = len(axes)
    if len(pads) != 2 * k:
        raise ValueError(f"pads has {len(pads)} values, expected {2 * k}")
    if any(p < 0 for p in pads):
        raise ValueError(f"negative pads (cropping) are not supported, got {pads}")
    width = [(0, 0)] * x.ndim
    for i, ax in enumerate(axes):
        width[ax] = (pads[i], pads[i + k])
    mode = a.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, width, constant_values=value)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _gemm_float(node, a, b, c):
    at = node.attrs
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = a @ b
    alpha = np.float32(at.get("alpha", 1.0))
    if alpha != 1:
        y = y * alpha
    if c is not None:
        y = y + np.float32(at.get("beta", 1.0)) * c
    return y


def _batchnorm(x, scale, b, mean, var, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (np.float32(1) / np.sqrt(var.astype(np.float32) + np.float32(eps))).astype(np.float32)
    return ((x - mean.reshape(shape)) * inv.reshape(shape) * scale.reshape(shape)
            + b.reshape(shape)).astype(np.float32)


def _clip(node, ins, opset):
    x = ins[0]
    if opset >= 11:
        lo, hi = _opt(ins, 1), _opt(ins, 2)
    else:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, dtype=x.dtype))
    return x


def _split(node, ins, opset):
    x = ins[0]
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    split = _opt(ins, 1) if opset >= 13 else node.attrs.get("split")
    n_out = len(node.outputs)
    if split is None:
        n = x.shape[axis]
        size = -(-n // n_out)
        split = [min(size, n - i * size) for i in range(n_out)]
    idx = np.cumsum([int(v) for v in np.asarray(split).ravel()])[:-1]
    return np.split(x, idx, axis=axis)


def _single(fn):
    return lambda node, ins, opset: [fn(node, ins, opset)]


def _elementwise(fn):
    return _single(lambda node, ins, opset: _f32(fn(*ins)))


def _binary_div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return _int_div(a, b)
    return np.divide(a, b)


def _constant(node, ins, opset):
    a = node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            v = a[key]
            if key == "value":
                return [np.asarray(v)]
            dtype = np.float32 if "float" in key else np.int64
            return [np.asarray(v, dtype=dtype)]
    raise ValueError("Constant node without a numeric value (sparse or string constants are "
                     "not supported)")


def _shape(node, ins, opset):
    s = np.array(ins[0].shape, dtype=np.int64)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return [s[start:end]]


def _expand(node, ins, opset):
    x, shape = ins[0], [int(v) for v in np.asarray(ins[1]).ravel()]
    return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))]


def _constant_of_shape(node, ins, opset):
    v = node.attrs.get("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).ravel()
    return [np.full([int(s) for s in np.asarray(ins[0]).ravel()], v[0], dtype=v.dtype)]


def _gather(node, ins, opset):
    x, idx = ins[0], np.asarray(ins[1]).astype(np.int64)
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    return [np.take(x, idx, axis=axis)]


def _dropout(node, ins, opset):
    out = [ins[0]]
    if len(node.outputs) > 1:
        out.append(np.ones(ins[0].shape, dtype=bool))
    return out


# op type -> function(node, input arrays, opset) -> list of output arrays (float ops only;
# Conv, Gemm and MatMul are handled by OnnxModel._run_node)
_OPS = {
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_binary_div),
    "Pow": _elementwise(np.power),
    "Max": _elementwise(lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs))),
    "Min": _elementwise(lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs))),
    "Sum": _elementwise(lambda *xs: np.add.reduce(np.broadcast_arrays(*xs))),
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Sqrt": _elementwise(np.sqrt),
    "Exp": _elementwise(np.exp),
    "Reciprocal": _elementwise(lambda x: np.float32(1) / x),
    "Relu": _elementwise(lambda x: np.maximum(x, np.zeros((), x.dtype))),
    "LeakyRelu": _single(lambda n, i, o: np.where(i[0] >= 0, i[0], i[0] * np.float32(
        n.attrs.get("alpha", 0.01))).astype(i[0].dtype)),
    "Sigmoid": _elementwise(lambda x: _sigmoid(x)),
    "Tanh": _elementwise(np.tanh),
    "HardSigmoid": _single(lambda n, i, o: np.clip(
        i[0] * np.float32(n.attrs.get("alpha", 0.2)) + np.float32(n.attrs.get("beta", 0.5)),
        0, 1).astype(i[0].dtype)),
    "HardSwish": _elementwise(lambda x: (x * np.clip(x / np.float32(6) + np.float32(0.5), 0, 1)
                                         ).astype(x.dtype)),
    "Clip": _single(_clip),
    "Softmax": _single(lambda n, i, o: _softmax(i[0], int(n.attrs.get("axis", -1 if o >= 13 else 1)), o)),
    "LogSoftmax": _single(lambda n, i, o: _softmax(i[0], int(n.attrs.get("axis", -1 if o >= 13 else 1)), o,
                                                   log=True)),
    "MaxPool": _single(lambda n, i, o: _pool(n, i[0], "max")),
    "AveragePool": _single(lambda n, i, o: _pool(n, i[0], "avg")),
    "GlobalAveragePool": _single(lambda n, i, o: i[0].mean(
        axis=tuple(range(2, i[0].ndim)), keepdims=True, dtype=np.float32)),
    "GlobalMaxPool": _single(lambda n, i, o: i[0].max(axis=tuple(range(2, i[0].ndim)), keepdims=True)),
    "ReduceMean": _single(lambda n, i, o: _reduce(n, i, o, lambda x, **k: x.mean(
        dtype=np.float32 if x.dtype == np.float32 else None, **k), 18)),
    "ReduceSum": _single(lambda n, i, o: _reduce(n, i, o, np.sum, 13)),
    "ReduceMax": _single(lambda n, i, o: _reduce(n, i, o, np.max, 18)),
    "ReduceMin": _single(lambda n, i, o: _reduce(n, i, o, np.min, 18)),
    "BatchNormalization": _single(lambda n, i, o: _batchnorm(*i[:5], n.attrs.get("epsilon", 1e-5))),
    "Concat": _single(lambda n, i, o: np.concatenate(i, axis=int(n.attrs["axis"]))),
    "Split": _split,
    "Flatten": _single(lambda n, i, o: _flatten(i[0], int(n.attrs.get("axis", 1)))),
    "Reshape": _single(lambda n, i, o: _reshape(n, i[0], i[1] if o >= 5 else n.attrs["shape"])),
    "Transpose": _single(lambda n, i, o: np.transpose(i[0], n.attrs.get("perm"))),
    "Squeeze": _single(lambda n, i, o: (lambda ax: np.squeeze(i[0]) if ax is None else np.squeeze(
        i[0], axis=tuple(a % i[0].ndim for a in ax)))(_axes(n, i, 1, o, 13))),
    "Unsqueeze": _single(lambda n, i, o: _unsqueeze(i[0], _axes(n, i, 1, o, 13))),
    "Identity": _single(lambda n, i, o: i[0]),
    "Dropout": _dropout,
    "Constant": _constant,
    "Shape": _shape,
    "Size": _single(lambda n, i, o: np.array(i[0].size, dtype=np.int64)),
    "Gather": _gather,
    "Cast": _single(lambda n, i, o: np.asarray(i[0]).astype(n.attrs["_dtype"])),
    "Slice": _single(_slice),
    "Pad": _single(_pad),
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Range": _single(lambda n, i, o: np.arange(i[0], i[1], i[2]).astype(np.asarray(i[0]).dtype)),
}

#: ONNX operator types the engine runs (default domain).
SUPPORTED_OPS = tuple(sorted(set(_OPS) | set(_COMPUTE_OPS)))


def _check_node(node, opset):
    """Attribute checks made at load, so that a model fails before any data is read."""
    a, op = node.attrs, node.op

    def refuse(what):
        raise ValueError(f"{op} node {node.label!r}: {what} is not supported by axkern's ONNX "
                         "engine")

    if op in ("Conv", "MaxPool", "AveragePool"):
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
            refuse(f"auto_pad={a.get('auto_pad')!r}")
        if op != "Conv":
            if len(a.get("kernel_shape", ())) != 2:
                refuse(f"kernel_shape {a.get('kernel_shape')} (only 2-D pooling)")
            if a.get("ceil_mode", 0):
                refuse("ceil_mode=1 (export with ceil_mode=False)")
            if any(d != 1 for d in a.get("dilations", (1, 1))):
                refuse(f"dilations={a.get('dilations')} in pooling")
            if op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
                refuse("the Indices output of MaxPool")
    elif op == "BatchNormalization":
        if a.get("training_mode", 0) or any(o for o in node.outputs[1:]):
            refuse("training mode (export the model in inference mode, model.eval())")
    elif op == "Cast":
        if a.get("_dtype") is None:
            refuse(f"cast to ONNX type {a.get('to')}")
    elif op == "Pad":
        if a.get("mode", "constant") not in ("constant", "reflect", "edge", "wrap"):
            refuse(f"mode={a.get('mode')!r}")
    elif op == "Concat":
        if "axis" not in a:
            raise ValueError(f"Concat node {node.label!r} has no axis attribute")
    elif op in ("Reshape",) and opset < 5 and "shape" not in a:
        raise ValueError(f"Reshape node {node.label!r} has no shape attribute")


# ------------------------------------------------------------------------------ the model
class _Graph:
    """What all copies of one model share: the steps, the constants and the layer geometry."""

    def __init__(self, steps, consts, layer_order, input_name, input_dims, output_name,
                 opset, last_use, graph_outputs):
        self.steps = steps                  # list of _Node in topological order
        self.consts = consts                # {value name: ndarray}, read-only
        self.layer_order = layer_order      # approximable layer names in graph order
        self.input_name, self.input_dims = input_name, input_dims
        self.output_name, self.opset = output_name, opset
        self.last_use = last_use            # {value name: index of the last step reading it}
        self.graph_outputs = graph_outputs


class OnnxModel:
    """An ONNX graph with approximable Conv / Gemm / MatMul layers (see the module docstring).

    Made by :func:`load_model`. Follows the model protocol of :mod:`axkern.survey`.

    Attributes
    ----------
    name : str
        The file name without its extension.
    metadata : dict
        ``format``, ``file``, ``producer``, ``opset``, ``input`` (name and declared shape) and
        the file's own ``metadata_props`` (values decoded as JSON where they are JSON).
    compute_layers : list of str
        The approximable layers, in graph order.
    """

    def __init__(self, graph, layers, name, metadata):
        self._graph = graph
        self._layers = layers               # {name: _Layer}
        self.name = name
        self.metadata = metadata

    # ----------------------------------------------------------------- protocol
    @property
    def compute_layers(self):
        return list(self._graph.layer_order)

    @property
    def input_shape(self):
        """The declared input shape; a str for a symbolic dimension, None for an unknown one."""
        return tuple(self._graph.input_dims)

    def copy(self):
        """An independent copy (per-layer settings included; the read-only arrays are shared)."""
        layers = {}
        for k, l in self._layers.items():
            c = _Layer.__new__(_Layer)
            for s in _Layer.__slots__:
                setattr(c, s, getattr(l, s))
            layers[k] = c
        import copy as _copy

        return OnnxModel(self._graph, layers, self.name, _copy.deepcopy(self.metadata))

    def configure(self, layers=None, *, multiplier=_UNSET, quant=_UNSET, tune=_UNSET):
        """Set the multiplier, quantization and/or tuning of approximable layers.

        Parameters
        ----------
        layers : str or list of str, optional
            Layer (node) names; all approximable layers when omitted.
        multiplier : Multiplier, str, path or None, optional
            None computes the layers in float32.
        quant, tune : optional
            Passed on to :func:`axkern.axconv2d` / :func:`axkern.axdense` / :func:`axkern.axmatmul`.

        Returns
        -------
        OnnxModel
            ``self``.
        """
        names = self.compute_layers if layers is None else (
            [layers] if isinstance(layers, str) else list(layers))
        for n in names:
            if n not in self._layers:
                raise ValueError(f"{n!r} is not an approximable layer (Conv, Gemm or MatMul with a "
                                 f"stored weight) of the ONNX model: expected one of "
                                 f"{self.compute_layers}")
        if multiplier is not _UNSET:
            multiplier = _resolve_multiplier(multiplier)
        for n in names:
            layer = self._layers[n]
            if multiplier is not _UNSET:
                layer.multiplier = multiplier
            if quant is not _UNSET:
                layer.quant = quant
            if tune is not _UNSET:
                layer.tune = tune
        return self

    def settings(self):
        """``{layer: (multiplier name or None, quant, tune)}`` in graph order."""
        return {n: self._layers[n].setting() for n in self._graph.layer_order}

    def layer_info(self, name):
        """Geometry of one approximable layer: a dict with ``op``, ``input`` and ``output``
        (value names), ``weight`` (OIHW for Conv, (K, N) for Gemm/MatMul, BatchNorm folded),
        ``bias`` and, for Conv, ``stride``, ``pads`` (top, left, bottom, right), ``auto_pad``,
        ``dilation``, ``groups``."""
        if name not in self._layers:
            self.configure([name])  # raises the error listing the valid names
        l = self._layers[name]
        d = {"op": l.op, "input": l.input, "output": l.output, "weight": l.weight, "bias": l.bias}
        if l.op == "Conv":
            d.update(stride=l.stride, pads=l.pads, auto_pad=l.auto_pad, dilation=l.dilation,
                     groups=l.groups)
        return d

    def layer_macs(self, input_shape):
        """``{layer: multiply-accumulates per sample}`` for a per-sample input shape in the
        model's own layout (what ``axkern search`` weighs multiplier costs with): each layer's
        output size, from one float pass over a zero sample, times its reduction length."""
        net = self.copy().configure(multiplier=None)
        x = np.zeros((1,) + tuple(int(v) for v in input_shape), np.float32)
        vals = net.trace(x, [self._layers[n].output for n in self.compute_layers])
        out = {}
        for n in self.compute_layers:
            l = self._layers[n]
            # Conv weights are OIHW (I = C / groups), Gemm/MatMul weights (K, N)
            k = int(np.prod(l.weight.shape[1:])) if l.op == "Conv" else int(l.weight.shape[0])
            out[n] = int(np.prod(vals[l.output].shape[1:])) * k
        return out

    # ----------------------------------------------------------------- inference
    def _check_input(self, x):
        x = np.asarray(x)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.floating)
                                     or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"model input must be a numeric array, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        dims = self._graph.input_dims
        shown = tuple("N" if i == 0 and not isinstance(d, int) else ("?" if d is None else d)
                      for i, d in enumerate(dims))
        if dims:
            mismatch = x.ndim != len(dims) or any(
                isinstance(d, int) and d != s for d, s in zip(dims[1:], x.shape[1:]))
            if mismatch:
                raise ValueError(
                    f"the ONNX model's input {self._graph.input_name!r} has shape {shown}, the "
                    f"data has shape {x.shape}: give the data in the model's own layout (NCHW "
                    "for PyTorch exports, NHWC for Keras/TensorFlow ones)")
        return x

    def forward(self, x, *, batch_size=None, backend="auto", num_threads=None):
        """Run the graph on a batch; returns the graph's (first) output as an ndarray.

        Parameters
        ----------
        x : array_like
            Input in the model's own layout (checked against the declared shape; the batch
            axis is free).
        batch_size : int, optional
            Evaluate in chunks of this many samples (quantization ranges are per chunk).
        backend, num_threads
            Passed to the kernels.
        """
        x = self._check_input(x)
        if batch_size is None or x.shape[0] <= batch_size:
            return self._run(x, backend, num_threads)[self._graph.output_name]
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return np.concatenate([self._run(x[i:i + batch_size], backend, num_threads)[
            self._graph.output_name] for i in range(0, x.shape[0], batch_size)], axis=0)

    __call__ = forward

    def trace(self, x, names=None, *, backend="auto", num_threads=None):
        """Every value the graph computes on ``x`` (or only ``names``): ``{value name: array}``.

        For checking a layer against :func:`axkern.axconv2d` on the same input, for instance.
        """
        x = self._check_input(x)
        vals = self._run(x, backend, num_threads, keep=True)
        if names is None:
            return {k: v for k, v in vals.items() if k not in self._graph.consts}
        missing = [n for n in names if n not in vals]
        if missing:
            raise ValueError(f"no values named {missing} in the graph")
        return {n: vals[n] for n in names}

    def predict(self, x, **kw):
        """Class index (argmax of the output over its non-batch axes) of each sample."""
        out = np.asarray(self.forward(x, **kw))
        n = np.shape(x)[0]
        if out.ndim < 1 or out.shape[0] != n:
            raise ValueError(f"the model's output {self._graph.output_name!r} has shape {out.shape}: "
                             f"expected one row per sample ({n})")
        return np.argmax(out.reshape(n, -1), axis=-1)

    def accuracy(self, x, y, *, batch_size=None, backend="auto", num_threads=None):
        """Share of samples (0..1) whose predicted class equals ``y``."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != np.shape(x)[0]:
            raise ValueError(f"labels must be a vector with one entry per sample "
                             f"({np.shape(x)[0]}), got shape {y.shape}")
        if y.shape[0] == 0:
            raise ValueError("accuracy of an empty set is undefined")
        pred = self.predict(x, batch_size=batch_size, backend=backend, num_threads=num_threads)
        return float(np.mean(pred == y))

    def _run(self, x, backend, num_threads, keep=False):
        g = self._graph
        vals = dict(g.consts)
        vals[g.input_name] = x
        for i, node in enumerate(g.steps):
            ins = [vals[n] if n else None for n in node.inputs]
            try:
                if node.op in _COMPUTE_OPS:
                    outs = self._run_compute(node, ins, backend, num_threads)
                else:
                    outs = _OPS[node.op](node, ins, g.opset)
            except (ValueError, IndexError, TypeError, KeyError) as e:
                shapes = [None if v is None else tuple(np.shape(v)) for v in ins]
                fixed = g.input_dims[0] if g.input_dims else None
                hint = (f" (the model was exported for batches of {fixed}: export it with a dynamic "
                        "batch axis to evaluate other batch sizes)"
                        if isinstance(fixed, int) and fixed != x.shape[0] else "")
                raise ValueError(f"{node.op} node {node.label!r} failed on inputs of shapes "
                                 f"{shapes}: {e}{hint}") from None
            for name, v in zip(node.outputs, outs):
                if name:
                    vals[name] = v
            if not keep:
                for n in set(node.inputs):
                    if n and g.last_use.get(n) == i and n not in g.graph_outputs \
                            and n not in g.consts:
                        del vals[n]
        return vals

    def _run_compute(self, node, ins, backend, num_threads):
        layer = self._layers.get(node.label) if node.attrs.get("_layer") else None
        if layer is None:  # a float product of two computed operands (or a constant first one)
            if node.op == "MatMul":
                return [_f32(np.matmul(ins[0], ins[1]))]
            if node.op == "Gemm":
                return [_f32(_gemm_float(node, ins[0], ins[1], _opt(ins, 2)))]
            raise ValueError("a Conv whose weight is computed at run time is not supported")
        x = ins[0]
        m = layer.multiplier
        if layer.op == "Conv":
            if x.ndim != 4:
                raise ValueError(f"expects a 4-D NCHW input, got shape {x.shape}")
            cin = layer.weight.shape[1] * layer.groups
            if x.shape[1] != cin:
                raise ValueError(f"expects {cin} input channels (NCHW, axis 1), got input of "
                                 f"shape {x.shape}")
            kernel = layer.weight.shape[2:]
            pads = _spatial_pads(node, layer.auto_pad, layer.pads, x.shape[2:], kernel,
                                 layer.stride, layer.dilation)
            if m is None:
                return [_conv_float(x, layer.weight, layer.bias, layer.stride, pads,
                                    layer.dilation, layer.groups)]
            from .conv import axconv2d

            return [np.asarray(axconv2d(
                x, layer.weight, m, bias=layer.bias, stride=layer.stride, padding=pads,
                dilation=layer.dilation, groups=layer.groups, data_format="NCHW",
                quant=layer.quant, tune=layer.tune, backend=backend, num_threads=num_threads),
                dtype=np.float32)]
        if layer.trans_a:
            x = x.T
        if m is None:
            y = x @ layer.weight
            if layer.bias is not None:
                y = y + layer.bias
        elif layer.op == "Gemm":
            from .matmul import axdense

            if x.ndim != 2:
                raise ValueError(f"Gemm expects a 2-D input, got shape {x.shape}")
            y = axdense(x, layer.weight, m, bias=layer.bias, quant=layer.quant, tune=layer.tune,
                        backend=backend, num_threads=num_threads)
        else:
            from .matmul import axmatmul

            y = axmatmul(x, layer.weight, m, quant=layer.quant, tune=layer.tune,
                         backend=backend, num_threads=num_threads)
        y = np.asarray(y, dtype=np.float32)
        if layer.extra is not None:
            y = (y + layer.extra).astype(np.float32)
        return [y]

    # ----------------------------------------------------------------- report
    def summary(self):
        """A readable table of the approximable layers: name, op, weight shape, setting."""
        rows = [("layer", "op", "weight", "arithmetic")]
        for n in self._graph.layer_order:
            l = self._layers[n]
            setting = "float" if l.multiplier is None else (
                l.multiplier.name + (" tuned" if l.tune is not False else "") + f" ({l.quant})")
            rows.append((n, l.op, "x".join(map(str, l.weight.shape)), setting))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def __repr__(self):
        return f"OnnxModel(name={self.name!r}, layers={self.compute_layers})"


# ------------------------------------------------------------------------------ loading
def _read(path):
    onnx = _import_onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model file not found: {path}")
    try:
        proto = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    # protobuf parses many byte strings as an (almost) empty message: require a real graph
    if proto.ir_version < 1 or not proto.graph.node or not proto.graph.output:
        raise ValueError(f"{path}: not an ONNX model (no graph with nodes and outputs; "
                         f"ir_version {proto.ir_version})")
    return onnx, proto


def load_model(path):
    """Read an ONNX model for the survey.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.onnx`` file with the weights stored as initializers.

    Returns
    -------
    OnnxModel

    Raises
    ------
    ValueError
        The file is not ONNX; an op is outside :data:`SUPPORTED_OPS` (the message names every
        such op and node); a weight is a graph input rather than an initializer; the model has
        more than one data input; an attribute is not supported (e.g. ``ceil_mode=1``).
    """
    onnx, proto = _read(path)
    from onnx import numpy_helper

    path = os.fspath(path)
    g = proto.graph
    opset = None
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = int(imp.version)
    if opset is None:
        raise ValueError(f"{path}: the model imports no version of the default ONNX operator "
                         "set")

    consts = {}
    for t in g.initializer:
        consts[t.name] = numpy_helper.to_array(t)
    data_inputs = [i for i in g.input if i.name not in consts]

    # nodes as plain data; every unsupported op is reported at once
    nodes, unsupported = [], []
    for p in g.node:
        label = p.name or (p.output[0] if p.output else p.op_type)
        if p.domain not in ("", "ai.onnx") or p.op_type not in SUPPORTED_OPS:
            op = p.op_type if p.domain in ("", "ai.onnx") else f"{p.domain}::{p.op_type}"
            unsupported.append(f"{op} (node {label!r})")
            continue
        attrs = {a.name: _attr_value(onnx, label, p.op_type, a) for a in p.attribute}
        if p.op_type == "Cast":
            attrs["_dtype"] = _onnx_dtype_to_numpy(onnx, attrs.get("to", 0))
        nodes.append(_Node(p.op_type, p.name, p.input, p.output, attrs))
    if unsupported:
        raise ValueError(f"{path}: the ONNX engine does not support "
                         f"{'this op' if len(unsupported) == 1 else 'these ops'}: "
                         f"{', '.join(unsupported)}. Supported ops: {', '.join(SUPPORTED_OPS)}")

    # weights given as graph inputs (exported without their values) cannot be approximated
    data_names = {i.name for i in data_inputs}
    weight_slots = {"Conv": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2, 3, 4)}
    as_inputs = []
    for n in nodes:
        for k in weight_slots.get(n.op, ()):
            if len(n.inputs) > k and n.inputs[k] in data_names:
                as_inputs.append(f"{n.inputs[k]!r} ({n.op} node {n.label!r})")
    if as_inputs:
        raise ValueError(f"{path}: the model's weights are graph inputs rather than initializers: "
                         f"{', '.join(as_inputs)}. Export with the weights stored in the file "
                         "(torch.onnx.export(..., export_params=True), the default)")
    if len(data_inputs) != 1:
        raise ValueError(f"{path}: the model has {len(data_inputs)} data inputs "
                         f"{[i.name for i in data_inputs]}: axkern evaluates models with exactly "
                         "one input (the data); weights must be initializers")
    inp = data_inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                            onnx.TensorProto.FLOAT16):
        raise ValueError(f"{path}: the model's input {inp.name!r} has element type "
                         f"{onnx.TensorProto.DataType.Name(tt.elem_type)}: a float input is "
                         "expected")
    dims = []
    if tt.HasField("shape"):
        for d in tt.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))

    steps = _toposort(nodes, set(consts) | {inp.name}, path)
    for n in steps:
        _check_node(n, opset)
    output_name = g.output[0].name
    graph_outputs = {o.name for o in g.output}

    # fold the nodes whose inputs are all constants (Constant, Identity of an initializer,
    # shape arithmetic on stored shapes) once, at load
    live = []
    for n in steps:
        if n.op not in _COMPUTE_OPS and all((not i) or i in consts for i in n.inputs) \
                and not any(o in graph_outputs for o in n.outputs):
            try:
                outs = _OPS[n.op](n, [consts[i] if i else None for i in n.inputs], opset)
            except Exception as e:
                raise ValueError(f"{path}: {n.op} node {n.label!r} on stored constants failed: "
                                 f"{e}") from None
            for name, v in zip(n.outputs, outs):
                if name:
                    consts[name] = np.asarray(v)
            continue
        live.append(n)
    steps = live

    # approximable layers
    consumers = {}
    for n in steps:
        for i in n.inputs:
            if i:
                consumers.setdefault(i, []).append(n)
    labels = [n.name for n in steps if n.name]
    layers, producer = {}, {}
    for n in steps:
        if n.op not in _COMPUTE_OPS:
            continue
        layer = _make_layer(n, consts, path)
        if layer is None:
            continue
        if not n.name or labels.count(n.name) > 1:
            n.label = n.outputs[0]
        layer.name = n.label
        if layer.name in layers:
            raise ValueError(f"{path}: two approximable nodes are both named {layer.name!r}")
        n.attrs["_layer"] = True
        layers[layer.name] = layer
        producer[n.outputs[0]] = (n, layer)

    # A BatchNormalization directly after a Conv or Gemm layer whose output feeds nothing else
    # is folded into it, and so is a per-channel constant Mul and/or Add after a Conv (the form
    # tf2onnx gives a BatchNorm after a convolution with bias). Folds accumulate in float64.
    folded, exact = set(), {}
    for n in steps:
        hit = next((i for i in n.inputs[:2] if i in producer), None)
        if n.op not in ("BatchNormalization", "Mul", "Add") or hit is None:
            continue
        src, layer = producer[hit]
        if len(consumers.get(hit, [])) != 1 or hit in graph_outputs or layer.extra is not None \
                or layer.op == "MatMul":
            continue
        cout = layer.weight.shape[0] if layer.op == "Conv" else layer.weight.shape[1]
        if n.op == "BatchNormalization":
            params = n.inputs[1:5]
            if n.inputs[0] != hit or not all(p in consts for p in params):
                continue
            gamma, beta, mean, var = (np.asarray(consts[p], dtype=np.float64).ravel()
                                      for p in params)
            if gamma.shape[0] != cout:
                raise ValueError(f"{path}: BatchNormalization node {n.label!r} has "
                                 f"{gamma.shape[0]} channels but {layer.op} node {layer.name!r} "
                                 f"produces {cout}")
            scale = gamma / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
            shift = beta - mean * scale
        else:
            other = n.inputs[1] if n.inputs[0] == hit else n.inputs[0]
            if layer.op != "Conv" or other not in consts:
                continue
            c = _per_channel(consts[other], cout)
            if c is None:
                continue
            scale, shift = (c, np.zeros(cout)) if n.op == "Mul" else (np.ones(cout), c)
        w, bias = exact.get(id(layer), (layer.weight.astype(np.float64), None if layer.bias is None
                                        else layer.bias.astype(np.float64)))
        w = w * (scale.reshape(-1, 1, 1, 1) if layer.op == "Conv" else scale.reshape(1, -1))
        bias = (np.zeros(cout) if bias is None else bias) * scale + shift
        exact[id(layer)] = (w, bias)
        layer.weight = np.ascontiguousarray(w, dtype=np.float32)
        layer.bias = bias.astype(np.float32)
        layer.output = n.outputs[0]
        src.outputs = [n.outputs[0]]
        del producer[hit]
        producer[n.outputs[0]] = (src, layer)
        folded.add(id(n))
    steps = [n for n in steps if id(n) not in folded]
    for layer in layers.values():
        layer.weight.setflags(write=False)
        if layer.bias is not None:
            layer.bias.setflags(write=False)

    # a graph output that is a constant, or never computed, is not something to evaluate
    known = set(consts) | {inp.name} | {o for n in steps for o in n.outputs}
    if output_name not in known:
        raise ValueError(f"{path}: the graph output {output_name!r} is computed by no node")
    last_use = {}
    for i, n in enumerate(steps):
        for v in n.inputs:
            if v:
                last_use[v] = i
    for v in consts.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    graph = _Graph(steps, consts, [n.label for n in steps if n.attrs.get("_layer")], inp.name,
                   dims, output_name, opset, last_use, graph_outputs)
    meta = {"format": "onnx", "file": os.path.basename(path),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "opset": opset, "input": {"name": inp.name, "shape": dims}}
    import json

    for prop in proto.metadata_props:
        try:
            meta[prop.key] = json.loads(prop.value)
        except ValueError:
            meta[prop.key] = prop.value
    name = os.path.splitext(os.path.basename(path))[0]
    return OnnxModel(graph, layers, name, meta)


def _per_channel(c, cout):
    """A constant that broadcasts over an NCHW tensor one value per channel, as (cout,)
    float64; None for any other shape."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim > 4:
        return None
    shape = (1,) * (4 - c.ndim) + c.shape
    if shape[0] != 1 or shape[2] != 1 or shape[3] != 1 or shape[1] not in (1, cout):
        return None
    return np.broadcast_to(c.reshape(-1), (cout,)).copy()


def _toposort(nodes, available, path):
    """Nodes in an order where every input is computed before use (ONNX files are usually
    sorted already; the order among ready nodes is kept)."""
    avail = set(available) | {""}
    pending = list(nodes)
    out = []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.inputs):
                out.append(n)
                avail.update(n.outputs)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.inputs if i not in avail})
            raise ValueError(f"{path}: {rest[0]!r} reads values no node computes ({missing[:5]}) "
                             "or the graph has a cycle")
        pending = rest
    return out


def _make_layer(n, consts, path):
    """The _Layer of a Conv/Gemm/MatMul node with a stored weight, or None (a float op)."""
    a = n.attrs
    const = lambda i: len(n.inputs) > i and n.inputs[i] in consts  # noqa: E731

    def arr(i):
        return np.asarray(consts[n.inputs[i]], dtype=np.float32) if const(i) and n.inputs[i] else None

    if n.op == "Conv":
        if not const(1):
            raise ValueError(f"{path}: {n!r}: its weight {n.inputs[1]!r} is computed at run time; "
                             "only stored (initializer) weights are supported")
        w = arr(1)
        if w.ndim != 4:
            raise ValueError(f"{path}: {n!r}: only 2-D convolutions are supported (weight of shape "
                             f"{w.shape}, expected (COUT, C/groups, KH, KW))")
        if "kernel_shape" in a and _ints(a["kernel_shape"]) != w.shape[2:]:
            raise ValueError(f"{path}: {n!r}: kernel_shape {a['kernel_shape']} does not match the "
                             f"weight of shape {w.shape}")
        if len(n.inputs) > 2 and n.inputs[2] and not const(2):
            raise ValueError(f"{path}: {n!r}: its bias is computed at run time; only stored "
                             "biases are supported")
        b = arr(2)
        groups = int(a.get("group", 1))
        if groups < 1 or w.shape[0] % groups:
            raise ValueError(f"{path}: {n!r}: group={groups} does not divide the {w.shape[0]} "
                             "output channels")
        layer = _Layer(None, "Conv", n.inputs[0], n.outputs[0], w,
                       None if b is None else b.ravel())
        layer.stride = _ints(a.get("strides", (1, 1)))
        layer.dilation = _ints(a.get("dilations", (1, 1)))
        pads = _ints(a.get("pads", (0, 0, 0, 0)))
        if len(layer.stride) != 2 or len(layer.dilation) != 2 or len(pads) != 4:
            raise ValueError(f"{path}: {n!r}: strides/dilations/pads do not describe a 2-D "
                             "convolution")
        if any(p < 0 for p in pads):
            raise ValueError(f"{path}: {n!r}: negative pads are not supported")
        layer.pads, layer.auto_pad, layer.groups = pads, a.get("auto_pad", "NOTSET"), groups
        return layer
    if n.op == "Gemm":
        if not const(1) or const(0):
            return None
        w = arr(1)
        if w.ndim != 2:
            raise ValueError(f"{path}: {n!r}: B must be 2-D, got shape {w.shape}")
        if a.get("transB", 0):
            w = w.T
        alpha = float(a.get("alpha", 1.0))
        if alpha != 1.0:
            w = w * np.float32(alpha)  # the scaled weight is what gets quantized
        layer = _Layer(None, "Gemm", n.inputs[0], n.outputs[0], np.ascontiguousarray(w), None)
        layer.trans_a = bool(a.get("transA", 0))
        if len(n.inputs) > 2 and n.inputs[2]:
            if not const(2):
                raise ValueError(f"{path}: {n!r}: C is computed at run time; only a stored C is "
                                 "supported")
            c = np.float32(a.get("beta", 1.0)) * arr(2)
            if c.size == w.shape[1] and (c.ndim == 1 or c.shape == (1, w.shape[1])):
                layer.bias = np.ascontiguousarray(c.ravel(), dtype=np.float32)
            elif c.size == 1:
                layer.bias = np.full(w.shape[1], c.ravel()[0], dtype=np.float32)
            else:
                layer.extra = c
        return layer
    # MatMul: approximable when the second operand is a stored 2-D weight
    if not const(1) or const(0) or np.ndim(consts[n.inputs[1]]) != 2:
        return None
    return _Layer(None, "MatMul", n.inputs[0], n.outputs[0], np.ascontiguousarray(arr(1)), None)
