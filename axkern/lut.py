"""The multiplier object and its lookup-table file formats.

A multiplier of bit width ``n`` is a table ``T`` of shape ``(2**n, 2**n)``: ``T[i, j]`` is the
circuit's output for activation operand ``a`` (row) and weight operand ``b`` (column), where
``i`` and ``j`` are the operands' codes. For unsigned circuits the code is the operand itself;
for signed circuits it is the two's-complement bit pattern, ``a & (2**n - 1)``.

Formats
-------
``.bin`` (TFApprox): ``4**n`` little-endian 16-bit integers, row-major, entry ``(a << n) | b``;
uint16 for unsigned circuits, int16 for signed ones.

C header (AdaPT): ``#include <stdint.h>`` then ``const int16_t lut[256][256] = {...};``
(``uint16_t`` for unsigned circuits), indexed ``[(uint8_t)a][(uint8_t)b]``.
"""
from __future__ import annotations

import os
import re

import numpy as np

__all__ = ["Multiplier", "operand_values"]

MIN_BITS, MAX_BITS = 2, 8


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an integer between {MIN_BITS} and {MAX_BITS}, got {bits!r}")
    bits = int(bits)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit width {bits} is out of range: expected {MIN_BITS} to {MAX_BITS}")
    return bits


def operand_values(bits, signed):
    """Operand value of every code ``0 .. 2**bits - 1`` (two's complement when signed)."""
    bits = _check_bits(bits)
    codes = np.arange(1 << bits, dtype=np.int64)
    if signed:
        codes = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
    return codes


class Multiplier:
    """An n-bit multiplier given by its full lookup table.

    Parameters
    ----------
    table : array_like of int, shape (2**n, 2**n)
        ``table[i, j]`` is the product of the operands whose codes are ``i`` (activation, row)
        and ``j`` (weight, column). Codes of signed operands are two's-complement bit patterns.
    signed : bool, default False
        Whether the operands are two's-complement signed integers.
    name : str, optional
        A short name, used in reports.
    metadata : dict, optional
        Free-form facts about the circuit (EvoApproxLib sources carry power, area, delay).

    Attributes
    ----------
    bits : int
        Operand bit width ``n``.
    table : ndarray of int32, shape (2**n, 2**n)
        Read-only lookup table.
    """

    def __init__(self, table, *, signed=False, name=None, metadata=None):
        arr = np.asarray(table)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                pass  # integral floats (e.g. from np.loadtxt) are accepted
            else:
                raise TypeError(f"multiplier table must hold integers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"multiplier table must be square of shape (2**n, 2**n), got shape {arr.shape}")
        size = arr.shape[0]
        bits = size.bit_length() - 1
        if size != 1 << bits or not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(
                f"multiplier table has shape {arr.shape}: expected (2**n, 2**n) with n from "
                f"{MIN_BITS} to {MAX_BITS}, e.g. (256, 256) for 8 bits")
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError("multiplier table values must fit in int32")
        t = np.array(arr, dtype=np.int32, order="C", copy=True)
        t.setflags(write=False)
        self._table = t
        self.bits = bits
        self.signed = bool(signed)
        self.name = str(name) if name is not None else ("mul%d%s" % (bits, "s" if signed else "u"))
        self.metadata = dict(metadata or {})

    # ------------------------------------------------------------------ constructors
    @classmethod
    def exact(cls, bits=8, signed=False):
        """The exact multiplier: ``T[a, b] = a * b``."""
        bits = _check_bits(bits)
        v = operand_values(bits, signed)
        return cls(np.multiply.outer(v, v), signed=signed,
                   name="exact%d%s" % (bits, "s" if signed else "u"))

    @classmethod
    def from_function(cls, f, bits=8, signed=False, name=None, metadata=None):
        """Tabulate a vectorized Python function ``f(a, b)`` of two integer arrays.

        ``a`` and ``b`` are the operand *values* (negative for signed operands), broadcast
        against each other as a column and a row.
        """
        bits = _check_bits(bits)
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        v = operand_values(bits, signed)
        out = np.asarray(f(v[:, None], v[None, :]))
        out = np.broadcast_to(out, (v.size, v.size))
        return cls(out, signed=signed, name=name or getattr(f, "__name__", None), metadata=metadata)

    @classmethod
    def from_array(cls, table, signed=False, name=None, metadata=None):
        """A multiplier from a table indexed by operand codes (see the class docstring)."""
        return cls(table, signed=signed, name=name, metadata=metadata)

    @classmethod
    def from_c(cls, path, function=None, signed=None, bits=None, *, timeout=60.0, cache=True):
        """Compile a C multiplier and tabulate it over every operand pair.

        See :func:`axkern.csource.tabulate_c` for the accepted signatures and options. The
        code runs in a child process (a crash or a hang becomes an exception) but with the
        caller's rights and no sandbox: use it only on C code you would run yourself.
        """
        from .csource import tabulate_c

        return tabulate_c(path, function=function, signed=signed, bits=bits,
                          timeout=timeout, cache=cache)

    @classmethod
    def from_bin(cls, path, signed=False, name=None):
        """Read a TFApprox ``.bin`` table (little-endian 16-bit, row-major).

        The bit width follows from the file size (``2 * 4**n`` bytes); ``signed`` picks
        int16 over uint16.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"multiplier table file not found: {path}")
        data = open(path, "rb").read()
        sizes = {2 * 4 ** n: n for n in range(MIN_BITS, MAX_BITS + 1)}
        if len(data) not in sizes:
            raise ValueError(
                f"{path}: {len(data)} bytes is not the size of a .bin multiplier table: expected "
                f"2 * 4**n bytes for n = {MIN_BITS}..{MAX_BITS} (131072 bytes for 8 bits)")
        n = sizes[len(data)]
        arr = np.frombuffer(data, dtype="<i2" if signed else "<u2").reshape(1 << n, 1 << n)
        return cls(arr, signed=signed, name=name or _stem(path))

    @classmethod
    def from_header(cls, path, signed=None, name=None):
        """Read an AdaPT-style C header holding ``lut[2**n][2**n]``.

        Signedness follows the element type (``int16_t`` signed, ``uint16_t`` unsigned) unless
        ``signed`` is given.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"C header not found: {path}")
        text = open(path, "r", encoding="utf-8", errors="replace").read()
        text_nc = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text_nc = re.sub(r"//[^\n]*", " ", text_nc)
        m = re.search(r"\b(u?int(?:8|16|32|64)_t|(?:unsigned\s+)?(?:short|int|long))\s+"
                      r"([A-Za-z_]\w*)\s*\[\s*(\d+)\s*\]\s*\[\s*(\d+)\s*\]\s*=\s*\{", text_nc)
        if not m:
            raise ValueError(f"{path}: no two-dimensional table definition such as "
                             "'const int16_t lut[256][256] = {...};' was found")
        ctype, rows, cols = m.group(1), int(m.group(3)), int(m.group(4))
        end = text_nc.find(";", m.end())
        body = text_nc[m.end():end if end >= 0 else len(text_nc)]
        # integer literals with C suffixes (7u, 0x1FL) and C octal (017); digits inside
        # identifiers such as a cast "(int16_t)" are not values
        tokens = re.findall(r"(?<![\w.])([-+]?)\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*(?![\w.])", body)
        values = [_c_int(sign, digits) for sign, digits in tokens]
        if rows != cols or rows not in {1 << n for n in range(MIN_BITS, MAX_BITS + 1)}:
            raise ValueError(f"{path}: table is declared [{rows}][{cols}]: expected a square "
                             f"[2**n][2**n] table with n = {MIN_BITS}..{MAX_BITS}")
        if len(values) != rows * cols:
            raise ValueError(f"{path}: table '{m.group(2)}' holds {len(values)} values: expected "
                             f"{rows * cols} for a full [{rows}][{cols}] table")
        if signed is None:
            signed = not ctype.startswith("u") and not ctype.startswith("unsigned")
        return cls(np.array(values, dtype=np.int64).reshape(rows, cols), signed=signed,
                   name=name or _stem(path))

    # ------------------------------------------------------------------ writers
    def _checked_16bit(self):
        lo, hi = (-32768, 32767) if self.signed else (0, 65535)
        t = self._table
        if t.min() < lo or t.max() > hi:
            kind = "int16 (signed)" if self.signed else "uint16 (unsigned)"
            raise ValueError(
                f"multiplier {self.name!r} has values in [{t.min()}, {t.max()}] that do not fit "
                f"the {kind} entries of the format: expected [{lo}, {hi}]")
        return t.astype("<i2" if self.signed else "<u2")

    def to_bin(self, path):
        """Write the TFApprox ``.bin`` format (int16 for signed, uint16 for unsigned)."""
        data = self._checked_16bit().tobytes(order="C")
        with open(os.fspath(path), "wb") as f:
            f.write(data)

    def to_header(self, path, var="lut"):
        """Write an AdaPT-style C header ``const int16_t lut[N][N]`` (uint16_t if unsigned)."""
        t = self._checked_16bit().astype(np.int64)
        ctype = "int16_t" if self.signed else "uint16_t"
        n = t.shape[0]
        lines = ["/* %s: %d-bit %s multiplier table generated by axkern." % (
            self.name, self.bits, "signed" if self.signed else "unsigned"),
            " * Indexed [%s a][%s b] with a the activation and b the weight operand. */" % (
                ("(uint8_t)",) * 2 if self.bits == 8 else ("code of",) * 2),
            "#include <stdint.h>", "",
            "const %s %s[%d][%d] = {" % (ctype, var, n, n)]
        for i in range(n):
            row = ", ".join(str(v) for v in t[i])
            lines.append("  {%s}%s" % (row, "," if i < n - 1 else ""))
        lines.append("};")
        with open(os.fspath(path), "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")

    def to_npy(self, path):
        """Save the table as a ``.npy`` array (int32)."""
        np.save(os.fspath(path), self._table)

    # ------------------------------------------------------------------ properties
    @property
    def table(self):
        """Read-only int32 lookup table of shape (2**n, 2**n), indexed by operand codes."""
        return self._table

    @property
    def size(self):
        return 1 << self.bits

    def values(self):
        """Operand values of the codes 0 .. 2**n - 1."""
        return operand_values(self.bits, self.signed)

    def exact_table(self):
        """The exact product table for this bit width and signedness (int64)."""
        v = self.values()
        return np.multiply.outer(v, v)

    def error_map(self):
        """``table - exact product`` (int64, shape (2**n, 2**n)), indexed by codes.

        Use ``np.fft.fftshift`` on signed multipliers to put negative operands first.
        """
        return self._table.astype(np.int64) - self.exact_table()

    def is_exact(self):
        return bool(np.array_equal(self._table, self.exact_table()))

    def max_abs(self):
        """Largest ``|T[a, b]|``, the bound that decides the accumulator width."""
        return int(np.abs(self._table.astype(np.int64)).max())

    def __call__(self, a, b):
        """Look up ``f(a, b)`` for operand values (vectorized)."""
        a = np.asarray(a)
        b = np.asarray(b)
        lo, hi = (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1) if self.signed else (0, self.size - 1)
        for name, v in (("a", a), ("b", b)):
            if v.size and (v.min() < lo or v.max() > hi):
                raise ValueError(f"operand {name} out of range for a {self.bits}-bit "
                                 f"{'signed' if self.signed else 'unsigned'} multiplier: "
                                 f"expected values in [{lo}, {hi}]")
        mask = self.size - 1
        return self._table[a.astype(np.int64) & mask, b.astype(np.int64) & mask]

    def __eq__(self, other):
        if not isinstance(other, Multiplier):
            return NotImplemented
        return (self.bits == other.bits and self.signed == other.signed
                and np.array_equal(self._table, other._table))

    def __hash__(self):
        return hash((self.bits, self.signed, self._table.tobytes()))

    def __repr__(self):
        kind = "signed" if self.signed else "unsigned"
        exact = ", exact" if self.is_exact() else ""
        return f"Multiplier(name={self.name!r}, bits={self.bits}, {kind}{exact})"


def _c_int(sign, digits):
    """Value of a C integer literal (decimal, 0x hex or 0 octal) with an optional sign."""
    if digits[:2] in ("0x", "0X"):
        v = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        v = int(digits, 8)
    else:
        v = int(digits)
    return -v if sign == "-" else v


def _stem(path):
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]
