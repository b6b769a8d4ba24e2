"""Exact low-rank factors of multiplier tables.

Many approximate multipliers change their operands and then multiply exactly: DRUM keeps a
few leading bits of each operand, perforated multipliers drop partial products of chosen
bits of one operand, and the exact multiplier is ``a * b`` itself. Their table is an outer
product, ``T[a, b] = U[a] * V[b]``. Truncated and broken-array multipliers drop partial
products by position, which leaves a sum of a few such products. When

    T[a, b] = sum_{i < r} U[a, i] * V[b, i]      (exactly, integers)

a sum of table entries is a sum of ``r`` integer products per step,
``sum_k T[a_k, b_k] = sum_k sum_i U[a_k, i] * V[b_k, i]``, which the compiled kernels
compute as an integer matrix product without lookups (the ``"factored"`` method of
``axkern._fast``). :func:`factor_table` finds such factors with int16 entries, and says so
only after checking all 65536 entries.
"""
import numpy as np

__all__ = ["factor_table", "MAX_RANK"]

#: The largest rank looked for: the factored kernel costs about 0.36 expanded-table lookups
#: per factor (Zen 3), so beyond 4 factors the expanded tables are faster.
MAX_RANK = 4
_SAMPLE_ROWS = np.arange(32) * 37 % 256

_INT16 = 32767


def _lattice_basis(P):
    """An upper-triangular integer basis (r, r) of the lattice spanned by the rows of P
    (n, r) of rank r, by Euclid's algorithm on each column, in Python integers (the
    entries of a triangular basis can grow far beyond int64); None if P's rank is below r."""
    r = P.shape[1]
    work = P[np.any(P != 0, axis=1)].astype(object)
    basis = []
    for c in range(r):
        while True:
            nz = np.flatnonzero(work[:, c] != 0)
            if len(nz) <= 1:
                break
            i = nz[np.argmin(np.abs(work[nz, c]))]
            piv = work[i].copy()
            others = nz[nz != i]
            work[others] -= (work[others, c] // piv[c])[:, None] * piv
        nz = np.flatnonzero(work[:, c] != 0)
        if len(nz) == 0:
            return None
        piv = work[nz[0]].copy()
        basis.append(piv if piv[c] > 0 else -piv)
        work = np.delete(work, nz[0], axis=0)
        work = work[np.any(work != 0, axis=1)]
    if len(work):
        return None
    return np.array(basis, dtype=object)


def _pivots(T, max_rank, tol=None):
    """Rows and columns of up to max_rank pivots of Gaussian elimination with full pivoting
    on T (float64), whose count is T's rank; None when the rank exceeds max_rank. Plain
    NumPy, no BLAS: BLAS threads keep spinning after a call and would slow the kernels."""
    A = T.astype(np.float64)
    if tol is None:
        tol = np.abs(A).max() * 1e-9
    rows, cols = [], []
    for step in range(max_rank + 1):
        i, j = np.unravel_index(np.argmax(np.abs(A)), A.shape)
        if abs(A[i, j]) <= tol:
            return rows, cols
        if step == max_rank:
            return None
        rows.append(int(i))
        cols.append(int(j))
        A -= np.multiply.outer(A[:, j] / A[i, j], A[i, :])
    return None


def _reduce_columns(U):
    """U times a unimodular matrix (the same lattice of combinations of its columns) with
    short columns: the triangular basis can leave coordinates of 10^11 and more where factors
    of a few hundred exist. Pairwise size reduction in Python integers, repeated until no
    column shortens (r <= 8 columns)."""
    U = U.copy()
    r = U.shape[1]
    for _ in range(200):
        changed = False
        for i in range(r):
            for j in range(r):
                nj = int(U[:, j] @ U[:, j])
                if i == j or not nj:
                    continue
                # the nearest integer to <u_i, u_j> / <u_j, u_j>, exactly
                q = (2 * int(U[:, i] @ U[:, j]) + nj) // (2 * nj)
                if q:
                    U[:, i] -= q * U[:, j]
                    changed = True
        if not changed:
            break
    return U


def _solve(A, B):
    """A^-1 B for a small invertible A, by Gaussian elimination with partial pivoting in
    plain NumPy (no BLAS threads; A is r x r, r <= 8)."""
    A, B = A.copy(), B.copy()
    r = A.shape[0]
    for c in range(r):
        p = c + int(np.argmax(np.abs(A[c:, c])))
        A[[c, p]], B[[c, p]] = A[[p, c]], B[[p, c]]
        for i in range(r):
            if i != c:
                f = A[i, c] / A[c, c]
                A[i] -= f * A[c]
                B[i] -= f * B[c]
    return B / np.diag(A)[:, None]


def _factors(T, max_rank):
    """(U, V) int64 with U @ V.T == T, or None: U the coordinates of T's pivot columns in an
    integer basis of the lattice their rows span, V solved on the pivot rows."""
    piv = _pivots(T, max_rank)
    if piv is None:
        return None
    rows, cols = piv
    r = len(rows)
    P = T[:, np.sort(cols)]
    H = _lattice_basis(P)
    if H is None:
        return None
    U = np.zeros((T.shape[0], r), dtype=object)
    rem = P.astype(object)
    for c in range(r):
        if np.any(rem[:, c] % H[c, c] != 0):
            return None
        U[:, c] = rem[:, c] // H[c, c]
        rem -= U[:, c:c + 1] * H[c]
    if np.any(rem != 0):
        return None
    # The triangular basis's coordinates, or the same reduced to short columns (whose
    # V can come out longer): the first whose factors both fit int16.
    rows = np.sort(rows)
    for reduced in (False, True):
        cand = _reduce_columns(U) if reduced else U
        if max(abs(int(u)) for u in cand.ravel()) > _INT16:
            continue
        Ui = cand.astype(np.int64)
        # T[rows] has rank r, so U[rows] is invertible; V rounds to integers if U works
        Vt = np.rint(_solve(Ui[rows].astype(np.float64), T[rows].astype(np.float64)))
        if np.abs(Vt).max() > _INT16:
            continue
        V = Vt.astype(np.int64).T
        if np.array_equal(Ui @ V.T, T):
            return Ui, V
    return None


def factor_table(table, max_rank=MAX_RANK):
    """Exact integer factors of a multiplier table, if it has some of low rank.

    Parameters
    ----------
    table : array_like of int, shape (256, 256)
        ``table[a, b]``, indexed by the operands' codes.
    max_rank : int, optional
        The most factors to look for (at most 8, the compiled kernels' limit).

    Returns
    -------
    (U, V) : tuple of ndarray of int16, shapes (256, r), or None
        ``table[a, b] == sum_i U[a, i] * V[b, i]`` for every entry, with ``r`` the table's
        rank (``r >= 1``; an all-zero table gives one zero factor each); None when the rank
        exceeds ``max_rank`` or no factors with int16 entries were found. Their products
        overflow int16: widen them before multiplying.

    Examples
    --------
    >>> import numpy as np
    >>> from axkern.lowrank import factor_table
    >>> a = np.arange(256)
    >>> U, V = factor_table(np.outer(a, a))
    >>> U.shape, bool((U.astype(np.int64) @ V.T.astype(np.int64) == np.outer(a, a)).all())
    ((256, 1), True)
    """
    T = np.asarray(table)
    if T.shape != (256, 256) or not np.issubdtype(T.dtype, np.integer):
        raise ValueError(f"table must be an integer array of shape (256, 256), got "
                         f"{T.dtype} {T.shape}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) \
            or not 1 <= max_rank <= 8:
        raise ValueError(f"max_rank must be an int from 1 to 8, got {max_rank!r}")
    T = T.astype(np.int64)
    if not T.any():
        z = np.zeros((256, 1), dtype=np.int16)
        return z, z.copy()
    # Rows of T have at most T's rank: 32 of them (every bit pattern in the low and the high
    # bits: truncated products differ in the low ones) of a higher rank than max_rank
    # reject the table in ~0.3 ms (most tables of no low rank: the full elimination, twice,
    # takes ~10 ms, which every new multiplier's first call would pay).
    if _pivots(T[_SAMPLE_ROWS], int(max_rank), np.abs(T).max() * 1e-9) is None:
        return None
    # factors of T or, transposed, of T.T: whichever fits int16
    for transposed in (False, True):
        f = _factors(T.T if transposed else T, int(max_rank))
        if f is not None:
            U, V = f[::-1] if transposed else f
            return (np.ascontiguousarray(U, dtype=np.int16),
                    np.ascontiguousarray(V, dtype=np.int16))
    return None
