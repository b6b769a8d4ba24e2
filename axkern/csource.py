"""Turn a multiplier written in C into a lookup table, safely.

:func:`tabulate_c` finds the multiplier function in a C file, compiles the file together with
a generated driver that calls the function on every operand pair, and runs the driver in a
separate process with a timeout. A crash (segmentation fault, abort) or an endless loop in the
user's code therefore becomes a Python exception and never takes the caller down.

The tabulating process runs in its own process group, which is killed when it finishes (so
children the circuit forked do not linger), when the timeout expires, when the caller is
interrupted, and at interpreter exit. On Linux it also dies with its caller (a parent-death
signal, even if the caller is killed with SIGKILL), and everywhere it has a CPU-time limit of
the timeout plus one second. It writes the table into an unnamed temporary file; its own
output (stdout and stderr) is read as it comes and only the last 16 KiB are kept, for error
messages. Its temporary directory is removed as soon as it has started.

Signatures
----------
The multiplier is a function of exactly two integer parameters returning an integer. When the
file defines several such functions, the only one that is not ``static`` is taken (the others
being helpers); otherwise ``function=`` must name it. Functions under a literal ``#if 0`` (or
``#if false``, up to its ``#else``) are not counted. Operand ``a`` (the activation, the table
row) is always the FIRST positional argument and ``b`` the second, whatever the parameters are
called. Accepted integer types: ``intN_t``/``uintN_t``
(also the ``least``/``fast`` variants, ``intmax_t``, ``size_t``), ``char``, ``short``, ``int``,
``long``, ``long long`` with ``signed``/``unsigned``, ``const``/``volatile``/``register``
qualifiers, ``static``/``inline``/``extern`` on the function, and ``typedef`` names of those
defined in the file. Examples::

    uint16_t mul8u_x(uint8_t a, uint8_t b)
    uint64_t mul8u_y(const uint64_t B, const uint64_t A)   /* first argument is still a */
    int16_t  mul8s_z(int8_t A, int8_t B)
    uint16_t mul8s_w(uint8_t A, uint8_t B)                 /* signed circuit: signed=True */

Operand passing and output rule
-------------------------------
- Unsigned multipliers receive the codes ``0 .. 2**n - 1``, so a parameter of a signed type
  must be wider than ``n`` bits (``int8_t`` with ``signed=False`` is an error).
- Signed multipliers receive, for a parameter of a signed type, the operand value
  ``-2**(n-1) .. 2**(n-1) - 1``; for a parameter of an unsigned type, the operand's n-bit
  two's-complement bit pattern ``a & (2**n - 1)`` (how gate-level signed circuits are written).
- The result is taken as the C value of the return type. For a signed multiplier whose return
  type is unsigned, the result is a two's-complement bit pattern: its low ``w`` bits are kept
  and sign-extended, where ``w`` is the declared return width if that is at most ``2n`` bits
  and ``2n`` otherwise (``uint16_t`` with 8-bit operands: 16; ``uint64_t``: 16 as well).
- Plain ``char`` is compiled as unsigned (``-funsigned-char``) so that results do not depend on
  the platform; it counts as unsigned when signedness is inferred.

Signedness (``signed=None``) is inferred from the parameter types: signed if both are signed
types (``int8_t``, ``signed char``, ``int``...), unsigned if both are unsigned. The bit width
defaults to the parameters' width where that is at most 8 bits, else 8.

Metadata
--------
Comment lines ``// KEY = value`` at the top of the file, before any code (EvoApproxLib files
carry MAE, power, area and delay that way), become the multiplier's ``metadata``: a dict of
str to the raw value string (``"0.391 mW"``); :func:`metadata_number` reads its number.

Caching
-------
Tables are cached in :func:`cache_dir` (``$AXKERN_CACHE_DIR``, else
``$XDG_CACHE_HOME/axkern``, else ``~/.cache/axkern``), one file per table keyed by a hash of
the source bytes, the function, the signedness, the bit width and the compiler. Each entry
carries a SHA-256 of its key and contents; an entry that is unreadable, of the wrong size or
does not match its checksum is ignored and rebuilt. Entries are written to a temporary file
and renamed into place. A cache directory that cannot be used (not writable, a file in the
way) is reported once per process with a ``RuntimeWarning`` and the table is compiled every
time. Headers included from the source's folder (``#include "cfg.h"`` or ``<cfg.h>``, found
through the ``-I`` that axkern adds), and the local headers they include, are part of the key:
editing one compiles the table again. Sources whose includes are computed by a macro are not
cached.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import math
import os
import re
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from .lut import MAX_BITS, MIN_BITS, Multiplier, _check_bits, _check_signed_arg, check_signedness

__all__ = [
    "CSourceError", "CCompileError", "CExecutionError", "CTimeoutError",
    "CFunction", "CType", "tabulate_c", "find_functions", "parse_metadata", "metadata_number",
    "cache_dir",
]

# Bumped whenever the driver or the output rule changes, so old cache entries are not reused.
_CACHE_VERSION = "csource-2"
_COMPILE_FLAGS = ["-O1", "-w", "-fwrapv", "-funsigned-char"]


# ---------------------------------------------------------------------------------- errors
class CSourceError(ValueError):
    """A C multiplier source that cannot be used (no function, bad signature, ...)."""


class CCompileError(CSourceError):
    """The C compiler rejected the source; the message includes its output."""


class CExecutionError(CSourceError):
    """The compiled multiplier crashed or exited with an error while being tabulated."""


class CTimeoutError(CExecutionError):
    """Tabulating the multiplier took longer than the timeout (e.g. an endless loop)."""


# ---------------------------------------------------------------------------------- types
@dataclasses.dataclass(frozen=True)
class CType:
    """An integer C type: its spelling, signedness and width in bits.

    Widths of ``long``, ``size_t`` and the ``fast`` types are platform-dependent; the values
    here are lower bounds (64 for ``long`` on LP64), which is all the output rule needs because
    it never uses more than ``2n <= 16`` bits.
    """

    text: str
    signed: bool
    width: int


@dataclasses.dataclass(frozen=True)
class CFunction:
    """A function definition found in a C source.

    Attributes
    ----------
    name : str
    signature : str
        The declaration as written (comments stripped, whitespace collapsed).
    return_type : CType or None
        None when the return type is not a supported integer type.
    param_types : tuple of CType
        The parameter types in positional order (empty when unsupported).
    problem : str or None
        Why this function cannot be tabulated, or None when it can.
    static : bool
        Declared ``static`` (internal linkage: a helper rather than the file's entry point).
    """

    name: str
    signature: str
    return_type: CType | None
    param_types: tuple
    problem: str | None
    static: bool = False

    @property
    def is_candidate(self):
        return self.problem is None


_STDINT = {}
for _w in (8, 16, 32, 64):
    for _p in ("", "_least", "_fast"):
        _STDINT[f"int{_p}{_w}_t"] = (True, _w)
        _STDINT[f"uint{_p}{_w}_t"] = (False, _w)
_STDINT.update({"intmax_t": (True, 64), "uintmax_t": (False, 64), "intptr_t": (True, 64),
                "uintptr_t": (False, 64), "size_t": (False, 64), "ssize_t": (True, 64),
                "ptrdiff_t": (True, 64)})
_BASE_WORDS = {"signed", "unsigned", "char", "short", "int", "long"}
_QUALIFIERS = {"const", "volatile", "register", "restrict", "__restrict", "__restrict__"}
_FUNC_SPECIFIERS = {"static", "inline", "extern", "__inline", "__inline__", "_Noreturn",
                    "__extension__"}


def _parse_int_type(words, typedefs):
    """CType for a list of type words (qualifiers removed), or None if not an integer type."""
    text = " ".join(words)
    if len(words) == 1 and words[0] in _STDINT:
        s, w = _STDINT[words[0]]
        return CType(text, s, w)
    if len(words) == 1 and words[0] in typedefs:
        return dataclasses.replace(typedefs[words[0]], text=text)
    if not words or any(w not in _BASE_WORDS for w in words):
        return None
    n_signed, n_unsigned = words.count("signed"), words.count("unsigned")
    n_char, n_short, n_int, n_long = (words.count(k) for k in ("char", "short", "int", "long"))
    if n_signed + n_unsigned > 1 or n_int > 1 or n_char > 1 or n_short > 1 or n_long > 2:
        return None
    signed = n_unsigned == 0
    if n_char:
        if n_short or n_long or n_int:
            return None
        # plain char is compiled with -funsigned-char, see the module docstring
        return CType(text, n_signed == 1, 8)
    if n_short:
        if n_long:
            return None
        return CType(text, signed, 16)
    if n_long:
        return CType(text, signed, 64)
    return CType(text, signed, 32)


def _split_words(decl):
    return re.findall(r"[A-Za-z_]\w*|\S", decl)


def _strip_attributes(text):
    # __attribute__((...)) with nested parentheses; a small loop is enough for real sources
    while True:
        m = re.search(r"\b__attribute__\s*\(", text)
        if not m:
            return text
        depth, i = 0, m.end() - 1
        while i < len(text):
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        text = text[:m.start()] + " " + text[i + 1:]


def _parse_param(param, typedefs):
    """(CType or None, problem or None) for one parameter declaration."""
    p = _strip_attributes(param).strip()
    if p == "...":
        return None, "is variadic ('...')"
    if "*" in p:
        return None, f"'{p}' is a pointer"
    if "[" in p:
        return None, f"'{p}' is an array"
    words = [w for w in _split_words(p) if w not in _QUALIFIERS]
    if any(not re.fullmatch(r"[A-Za-z_]\w*", w) for w in words):
        return None, f"'{p}' is not a plain integer parameter"
    # drop the parameter name: the last word when it is not itself part of the type
    if len(words) >= 2 and words[-1] not in _BASE_WORDS and words[-1] not in _STDINT \
            and words[-1] not in typedefs:
        words = words[:-1]
    t = _parse_int_type(words, typedefs)
    if t is None:
        return None, f"'{p}' is not of an integer type"
    return t, None


# ---------------------------------------------------------------------------------- parsing
def _strip_comments(text):
    """Replace comments by spaces and string/char literals by empty ones; keep newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" ")
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(" " + "\n" * text.count("\n", i, j))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_LITERAL_FALSE = re.compile(r"0+[uUlL]*|false|\(\s*(?:0+[uUlL]*|false)\s*\)")


def _strip_preprocessor(text):
    """Blank the preprocessor lines (keeping the line count), and the code under a literal
    ``#if 0`` or ``#if false`` (up to its ``#elif``, ``#else`` or ``#endif``; an ``#elif 0``
    branch too), which the compiler never sees. Other conditionals are kept whole.

    Expects comments already stripped.
    """
    out, cont = [], False
    # per open conditional: [whether the code around it is dead, whether its branch is]
    stack = []
    for line in text.split("\n"):
        dead = bool(stack) and (stack[-1][0] or stack[-1][1])
        s = line.strip()
        if not cont and s.startswith("#"):
            m = re.match(r"#\s*(\w*)\s*(.*)", s)
            directive, arg = m.group(1), m.group(2).strip()
            if directive in ("if", "ifdef", "ifndef"):
                stack.append([dead, directive == "if" and bool(_LITERAL_FALSE.fullmatch(arg))])
            elif directive == "elif" and stack:
                stack[-1][1] = bool(_LITERAL_FALSE.fullmatch(arg))
            elif directive == "else" and stack:
                stack[-1][1] = False  # live after #if 0; unknown (so kept) otherwise
            elif directive == "endif" and stack:
                stack.pop()
        if cont or s.startswith("#") or dead:
            out.append("")
        else:
            out.append(line)
        cont = (cont or s.startswith("#")) and line.rstrip().endswith("\\")
    return "\n".join(out)


def _top_level(text):
    """Blank out everything inside braces, keeping the braces themselves."""
    out, depth = [], 0
    for c in text:
        if c == "{":
            if depth == 0:
                out.append(c)
            depth += 1
        elif c == "}":
            depth = max(depth - 1, 0)
            if depth == 0:
                out.append(c)
        else:
            out.append(c if depth == 0 or c == "\n" else " ")
    return "".join(out)


_DEF_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\(([^(){};]*)\)\s*\{")
_TYPEDEF_RE = re.compile(r"\btypedef\s+([^;{}()\[\]*]+?)\s+([A-Za-z_]\w*)\s*;")


def find_functions(source):
    """All function definitions in a C source text, in order of appearance.

    Parameters
    ----------
    source : str
        C source text.

    Returns
    -------
    list of CFunction
        ``problem`` is None for the functions that can be tabulated (an integer return type and
        exactly two integer parameters); ``main`` is never a candidate.
    """
    top = _top_level(_strip_preprocessor(_strip_comments(source)))
    typedefs = {}
    for m in _TYPEDEF_RE.finditer(top):
        words = [w for w in _split_words(m.group(1)) if w not in _QUALIFIERS]
        t = _parse_int_type(words, typedefs)
        if t is not None:
            typedefs[m.group(2)] = t
    funcs = []
    for m in _DEF_RE.finditer(top):
        name, params_text = m.group(1), m.group(2)
        start = max(top.rfind(";", 0, m.start()), top.rfind("}", 0, m.start())) + 1
        prefix = _strip_attributes(top[start:m.start()])
        signature = " ".join((prefix + " " + name + "(" + params_text + ")").split())
        ret_words = [w for w in _split_words(prefix)
                     if w not in _FUNC_SPECIFIERS and w not in _QUALIFIERS]
        problem = None
        ret = None
        if "*" in ret_words:
            problem = "returns a pointer"
        else:
            ret = _parse_int_type(ret_words, typedefs)
            if ret is None:
                problem = f"return type '{' '.join(ret_words) or '(none)'}' is not an integer type"
        params = [p.strip() for p in params_text.split(",")] if params_text.strip() else []
        if params == ["void"]:
            params = []
        ptypes = []
        if problem is None:
            if len(params) != 2:
                plural = "s" if len(params) != 1 else ""
                problem = f"takes {len(params)} parameter{plural}, expected 2"
            else:
                for k, p in enumerate(params):
                    t, why = _parse_param(p, typedefs)
                    if why is not None:
                        problem = f"parameter {k + 1} {why}"
                        break
                    ptypes.append(t)
        if name == "main":
            problem = "is the program's main function"
        funcs.append(CFunction(name, signature, ret, tuple(ptypes) if problem is None else (),
                               problem, "static" in _split_words(prefix)))
    return funcs


_META_RE = re.compile(r"^\s*//\s*([^=\n]*?)\s*=\s*(.*?)\s*$")


def parse_metadata(source):
    """``// KEY = value`` comment lines at the top of a C source, before any code.

    Blank lines, other ``//`` comments and ``/* ... */`` blocks may come before or between
    them; the first line of code (``#include`` included) ends the header.

    Returns
    -------
    dict of str to str
        Keys and raw values as written (``{"PDK45_PWR": "0.391 mW"}``).
    """
    meta = {}
    in_block = False
    for line in source.splitlines():
        s = line.strip()
        if in_block:
            if "*/" in s:
                in_block = False
                if s.split("*/", 1)[1].strip():
                    break
            continue
        if not s:
            continue
        if s.startswith("/*"):
            rest = s[2:]
            if "*/" in rest:
                if rest.split("*/", 1)[1].strip():
                    break
            else:
                in_block = True
            continue
        if s.startswith("//"):
            m = _META_RE.match(s)
            if m and m.group(1):
                meta[m.group(1)] = m.group(2)
            continue
        break
    return meta


def metadata_number(value):
    """The leading number of a metadata value (``"0.391 mW"`` -> 0.391), or None."""
    m = re.match(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", str(value))
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------------------- compiling
def cache_dir():
    """The table cache directory.

    ``$AXKERN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/axkern`` when that is an absolute
    path (the XDG base directory rule), else ``~/.cache/axkern``.
    """
    d = os.environ.get("AXKERN_CACHE_DIR")
    if d:
        return d
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "axkern")
    return os.path.join(os.path.expanduser("~"), ".cache", "axkern")


def _compiler():
    cc = os.environ.get("CC") or "cc"
    try:
        argv = shlex.split(cc)
    except ValueError as e:
        raise RuntimeError(f"cannot parse $CC={cc!r}: {e}") from None
    if not argv:
        argv = ["cc"]
    exe = shutil.which(argv[0])
    if exe is None:
        raise RuntimeError(
            f"no C compiler found: {argv[0]!r} is not on the PATH. Install one (gcc or clang) "
            "or set $CC to the compiler command")
    return argv, exe


def _driver(func, bits, signed):
    """C source of the driver that tabulates ``func`` into the file named by argv[1]."""
    n = 1 << bits
    args = []
    for k, t in enumerate(func.param_types):
        var = "axk_i" if k == 0 else "axk_j"
        # signed operands go in as values to signed parameters, as bit patterns otherwise
        if signed and t.signed:
            args.append(f"(({var}) >= {n // 2} ? (long long)({var}) - {n} : (long long)({var}))")
        else:
            args.append(f"(long long)({var})")
    return f"""/* generated by axkern.csource: tabulates {func.name} over all operand pairs */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#define main axkern_user_main_
#include "axkern_user.c"
#undef main

/* in axkern_guard.c, a separate file so that its system headers stay out of the user's code */
void axkern_guard_(long long parent, long long cpu_seconds);
FILE *axkern_output_(const char *spec);

static int64_t axk_table[{n * n}];

/* argv: table output (a path, or '#' and an inherited file descriptor), the caller's pid,
   the CPU-time limit in seconds */
int main(int argc, char **argv)
{{
    long axk_i, axk_j;
    FILE *axk_f;
    if (argc < 4) return 2;
    axkern_guard_(atoll(argv[2]), atoll(argv[3]));
    for (axk_i = 0; axk_i < {n}; axk_i++)
        for (axk_j = 0; axk_j < {n}; axk_j++)
            axk_table[axk_i * {n} + axk_j] = (int64_t)({func.name}({args[0]}, {args[1]}));
    axk_f = axkern_output_(argv[1]);
    if (!axk_f) return 3;
    if (fwrite(axk_table, sizeof(int64_t), {n * n}, axk_f) != {n * n}) return 4;
    return fclose(axk_f) == 0 ? 0 : 5;
}}
"""


_GUARD_C = r"""/* generated by axkern.csource: ties the tabulating process to its caller */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <stdlib.h>
#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <unistd.h>
#include <sys/resource.h>
#define AXK_POSIX 1
#endif
#ifdef __linux__
#include <sys/prctl.h>
#endif

void axkern_guard_(long long parent, long long cpu_seconds)
{
#ifdef AXK_POSIX
    struct rlimit rl;
    /* a crashing circuit should not spend seconds writing a core dump */
    rl.rlim_cur = 0;
    rl.rlim_max = 0;
    setrlimit(RLIMIT_CORE, &rl);
    /* a CPU-time limit: the backstop when the caller cannot stop us any more */
    if (cpu_seconds > 0 && getrlimit(RLIMIT_CPU, &rl) == 0) {
        rlim_t soft = (rlim_t)cpu_seconds;
        if (rl.rlim_max == RLIM_INFINITY || soft + 1 <= rl.rlim_max) {
            rl.rlim_cur = soft;
            rl.rlim_max = soft + 1;  /* SIGKILL if SIGXCPU is ignored */
            setrlimit(RLIMIT_CPU, &rl);
        }
    }
#endif
#ifdef __linux__
    /* die with the caller, even when it is killed with SIGKILL */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
#ifdef AXK_POSIX
    /* the caller may have died before prctl took effect */
    if (parent > 0 && (long long)getppid() != parent)
        _exit(125);
#else
    (void)parent;
    (void)cpu_seconds;
#endif
}

FILE *axkern_output_(const char *spec)
{
#ifdef AXK_POSIX
    if (spec[0] == '#')
        return fdopen(atoi(spec + 1), "wb");
#endif
    return fopen(spec, "wb");
}
"""


def _c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tail(text, limit=4000):
    text = text.strip()
    return text if len(text) <= limit else "...\n" + text[-limit:]


# Bytes of a child's output (stdout and stderr together) kept for error messages: its tail.
_OUTPUT_KEEP = 16384
# Compilers and drivers running now, killed (with their process groups) at interpreter exit.
_LIVE = set()


def _kill_group(proc):
    """SIGKILL proc's whole process group (proc leads it); proc alone where there are none."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except OSError:
            pass
    try:
        proc.kill()
    except OSError:
        pass


@atexit.register
def _kill_live_at_exit():
    for proc in list(_LIVE):
        _kill_group(proc)


def _has_exited(proc):
    """Whether proc has exited, without reaping it where possible: an unreaped leader keeps
    its process group id reserved, so the group can still be killed safely afterwards."""
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            return os.waitid(os.P_PID, proc.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            pass
    return proc.poll() is not None


def _read_into(fd, tail):
    """Read what is available from a non-blocking fd into tail, keeping its last
    _OUTPUT_KEEP bytes; the number of bytes read, 0 at end of file, -1 when none is ready."""
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return -1
    tail += chunk
    if len(tail) > _OUTPUT_KEEP:
        del tail[:-_OUTPUT_KEEP]
    return len(chunk)


def _wait_reading(proc, timeout):
    """Wait (at most timeout s) for proc to exit while reading its output; the output's tail.

    Returns at the exit of proc itself, not at the end of its output: a child it forked may
    hold the pipe open (the group is killed afterwards)."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    tail = bytearray()
    is_open, pause = True, 0.001
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not _has_exited(proc):
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            if is_open and sel.select(min(pause, left)):
                if _read_into(fd, tail) == 0:
                    is_open = False
                    sel.unregister(fd)
                continue
            if not is_open:
                time.sleep(min(pause, left))
            pause = min(2 * pause, 0.05)  # poll the exit often at first, then less
    return tail, is_open


def _run_limited(argv, timeout, cwd, pass_fds=(), started=None):
    """Run argv in its own process group with a timeout; (exit status, output tail as str).

    stdout and stderr are merged and only their last _OUTPUT_KEEP bytes kept. The process
    group is killed when argv's process exits (children it left behind), when it runs over
    (TimeoutExpired is raised) and when the caller is interrupted (KeyboardInterrupt, the
    CLI's SIGTERM/SIGHUP handler) or exits. ``started()`` is called once it runs."""
    posix = os.name == "posix"
    kw = {"start_new_session": True, "pass_fds": tuple(pass_fds)} if posix else {}
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)
    _LIVE.add(proc)
    try:
        if started is not None:
            started()
        if posix:
            tail, is_open = _wait_reading(proc, timeout)
            _kill_group(proc)
            # what the process wrote before it exited is in the pipe: take it, don't wait
            drained = 0
            while is_open and drained < (1 << 24):
                got = _read_into(proc.stdout.fileno(), tail)
                if got <= 0:
                    break
                drained += got
        else:  # no select() on pipes: read it all, keep the tail
            out, _ = proc.communicate(timeout=timeout)
            tail = out[-_OUTPUT_KEEP:]
    except BaseException:  # TimeoutExpired, KeyboardInterrupt, a signal handler's exception
        _kill_group(proc)
        raise
    finally:
        proc.stdout.close()
        proc.wait()
        _LIVE.discard(proc)
    return proc.returncode, bytes(tail).decode("utf-8", "replace")


def _compile_and_run(src_bytes, src_path, func, bits, signed, timeout):
    argv, _ = _compiler()
    posix = os.name == "posix"
    tmp = tempfile.mkdtemp(prefix="axkern-c-")
    try:
        # A private copy (with #line so messages name the user's file) compiles exactly the
        # bytes that were hashed; -I keeps the user's local #includes working.
        with open(os.path.join(tmp, "axkern_user.c"), "wb") as f:
            f.write(b"#line 1 " + _c_string(src_path).encode("utf-8", "surrogateescape") + b"\n")
            # a byte-order mark is only allowed at the very start of a file, not after #line
            f.write(src_bytes[3:] if src_bytes.startswith(b"\xef\xbb\xbf") else src_bytes)
            f.write(b"\n")
        with open(os.path.join(tmp, "axkern_driver.c"), "w", encoding="utf-8") as f:
            f.write(_driver(func, bits, signed))
        with open(os.path.join(tmp, "axkern_guard.c"), "w", encoding="utf-8") as f:
            f.write(_GUARD_C)
        exe = os.path.join(tmp, "axkern_driver" + (".exe" if os.name == "nt" else ""))
        cmd = argv + _COMPILE_FLAGS + ["-I", os.path.dirname(os.path.abspath(src_path)) or ".",
                                       "-o", exe, "axkern_driver.c", "axkern_guard.c", "-lm"]
        compile_limit = max(120.0, timeout)  # compilers do finish; only guard against a hang
        try:
            rc, out = _run_limited(cmd, compile_limit, tmp)
        except subprocess.TimeoutExpired:
            raise CTimeoutError(
                f"compiling {src_path} took longer than {compile_limit:g} s") from None
        except OSError as e:
            raise RuntimeError(f"could not start the C compiler {argv[0]!r}: {e}") from None
        if rc != 0 or not os.path.exists(exe):
            raise CCompileError(
                f"{src_path} does not compile with '{' '.join(argv)}' (exit status {rc}):\n"
                f"{_tail(out)}")
        n_values = 4 ** bits
        # The table goes to an unnamed file the driver inherits (POSIX), so that the temporary
        # directory can go as soon as the driver runs: nothing is left behind even if we are
        # killed with SIGKILL while it runs.
        table_f = tempfile.TemporaryFile(dir=tmp) if posix else None
        try:
            if posix:
                spec, fds = f"#{table_f.fileno()}", (table_f.fileno(),)
            else:
                spec, fds = os.path.join(tmp, "table.bin"), ()
            # 0: none (timeout=inf)
            cpu_limit = min(math.ceil(timeout) + 1, 2 ** 31 - 1) if math.isfinite(timeout) else 0
            driver = [exe, spec, str(os.getpid()), str(cpu_limit)]
            try:
                rc, out = _run_limited(
                    driver, timeout, tmp, pass_fds=fds,
                    started=(lambda: shutil.rmtree(tmp, ignore_errors=True)) if posix else None)
            except OSError as e:
                raise RuntimeError(
                    f"could not run the compiled tabulating program: {e}. If the temporary "
                    f"directory ({tempfile.gettempdir()}) does not allow running programs "
                    "(mounted noexec), point $TMPDIR at one that does") from None
            except subprocess.TimeoutExpired:
                raise CTimeoutError(
                    f"{func.name}() in {src_path} did not finish tabulating {n_values} operand "
                    f"pairs within the timeout of {timeout:g} s (an endless loop?)") from None
            if rc != 0:
                if rc < 0:
                    try:
                        sig = signal.Signals(-rc).name
                    except ValueError:
                        sig = f"signal {-rc}"
                    what = f"crashed with {sig}"
                    if sig == "SIGSEGV":
                        what += " (segmentation fault: invalid memory access)"
                    elif sig == "SIGFPE":
                        what += " (arithmetic error such as a division by zero)"
                    elif sig == "SIGABRT":
                        what += " (abort() or a failed assert)"
                    elif sig in ("SIGXCPU", "SIGKILL"):
                        what += (f" (killed at its CPU-time limit of {cpu_limit} s, which "
                                 "follows the timeout, or by another process)")
                else:
                    what = f"exited with status {rc}"
                msg = f"{func.name}() in {src_path} {what} while being tabulated"
                if out.strip():
                    msg += f"; the end of its output:\n{_tail(out, 2000)}"
                raise CExecutionError(msg)
            if posix:
                table_f.seek(0)
                data = table_f.read(8 * n_values + 1)
            else:
                try:
                    with open(spec, "rb") as f:
                        data = f.read(8 * n_values + 1)
                except OSError:
                    data = b""
        finally:
            if table_f is not None:
                table_f.close()
        if len(data) != 8 * n_values:
            raise CExecutionError(f"{func.name}() in {src_path}: the tabulating process wrote "
                                  f"{len(data) // 8} values, expected {n_values} (does the code "
                                  "call exit()?)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return np.frombuffer(data, dtype=np.int64).reshape(1 << bits, 1 << bits)


def _postprocess(raw, func, bits, signed, src_path):
    """Apply the output rule (module docstring) and check the values fit an int32 table."""
    ret = func.return_type
    if signed and not ret.signed:
        w = min(ret.width, 2 * bits)
        low = raw & ((1 << w) - 1)
        raw = np.where(low >= 1 << (w - 1), low - (1 << w), low)
    elif not ret.signed and ret.width == 64:
        # the driver stored uint64 bits in int64: values >= 2**63 came back negative
        if raw.size and raw.min() < 0:
            raise CSourceError(
                f"{func.name}() in {src_path} returns values of 2**63 or more, which do not fit "
                "a multiplier table (int32)")
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    if raw.size and (raw.min() < lo or raw.max() > hi):
        raise CSourceError(
            f"{func.name}() in {src_path} returns values in [{raw.min()}, {raw.max()}], "
            f"which do not fit a multiplier table (int32, [{lo}, {hi}])")
    return raw.astype(np.int32)


def _select(funcs, function, path):
    if function is not None:
        named = [f for f in funcs if f.name == function]
        if not named:
            have = ", ".join(f.name for f in funcs) or "none"
            raise CSourceError(f"function {function!r} is not defined in {path} "
                               f"(functions defined there: {have})")
        f = named[-1]
        if f.problem:
            raise CSourceError(
                f"function {function!r} in {path} has an unsupported signature "
                f"'{f.signature}': it {f.problem}. Expected an integer return type and exactly "
                "two integer parameters, e.g. 'uint16_t f(uint8_t a, uint8_t b)'")
        return f
    cands = [f for f in funcs if f.is_candidate]
    if len(cands) == 1:
        return cands[0]
    # gate-level sources often have static two-operand helpers (adders, XOR cells): the one
    # function with external linkage is then the multiplier
    public = [f for f in cands if not f.static]
    if len(cands) > 1 and len(public) == 1:
        return public[0]
    if len(cands) > 1:
        raise CSourceError(
            f"{path} defines several multiplier candidates: "
            + ", ".join(f"'{f.signature}'" for f in cands)
            + "; choose one with function=NAME (--function NAME on the command line)")
    if not funcs:
        raise CSourceError(
            f"no function definition found in {path}: expected a multiplier such as "
            "'uint16_t f(uint8_t a, uint8_t b) { ... }'")
    raise CSourceError(
        f"no function in {path} has a supported multiplier signature (an integer return type "
        "and exactly two integer parameters): "
        + "; ".join(f"'{f.signature}' {f.problem}" for f in funcs))


_INCLUDE_RE = re.compile(rb"^[ \t]*#[ \t]*(?:include|include_next|import)\b[ \t]*(.*)$", re.M)
_MAX_HEADERS = 256


def _local_headers(src_bytes, src_path):
    """What the cache key needs of the headers a source includes from its own folder.

    The compiler finds ``#include "x.h"`` in the including file's folder, then (like
    ``#include <x.h>``) in the source's folder, which :func:`_compile_and_run` adds with
    ``-I``. Every include is looked up there, recursively: the result lists, for each one,
    its spelling and the bytes of the local file it resolves to (or a mark that it is not
    local: a system header, assumed not to change). None when the dependencies cannot be
    known (an include computed by a macro, an unreadable or too many local headers): such
    sources are not cached.
    """
    src_dir = os.path.dirname(os.path.abspath(src_path))
    out, seen = [], {}
    # the source itself is compiled from a private copy elsewhere: only -I finds its folder
    todo = [(src_bytes, None)]
    while todo:
        data, own_dir = todo.pop()
        for m in _INCLUDE_RE.finditer(data):
            q = re.match(rb'"([^"]+)"|<([^>]+)>', m.group(1))
            if q is None:
                return None  # a computed include: its file is not known before preprocessing
            name = os.fsdecode(q.group(1) or q.group(2))
            dirs = ([own_dir] if q.group(1) is not None and own_dir else []) + [src_dir]
            found = next((os.path.join(d, name) for d in dirs
                          if os.path.isfile(os.path.join(d, name))), None)
            if found is None:
                out.append(m.group(0) + b"\0-")
                continue
            real = os.path.abspath(found)
            if real not in seen:
                if len(seen) >= _MAX_HEADERS:
                    return None
                try:
                    with open(found, "rb") as f:
                        body = f.read()
                except OSError:
                    return None
                # by content, not path: a copied folder shares the entries
                seen[real] = hashlib.sha256(body).digest()
                todo.append((body, os.path.dirname(real)))
            out.append(m.group(0) + b"\0+" + seen[real])
    return out


# A cache entry: this magic line, the 40-character key, the bit width (one byte), the SHA-256
# of all of these and the table, then the table as little-endian int32. Read without any
# parser (no .npy header to trust) and checked before use.
_CACHE_MAGIC = b"axkern table cache 1\n"
_CACHE_WARNED = set()


def _cache_file(key, directory=None):
    return os.path.join(cache_dir() if directory is None else directory, "c-" + key + ".tbl")


def _cache_digest(key, bits, data):
    return hashlib.sha256(_CACHE_MAGIC + key.encode("ascii") + bytes([bits]) + data).digest()


def _cache_load(key, bits):
    """The cached table, or None when the entry is missing, unreadable or damaged."""
    n = 1 << bits
    head = len(_CACHE_MAGIC) + len(key) + 1 + 32
    size = head + 4 * n * n
    try:
        # O_NONBLOCK: a FIFO in the cache must not block us; anything but a file is ignored
        fd = os.open(_cache_file(key), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            blob = f.read(size + 1)
    except OSError:
        return None
    if len(blob) != size or not blob.startswith(_CACHE_MAGIC):
        return None
    k = len(_CACHE_MAGIC)
    stored_key, stored_bits = blob[k:k + len(key)], blob[k + len(key)]
    digest, data = blob[head - 32:head], blob[head:]
    if stored_key != key.encode("ascii") or stored_bits != bits \
            or digest != _cache_digest(key, bits, data):
        return None
    return np.frombuffer(data, dtype="<i4").astype(np.int32).reshape(n, n)


def _cache_store(key, bits, table):
    """Write an entry atomically (a private temporary file renamed into place, so readers
    never see half of one); say once per directory when that is not possible."""
    d = cache_dir()
    data = np.ascontiguousarray(table, dtype="<i4").tobytes()
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tbl", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_CACHE_MAGIC + key.encode("ascii") + bytes([bits])
                        + _cache_digest(key, bits, data) + data)
            os.replace(tmp, _cache_file(key, d))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        if d not in _CACHE_WARNED:
            _CACHE_WARNED.add(d)
            why = e.strerror or type(e).__name__
            where = f" ({e.filename})" if e.filename and os.fspath(e.filename) != d else ""
            warnings.warn(
                f"the table cache directory {d} cannot be used: {why}{where}. C multipliers "
                "are compiled again every time; set AXKERN_CACHE_DIR to a writable directory "
                "(or pass cache=False to turn the cache off)", RuntimeWarning, stacklevel=3)


def tabulate_c(path, function=None, signed=None, bits=None, timeout=60.0, cache=True):
    """Compile a C multiplier and tabulate it over every operand pair.

    Parameters
    ----------
    path : str or os.PathLike
        The C source file.
    function : str, optional
        Name of the multiplier function; needed only when the file defines several functions
        of two integer parameters.
    signed : bool, optional
        Whether operands are two's-complement signed. Inferred from the parameter types when
        None (see the module docstring for how operands are passed and results read).
    bits : int, optional
        Operand bit width, 2 to 8. Default: the parameters' width if at most 8, else 8.
    timeout : float, default 60
        Seconds the tabulating process may run before it is killed.
    cache : bool, default True
        Reuse and store tables in :func:`cache_dir` (damaged entries are rebuilt; an unusable
        directory gives one RuntimeWarning per process).

    Returns
    -------
    Multiplier
        Named after the file (its stem: ``mul8u_x.c`` gives ``mul8u_x``), or
        ``stem:function`` when ``function`` names another function than the stem, with the
        file's ``// KEY = value`` header as metadata. When ``signed`` is None and the table or
        the name says the other signedness fits (an EvoApproxLib ``mul8s_`` circuit declared
        with unsigned types), a :class:`axkern.lut.SignednessWarning` says so.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CSourceError (a ValueError)
        No usable function, several and no ``function``, an unsupported signature, or results
        that do not fit an int32 table. Subclasses: CCompileError (with the compiler's
        message), CExecutionError (the code crashed; names the signal), CTimeoutError.
    RuntimeError
        No C compiler is available.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a path to a C source file, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if function is not None and not (isinstance(function, str)
                                     and re.fullmatch(r"[A-Za-z_]\w*", function)):
        raise TypeError(f"function must be the name of a C function (a string), got {function!r}")
    _check_signed_arg(signed)
    if bits is not None:
        bits = _check_bits(bits)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"C source file not found: {path}")
    with open(path, "rb") as f:
        src_bytes = f.read()
    source = src_bytes.decode("utf-8-sig", "replace")  # tolerate a byte-order mark

    func = _select(find_functions(source), function, path)
    pa, pb = func.param_types
    inferred = signed is None
    if signed is None:
        if pa.signed != pb.signed:
            raise CSourceError(
                f"{func.name}() in {path} mixes a signed and an unsigned parameter "
                f"('{func.signature}'); say which the multiplier is with signed=True/False "
                "(--signed/--unsigned on the command line)")
        signed = pa.signed
    signed = bool(signed)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if function is None or function == stem else f"{stem}:{function}"
    if bits is None:
        w = min(pa.width, pb.width)
        bits = w if MIN_BITS <= w <= MAX_BITS else MAX_BITS
    # unsigned operands go in as codes 0 .. 2**bits - 1: a signed parameter of at most that
    # width would wrap the upper half into negative values and tabulate another circuit
    narrow = [t.text for t in (pa, pb) if t.signed and t.width <= bits]
    if not signed and narrow:
        raise CSourceError(
            f"{func.name}() in {path} takes {' and '.join(dict.fromkeys(narrow))} operands, "
            f"which cannot hold the unsigned {bits}-bit operands {1 << (bits - 1)}.."
            f"{(1 << bits) - 1}: tabulate it as signed (signed=True, --signed on the command "
            f"line) or declare unsigned parameters such as uint{max(bits, 8)}_t")

    # local headers are part of what is compiled, so they are part of the key
    deps = _local_headers(src_bytes, path) if cache else None
    use_cache = bool(cache) and deps is not None
    key = None
    if use_cache:
        argv, exe = _compiler()
        h = hashlib.sha256()
        for part in (_CACHE_VERSION, " ".join(argv), exe, " ".join(_COMPILE_FLAGS), func.name,
                     str(signed), str(bits), sys.platform):
            h.update(part.encode("utf-8", "surrogateescape") + b"\0")
        h.update(src_bytes)
        for dep in deps:
            h.update(b"\0" + dep)
        key = h.hexdigest()[:40]
        table = _cache_load(key, bits)
        if table is not None:
            return _named(table, signed, name, source, func, path, inferred)

    raw = _compile_and_run(src_bytes, path, func, bits, signed, float(timeout))
    table = _postprocess(raw, func, bits, signed, path)
    if use_cache:
        _cache_store(key, bits, table)
    return _named(table, signed, name, source, func, path, inferred)


def _named(table, signed, name, source, func, path, inferred):
    m = Multiplier(table, signed=signed, name=name, metadata=parse_metadata(source))
    if inferred:
        check_signedness(m, path, f"from the types in '{func.signature}'", names=(func.name,),
                         stacklevel=4)
    return m
