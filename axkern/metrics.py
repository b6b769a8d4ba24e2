"""Error metrics of a multiplier, as EvoApproxLib defines them.

Over all ``4**n`` operand pairs, ``err = f(a, b) - a*b``:

- MAE = mean |err|, MAE% = 100 * MAE / 2**(2n)
- WCE = max |err|, WCE% = 100 * WCE / 2**(2n)
- EP% = 100 * share of pairs with err != 0
- MSE = mean err**2
- MRE% = 100 * mean(|err| / |a*b|) over the pairs with a*b != 0
- WCRE% = 100 * max(|err| / |a*b|) over the pairs with a*b != 0
- bias = mean err, std = population standard deviation of err

Sums are taken in exact integer arithmetic and divided once, so the figures do not depend on
summation order.
"""
from __future__ import annotations

import numpy as np

from .lut import Multiplier

__all__ = ["ErrorMetrics", "metrics", "error_map"]

_FIELDS = ("name", "bits", "signed", "mae", "mae_pct", "wce", "wce_pct", "wcre_pct", "ep_pct",
           "mre_pct", "mse", "bias", "std")


class ErrorMetrics:
    """Error figures of one multiplier. Attributes are listed in ``ErrorMetrics.fields``;
    the weighted ones (``weighted_mae``, ``weighted_mae_pct``, ``weighted_bias``,
    ``weighted_mse``, ``weighted_ep_pct``) are None unless operand histograms were given,
    and then also appear in the repr. ``weighted_mae_pct`` is ``100 * weighted_mae /
    2**(2n)``, on the scale of ``mae_pct``."""

    fields = _FIELDS
    weighted_fields = ("weighted_mae", "weighted_mae_pct", "weighted_bias", "weighted_mse",
                       "weighted_ep_pct")

    def __init__(self, **values):
        for k in self.fields + self.weighted_fields:
            setattr(self, k, values.get(k))

    def to_dict(self, weighted=None):
        """A plain dict. Weighted figures are included when they were computed."""
        d = {k: getattr(self, k) for k in self.fields}
        if weighted or (weighted is None and self.weighted_mae is not None):
            d.update({k: getattr(self, k) for k in self.weighted_fields})
        return d

    @property
    def weighted(self):
        """Whether the distribution-weighted figures were computed."""
        return self.weighted_mae is not None

    def __repr__(self):
        keys = ("mae_pct", "wce_pct", "ep_pct", "mre_pct", "bias")
        if self.weighted:
            keys += ("weighted_mae_pct", "weighted_ep_pct", "weighted_bias")
        parts = ", ".join(f"{k}={getattr(self, k):.6g}" for k in keys)
        return f"ErrorMetrics({self.name!r}, {parts})"


def error_map(m):
    """``T - exact`` as int64 of shape (2**n, 2**n), indexed by operand codes."""
    _check_multiplier(m)
    return m.error_map()


def _check_multiplier(m):
    if not isinstance(m, Multiplier):
        raise TypeError(f"expected an axkern.Multiplier, got {type(m).__name__}")


def _check_hist(h, size, which):
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (size,):
        raise ValueError(f"{which} must be a histogram over the {size} operand codes, "
                         f"shape ({size},), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or np.any(h < 0) or h.sum() <= 0:
        raise ValueError(f"{which} must be finite, non-negative and not all zero")
    return h / h.sum()


def metrics(m, a_weights=None, b_weights=None):
    """Error metrics of multiplier ``m`` (EvoApproxLib definitions, see module docstring).

    Parameters
    ----------
    m : Multiplier
    a_weights, b_weights : array_like, shape (2**n,), optional
        Histograms (any non-negative scale) of the activation and weight operand codes, indexed
        like the table rows and columns. When either is given, the distribution-weighted MAE,
        bias, MSE and EP% are also computed, with a uniform distribution for the other operand
        (attributes ``weighted_mae``, ``weighted_mae_pct``, ``weighted_bias``, ``weighted_mse``,
        ``weighted_ep_pct``, shown in the repr).

    Returns
    -------
    ErrorMetrics
    """
    _check_multiplier(m)
    n = m.bits
    total = 1 << (2 * n)
    err = m.error_map()
    abs_err = np.abs(err)
    exact = np.abs(m.exact_table())

    sum_abs = int(abs_err.sum())
    sum_err = int(err.sum())
    wce = int(abs_err.max())
    # For real multipliers err**2 <= ~4.3e9 and its sum ~2.8e14: exact in int64. Tables with
    # errors of 2**23 or more could overflow int64 (4**8 terms up to 2**62), so those are
    # summed in Python integers instead.
    if wce < 1 << 23:
        sum_sq = int((err * err).sum())
    else:
        sum_sq = sum(int(e) * int(e) for e in err.ravel().tolist())
    nonzero = exact != 0
    rel = abs_err[nonzero] / exact[nonzero]

    mae = sum_abs / total
    mse = sum_sq / total
    bias = sum_err / total
    # population variance from exact integer moments
    var = (sum_sq * total - sum_err * sum_err) / (total * total)
    vals = dict(
        name=m.name, bits=n, signed=m.signed,
        mae=mae, mae_pct=100.0 * mae / total,
        wce=wce, wce_pct=100.0 * wce / total,
        wcre_pct=100.0 * float(rel.max()) if rel.size else 0.0,
        ep_pct=100.0 * int(np.count_nonzero(err)) / total,
        mre_pct=100.0 * float(rel.sum()) / rel.size if rel.size else 0.0,
        mse=mse, bias=bias, std=float(np.sqrt(max(var, 0.0))),
    )
    if a_weights is not None or b_weights is not None:
        size = 1 << n
        pa = _check_hist(a_weights, size, "a_weights") if a_weights is not None else np.full(size, 1.0 / size)
        pb = _check_hist(b_weights, size, "b_weights") if b_weights is not None else np.full(size, 1.0 / size)
        p = np.multiply.outer(pa, pb)
        errf = err.astype(np.float64)
        wmae = float((p * np.abs(errf)).sum())
        vals.update(
            weighted_mae=wmae, weighted_mae_pct=100.0 * wmae / total,
            weighted_bias=float((p * errf).sum()),
            weighted_mse=float((p * errf * errf).sum()),
            weighted_ep_pct=100.0 * float(p[err != 0].sum()),
        )
    return ErrorMetrics(**vals)
