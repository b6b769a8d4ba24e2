"""The ``grad="table"`` backward of :mod:`axkern.torch`: the multiplier's own finite
differences in place of the operands in the backward products.

With codes ``qa = x / s_a`` (activations) and ``qb = w / s_b`` (weights) the approximate layer
computes ``y[m, n] = s_a s_b[n] (sum_k T(qa[m, k], qb[k, n]) - z_b[n] sum_k qa[m, k]
- z_a sum_k qb[k, n] + K z_a z_b[n]) + bias[n]``. Differentiating the table along each operand
(``dT/da``, ``dT/db``: :func:`gradient_tables`) and the quantizer as the straight-through
estimator does (``dq/dx = 1 / s``; 0 for inputs outside a frozen input range) gives::

    dL/dx[m, k] = mask_x[m, k] sum_n g[m, n] s_b[n] (dT/da(qa[m, k], qb[k, n]) - z_b[n])
    dL/dw[k, n] = mask_w[k, n] s_a sum_m g[m, n] (dT/db(qa[m, k], qb[k, n]) - z_a)

For the exact multiplier ``dT/da(a, b) = b`` and ``dT/db(a, b) = a``, and these are the
straight-through estimator's products. A convolution is the same on its im2col matrices
(padded positions hold the code ``z_a``), per group.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .backends import table256
from .tune import resolve_tuning

_CHUNK = 1 << 22   # gathered table entries per block of rows (16 MiB of float32)


def gradient_tables(multiplier, tune=False):
    """Finite differences of a multiplier's table along each operand.

    Parameters
    ----------
    multiplier : Multiplier
    tune : bool or array_like of int, default False
        ALWANN weight tuning: the table differentiated is ``T[a, mapping[b]]`` (the lookups
        the tuned layer makes, as a function of the original weight codes).

    Returns
    -------
    da, db : ndarray of float32, shape (2**n, 2**n)
        Indexed by operand *values* minus the smallest value (``0 .. 2**n - 1`` for unsigned
        multipliers, ``-2**(n-1) .. 2**(n-1) - 1`` shifted for signed ones):
        ``da[i, j] = (T(v_{i+1}, v_j) - T(v_{i-1}, v_j)) / 2`` (central difference in the
        activation operand), one-sided ``T(v_1) - T(v_0)`` and ``T(v_last) - T(v_last-1)`` at
        the ends; ``db`` the same along the weight operand.
    """
    from .backends import as_multiplier

    m = as_multiplier(multiplier)
    n = 1 << m.bits
    t = table256(m)[:n, :n].astype(np.float64)
    mapping = resolve_tuning(tune, m)
    if mapping is not None:
        t = t[:, np.asarray(mapping)[:n]]
    values = m.values()
    order = np.argsort(values, kind="stable")   # value order: index of the k-th smallest value
    tv = t[np.ix_(order, order)]
    da = np.gradient(tv, axis=0, edge_order=1)
    db = np.gradient(tv, axis=1, edge_order=1)
    return da.astype(np.float32), db.astype(np.float32)


def _table256(t):
    """A difference table as the float32 (256, 256) array the gathers index (values past a
    narrower multiplier's 2**n are never read)."""
    t = np.asarray(t, np.float32)
    if t.shape == (256, 256):
        return np.ascontiguousarray(t)
    out = np.zeros((256, 256), np.float32)
    out[:t.shape[0], :t.shape[1]] = t
    return out


def quantize_codes(t, p, channel_dim=None):
    """``(codes, scale, zero point, mask of unclipped entries)`` of tensor ``t`` under
    QuantParams ``p``: float32 integer-valued codes with the rounding of :mod:`axkern.quant`
    (per channel along ``channel_dim``), scale and zero point shaped to broadcast with ``t``."""
    shape = [1] * t.dim()
    if p.per_channel:
        shape[channel_dim] = -1
    s = torch.as_tensor(np.asarray(p.scale, np.float32)).reshape(shape)
    z = torch.as_tensor(np.asarray(p.zero_point, np.float32)).reshape(shape)
    if p.signed:
        q = torch.round(t / s) + z
        mask = t.abs() <= s * float(p.qmax)   # pytorch-quantization's |x| <= amax
        return q.clamp(float(p.qmin), float(p.qmax)), s, z, mask
    nmin = (float(p.qmin) - z) * s
    nmax = (float(p.qmax) - z) * s
    mask = (t >= nmin) & (t <= nmax)
    c = torch.minimum(torch.maximum(t, nmin), nmax)
    q = torch.floor((c - nmin) * (1.0 / s) + 0.5).clamp(max=float(p.qmax - p.qmin)) + p.qmin
    return q, s, z, mask


def _codes(t, p, channel_dim=None):
    """(integer codes as int64 tensor, mask of unclipped entries) of ``t`` under ``p``."""
    q, _, _, mask = quantize_codes(t, p, channel_dim)
    return q.to(torch.int64), mask


def _gemm_grads(ia, ib, g, da, db, sb, zb, sa, za, need_a, need_b):
    """Gradients of one LUT GEMM: ``ia`` (M, K) and ``ib`` (K, N) value indices into the
    gradient tables (float32 (256, 256) NumPy arrays ``da``, ``db``), ``g`` (M, N) the output
    gradient; ``sb``, ``zb`` (N,) float64. The gathers and their sums run in
    ``axkern._fast.table_grads`` when the compiled module is there (about 15 times as fast
    as gathering an (M, K, N) block here), else in PyTorch, in float64 either way."""
    g64 = g.to(torch.float64)
    gs = g64 * sb                  # g[m, n] s_b[n]
    gz = (gs * zb).sum(dim=1)      # sum_n g s_b z_b
    fast = _fast()
    if fast is not None:
        ga_np, gb_np = fast.table_grads(
            ia.to(torch.uint8).numpy(), ib.to(torch.uint8).numpy(), da, db,
            gs.contiguous().numpy(), g64.contiguous().numpy(), need_a=need_a, need_b=need_b,
            num_threads=torch.get_num_threads())
        ga = None if ga_np is None else torch.from_numpy(ga_np) - gz[:, None]
        gb = None if gb_np is None else torch.from_numpy(gb_np)
    else:
        ga, gb = _gemm_grads_torch(ia, ib, g64, gs, gz, da, db, need_a, need_b)
    if need_b:
        gb = sa * (gb - za * g64.sum(dim=0)[None, :])
    return ga, gb


def _fast():
    try:
        from . import _fast as fast
    except ImportError:
        return None
    return fast


def _gemm_grads_torch(ia, ib, g64, gs, gz, da, db, need_a, need_b):
    """The same gathers in PyTorch, a block of rows at a time (the (rows, K, N) block of
    table entries at most _CHUNK of them)."""
    M, K = ia.shape
    N = ib.shape[1]
    ia, ib = ia.long(), ib.long()   # (uint8 index tensors would be masks)
    da, db = torch.as_tensor(da).to(torch.float64), torch.as_tensor(db).to(torch.float64)
    ga = torch.zeros((M, K), dtype=torch.float64) if need_a else None
    gb = torch.zeros((K, N), dtype=torch.float64) if need_b else None
    rows = max(1, _CHUNK // max(1, K * N))
    for r0 in range(0, M, rows):
        a = ia[r0:r0 + rows]
        if need_a:
            d = da[a[:, :, None], ib[None, :, :]]                       # (mc, K, N)
            ga[r0:r0 + rows] = torch.einsum("mkn,mn->mk", d, gs[r0:r0 + rows]) \
                - gz[r0:r0 + rows, None]
        if need_b:
            d = db[a[:, :, None], ib[None, :, :]]
            gb += torch.einsum("mkn,mn->kn", d, g64[r0:r0 + rows])
    return ga, gb


def table_backward(layer, x, weight, xp, wp, gy, frozen, need_x=True, need_w=True):
    """(grad of the input, grad of the weight) of ``layer`` under ``grad="table"``; None for
    one not needed (``need_x``, ``need_w``), which is then not computed."""
    from .torch import ApproxConv2d

    m = layer.multiplier
    da, db = layer._grad_tables()
    lo = int(m.values().min())
    sa, za = float(np.float32(xp.scale)), int(xp.zero_point)
    qa, mask_x = _codes(x, xp)
    wlast = layer._weight_last(weight)
    qb_last = _codes(wlast, wp, channel_dim=wlast.dim() - 1)[0]
    cout = wlast.shape[-1]
    sb = torch.as_tensor(np.broadcast_to(np.asarray(wp.scale, np.float64), (cout,)).copy())
    zb = torch.as_tensor(np.broadcast_to(np.asarray(wp.zero_point, np.float64), (cout,)).copy())
    need_a, need_b = bool(need_x), bool(need_w)
    da_t, db_t = _table256(da), _table256(db)
    if not isinstance(layer, ApproxConv2d):
        K = x.shape[-1]
        ia = (qa.reshape(-1, K) - lo)
        ib = (qb_last - lo)
        ga, gb = _gemm_grads(ia, ib, gy.reshape(-1, cout), da_t, db_t, sb, zb, sa, za,
                             need_a, need_b)
        gx = None if ga is None else ga.reshape(x.shape).to(torch.float32)
        if gx is not None and frozen:
            gx = gx * mask_x
        return gx, None if gb is None else gb.to(torch.float32).t()
    # convolution: im2col of the codes, padded positions holding z_a
    N, C, H, W = x.shape
    (pt, pb), (pl, pr) = layer._explicit_padding()
    kh, kw = layer.kernel_size
    G = layer.groups
    Cg, Og = C // G, cout // G
    Kg = Cg * kh * kw
    OH, OW = gy.shape[2], gy.shape[3]
    # weight codes (O, Cg, kh, kw) from HWIO
    qb = qb_last.permute(3, 2, 0, 1).reshape(cout, Kg)
    gw = torch.zeros((cout, Kg), dtype=torch.float64)
    fast = _fast()
    geo = dict(ksize=(kh, kw), stride=tuple(layer.stride), padding=(pt, pb, pl, pr),
               dilation=tuple(layer.dilation))
    if fast is not None:
        # im2col rows of uint8 codes and the gradient's col2im in C: no float copies
        codes = (qa - lo).to(torch.uint8).contiguous().numpy()
        gx64 = np.zeros((N, C, H, W), np.float64) if need_a else None
        cols = None
    else:
        # float32 holds the integer codes exactly: half the traffic of float64 through unfold
        qpad = F.pad((qa - float(lo)).to(torch.float32), (pl, pr, pt, pb), value=float(za - lo))
        cols = F.unfold(qpad, (kh, kw), dilation=layer.dilation, stride=layer.stride)
        gcols = torch.zeros_like(cols) if need_a else None   # (N, C*kh*kw, L), float32
    for g in range(G):
        if fast is not None:
            a = torch.from_numpy(fast.im2col_codes(codes, G, g, pad_code=za - lo, **geo))
        else:
            a = cols[:, g * Kg:(g + 1) * Kg, :].to(torch.uint8).permute(0, 2, 1).reshape(-1, Kg)
        b = qb[g * Og:(g + 1) * Og].t() - lo                                  # (Kg, Og)
        gyg = gy[:, g * Og:(g + 1) * Og].permute(0, 2, 3, 1).reshape(N * OH * OW, Og)
        ga, gbg = _gemm_grads(a, b, gyg, da_t, db_t, sb[g * Og:(g + 1) * Og],
                              zb[g * Og:(g + 1) * Og], sa, za, need_a, need_b)
        if need_a and fast is not None:
            fast.col2im_add(ga.numpy(), gx64, G, g, **geo)
        elif need_a:
            gcols[:, g * Kg:(g + 1) * Kg, :] = ga.reshape(N, -1, Kg).permute(0, 2, 1)
        if need_b:
            gw[g * Og:(g + 1) * Og] = gbg.t()
    gw = gw.reshape(cout, Cg, kh, kw).to(torch.float32) if need_b else None
    if not need_a:
        return None, gw
    if fast is not None:
        gx = torch.from_numpy(gx64).to(torch.float32)
    else:
        Hp, Wp = H + pt + pb, W + pl + pr
        gxp = F.fold(gcols, (Hp, Wp), (kh, kw), dilation=layer.dilation, stride=layer.stride)
        gx = gxp[:, :, pt:pt + H, pl:pl + W].to(torch.float32)
    return (gx * mask_x if frozen else gx), gw
