"""Reading ``.npy`` and ``.npz`` files that may be damaged or hostile.

:func:`numpy.load` trusts what a file says about itself: a header announcing shape
``(10**12, 10**12)`` allocates before the file turns out short (``MemoryError``), a malformed
header escapes as ``tokenize.TokenError``, and a damaged ``.npz`` member raises
``zlib.error`` or ``zipfile.BadZipFile`` only when it is first read. These readers parse the
header first, accept only plain numeric (and, where asked, string) dtypes, allocate only after
checking that the data the header announces is exactly the data the file holds, and report
every problem as a ``ValueError`` that names the file and what was expected.
"""
from __future__ import annotations

import os
import re
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npformat

__all__ = ["read_npy", "read_npz"]

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10000            # numpy's own default limit on the header's length
_NUMERIC = "biuf"              # bool, signed and unsigned integers, floats


def _reason(e):
    """One short line from an exception raised by the zip or header parsers."""
    text = str(e).strip()
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "an expression", text)
    return (text.splitlines()[0][:200] if text else type(e).__name__)


def _header(fp, label):
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream at ``fp``, checked."""
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported "
                             "(expected 1.0 or 2.0, as numpy.save writes)")
    except (zlib.error, zipfile.BadZipFile):
        raise   # a damaged archive, not a damaged header: reported by read_npz
    except Exception as e:  # ValueError, tokenize.TokenError, SyntaxError, EOFError, ...
        reason = _reason(e)
        raise ValueError(f"{label}: damaged or unsupported .npy header ({reason})") from None
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"{label}: the .npy header holds an invalid shape {shape!r}")
    return shape, bool(fortran), dtype


def _check_dtype(dtype, label, kinds):
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None \
            or dtype.kind not in kinds or dtype.itemsize == 0:
        allowed = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float",
                   "U": "string"}
        raise ValueError(f"{label}: holds an array of dtype {dtype.str!r}: expected "
                         f"{' or '.join(allowed[k] for k in kinds if k in allowed)} values")


def _read_stream(fp, available, label, kinds, max_elements=None):
    """The array of the ``.npy`` stream at ``fp`` with ``available`` bytes from its start."""
    start = fp.tell()
    shape, fortran, dtype = _header(fp, label)
    _check_dtype(dtype, label, kinds)
    count = 1
    for n in shape:
        count *= n
    if max_elements is not None and count > max_elements:
        raise ValueError(f"{label}: the .npy header announces shape {shape} ({count} elements): "
                         f"expected at most {max_elements}")
    nbytes = count * dtype.itemsize
    have = available - (fp.tell() - start)
    if nbytes != have:
        raise ValueError(f"{label}: the .npy header announces shape {shape} of {dtype.str} "
                         f"({nbytes} bytes of data) but the file holds {max(have, 0)} bytes: "
                         "the file is truncated or damaged")
    buf = bytearray(nbytes)
    got = fp.readinto(buf) if nbytes else 0
    if got != nbytes:
        raise ValueError(f"{label}: truncated .npy data ({got} of {nbytes} bytes)")
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


def read_npy(path, *, what="a NumPy .npy array saved with numpy.save", kinds=_NUMERIC,
             max_elements=None):
    """Read a ``.npy`` file written by :func:`numpy.save`, checking it before allocating.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should be, for the error messages, including how it is made.
    kinds : str
        Accepted dtype kinds (``numpy.dtype.kind``), default bool, int, uint and float.
    max_elements : int, optional
        Refuse (before reading the data) an array announcing more elements.

    Returns
    -------
    ndarray

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        When the file is not a readable ``.npy`` file of an accepted dtype (the message names
        the file).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        if head != _NPY_MAGIC:
            hint = " (it is a zip archive, e.g. an .npz)" if head[:2] == b"PK" else ""
            # `what` says how such a file is made: not repeated here
            raise ValueError(f"{path}: not a NumPy .npy file{hint}: expected {what}")
        f.seek(0)
        return _read_stream(f, os.fstat(f.fileno()).st_size, path, kinds, max_elements)


def read_npz(path, *, what="a NumPy .npz archive", keys=None, kinds=_NUMERIC):
    """Read the arrays of an ``.npz`` archive written by :func:`numpy.savez`, checked.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should be, for the error messages.
    keys : sequence of str, optional
        Read only these arrays; a missing one is a ``ValueError`` that lists those present.
        Default: every array in the archive.
    kinds : str
        Accepted dtype kinds, as in :func:`read_npy`.

    Returns
    -------
    dict of str to ndarray
        In the archive's order (``keys``' order when given).

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        When the file is not a readable ``.npz`` archive (a damaged zip, a member that fails
        its checksum or does not decompress, a damaged or hostile ``.npy`` member, a dtype not
        accepted): the message names the file and, where it applies, the array.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head == _NPY_MAGIC:
        raise ValueError(f"{path}: is a single NumPy .npy array: expected {what} (an .npz "
                         "archive written by numpy.savez)")
    try:
        with zipfile.ZipFile(path) as z:
            members = {}
            for info in z.infolist():
                if info.filename.endswith(".npy") and not info.is_dir():
                    members.setdefault(info.filename[:-4], info)
            names = list(members) if keys is None else list(keys)
            missing = [k for k in names if k not in members]
            if missing:
                raise ValueError(f"{path}: has no array {', '.join(map(repr, missing))}: expected "
                                 f"{what}; it holds {sorted(members) or 'no arrays'}")
            out = {}
            for k in names:
                label = f"{path}: array {k!r}"
                with z.open(members[k]) as fp:
                    out[k] = _read_stream(fp, members[k].file_size, label, kinds)
            return out
    except ValueError as e:
        if str(e).startswith(path):   # ours, already naming the file
            raise
        raise ValueError(f"{path}: not a readable .npz archive ({e}): expected {what}") from None
    except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ...
        reason = _reason(e)
        raise ValueError(f"{path}: damaged or not an .npz archive ({reason}): expected "
                         f"{what}") from None
