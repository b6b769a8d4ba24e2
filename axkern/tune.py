"""ALWANN weight tuning: remap weight codes to the column of the table that best fits them.

For every weight code ``w`` the tuned code is::

    w' = argmin_{w'} sum_a p(a) * |a * w - T[a, w']|

over all weight codes ``w'`` (``a`` and ``w`` operand values, ``T`` indexed by codes), with ``p``
uniform (ALWANN) or a measured activation histogram. Ties keep ``w' = w`` when ``w`` is among
the minimizers, otherwise the lowest code wins. With a uniform ``p`` or an integer histogram
the costs are exact integer sums.

How the tuned codes are used (in :func:`axkern.axconv2d`, :func:`axkern.axmatmul`,
:func:`axkern.axdense`): the table lookup becomes ``T[q_x, w'(q_w)]``, i.e. the column of
``w'`` replaces the column of ``w`` as the approximation of ``q_x * q_w``. The zero-point
correction terms (``sum q_w`` and ``K z_x z_w``) keep the ORIGINAL weight codes, because they
stand for the exact part of ``(q_x - z_x)(q_w - z_w)`` that the circuit does not compute.
"""
from __future__ import annotations

import numpy as np

from .backends import _TUNINGS, as_multiplier, table256, table_token

__all__ = ["tune_weights", "resolve_tuning"]


def _check_hist(hist, size):
    h = np.asarray(hist)
    if h.dtype == object or not (np.issubdtype(h.dtype, np.integer) or np.issubdtype(h.dtype, np.floating)):
        raise TypeError(f"activation_hist must be numeric, got dtype {h.dtype}")
    if h.shape != (size,):
        raise ValueError(f"activation_hist must have shape ({size},), one weight per activation "
                         f"code (table index), got {h.shape}")
    if np.issubdtype(h.dtype, np.floating):
        if not np.all(np.isfinite(h)):
            raise ValueError("activation_hist contains NaN or Inf")
        if np.all(h == np.round(h)) and np.abs(h).max(initial=0) < 2 ** 40:
            h = h.astype(np.int64)  # integral counts: keep the sums exact
    if h.min() < 0:
        raise ValueError("activation_hist must be non-negative")
    if np.issubdtype(h.dtype, np.integer):
        if int(h.max()) > np.iinfo(np.int64).max:   # uint64 beyond int64 would wrap
            raise ValueError(f"activation_hist holds a count of {int(h.max())}: expected counts "
                             f"up to 2**63 - 1")
        h = h.astype(np.int64)
        total = sum(int(c) for c in h)   # Python ints: huge counts must not wrap to <= 0
    else:
        h = h.astype(np.float64)
        total = float(h.sum())
    if total <= 0:
        raise ValueError("activation_hist must have a positive total")
    return h


def tune_weights(multiplier, activation_hist=None):
    """The ALWANN weight-code remapping of a multiplier.

    Parameters
    ----------
    multiplier : Multiplier
    activation_hist : array_like of shape (2**bits,), optional
        Weight ``p(a)`` of each activation code (indexed like the table rows, i.e. by the
        two's-complement code for signed multipliers). Default uniform.

    Returns
    -------
    ndarray of int64, shape (2**bits,)
        ``mapping[j]`` is the table column (code) used for weight code ``j``.

    Examples
    --------
    >>> import axkern
    >>> m = axkern.Multiplier.exact(8)
    >>> bool((axkern.tune_weights(m) == range(256)).all())  # exact circuits need no tuning
    True
    """
    m = as_multiplier(multiplier)
    size = 1 << m.bits
    v = m.values()
    T = np.asarray(m.table, np.int64)
    p = np.ones(size, np.int64) if activation_hist is None else _check_hist(activation_hist, size)
    if p.dtype == np.float64:
        cost = _costs(v, T, p)
    else:
        # exact integer sums that cannot overflow int64: common factor out, then the counts
        # split into limbs small enough that each limb's sums fit (huge counts are exact too)
        g = np.gcd.reduce(p)
        p = p // g
        max_err = int(np.abs(v).max()) ** 2 + int(np.abs(T).max())
        bits = max(1, (2 ** 62 // max(1, max_err * size)).bit_length() - 1)
        if int(p.max()) < 1 << bits:
            cost = _costs(v, T, p)
        else:
            cost = np.zeros((size, size), dtype=object)   # Python ints: no overflow
            pint = [int(c) for c in p]
            shift = 0
            while any(c >> shift for c in pint):
                limb = np.array([(c >> shift) & ((1 << bits) - 1) for c in pint], np.int64)
                cost = cost + _costs(v, T, limb).astype(object) * (1 << shift)
                shift += bits
    best = cost.min(axis=1)
    mapping = np.argmin(cost, axis=1).astype(np.int64)           # lowest code among minimizers
    keep = np.asarray(cost[np.arange(size), np.arange(size)] == best, dtype=bool)
    mapping[keep] = np.arange(size)[keep]
    return mapping


def _costs(v, T, p):
    """``cost[w, w'] = sum_a p[a] * |v[a] * v[w] - T[a, w']|`` in ``p``'s dtype (int64 sums
    must fit: the caller keeps ``p`` small enough)."""
    size = len(v)
    cost = np.empty((size, size), p.dtype)
    chunk = 16  # weight codes per step: a (size, chunk, size) temporary of about 8 MB
    for w0 in range(0, size, chunk):
        w = np.arange(w0, min(w0 + chunk, size))
        exact = v[:, None] * v[None, w]                          # (a, w): a * w
        err = np.abs(exact[:, :, None] - T[:, None, :])          # (a, w, w')
        cost[w] = np.tensordot(p, err, axes=(0, 0)) if p.dtype == np.float64 else np.einsum("a,awv->wv", p, err)
    return cost


def resolve_tuning(tune, multiplier):
    """The weight-code mapping requested by a layer's ``tune`` argument, or None.

    ``tune`` is False/None (no tuning), True (uniform ALWANN tuning, cached per table)
    or a mapping array of shape ``(2**bits,)`` with entries in ``0 .. 2**bits - 1``.
    """
    if tune is None or tune is False:
        return None
    m = as_multiplier(multiplier)
    size = 1 << m.bits
    if tune is True:
        # cached per table (multipliers of the same kind and entries share one: see
        # axkern.backends.table256), as it takes tens of ms
        token = table_token(table256(m))
        cached = _TUNINGS.get(token)
        if cached is None:
            cached = tune_weights(m)
            cached.setflags(write=False)
            if token:
                _TUNINGS[token] = cached
        return cached
    arr = np.asarray(tune)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"tune must be a bool or an integer mapping array, got {type(tune).__name__} "
                        f"of dtype {arr.dtype}")
    if arr.shape != (size,):
        raise ValueError(f"tune mapping must have shape ({size},), got {arr.shape}")
    if arr.min() < 0 or arr.max() >= size:
        raise ValueError(f"tune mapping entries must be codes 0..{size - 1}")
    return arr.astype(np.int64)
