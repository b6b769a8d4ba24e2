"""Matrix products through an approximate multiplier's lookup table.

:func:`axmatmul` follows :func:`numpy.matmul` (broadcasting over leading batch dimensions,
1-D operands promoted and the added axis removed) with ``a`` the activation operand (table
row) and ``b`` the weight operand (table column). The zero-point correction is the one of
:mod:`axkern.conv` with ``K`` the length of the contracted axis.
"""
from __future__ import annotations

import math

import numpy as np

from .backends import _check_threads, accumulator_dtype, as_multiplier, get_backend, table256
from .conv import (_code_array, _float_array, _host_helpers, _prepare_weights, _to_index,
                   check_out, check_overflow, checked_params, resolve_quant, scale_and_zp)
from .quant import QuantSpec, quantize
from .tune import resolve_tuning

__all__ = ["axmatmul", "axdense", "lut_matmul"]


def _promote(a, b):
    """matmul's 1-D promotion: returns (a2, b2, drop_a, drop_b)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    drop_a, drop_b = a.ndim == 1, b.ndim == 1
    if drop_a:
        a = a[None, :]
    if drop_b:
        b = b[:, None]
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul shape mismatch: a has K={a.shape[-1]} (shape {a.shape}) but b "
                         f"has K={b.shape[-2]} (shape {b.shape})")
    return a, b, drop_a, drop_b


def _batched_gemm(ai, bi, m, backend, num_threads, dequant=None, out=None, packed=None):
    """Integer table sums of index arrays ``ai (..., M, K)`` and ``bi (..., K, N)``; with
    ``dequant`` (2-D ``bi`` and a backend that takes it) the float32 results instead."""
    K = ai.shape[-1]
    dtype = accumulator_dtype(K, m)
    be = get_backend(backend)
    table = table256(m)
    M, N = ai.shape[-2], bi.shape[-1]
    if bi.ndim == 2:
        # One weight matrix: fold every batch dimension of a into the rows of a single GEMM
        # (math.prod: np.prod converts the shape to an array, microseconds a call).
        batch = ai.shape[:-2]
        flat = np.ascontiguousarray(ai.reshape(math.prod(ai.shape[:-1]), K))  # K may be 0
        extra = {} if dequant is None else {"dequant": dequant}
        if out is not None:
            extra["out"] = out
        if packed:
            extra.update(packed)
        out = be.gemm(flat, np.ascontiguousarray(bi), table, dtype, num_threads, **extra)
        return out.reshape(*batch, M, N)
    try:
        batch = np.broadcast_shapes(ai.shape[:-2], bi.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul batch dimensions do not broadcast: {ai.shape[:-2]} and "
                         f"{bi.shape[:-2]}") from None
    nb = math.prod(batch)   # explicit sizes: reshape(-1, ...) fails when a size is 0
    a_b = np.broadcast_to(ai, (*batch, M, K)).reshape(nb, M, K)
    b_b = np.broadcast_to(bi, (*batch, K, N)).reshape(nb, K, N)
    out = np.empty((nb, M, N), dtype)
    for i in range(a_b.shape[0]):
        out[i] = be.gemm(np.ascontiguousarray(a_b[i]), np.ascontiguousarray(b_b[i]), table, dtype,
                         num_threads)
    return out.reshape(*batch, M, N)


def _matmul_shape(a, b):
    """Shape of ``matmul(a, b)`` for promoted operands (batch dimensions broadcast)."""
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul batch dimensions do not broadcast: {a.shape[:-2]} and "
                         f"{b.shape[:-2]}") from None
    return (*batch, a.shape[-2], b.shape[-1])


def _squeezed_shape(a, b, drop_a, drop_b):
    """The result's shape: matmul's of the promoted operands, less the promoted axes."""
    shape = _matmul_shape(a, b) if a.ndim > 2 or b.ndim > 2 else (a.shape[0], b.shape[1])
    return shape[:-2] + ((shape[-2],) if not drop_a else ()) + ((shape[-1],) if not drop_b else ())


def _owned_result(y, drop_a, drop_b):
    """The result of a fresh output array ``y``: as it is when C-contiguous after dropping the
    promoted axes (no copy: 1 MB for a 256 x 1024 layer), else a C-contiguous copy (which
    also keeps 0-d results 0-d)."""
    r = _squeeze(y, drop_a, drop_b)
    return r if r.ndim and r.flags.c_contiguous else np.array(r, order="C")


def _squeeze(out, drop_a, drop_b):
    if drop_b:
        out = out[..., 0]
    if drop_a:
        out = out[..., 0, :] if not drop_b else out[..., 0]
    return out


def lut_matmul(a_codes, b_codes, multiplier, *, backend="auto", num_threads=None):
    """Exact integer sums ``out[..., m, n] = sum_k T[a[..., m, k], b[..., k, n]]``.

    Parameters
    ----------
    a_codes : array_like of int, shape (..., M, K) or (K,)
        Activation operand values (unsigned ``0 .. 2**n - 1`` or signed
        ``-2**(n-1) .. 2**(n-1) - 1`` as the multiplier is).
    b_codes : array_like of int, shape (..., K, N) or (K,)
        Weight operand values. Batch dimensions broadcast as in :func:`numpy.matmul`.
    multiplier : Multiplier
    backend : {"auto", "reference", "cpu", "cuda"}
    num_threads : int, optional

    Returns
    -------
    ndarray of int32 or int64
        int32 when ``K * max|T| < 2**31``, else int64 (exact either way).

    Examples
    --------
    >>> import axkern
    >>> axkern.lut_matmul([[1, 2]], [[3], [4]], axkern.Multiplier.exact(8)).tolist()
    [[11]]
    """
    m = as_multiplier(multiplier)
    num_threads = _check_threads(num_threads)
    ai = _code_array(a_codes, "a_codes", m)
    bi = _code_array(b_codes, "b_codes", m)
    ai, bi, drop_a, drop_b = _promote(ai, bi)
    return _squeeze(_batched_gemm(ai, bi, m, backend, num_threads), drop_a, drop_b)


def axmatmul(a, b, multiplier, *, bias=None, quant="auto", tune=False, backend="auto",
             num_threads=None, out=None):
    """Matrix product of float arrays computed through an approximate multiplier.

    Parameters
    ----------
    a : array_like of float, shape (..., M, K) or (K,)
        Activation operand (table row), quantized as the input.
    b : array_like of float, shape (..., K, N) or (K,)
        Weight operand (table column); per-channel quantization is per column ``n``.
    multiplier : Multiplier
    bias : array_like of shape (N,), optional
    quant : str or QuantSpec or (QuantParams, QuantParams), default "auto"
        As in :func:`axkern.axconv2d` (the whole of ``a`` and of ``b`` set the per-call ranges).
    tune : bool or array_like of int, default False
        ALWANN weight tuning, as in :func:`axkern.axconv2d`.
    backend : {"auto", "reference", "cpu", "cuda"}
    num_threads : int, optional
    out : ndarray of float32, optional
        A writeable C-contiguous array shaped as the result: the result is written there
        and ``out`` is returned. Must not overlap the operands.

    Returns
    -------
    ndarray of float32
        Shaped as ``numpy.matmul(a, b)``.

    Examples
    --------
    >>> import numpy as np, axkern
    >>> a = np.array([[0.5, 1.0]]); b = np.array([[1.0], [2.0]])
    >>> m = axkern.Multiplier.exact(8)
    >>> round(float(axkern.axmatmul(a, b, m, quant="asymmetric")[0, 0]), 2)  # 8-bit codes
    2.5

    The default for unsigned multipliers is TFApprox's quantization, which moves the range of
    an all-positive tensor to ``[0, max - min]`` (here ``[0, 0.5]`` and ``[0, 1]``) and clips:

    >>> round(float(axkern.axmatmul(a, b, m)[0, 0]), 2)
    1.0
    """
    return _axmatmul(a, b, multiplier, bias, quant, tune, backend, num_threads, out, ("a", "b"))


def _fused_dense(a, b, m, ap, spec, mapping, bias, fast, be, num_threads, out=None, name="b"):
    """a @ b (b 2-D) on a backend that dequantizes in the kernel (axkern._fast), the input's
    parameters ``ap`` given: the weight side prepared once per weight matrix (quantized,
    indexed, summed, cached), the correction and dequantization inside the kernel, no integer
    copy of the output."""
    K, N = b.shape
    pb = _prepare_weights(b, spec.weight, m, mapping, fast, fold=False, name=name,
                          num_threads=num_threads)
    sa, za = scale_and_zp(ap)
    za, zb = int(za), pb.zw
    dq, scale_max = pb.dequant(sa, za, bias)
    # one parallel pass: indices and the row sums of the codes (sum_k q_a) together
    ai, sum_a = fast.quantize_indices(a, ap, index_mask=(1 << m.bits) - 1, row_sums=True,
                                      num_threads=num_threads)
    if pb.zw_any:
        dq["zw"] = zb
        dq["sumx"] = np.ascontiguousarray(sum_a, np.int64).reshape(-1, 1)
    y = _batched_gemm(ai, pb.wi, m, be, num_threads, dequant=dq, out=out,
                      packed=pb.packed_for(be, 1))
    check_overflow(y, dq["scale"], K, m, bias, scale_max)
    return y


def dense_with_input_params(x, w, m, xp, spec, *, bias, tune, backend, num_threads):
    """``axdense(x, w, m, bias, quant=QuantSpec(xp, spec.weight), ...)`` for a caller that
    has already checked its float32 arrays and computed the input's parameters ``xp`` under
    its resolved ``spec`` (the PyTorch layers, on every forward): the fused path without
    axdense's checks of its arguments (as :func:`axkern.conv.conv_with_input_params`);
    axdense itself wherever the fused path does not serve, and for every error."""
    fast = _host_helpers(backend, m)
    be = get_backend(backend) if fast is not None else None
    if fast is None or xp.per_channel or not getattr(be, "SUPPORTS_DEQUANT", False) \
            or x.dtype != np.float32 or w.dtype != np.float32 or x.ndim < 1 or w.ndim != 2 \
            or x.shape[-1] != w.shape[0] or x.size == 0 or w.size == 0 or not (
                bias is None or (bias.dtype == np.float32 and bias.shape == (w.shape[1],))):
        return axdense(x, w, m, bias, quant=QuantSpec(xp, spec.weight), tune=tune,
                       backend=backend, num_threads=num_threads)
    y = _fused_dense(x.reshape(-1, x.shape[-1]), w, m, xp, spec, resolve_tuning(tune, m),
                     bias, fast, be, _check_threads(num_threads), name="w")
    return y.reshape(*x.shape[:-1], w.shape[1])


def _axmatmul(a, b, multiplier, bias, quant, tune, backend, num_threads, out, names):
    """axmatmul, its operands called ``names`` in errors and warnings (axdense: x and w)."""
    na, nb = names
    m = as_multiplier(multiplier)
    num_threads = _check_threads(num_threads)
    a = _float_array(a, na, check_finite=False)   # checked by checked_params
    b = _float_array(b, nb, check_finite=False)
    a, b, drop_a, drop_b = _promote(a, b)
    K, N = b.shape[-2], b.shape[-1]
    spec = resolve_quant(quant, m)
    mapping = resolve_tuning(tune, m)
    if bias is not None:
        bias = _float_array(bias, "bias")
        if bias.shape != (N,):
            raise ValueError(f"bias must have shape ({N},), one per output column, got {bias.shape}")
    if out is not None:
        check_out(out, _squeezed_shape(a, b, drop_a, drop_b))
    if a.size == 0 or b.size == 0:
        # An empty product (M, N, K or a batch dimension 0): as numpy.matmul, zeros of the
        # output shape (K = 0: every sum is empty), plus the bias; no data to quantize.
        y = np.zeros(_matmul_shape(a, b), np.float32)
        if bias is not None:
            y += bias
        if out is not None:
            np.copyto(out, _squeeze(y, drop_a, drop_b))
            return out
        return np.array(_squeeze(y, drop_a, drop_b), order="C")
    fast = _host_helpers(backend, m)
    ap = checked_params(a, spec.input, m, na, fast=fast, num_threads=num_threads)
    be = get_backend(backend)
    if fast is not None and b.ndim == 2 and not ap.per_channel and \
            getattr(be, "SUPPORTS_DEQUANT", False):
        y = _fused_dense(a, b, m, ap, spec, mapping, bias, fast, be, num_threads,
                         None if out is None else out.reshape(-1, N), nb)
        if out is not None:
            if not np.shares_memory(y, out):
                np.copyto(out, _squeeze(y, drop_a, drop_b))
            return out
        return _owned_result(y, drop_a, drop_b)
    bp = checked_params(b, spec.weight, m, nb, N, fast=fast)
    sa, za = scale_and_zp(ap)
    sb, zb = scale_and_zp(bp, N)
    za = int(za)
    if fast is not None and not bp.per_channel and (not m.signed or m.bits == 8):
        # Large weight matrices (a dense layer's 2048 x 1024) cost more to quantize in NumPy
        # than the products of a small batch. Here the indices are the codes (unsigned) or
        # their int8 bit patterns, so the column sums come straight from them.
        bi = fast.quantize_indices(b, bp, index_mask=(1 << m.bits) - 1, num_threads=num_threads)
        codes = bi.view(np.int8) if m.signed else bi
        acc = np.int32 if K < (1 << 23) else np.int64   # |sum| <= 255 K: int32 is exact
        sum_b = codes.sum(axis=-2, dtype=acc).astype(np.int64)
    else:
        qb = quantize(b, bp, channel_axis=-1)
        bi = _to_index(qb, m)
        sum_b = qb.sum(axis=-2, dtype=np.int64)   # (..., N), original codes (see tune.py)
    if fast is not None and not ap.per_channel:
        # One parallel pass: indices and the row sums of the codes (sum_k q_a) together.
        ai, sum_a = fast.quantize_indices(a, ap, index_mask=(1 << m.bits) - 1, row_sums=True,
                                          num_threads=num_threads)
    else:
        qa = quantize(a, ap)
        ai = _to_index(qa, m)
        sum_a = qa.sum(axis=-1, dtype=np.int64)
    if mapping is not None:
        bi = mapping[bi].astype(np.uint8)   # the sums keep the original codes (see tune.py)
    has_zb = bool(np.any(zb != 0))
    total = _batched_gemm(ai, bi, m, backend, num_threads)
    if fast is not None and b.ndim == 2:
        # Fused correction + dequantization: one pass, no int64 copy of the output.
        y = fast.epilogue(total, sa * sb, zb if has_zb else None,
                          sum_a[..., None] if has_zb else None,
                          K * za * zb - za * sum_b if za else None, bias, 1, num_threads)
    else:
        if za != 0 or np.any(zb != 0):
            total = total.astype(np.int64)   # the corrections can leave the int32 range
            total -= zb * sum_a[..., :, None]
            total -= za * sum_b[..., None, :] - K * za * zb
        # Exact integers -> float64 -> float32 in one buffered pass.
        y = np.empty(total.shape, np.float32)
        np.multiply(total, np.asarray(sa * sb, np.float64), out=y, casting="unsafe")
        if bias is not None:
            y += bias
    check_overflow(y, sa * sb, K, m, bias)
    if out is not None:
        np.copyto(out, _squeeze(y, drop_a, drop_b))
        return out
    return _owned_result(y, drop_a, drop_b)


def axdense(x, w, multiplier, bias=None, *, quant="auto", tune=False, backend="auto",
            num_threads=None, out=None):
    """Fully connected layer ``x @ w + bias`` through an approximate multiplier.

    Parameters
    ----------
    x : array_like of float, shape (..., IN)
    w : array_like of float, shape (IN, OUT)
    multiplier : Multiplier
    bias : array_like of shape (OUT,), optional
    quant, tune, backend, num_threads, out
        As in :func:`axmatmul` (``out`` shaped (..., OUT)).

    Returns
    -------
    ndarray of float32, shape (..., OUT)
    """
    xa = np.asarray(x)
    wa = np.asarray(w)
    if wa.ndim != 2:
        raise ValueError(f"w must have shape (in, out), got shape {wa.shape}")
    if xa.ndim < 1:
        raise ValueError(f"x must have shape (..., in), got shape {xa.shape}")
    if xa.shape[-1] != wa.shape[0]:
        raise ValueError(f"x has {xa.shape[-1]} features but w expects {wa.shape[0]} (shape {wa.shape})")
    lead = xa.shape[:-1]
    rows = math.prod(lead)
    if out is not None:
        check_out(out, (*lead, wa.shape[1]))
        out2 = out.reshape(rows, wa.shape[1])   # a view: out is C-contiguous
    else:
        out2 = None
    y = _axmatmul(xa.reshape(rows, xa.shape[-1]), wa, multiplier, bias, quant, tune,
                  backend, num_threads, out2, ("x", "w"))
    return out if out is not None else y.reshape(*lead, wa.shape[1])
