"""The ``axkern`` command line (also ``python -m axkern``).

Subcommands::

    axkern lut SRC -o OUT.bin|OUT.npy|OUT.h [--function NAME] [--signed] [--bits N]
    axkern header IN -o OUT.h [--signed] [--var NAME] [--bits N]
    axkern metrics IN... [--json | --markdown] [--signed] [--sort KEY] [--reverse] [--bits N]
    axkern list [--json | --markdown] [--signed | --unsigned]

``IN`` is a shipped multiplier name (``axkern list``) or a ``.c``, ``.bin``, ``.h`` or ``.npy``
file, optionally written ``NAME=IN`` (to name it) and followed by ``:signed`` or ``:unsigned``
(how to read a table whose file does not record it; see :func:`axkern.library.parse_spec`).
Warnings (e.g. :class:`axkern.lut.SignednessWarning`) print one ``axkern: warning: ...`` line. Further subcommands come from the modules named in ``_EXTRA_COMMAND_MODULES``: each one
that is installed exposes ``add_parser(subparsers)``, which registers its subcommand with
``set_defaults(func=...)``; ``func(args)`` returns the exit status (None means 0).

User errors (missing files, bad tables, C that does not compile, unknown names, ...) print one
``axkern: error: ...`` line to stderr (a compiler's output follows it, indented) and exit with
status 1; usage errors exit with status 2. Set ``AXKERN_DEBUG=1`` to get the traceback instead.
SIGTERM and SIGHUP unwind like Ctrl-C (killing child processes, removing temporary files) and
exit with status 128 + the signal number.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
import warnings
import threading

from . import _json

__all__ = ["main", "build_parser"]

_EXTRA_COMMAND_MODULES = ("axkern.survey", "axkern.bench", "axkern.search")

_OUTPUT_EXTENSIONS = (".bin", ".npy", ".h")

# (header, metrics key, format) of the `metrics` table, in the order of ErrorMetrics.fields
_METRIC_COLUMNS = (
    ("name", "name", "{}"),
    ("bits", "bits", "{}"),
    ("signed", "signed", "{}"),
    ("MAE", "mae", "{:.3f}"),
    ("MAE%", "mae_pct", "{:.4f}"),
    ("WCE", "wce", "{}"),
    ("WCE%", "wce_pct", "{:.4f}"),
    ("WCRE%", "wcre_pct", "{:.2f}"),
    ("EP%", "ep_pct", "{:.2f}"),
    ("MRE%", "mre_pct", "{:.3f}"),
    ("MSE", "mse", "{:.1f}"),
    ("bias", "bias", "{:.3f}"),
    ("std", "std", "{:.3f}"),
    ("factors", "factors", "{}"),
)

_LIST_COLUMNS = (
    ("name", "name", "{}"),
    ("family", "family", "{}"),
    ("parameters", "params", "{}"),
    ("PP bits", "pp_bits", "{}"),
    ("MAE%", "mae_pct", "{:.4f}"),
    ("WCE%", "wce_pct", "{:.4f}"),
    ("EP%", "ep_pct", "{:.2f}"),
    ("MRE%", "mre_pct", "{:.3f}"),
    ("bias", "bias", "{:.2f}"),
    ("factors", "factors", "{}"),
)


class UserError(Exception):
    """A problem with what the user asked for, reported as one line without a traceback."""


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that rejects unknown arguments itself.

    argparse hands a subcommand's unrecognized arguments back to the top-level parser, whose
    error then shows ``usage: axkern [-h] [--version] COMMAND ...``; everything after the
    command name belongs to the subcommand, so its own usage is the helpful one.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras
class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (killing child processes, removing temporary files)
    like KeyboardInterrupt does, then exit with 128 + the signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _on_termination(signum, frame):
    # once is enough: a second signal must not interrupt the cleanup of the first
    for sig in _TERMINATION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Terminated(signum)


_TERMINATION_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP")
                             if hasattr(signal, n))


def _install_termination_handlers():
    """Turn SIGTERM/SIGHUP into _Terminated while main() runs, where they still have their
    default action (an embedding program's own handlers are left alone); returns a function
    that restores the previous handlers."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _TERMINATION_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_DFL:
                saved[sig] = signal.signal(sig, _on_termination)

    def restore():
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return restore


# ------------------------------------------------------------------------------ helpers
def _add_signed_options(p, what):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                   help=f"treat {what} as two's-complement signed")
    g.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                   help=f"treat {what} as unsigned")


def _load(spec, args):
    from .library import load_multiplier

    return load_multiplier(spec, signed=args.signed, function=getattr(args, "function", None),
                           bits=getattr(args, "bits", None), timeout=args.timeout)


def _positive_seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


def _c_identifier(text):
    from .lut import _check_c_name

    try:
        return _check_c_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a C identifier such as lut that is not a C keyword or a <stdint.h> type "
            f"name, got {text!r}") from None


def _add_c_options(p, bits=False):
    p.add_argument("--function", metavar="NAME",
                   help="function to tabulate in a C input that defines several")
    if bits:
        p.add_argument("--bits", type=int, metavar="N",
                       help="operand bit width, 2..8 (default: from the parameter types)")
    p.add_argument("--timeout", type=_positive_seconds, default=60.0, metavar="SECONDS",
                   help="stop tabulating a C input after this long (default: 60)")


def _fmt(fmt, value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def _render(rows, columns, markdown=False):
    """Aligned text (or Markdown) table of dict rows; numbers right-aligned."""
    header = [h for h, _, _ in columns]
    cells = [[_fmt(f, r[k]) for _, k, f in columns] for r in rows]
    numeric = [all(isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows)
               for _, k, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]

    def line(vals):
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)]
        return ("| " + " | ".join(out) + " |") if markdown else "  ".join(out).rstrip()

    lines = [line(header)]
    if markdown:
        lines.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                                    for w, num in zip(widths, numeric)) + "|")
    else:
        lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(c) for c in cells)
    return "\n".join(lines)


def _sort_key_name(key):
    from .metrics import ErrorMetrics

    k = key.strip().lower().replace("-", "_")
    if k.endswith("%"):
        k = k[:-1] + "_pct"
    if k not in ErrorMetrics.fields:
        raise UserError(f"unknown sort key {key!r}: expected one of "
                        f"{', '.join(ErrorMetrics.fields)}"
                        " (MAE% and mae-pct are accepted for mae_pct)")
    return k


# ------------------------------------------------------------------------------ commands
def _cmd_lut(args):
    out = args.output
    ext = os.path.splitext(out)[1].lower()
    if ext not in _OUTPUT_EXTENSIONS:
        raise UserError(f"cannot tell the output format of {out!r}: expected a file name ending "
                        f"in {', '.join(_OUTPUT_EXTENSIONS)}")
    m = _load(args.source, args)
    if ext == ".bin":
        files = m.to_bin(out)
    elif ext == ".npy":
        files = m.to_npy(out)
    else:
        files = m.to_header(out, var=args.var)
    _report_written(out, m, files or ())
    return 0


def _cmd_header(args):
    if not args.output.lower().endswith(".h"):
        raise UserError(f"the output of `axkern header` is a C header: expected a name ending in "
                        f".h, got {args.output!r} (use `axkern lut` for .bin and .npy)")
    m = _load(args.input, args)
    m.to_header(args.output, var=args.var)
    _report_written(args.output, m)
    return 0


def _report_written(path, m, files=()):
    kind = "signed" if m.signed else "unsigned"
    # only sidecars record the signedness; name any other file as what it is
    sides = [f for f in files if f != path and f.endswith(".json")]
    others = [f for f in files if f != path and f not in sides]
    side = f" (signedness recorded in {', '.join(sides)})" if sides else ""
    also = f"; also wrote {', '.join(others)}" if others else ""
    print(f"wrote {path}: {m.name}, {m.bits}-bit {kind}, max |T| = {m.max_abs()}{side}{also}")


def _factors(m):
    """The rank of the exact int16 factors of m's table, or "-" (none up to rank 4): such
    tables run as integer products in the fast kernels, as fast as float32 at rank 1."""
    from .backends import table256
    from .lowrank import factor_table

    f = factor_table(table256(m))
    return f[0].shape[1] if f is not None else "-"


def _metrics_row(m):
    from .metrics import metrics

    d = metrics(m).to_dict()
    d["factors"] = _factors(m)
    return d


def _cmd_metrics(args):
    sort_key = _sort_key_name(args.sort) if args.sort else None
    rows = [_metrics_row(_load(spec, args)) for spec in args.inputs]
    if sort_key:
        rows.sort(key=lambda r: r[sort_key], reverse=args.reverse)
    elif args.reverse:
        rows.reverse()
    if args.json:
        print(_json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
    else:
        print(_render(rows, _METRIC_COLUMNS, markdown=args.markdown))
    return 0


def _cmd_list(args):
    from .library import list_multipliers, load_multiplier

    rows = []
    for name in list_multipliers(signed=args.signed):
        m = load_multiplier(name)
        d = _metrics_row(m)
        meta = m.metadata
        d.update(family=meta.get("FAMILY", ""), params=meta.get("PARAMS", ""),
                 pp_bits=int(meta["PP_BITS"]) if meta.get("PP_BITS", "").isdigit() else "",
                 design=meta.get("DESIGN", ""))
        rows.append(d)
    if args.json:
        print(_json.dumps(rows, indent=2))
    else:
        print(_render(rows, _LIST_COLUMNS, markdown=args.markdown))
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser():
    """The argparse parser with every built-in and installed extra subcommand."""
    parser = argparse.ArgumentParser(
        prog="axkern",
        description="Approximate 8-bit multipliers: lookup tables, C headers, error metrics.",
        epilog="IN is a shipped multiplier name (see `axkern list`) or a .c, .bin, .h or .npy "
               "file, optionally NAME=IN to name it and IN:signed or IN:unsigned to say how to "
               "read a table file that does not record it.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"axkern {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubcommandParser)
    sub.required = True

    p = sub.add_parser("lut", help="tabulate a C multiplier into a .bin, .npy or .h table",
                       description="Compile a C multiplier, evaluate every operand pair and write "
                                   "the table; the output format follows the extension of OUT: "
                                   ".bin (TFApprox, 16-bit little-endian, with the signedness "
                                   "in OUT.bin.json), .npy (int16 signed / uint16 unsigned), "
                                   ".h (AdaPT C header). SRC may also be any other IN.")
    p.add_argument("source", metavar="SRC", help="C source (or a shipped name, .bin, .h, .npy)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .bin, .npy or .h")
    _add_c_options(p, bits=True)
    p.add_argument("--var", default="lut", type=_c_identifier,
                   help="array name in a .h output (default: lut)")
    _add_signed_options(p, "the circuit's operands and output")
    p.set_defaults(func=_cmd_lut)

    p = sub.add_parser("header", help="write a multiplier as an AdaPT-style C header",
                       description="Write `const int16_t lut[256][256]` (uint16_t for unsigned "
                                   "multipliers), indexed [(uint8_t)a][(uint8_t)b].")
    p.add_argument("input", metavar="IN", help="a .bin, .c, .h or .npy file or a shipped name")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h")
    _add_c_options(p, bits=True)
    p.add_argument("--var", default="lut", type=_c_identifier,
                   help="array name (default: lut)")
    _add_signed_options(p, "the input (needed for signed .bin/.npy tables)")
    p.set_defaults(func=_cmd_header)

    p = sub.add_parser("metrics", help="error metrics of one or more multipliers",
                       description="EvoApproxLib error metrics over all operand pairs: an aligned "
                                   "table, or JSON (one object for one input, a list for several).")
    p.add_argument("inputs", nargs="+", metavar="IN")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--sort", metavar="KEY", help="sort rows by a metric (mae_pct, wce, ep_pct, "
                                                 "name, ...; MAE%% works too)")
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    _add_c_options(p, bits=True)
    _add_signed_options(p, "every input")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("list", help="the shipped multipliers and their main metrics",
                       description="Shipped multipliers with family, parameters, kept "
                                   "partial-product bits (cost proxy) and main error metrics.")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                   help="only the signed multipliers")
    g.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                   help="only the unsigned multipliers")
    p.set_defaults(func=_cmd_list)

    for modname in _EXTRA_COMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # that subcommand is not part of this installation
            raise
        mod.add_parser(sub)
    return parser


def _print_error(message):
    lines = str(message).strip().splitlines() or ["unknown error"]
    text = "axkern: error: " + lines[0]
    if len(lines) > 1:  # e.g. the compiler's output, kept readable under the one error line
        text += "\n" + "\n".join("  " + ln for ln in lines[1:])
    print(text, file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # one line per warning on stderr, as the errors are
    text = " ".join(str(message).split())
    print(f"axkern: warning: {text}", file=sys.stderr)


def main(argv=None):
    """Run the ``axkern`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 for errors in the input, 2 for usage errors, 130 after
        Ctrl-C, 128 + the signal number after SIGTERM or SIGHUP (child processes killed,
        temporary files removed first).
    """
    debug = bool(os.environ.get("AXKERN_DEBUG"))
    restore_signals = None
    try:
        restore_signals = _install_termination_handlers()
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse already printed usage and message, or --help
            return e.code if isinstance(e.code, int) else 2
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            status = args.func(args)
        return 0 if status is None else int(status)
    except KeyboardInterrupt:
        print("axkern: interrupted", file=sys.stderr)
        return 130
    except _Terminated as e:
        print(f"axkern: terminated by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    except BrokenPipeError:
        # output piped into a program that stopped reading (e.g. `| head`)
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    except (UserError, ValueError, TypeError, OSError, RuntimeError) as e:
        if debug:
            raise
        msg = str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        _print_error(msg or type(e).__name__)
        return 1
    finally:
        if restore_signals is not None:
            restore_signals()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
