"""The library of shipped multipliers, and one loader for every multiplier source.

The shipped multipliers are C sources in the ``axkern._multipliers`` package data (the
top-level ``multipliers/`` folder of the source tree), one function per file, named after
the file: ``mul8u_*`` unsigned, ``mul8s_*`` signed two's complement. Their tables are built
with :func:`axkern.csource.tabulate_c` on first use (which also caches them on disk) and kept
in memory for the rest of the process. ``docs/multipliers.md`` describes the designs.

:func:`load_multiplier` also reads multipliers from files: a C source (``.c``), a TFApprox
table (``.bin``), an AdaPT-style C header (``.h``) or a NumPy table (``.npy``).
"""
from __future__ import annotations

import copy
import difflib
import functools
import os
import re
import threading
from importlib import resources


from .lut import Multiplier, _check_signed_arg

__all__ = ["list_multipliers", "load_multiplier", "describe", "shipped_source", "parse_spec",
           "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = (".c", ".bin", ".h", ".npy")

_CACHE = {}
_LOCK = threading.Lock()


def _shipped_dir():
    return resources.files("axkern._multipliers")


@functools.lru_cache(maxsize=1)
def _shipped_files():
    """Map of shipped name -> resource path of its C source (the package's files do not
    change while it runs: listed once, instead of 50 stat calls per load_multiplier)."""
    out = {}
    for entry in _shipped_dir().iterdir():
        fname = entry.name
        if fname.endswith(".c") and entry.is_file():
            out[fname[:-2]] = entry
    return out


def list_multipliers(signed=None):
    """Sorted names of the shipped multipliers (numbers in names sort numerically).

    Parameters
    ----------
    signed : bool, optional
        Only the signed (``True``) or only the unsigned (``False``) ones; all when None.
        Signedness is read from the name prefix (``mul8s_`` / ``mul8u_``).

    Returns
    -------
    list of str
    """
    _check_signed_arg(signed)
    names = sorted(_shipped_files(), key=_natural_key)
    if signed is None:
        return names
    return [n for n in names if _name_is_signed(n) == bool(signed)]


def _natural_key(name):
    # numbers compare as numbers, so that mul8u_trunc10 follows mul8u_trunc8
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _name_is_signed(name):
    return name.startswith("mul8s_")


def _unknown_name_error(name):
    names = list_multipliers()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    hint = (f"; did you mean {', '.join(close)}?" if close
            else f"; shipped names include {', '.join(names[:4])}, ...")
    return ValueError(
        f"unknown multiplier {name!r}: not a shipped name (see `axkern list` or "
        f"axkern.list_multipliers()) nor a path to a {'/'.join(SUPPORTED_EXTENSIONS)} file{hint}")


def shipped_source(name):
    """Filesystem path of a shipped multiplier's C source.

    Raises
    ------
    ValueError
        ``name`` is not a shipped multiplier (the message lists close matches).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    files = _shipped_files()
    if name not in files:
        raise _unknown_name_error(name)
    # The package is installed as plain files (setup.py ships the .c sources as package data),
    # so the resource is a real path that the C compiler can read.
    return os.fspath(files[name])


def describe(name):
    """The ``// KEY = value`` facts at the top of a shipped multiplier's source.

    Reads the comment header only; nothing is compiled.

    Parameters
    ----------
    name : str
        A shipped multiplier name.

    Returns
    -------
    dict of str to str
        Keys such as ``DESIGN``, ``FAMILY``, ``PARAMS``, ``SIGNED``, ``PP_BITS`` (the number of
        partial-product bits the design keeps, the library's cost proxy).
    """
    from .csource import parse_metadata

    path = shipped_source(name)
    with open(path, "r", encoding="utf-8") as f:
        return parse_metadata(f.read())


def _copy(m):
    # Fresh objects, so that callers may rename or annotate theirs without affecting anybody
    # else, sharing the read-only table and what was derived from it (a copy per call made
    # a new table, and every cache keyed by it missed).
    c = copy.copy(m)
    c.metadata = dict(m.metadata)
    return c


def _looks_like_path(s):
    if os.sep in s or (os.altsep and os.altsep in s):
        return True
    return os.path.splitext(s)[1] != ""


def parse_spec(spec):
    """Split a command-line multiplier spec ``[NAME=]SOURCE[:signed|:unsigned]``.

    ``SOURCE`` is a shipped name or a path; ``NAME`` renames the multiplier (in reports and
    survey results); the suffix says how to read a table whose file does not record its
    signedness. A string that is an existing file is always taken whole.

    Returns
    -------
    (name or None, source, signed or None)
    """
    if os.path.exists(spec):
        return None, spec, None
    name, signed = None, None
    m = re.fullmatch(r"(.*?):(signed|unsigned)", spec)
    if m:
        spec, signed = m.group(1), m.group(2) == "signed"
    m = re.fullmatch(r"([^=/\\:]+)=(.+)", spec)
    if m and not os.path.exists(spec):
        name, spec = m.group(1).strip(), m.group(2).strip()
        if not name:
            raise ValueError(f"empty name before '=' in multiplier {spec!r}: expected NAME=PATH")
    return name, spec, signed


def load_multiplier(name_or_path, signed=None, function=None, bits=None, timeout=60.0, *,
                    name=None):
    """A shipped multiplier by name, or a multiplier read from a file.

    Parameters
    ----------
    name_or_path : str, os.PathLike or Multiplier
        A shipped name (see :func:`list_multipliers`), or the path of a ``.c`` source, a
        TFApprox ``.bin`` table, an AdaPT-style ``.h`` header or a ``.npy`` table (int array of
        shape (2**n, 2**n) indexed by operand codes). A bare word is taken as a shipped name
        (even if a file of that name exists), unless it is none and such a file exists. A
        Multiplier is returned as it is, so that callers can accept either. A string may
        also be ``NAME=SOURCE`` (named ``NAME``) and end in ``:signed`` or ``:unsigned`` (see
        :func:`parse_spec`), as on the command line.
    signed : bool, optional
        Whether the operands are two's complement. When None, C sources and headers infer it
        from their types, ``.npy`` tables from their dtype (int16 / uint16, as
        :meth:`Multiplier.to_npy` writes them), and ``.bin`` and other ``.npy`` tables from
        the sidecar ``FILE.json`` written with them, else from an EvoApproxLib name
        (``mul8s_*``), else unsigned; a :class:`axkern.lut.SignednessWarning` flags a table
        that fits the other signedness far better. For a shipped name it must agree with the
        name's ``mul8s_``/``mul8u_`` prefix.
    function : str, optional
        The function to tabulate in a C file that defines several (C sources only).
    bits : int, optional
        Operand bit width of a C source (2 to 8; default from its parameter types).
    timeout : float, default 60
        Seconds a C source may take to be tabulated before it is stopped (C sources only).
    name : str, optional
        The multiplier's name (default: the shipped name, or the file name without its
        extension; ``stem:function`` for a function chosen in a C file that defines several).

    Returns
    -------
    Multiplier

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        Unknown shipped name (with close matches), unsupported file extension, or a file whose
        content is not a valid table / usable C multiplier (see :mod:`axkern.csource`).
    TypeError
        Arguments of the wrong type, or options that do not apply to the input.
    """
    if isinstance(name_or_path, Multiplier):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError("name_or_path must be a shipped multiplier name or a path to a "
                        f".c/.bin/.h/.npy file, got {type(name_or_path).__name__}")
    _check_signed_arg(signed)
    if signed is not None:
        signed = bool(signed)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    text = os.fspath(name_or_path)
    if not text:
        raise ValueError("name_or_path is empty: expected a shipped multiplier name or a path")
    if isinstance(name_or_path, str):
        given, text, marked = parse_spec(text)
        if marked is not None and signed is not None and marked != signed:
            raise ValueError(f"{name_or_path!r} says {'signed' if marked else 'unsigned'} but "
                             f"signed={signed} was given")
        signed = marked if marked is not None else signed
        name = name if name is not None else given
        if not text:
            raise ValueError(f"no multiplier in {name_or_path!r}: expected [NAME=]SOURCE")
    m = _load_source(name_or_path, text, signed, function, bits, timeout)
    if name is not None:
        m.name = name
    return m


def _load_source(name_or_path, text, signed, function, bits, timeout):
    if isinstance(name_or_path, str) and not _looks_like_path(text):
        # a bare word is a shipped name, unless it is not one and a file of that name exists
        if text in _shipped_files() or not os.path.exists(text):
            return _load_shipped(text, signed, function, bits)
    return _load_file(text, signed, function, bits, timeout)


def _load_shipped(name, signed, function, bits):
    files = _shipped_files()
    if name not in files:
        raise _unknown_name_error(name)
    if signed is not None and signed != _name_is_signed(name):
        kind = "signed" if _name_is_signed(name) else "unsigned"
        flag = "--signed" if signed else "--unsigned"
        raise ValueError(f"shipped multiplier {name!r} is {kind}: signed={signed} ({flag}) "
                         "contradicts it; leave it unset")
    if function is not None and function != name:
        raise ValueError(f"shipped multiplier {name!r} defines only the function {name!r}, "
                         f"got function={function!r}")
    if bits is not None and bits != 8:
        raise ValueError(f"shipped multiplier {name!r} is an 8-bit circuit, got bits={bits!r}")
    with _LOCK:
        m = _CACHE.get(name)
    if m is None:
        m = Multiplier.from_c(shipped_source(name), function=name)
        # its kernels' table made once, so that every copy handed out shares it (else each
        # copy's first call makes it again: 0.1 - 0.2 ms)
        from .backends import table256

        table256(m)
        with _LOCK:
            m = _CACHE.setdefault(name, m)
    return _copy(m)


def _load_file(path, signed, function, bits, timeout):
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        if not ext and not os.path.exists(path):
            raise _unknown_name_error(path)
        raise ValueError(f"{path}: unsupported multiplier file type {ext or '(no extension)'!r}: "
                         f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"multiplier file not found: {path}")
    if ext != ".c":
        if function is not None:
            raise TypeError(f"function= applies to C sources only, not to a {ext} file ({path})")
        if bits is not None:
            raise TypeError(f"bits= (--bits) applies to C sources only; a {ext} file's bit "
                            f"width follows from its table size ({path})")
    if ext == ".c":
        return Multiplier.from_c(path, function=function, signed=signed, bits=bits,
                                 timeout=timeout)
    if ext == ".bin":
        return Multiplier.from_bin(path, signed=signed)
    if ext == ".h":
        return Multiplier.from_header(path, signed=signed)
    return Multiplier.from_npy(path, signed=signed)
