"""Reference backend: plain NumPy, written to be obviously right rather than fast.

Implements the kernel contract of :mod:`axkern.backends`: explicit loops over the reduction
index (gemm) or over kernel taps and input channels (conv2d), each step one fancy-indexed
lookup into the table, accumulated in int64 and cast to ``out_dtype`` at the end.
"""
from __future__ import annotations

import numpy as np

from .backends import check_conv_args, check_gemm_args

__all__ = ["gemm", "conv2d"]


def gemm(a, b, table, out_dtype=np.int64, num_threads=None):
    """``out[m, n] = sum_k table[a[m, k], b[k, n]]`` (see :mod:`axkern.backends`)."""
    a, b, table, out_dtype, _ = check_gemm_args(a, b, table, out_dtype, num_threads)
    M, K = a.shape
    N = b.shape[1]
    acc = np.zeros((M, N), np.int64)
    for k in range(K):
        acc += table[a[:, k][:, None], b[k][None, :]]
    return acc.astype(out_dtype)


def conv2d(x, w, table, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           pad_code=0, out_dtype=np.int64, num_threads=None):
    """Grouped 2-D convolution of table lookups (see :mod:`axkern.backends`)."""
    (x, w, table, (sh, sw), (top, bottom, left, right), (dh, dw), groups, pad_code, out_dtype,
     _, (OH, OW)) = check_conv_args(x, w, table, stride, padding, dilation, groups, pad_code,
                                    out_dtype, num_threads)
    N, H, W, C = x.shape
    KH, KW, Cg, COUT = w.shape
    Og = COUT // groups
    xpad = np.full((N, H + top + bottom, W + left + right, C), pad_code, np.uint8)
    xpad[:, top:top + H, left:left + W, :] = x
    acc = np.zeros((N, OH, OW, COUT), np.int64)
    if acc.size == 0:
        return acc.astype(out_dtype)
    for ky in range(KH):
        for kx in range(KW):
            y0, x0 = ky * dh, kx * dw
            # Input pixel seen by tap (ky, kx) for every output position.
            patch = xpad[:, y0:y0 + sh * (OH - 1) + 1:sh, x0:x0 + sw * (OW - 1) + 1:sw, :]
            for g in range(groups):
                for c in range(Cg):
                    a = patch[..., g * Cg + c]
                    b = w[ky, kx, c, g * Og:(g + 1) * Og]
                    acc[..., g * Og:(g + 1) * Og] += table[a[..., None], b]
    return acc.astype(out_dtype)
