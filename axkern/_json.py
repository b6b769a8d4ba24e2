"""Strict JSON output: what axkern writes parses with any JSON reader.

Python's :mod:`json` writes ``NaN``, ``Infinity`` and ``-Infinity`` for non-finite floats,
which are not JSON (RFC 8259) and break strict readers (``jq``, browsers, most languages).
axkern writes them as ``null`` instead, and converts NumPy scalars and arrays to plain
values; ``allow_nan=False`` then guarantees that nothing non-standard slips through.
"""
from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["dumps", "dump", "strict"]


def strict(obj):
    """``obj`` with non-finite floats replaced by None and NumPy values made plain."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, **kwargs):
    """:func:`json.dumps` of :func:`strict` ``(obj)``, refusing anything non-standard."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def dump(obj, fp, **kwargs):
    """:func:`json.dump` of :func:`strict` ``(obj)``, refusing anything non-standard."""
    json.dump(strict(obj), fp, allow_nan=False, **kwargs)
