"""The multiplier object and its lookup-table file formats.

A multiplier of bit width ``n`` is a table ``T`` of shape ``(2**n, 2**n)``: ``T[i, j]`` is the
circuit's output for activation operand ``a`` (row) and weight operand ``b`` (column), where
``i`` and ``j`` are the operands' codes. For unsigned circuits the code is the operand itself;
for signed circuits it is the two's-complement bit pattern, ``a & (2**n - 1)``.

Formats
-------
``.bin`` (TFApprox): ``4**n`` little-endian 16-bit integers, row-major, entry ``(a << n) | b``;
uint16 for unsigned circuits, int16 for signed ones. The format does not say which:
:meth:`Multiplier.to_bin` writes a sidecar ``PATH.bin.json`` that records it (see below).

C header (AdaPT): ``#include <stdint.h>`` then ``const int16_t lut[256][256] = {...};``
(``uint16_t`` for unsigned circuits), indexed ``[(uint8_t)a][(uint8_t)b]``.

``.npy``: the table as a 2-D array. :meth:`Multiplier.to_npy` writes int16 for signed and
uint16 for unsigned tables, as ``.bin`` and ``.h`` do, so the dtype records the signedness; a
table whose values do not fit 16 bits is written as int32 with a sidecar.

Signedness
----------
Where the caller does not give ``signed``, the readers take it from, in this order: what the
file records (the ``.h`` element type, the ``.npy`` dtype int16/uint16), the sidecar
``PATH.json`` (``{"format": "axkern-multiplier", "signed": true, ...}``), the EvoApproxLib name
prefix of the file (``mul8s_*`` signed, ``mul8u_*`` unsigned, any bit width), and otherwise
unsigned. Whenever axkern decided the signedness itself, :func:`check_signedness` looks at
the table, and a :class:`SignednessWarning` says so when the other reading fits far better.
"""
from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np

__all__ = ["Multiplier", "operand_values", "SignednessWarning", "check_signedness",
           "signedness_from_name", "sidecar_path"]

MIN_BITS, MAX_BITS = 2, 8

SIDECAR_FORMAT = "axkern-multiplier"
_SIDECAR_MAX_BYTES = 1 << 20


class SignednessWarning(UserWarning):
    """A multiplier was read with a signedness that its table or its name contradicts."""


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
        # the width first: an empty table has bits = -1, and 1 << -1 raises
        if not MIN_BITS <= bits <= MAX_BITS or size != 1 << bits:
            raise ValueError(
                f"multiplier table has shape {arr.shape}: expected (2**n, 2**n) with n from "
                f"{MIN_BITS} to {MAX_BITS}, e.g. (256, 256) for 8 bits")
        # compared as Python numbers: float32(2**31) > 2**31 - 1 is False in float32 arithmetic
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < -(1 << 31) or hi > (1 << 31) - 1:
            raise ValueError(f"multiplier table values must fit in int32 [-2**31, 2**31 - 1], "
                             f"got values in [{lo}, {hi}]")
        t = np.array(arr, dtype=np.int32, order="C", copy=True)
        t.setflags(write=False)
        self._table = t
        self.bits = bits
        self.signed = _signed_flag(signed)
        self.name = str(name) if name is not None else ("mul%d%s" % (bits, "s" if signed else "u"))
        self.metadata = dict(metadata or {})

    # ------------------------------------------------------------------ constructors
    @classmethod
    def exact(cls, bits=8, signed=False):
        """The exact multiplier: ``T[a, b] = a * b``."""
        bits = _check_bits(bits)
        signed = _signed_flag(signed)
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
        signed = _signed_flag(signed)
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        v = operand_values(bits, signed)
        out = np.asarray(f(v[:, None], v[None, :]))
        out = np.broadcast_to(out, (v.size, v.size))
        return cls(out, signed=signed, name=name or getattr(f, "__name__", None), metadata=metadata)

    @classmethod
    def from_array(cls, table, signed=None, name=None, metadata=None):
        """A multiplier from a table indexed by operand codes (see the class docstring).

        ``signed=None`` reads the table as unsigned and warns (:class:`SignednessWarning`)
        if it fits a signed multiplier far better (see :func:`check_signedness`).
        """
        _check_signed_arg(signed)
        m = cls(table, signed=bool(signed), name=name, metadata=metadata)
        if signed is None:
            check_signedness(m, "the table", "no signed= was given", stacklevel=3)
        return m

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
    def from_bin(cls, path, signed=None, name=None):
        """Read a TFApprox ``.bin`` table (little-endian 16-bit, row-major).

        The bit width follows from the file size (``2 * 4**n`` bytes); ``signed`` picks
        int16 over uint16. When it is None, the sidecar ``PATH.json`` written by
        :meth:`to_bin` decides, else an EvoApproxLib name (``mul8s_*.bin`` signed), else
        unsigned (see the module docstring; a :class:`SignednessWarning` flags a table that
        fits the other reading far better).
        """
        _check_signed_arg(signed)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"multiplier table file not found: {path}")
        with open(path, "rb") as f:
            data = f.read(2 * 4 ** MAX_BITS + 1)
        sizes = {2 * 4 ** n: n for n in range(MIN_BITS, MAX_BITS + 1)}
        if len(data) not in sizes:
            size = os.path.getsize(path)
            raise ValueError(
                f"{path}: {size} bytes is not the size of a .bin multiplier table: expected "
                f"2 * 4**n bytes for n = {MIN_BITS}..{MAX_BITS} (131072 bytes for 8 bits)")
        n = sizes[len(data)]
        side = _read_sidecar(path, n)
        recorded, how = _recorded_signedness(path, None, side, ".bin")
        metadata = side["metadata"] if side else None
        arr = np.frombuffer(data, dtype="<i2" if _pick(signed, recorded) else "<u2")
        return _finish_read(cls, arr.reshape(1 << n, 1 << n), signed, recorded, how, path,
                            name or _stem(path), metadata)

    @classmethod
    def from_npy(cls, path, signed=None, name=None):
        """Read a table saved as a ``.npy`` array (see :meth:`to_npy`).

        When ``signed`` is None the dtype decides (int16 signed, uint16 unsigned, as
        :meth:`to_npy` writes them); other dtypes go by the sidecar ``PATH.json``, then an
        EvoApproxLib name (``mul8s_*.npy`` signed), else unsigned. Never unpickles.
        """
        _check_signed_arg(signed)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"multiplier table file not found: {path}")
        from ._npyio import read_npy

        # checked reading: the header is validated before anything is allocated
        arr = read_npy(path, what="a multiplier table: an integer array of shape (2**n, 2**n) "
                                  "saved with numpy.save", max_elements=4 ** MAX_BITS)
        try:
            probe = cls(arr, signed=False)  # validates shape and values
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None
        dtype_signed = (arr.dtype.kind == "i") if (arr.dtype.kind in "iu"
                                                    and arr.dtype.itemsize == 2) else None
        side = _read_sidecar(path, probe.bits)
        recorded, how = _recorded_signedness(path, dtype_signed, side, ".npy")
        if dtype_signed is not None:
            how = f"its dtype is {arr.dtype.name}"
        return _finish_read(cls, probe.table, signed, recorded, how, path, name or _stem(path),
                            side["metadata"] if side else None)

    @classmethod
    def from_header(cls, path, signed=None, name=None):
        """Read an AdaPT-style C header holding ``lut[2**n][2**n]``.

        Signedness follows the element type (``int16_t`` signed, ``uint16_t`` unsigned) unless
        ``signed`` is given. Any C integer type is accepted: ``int``, ``unsigned``,
        ``unsigned long long``, ``signed char`` (plain ``char`` counts as signed, as on x86),
        ``size_t``, the ``intN_t``/``uintN_t`` names; every entry must fit it and int32.
        """
        _check_signed_arg(signed)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"C header not found: {path}")
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            text = f.read()
        # comments become blanks of the same length, so positions still give line numbers
        blank = lambda c: re.sub(r"[^\n]", " ", c.group())  # noqa: E731
        text_nc = re.sub(r"/\*.*?\*/", blank, text, flags=re.S)
        text_nc = re.sub(r"//[^\n]*", blank, text_nc)
        # so are preprocessor lines (#include <stdint.h> comes right before the table)
        text_nc = re.sub(r"(?m)^[ \t]*#[^\n]*", blank, text_nc)
        m, ctype, other = None, None, None
        for d in re.finditer(r"\b([A-Za-z_]\w*)\s*\[\s*(\d+)\s*\]\s*\[\s*(\d+)\s*\]\s*=\s*\{",
                             text_nc):
            # the declaration's words: back to the end of the previous statement or block
            start = max(text_nc.rfind(c, 0, d.start()) for c in ";{}") + 1
            words = text_nc[start:d.start()].split()
            if _c_int_type(words) is not None:
                m = d
                ctype = " ".join(w for w in words if w not in _C_QUALIFIERS)
                break
            other = other or (" ".join(words) or "(none)", d.group(1))
        if m is None:
            if other is not None:
                raise ValueError(f"{path}: the table '{other[1]}' is declared with element type "
                                 f"'{other[0]}': expected a C integer type such as int16_t, "
                                 "uint16_t, int, unsigned long long or size_t")
            raise ValueError(f"{path}: no two-dimensional table definition such as "
                             "'const int16_t lut[256][256] = {...};' was found")
        rows, cols = int(m.group(2)), int(m.group(3))
        if rows != cols or rows not in {1 << n for n in range(MIN_BITS, MAX_BITS + 1)}:
            raise ValueError(f"{path}: table is declared [{rows}][{cols}]: expected a square "
                             f"[2**n][2**n] table with n = {MIN_BITS}..{MAX_BITS}")
        values = _parse_initializer(text_nc, m.end(), path, m.group(1), ctype, rows, cols)
        recorded = _c_int_type(ctype.split())[0]
        return _finish_read(cls, np.array(values, dtype=np.int64).reshape(rows, cols), signed,
                            recorded, f"its element type is {ctype}", path, name or _stem(path),
                            None)

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

    def to_bin(self, path, *, sidecar=True):
        """Write the TFApprox ``.bin`` format (int16 for signed, uint16 for unsigned).

        The format cannot say which, so with ``sidecar`` (the default) the signedness, name
        and metadata also go to ``PATH.json``, which :meth:`from_bin` reads. Returns the list
        of files written.
        """
        data = self._checked_16bit().tobytes(order="C")
        path = os.fspath(path)
        with open(path, "wb") as f:
            f.write(data)
        return [path] + ([self._write_sidecar(path)] if sidecar else _drop_sidecar(path))

    def _write_sidecar(self, path):
        side = sidecar_path(path)
        doc = {"format": SIDECAR_FORMAT, "version": 1, "name": self.name, "bits": self.bits,
               "signed": self.signed, "metadata": {str(k): str(v) for k, v in self.metadata.items()}}
        with open(side, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        return side

    def to_header(self, path, var="lut"):
        """Write an AdaPT-style C header ``const int16_t lut[N][N]`` (uint16_t if unsigned).

        Parameters
        ----------
        path : str or os.PathLike
            The header to write.
        var : str, default "lut"
            The array's name: a C identifier that is neither a C keyword nor a type name of
            ``<stdint.h>``, which the header includes (else the header would not compile).

        Raises
        ------
        TypeError, ValueError
            ``var`` is not such a name; the values do not fit the 16-bit element type.
        """
        _check_c_name(var)
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
        """Save the table as a ``.npy`` array that records the signedness in its dtype.

        int16 for signed and uint16 for unsigned tables, as in ``.bin`` and ``.h`` files; a
        table whose values do not fit that is saved as int32, with the sidecar ``PATH.json``
        of :meth:`to_bin`. ``.npy`` is appended to a path that does not end in it (in any
        case), as :func:`numpy.save` does. Returns the list of files written.
        """
        path = os.fspath(path)
        # as np.save does, but ".NPY" counts too (the CLI picks the format case-insensitively)
        if not path.lower().endswith(".npy"):
            path += ".npy"
        lo, hi = (-32768, 32767) if self.signed else (0, 65535)
        t = self._table
        fits = bool(t.min() >= lo and t.max() <= hi)
        # a file object: np.save would append ".npy" to a name ending in ".NPY"
        with open(path, "wb") as f:
            np.save(f, t.astype(np.int16 if self.signed else np.uint16) if fits else t)
        return [path] + (_drop_sidecar(path) if fits else [self._write_sidecar(path)])

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
        """Look up ``f(a, b)`` for operand values (vectorized).

        Parameters
        ----------
        a, b : array_like of int
            Operand values (negative for signed multipliers), broadcast against each other.
            Floats are accepted only where they hold whole numbers.

        Returns
        -------
        ndarray of int32
            The table's entries.

        Raises
        ------
        TypeError
            An operand is not numeric.
        ValueError
            An operand is not a whole number, or out of the operand range.
        """
        a = _integral_operand("a", a)
        b = _integral_operand("b", b)
        lo, hi = (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1) if self.signed else (0, self.size - 1)
        for name, v in (("a", a), ("b", b)):
            if v.size and (v.min() < lo or v.max() > hi):
                raise ValueError(f"operand {name} out of range for a {self.bits}-bit "
                                 f"{'signed' if self.signed else 'unsigned'} multiplier: "
                                 f"expected values in [{lo}, {hi}]")
        mask = self.size - 1
        return self._table[a.astype(np.int64) & mask, b.astype(np.int64) & mask]

    def __getstate__(self):
        # (pickle and copy.deepcopy) without the kernels' caches (``_axkern_*``, e.g. the
        # frozen, registered 256 x 256 table: a copy of it would be an unregistered writeable
        # array that every table cache then misses); the copy builds its own on first use
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_axkern_")}

    def __setstate__(self, state):
        # (pickles written before __getstate__ existed still hold the caches: dropped too)
        self.__dict__.update({k: v for k, v in state.items() if not k.startswith("_axkern_")})
        self._table.setflags(write=False)   # read-only, as the original's

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


def _integral_operand(name, v):
    """``v`` as an array of whole numbers (integers, or floats that hold them): a fractional
    operand would otherwise be truncated without a word."""
    v = np.asarray(v)
    if v.dtype == bool or np.issubdtype(v.dtype, np.integer):
        return v
    if not np.issubdtype(v.dtype, np.floating):
        raise TypeError(f"operand {name} must hold integers, got dtype {v.dtype}")
    bad = ~np.isfinite(v) | (v != np.round(v)) if v.size else np.zeros(0, bool)
    if bad.any():
        raise ValueError(f"operand {name} holds non-integer values (e.g. {v[bad].flat[0].item()!r}"
                         "): expected whole numbers")
    return v  # converted after the range check, where 1e300 cannot wrap


# Element types a header may declare, with their widths on LP64 (long and size_t: 64 bits).
# Plain char counts as signed, as on x86.
_C_INT_NAMES = {"size_t": (False, 64), "ssize_t": (True, 64), "ptrdiff_t": (True, 64),
                "intptr_t": (True, 64), "uintptr_t": (False, 64), "intmax_t": (True, 64),
                "uintmax_t": (False, 64)}
for _w in (8, 16, 32, 64):
    for _v in ("", "_least", "_fast"):
        _C_INT_NAMES[f"int{_v}{_w}_t"] = (True, _w)
        _C_INT_NAMES[f"uint{_v}{_w}_t"] = (False, _w)
del _w, _v
_C_BASE_WORDS = ("signed", "unsigned", "char", "short", "int", "long")
_C_QUALIFIERS = {"const", "volatile", "static", "extern", "register"}


# C11 and C23 keywords: none of them can name the table in a header
_C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic
    _Imaginary _Noreturn _Static_assert _Thread_local alignas alignof bool constexpr false
    nullptr static_assert thread_local true typeof typeof_unqual _BitInt _Decimal32
    _Decimal64 _Decimal128""".split())


def _check_c_name(var):
    """Return ``var`` if it can name the table in a header of :meth:`Multiplier.to_header`.

    Parameters
    ----------
    var : str
        The proposed name.

    Returns
    -------
    str
        ``var`` unchanged.

    Raises
    ------
    TypeError
        ``var`` is not a string.
    ValueError
        ``var`` is not a C identifier, or it is a C keyword or a ``<stdint.h>`` type name.
    """
    if not isinstance(var, str):
        raise TypeError(f"the table's name must be a string, got {type(var).__name__}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
        raise ValueError(f"the table's name must be a C identifier such as lut (letters, "
                         f"digits and '_', not starting with a digit), got {var!r}")
    if var in _C_KEYWORDS or var in _C_INT_NAMES:
        what = "a C keyword" if var in _C_KEYWORDS else "a type name of <stdint.h>"
        raise ValueError(f"the table's name {var!r} is {what}: expected another C identifier "
                         "such as lut")
    return var


def _c_int_type(words):
    """(signed, bits) of a C integer type given as its words (qualifiers allowed), or None.

    Accepts the combinations C allows: ``unsigned``, ``signed char``, ``unsigned short int``,
    ``long long``, ``unsigned long long int`` (in any order), and the single names of
    ``<stdint.h>``/``<stddef.h>`` (``uint16_t``, ``int_least8_t``, ``size_t``, ...).
    """
    words = [w for w in words if w not in _C_QUALIFIERS]
    if len(words) == 1 and words[0] in _C_INT_NAMES:
        return _C_INT_NAMES[words[0]]
    if not words or any(w not in _C_BASE_WORDS for w in words):
        return None
    count = {w: words.count(w) for w in _C_BASE_WORDS}
    if (count["signed"] + count["unsigned"] > 1 or count["char"] > 1 or count["short"] > 1
            or count["int"] > 1 or count["long"] > 2
            or count["char"] and (count["short"] or count["int"] or count["long"])
            or count["short"] and count["long"]):
        return None
    signed = not count["unsigned"]
    bits = 8 if count["char"] else 16 if count["short"] else 64 if count["long"] else 32
    return signed, bits


_C_TYPE_WORD = (r"(?:const|volatile|signed|unsigned|char|short|int|long|size_t|ssize_t|"
                r"ptrdiff_t|u?intptr_t|u?intmax_t|u?int(?:_least|_fast)?(?:8|16|32|64)_t)")
_TOKEN = re.compile(rf"""\s*(?:
    (?P<punct>[{{}},])
  | (?P<cast>\(\s*{_C_TYPE_WORD}(?:\s+{_C_TYPE_WORD})*\s*\))
  | (?P<sign>[-+])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|0[bB][01]+|[0-9]+)[uUlL]*)(?![\w.])
  | (?P<bad>[\w.]+|\S))
""", re.X)
_LITERAL = re.compile(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|[0-9]+)"
                      r"((?:[uU](?:ll|LL|[lL])?|(?:ll|LL|[lL])[uU]?)?)")


# What axkern and most exporters write: plain decimal literals (no octal), flat or in rows. A
# table in this form is read in one regular-expression pass; anything else (or any error)
# goes through the token-by-token parser, which names the faulty position.
_DEC = r"-?(?:0|[1-9][0-9]{0,9})"
_PLAIN_ROW = rf"\{{\s*{_DEC}(?:\s*,\s*{_DEC})*\s*,?\s*\}}"
_PLAIN = re.compile(rf"(?:\s*{_DEC}(?:\s*,\s*{_DEC})*\s*,?\s*"
                    rf"|\s*{_PLAIN_ROW}(?:\s*,\s*{_PLAIN_ROW})*\s*,?\s*)\}}\s*;")


def _plain_initializer(text, pos, lo, hi, rows, cols):
    """Values of a plain decimal initializer, or None to use the full parser."""
    m = _PLAIN.match(text, pos)
    if not m:
        return None
    body = text[pos:m.end()]
    values = np.array(re.findall(r"-?\d+", body), dtype=np.int64)
    if values.size != rows * cols or values.min() < lo or values.max() > hi:
        return None
    groups = re.findall(r"\{[^{}]*\}", body)
    if groups and (len(groups) != rows or any(g.count(",") - g.rstrip("} \t\r\n").endswith(",")
                                             != cols - 1 for g in groups)):
        return None
    return values


def _ctype_range(ctype):
    signed, bits = _c_int_type(ctype.split())
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _c_literal(tok):
    """Value of a C integer literal (decimal, 0x hex, 0b binary, 0 octal; u/l suffixes), or None
    when it is not a valid one (``08``, ``7uu``, ``5lul``)."""
    if tok.isdigit() and (tok[0] != "0" or len(tok) == 1):
        return int(tok)   # the common case: plain decimal
    m = _LITERAL.fullmatch(tok)
    if not m:
        return None
    digits = m.group(1)
    if digits[:2] in ("0x", "0X"):
        return int(digits, 16)
    if digits[:2] in ("0b", "0B"):
        return int(digits[2:], 2)
    if len(digits) > 1 and digits[0] == "0":
        return int(digits, 8) if re.fullmatch(r"[0-7]+", digits) else None
    return int(digits)


def _parse_initializer(text, pos, path, var, ctype, rows, cols):
    """The values of the brace initializer that starts after the ``{`` at ``text[pos - 1]``.

    Strict: only integer literals (with signs and casts), braces and commas; every literal is
    valid C and within the range of ``ctype``; either ``rows * cols`` values in one list or
    ``rows`` braced rows of ``cols`` values each. Errors name the file, line and column.
    """
    lo, hi = _ctype_range(ctype)
    plain = _plain_initializer(text, pos, lo, hi, rows, cols)
    if plain is not None:
        return plain

    def where(p):
        line = text.count("\n", 0, p) + 1
        return f"{path}, line {line}, column {p - (text.rfind(chr(10), 0, p) + 1) + 1}"

    values, row_counts = [], []
    depth, sign, pending, expect_value = 1, 1, False, True
    row_start = None
    p = pos
    for tm in _TOKEN.finditer(text, pos):
        kind = tm.lastgroup
        p = tm.start(kind)
        tok = tm.group(kind)
        if kind == "number":
            v = _c_literal(tok)
            if v is None:
                raise ValueError(f"{where(p)}: {tok!r} is not a valid C integer literal "
                                 f"(in the table '{var}')")
            if not expect_value:
                raise ValueError(f"{where(p)}: a comma is missing before {tok!r} in the table '{var}'")
            v *= sign
            if not lo <= v <= hi:
                i = len(values)
                raise ValueError(f"{where(p)}: entry [{i // cols}][{i % cols}] = {v} is outside "
                                 f"the range of {ctype}: expected {lo}..{hi}")
            if not -(1 << 31) <= v <= (1 << 31) - 1:
                i = len(values)
                raise ValueError(f"{where(p)}: entry [{i // cols}][{i % cols}] = {v} does not fit "
                                 "a multiplier table: expected values that fit int32 "
                                 "[-2**31, 2**31 - 1]")
            values.append(v)
            sign, pending, expect_value = 1, False, False
        elif kind == "bad":
            raise ValueError(f"{where(p)}: unexpected {tok[:40]!r} in the table '{var}': expected "
                             "integer literals separated by commas, in braces")
        elif kind == "sign":
            if not expect_value:
                raise ValueError(f"{where(p)}: unexpected {tok!r} in the table '{var}'")
            sign, pending = (-sign if tok == "-" else sign), True
        elif kind == "cast":
            if not expect_value or _c_int_type(tok.strip("() \t\r\n").split()) is None:
                raise ValueError(f"{where(p)}: unexpected cast {tok!r} in the table '{var}'")
        elif pending:
            raise ValueError(f"{where(p)}: a sign without a value in the table '{var}'")
        elif tok == ",":
            if expect_value:
                raise ValueError(f"{where(p)}: an empty entry (',' without a value) in the "
                                 f"table '{var}'")
            expect_value = True
        elif tok == "{":
            if depth != 1 or not expect_value:
                raise ValueError(f"{where(p)}: unexpected '{{' in the table '{var}': expected "
                                 f"at most one level of braces for the rows")
            depth, row_start = 2, len(values)
        else:  # "}"
            if depth == 2:
                row_counts.append(len(values) - row_start)
            depth -= 1
            expect_value = False
            if depth == 0:
                p = tm.end()
                break
    else:
        raise ValueError(f"{path}: the initializer of '{var}' is not closed: expected "
                         "'};' after the last value")
    if not re.match(r"\s*;", text[p:]):
        bad = re.match(r"\s*(\S{0,40})", text[p:]).group(1)
        raise ValueError(f"{where(p)}: expected ';' after the table '{var}', found {bad!r}")
    if len(values) != rows * cols:
        raise ValueError(f"{path}: table '{var}' holds {len(values)} values: expected "
                         f"{rows * cols} for a full [{rows}][{cols}] table")
    if row_counts and (len(row_counts) != rows or any(c != cols for c in row_counts)
                       or row_counts and len(values) != sum(row_counts)):
        bad = next((i for i, c in enumerate(row_counts) if c != cols), len(row_counts))
        raise ValueError(f"{path}: table '{var}' has {len(row_counts)} braced rows and row {bad} "
                         f"holds {row_counts[bad] if bad < len(row_counts) else 0} values: "
                         f"expected {rows} rows of {cols} values")
    return values


def _stem(path):
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


# ------------------------------------------------------------------ signedness
_NAME_PREFIX = re.compile(r"mul(\d+)([su])_")


def signedness_from_name(name):
    """True for an EvoApproxLib-style name ``mul<N>s_*``, False for ``mul<N>u_*``, else None."""
    m = _NAME_PREFIX.match(os.path.basename(str(name)))
    return None if m is None else m.group(2) == "s"


def sidecar_path(path):
    """The sidecar of a table file: ``PATH.json`` (``t.bin`` -> ``t.bin.json``)."""
    return os.fspath(path) + ".json"


def _drop_sidecar(path):
    """Remove a sidecar an earlier write left next to ``path`` (it would describe another
    table); returns [] for the list of files written."""
    try:
        os.remove(sidecar_path(path))
    except FileNotFoundError:
        pass
    return []


def _read_sidecar(path, bits):
    """The sidecar of ``path`` as {"signed": bool, "metadata": dict}, or None if there is none."""
    side = sidecar_path(path)
    if not os.path.isfile(side):
        return None
    hint = "delete it or rewrite the table with axkern"
    try:
        with open(side, "rb") as f:
            raw = f.read(_SIDECAR_MAX_BYTES + 1)
        if len(raw) > _SIDECAR_MAX_BYTES:
            raise ValueError("larger than 1 MiB")
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{side}: unreadable sidecar of {path} ({e}): {hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{side}: not an axkern sidecar (no \"format\": \"{SIDECAR_FORMAT}\"): "
                         f"{hint}")
    if not isinstance(doc.get("signed"), bool):
        raise ValueError(f"{side}: \"signed\" must be true or false, got {doc.get('signed')!r}: "
                         f"{hint}")
    if doc.get("bits", bits) != bits:
        raise ValueError(f"{side}: records a {doc.get('bits')!r}-bit table but {path} holds a "
                         f"{bits}-bit one: {hint}")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{side}: \"metadata\" must be an object: {hint}")
    return {"signed": doc["signed"], "metadata": {str(k): str(v) for k, v in meta.items()}}


def _recorded_signedness(path, from_file, side, ext):
    """(signed or None, how it is known) from the file itself, its sidecar or its name."""
    if from_file is not None:
        return from_file, "the file records it"
    if side is not None:
        return side["signed"], f"its sidecar {os.path.basename(sidecar_path(path))} says so"
    by_name = signedness_from_name(_stem(path))
    if by_name is not None:
        return by_name, f"its name starts with mul..{'s' if by_name else 'u'}_"
    return None, f"a {ext} file does not record signedness"


def _pick(signed, recorded):
    if signed is not None:
        return bool(signed)
    return bool(recorded)


def _check_signed_arg(signed):
    if signed is not None and not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True, False or None, got {signed!r}")


def _signed_flag(signed):
    """``signed`` as a bool; anything but a bool is refused: ``bool("no")`` is True."""
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be True or False, got {signed!r}")
    return bool(signed)


def _finish_read(cls, table, signed, recorded, how, path, name, metadata):
    try:
        m = cls(table, signed=_pick(signed, recorded), name=name, metadata=metadata)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path}: {e}") from None
    if signed is None:
        check_signedness(m, path, how, stacklevel=4)
    elif recorded is not None and bool(signed) != recorded:
        kind = "signed" if recorded else "unsigned"
        warnings.warn(f"{path}: read as {'signed' if signed else 'unsigned'} as asked, although "
                      f"{how} ({kind})", SignednessWarning, stacklevel=3)
    return m


def _mae_pct(values, bits, signed):
    v = operand_values(bits, signed)
    err = values - np.multiply.outer(v, v)
    return 100.0 * float(np.abs(err).mean()) / (1 << (2 * bits))


def _other_readings(t, signed):
    """The table's values under the other signedness: as they are, and re-read as 16-bit
    patterns (a signed table stored as uint16, or an unsigned one as int16)."""
    out = [t]
    if signed and t.min() >= -32768 and t.max() <= 32767:
        out.append(np.where(t < 0, t + 65536, t))
    if not signed and t.min() >= 0 and t.max() <= 65535:
        out.append(np.where(t >= 32768, t - 65536, t))
    return out


def check_signedness(m, source="multiplier", how=None, *, names=(), stacklevel=2):
    """Warn when a multiplier's table or name says it has the other signedness.

    Rule: with ``E`` the MAE% of the table against the exact product of its own signedness
    and ``E'`` the smallest MAE% of the other reading (operand codes taken as the other
    signedness; values as they are, or re-read as 16-bit patterns of the other kind), warn
    when ``E >= 1`` and ``E' <= E / 10``. Real approximate multipliers have MAE% well below
    1 and are far worse under the other reading. Also warn when the name starts with an
    EvoApproxLib prefix (``mul8s_`` / ``mul8u_``) of the other kind.

    Parameters
    ----------
    m : Multiplier
    source : str
        What the table came from (a file name), for the message.
    how : str, optional
        How its signedness was decided, for the message.
    names : sequence of str
        More names to test for the prefix besides ``m.name`` (a C function's name).

    Returns
    -------
    str or None
        The warning's message, None if nothing looked wrong.
    """
    t = m.table.astype(np.int64)
    other = not m.signed
    kind, okind = ("signed", "unsigned") if m.signed else ("unsigned", "signed")
    reasons = []
    e = _mae_pct(t, m.bits, m.signed)
    if e >= 1.0:
        e2 = min(_mae_pct(v, m.bits, other) for v in _other_readings(t, m.signed))
        if e2 <= e / 10:
            reasons.append(f"its values are near a*b as {okind} codes (MAE% {e2:.3g} as {okind}, "
                           f"{e:.3g} as {kind})")
    for name in (m.name, *names):
        by_name = signedness_from_name(name)
        if by_name is not None and by_name != m.signed:
            reasons.append(f"its name {name!r} is that of an EvoApproxLib {okind} circuit")
            break
    if not reasons:
        return None
    flag = "--signed" if other else "--unsigned"
    msg = (f"{source}: read as {'a signed' if m.signed else 'an unsigned'} multiplier "
           f"({how or 'default'}), but "
           f"{' and '.join(reasons)}: pass signed={other} ({flag}, or append ':{okind}' to the "
           f"file name on the command line)")
    warnings.warn(msg, SignednessWarning, stacklevel=stacklevel)
    return msg
