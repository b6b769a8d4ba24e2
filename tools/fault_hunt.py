#!/usr/bin/env python
"""Fault hunt: mutate valid input files and check that the ``axkern`` command line reports
every damaged one cleanly.

Starts from valid files of every format axkern reads (a TFApprox ``.bin`` table, an AdaPT
``.h`` header, a ``.npy`` table, a C multiplier source, a model ``.npz`` and a data ``.npz``),
writes seeded mutants of each (byte flips, truncations, insertions, deletions and
format-aware edits: hostile ``.npy`` headers, odd C literals in headers, edits of a model's
JSON header, rewritten archive members, statements that loop, crash or exit in C), and runs
the matching command on each in a child process with a time limit:

=========  ==========================================================
``.bin``   ``axkern metrics FILE``
``.h``     ``axkern metrics FILE``
``.npy``   ``axkern metrics FILE``
``.c``     ``axkern lut FILE -o OUT.bin --timeout T``
model      ``axkern eval FILE -m exact.bin --limit N``
data       ``axkern eval --data FILE -m exact.bin``
=========  ==========================================================

A mutant may be accepted (exit 0) or refused (exit 1 with one ``axkern: error:`` line). A
finding is a Python traceback on stderr, a crash (killed by a signal), a hang (the time
limit), any other exit status, or an error that is not the one-line form (Python warnings
before the error line are counted apart, as "refused, warned", not as findings). Findings are
listed with the mutant kept under ``--keep`` for reproduction, and a summary table is printed;
the exit status is 1 when there are findings.

Usage::

    python tools/fault_hunt.py [--count 300] [--c-count 60] [--seed 0] [--jobs 2]
                               [--timeout 60] [--kinds bin,h,npy,c,model,data] [--keep DIR]

Child processes use a private, temporary table cache (``AXKERN_CACHE_DIR``), so the user's
cache is neither read nor filled.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

KINDS = ("bin", "h", "npy", "c", "model", "data")


# ------------------------------------------------------------------------------ valid inputs
def make_bases(d):
    """Valid files of every kind under ``d``: {kind: path}, plus the multiplier eval uses."""
    import axkern
    from axkern.library import shipped_source
    from axkern.survey import load_data, shipped_model_path

    m = axkern.load_multiplier("mul8u_trunc2")
    paths = {"bin": os.path.join(d, "base.bin"), "h": os.path.join(d, "base.h"),
             "npy": os.path.join(d, "base.npy"), "c": os.path.join(d, "base.c"),
             "model": os.path.join(d, "base_model.npz"), "data": os.path.join(d, "base_data.npz")}
    m.to_bin(paths["bin"])
    m.to_header(paths["h"])
    m.to_npy(paths["npy"])
    shutil.copy(shipped_source("mul8u_trunc2"), paths["c"])
    shutil.copy(shipped_model_path(), paths["model"])
    model = axkern.nn.load(paths["model"])
    x, y, _ = load_data(model, None, limit=24)
    np.savez_compressed(paths["data"], x=x, y=y)
    exact = os.path.join(d, "exact.bin")
    axkern.Multiplier.exact(8).to_bin(exact)
    return paths, exact


# ------------------------------------------------------------------------------ mutations
def _bytes_generic(rng, data):
    """A generic byte-level mutation of ``data``: (description, new bytes)."""
    data = bytearray(data)
    n = len(data)
    op = rng.choice(("flip", "flip", "flips", "truncate", "insert", "delete", "zero", "dup"))
    if n == 0:
        op = "insert"
    if op == "flip":
        p = rng.randrange(n)
        data[p] ^= 1 << rng.randrange(8)
        return f"flip bit at {p}", bytes(data)
    if op == "flips":
        ps = [rng.randrange(n) for _ in range(rng.randint(2, 16))]
        for p in ps:
            data[p] = rng.randrange(256)
        return f"random bytes at {ps[:4]}...", bytes(data)
    if op == "truncate":
        p = rng.randrange(n)
        return f"truncate to {p}", bytes(data[:p])
    if op == "insert":
        p = rng.randrange(n + 1)
        ins = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return f"insert {len(ins)} bytes at {p}", bytes(data[:p] + ins + data[p:])
    if op == "delete":
        p = rng.randrange(n)
        k = rng.randint(1, 64)
        return f"delete {k} bytes at {p}", bytes(data[:p] + data[p + k:])
    if op == "zero":
        p = rng.randrange(n)
        k = rng.randint(1, 256)
        data[p:p + k] = bytes(len(data[p:p + k]))
        return f"zero {k} bytes at {p}", bytes(data)
    p, k = rng.randrange(n), rng.randint(1, 512)
    return f"duplicate {k} bytes at {p}", bytes(data[:p + k] + data[p:])


_HOSTILE_SHAPES = ("(10**12, 10**12)", "(1000000000000, 1000000000000)", "(256, 256, }",
                   "(-1, 256)", "(256,)", "()", "(0, 0)", "(256, 256, 1)", "(2**62, 4)",
                   "(65536, 65536)", "(256, 256.0)", "[256, 256]", "None", "(256, 'a')",
                   "((((((((((((((((((((1))))))))))))))))))))", "(" * 500 + ")" * 500)
_HOSTILE_DESCR = ("'|O'", "'<f8'", "'>i4'", "'<U8'", "'|V4'", "[('a', '<i4')]", "'<c16'",
                  "'<i4'", "'x'", "'<M8[s]'", "'|b1'", "('<i4', (2,))", "'<f2'")


def _npy_header_edit(rng, data):
    """Rewrite the dictionary of a .npy header with hostile or odd values."""
    m = re.match(rb"\x93NUMPY(.)(.)", data)
    if not m:
        return _bytes_generic(rng, data)
    hlen = int.from_bytes(data[8:10], "little")
    header, payload = data[10:10 + hlen].decode("latin1"), data[10 + hlen:]
    what = rng.choice(("shape", "descr", "fortran", "raw", "version", "length"))
    if what == "shape":
        v = rng.choice(_HOSTILE_SHAPES)
        header = re.sub(r"'shape': \([^)]*\)", lambda _: f"'shape': {v}", header)
    elif what == "descr":
        v = rng.choice(_HOSTILE_DESCR)
        header = re.sub(r"'descr': '[^']*'", lambda _: f"'descr': {v}", header)
    elif what == "fortran":
        header = header.replace("False", rng.choice(("True", "0", "'no'", "None")))
    elif what == "raw":
        p = rng.randrange(len(header))
        header = header[:p] + rng.choice("{}()[]',:\\\"#\x00") + header[p + 1:]
    elif what == "version":
        ver = bytes([rng.choice((0, 1, 2, 3, 4, 255)), rng.choice((0, 1))])
        return f"version bytes {list(ver)}", data[:6] + ver + data[8:]
    else:
        n = rng.choice((0, 1, hlen - 1, hlen + 1, 65535))
        return f"header length {n}", data[:8] + n.to_bytes(2, "little") + data[10:]
    hdr = header.rstrip()
    hdr = hdr + " " * max(0, 63 - (len(hdr) + 10) % 64) + "\n"
    return f"header {what}: {hdr.strip()[:80]!r}", (data[:8] + len(hdr).to_bytes(2, "little")
                                                    + hdr.encode("latin1") + payload)


_C_LITERALS = ("08", "09", "099", "99999999999999999999999", "-99999999999999999999999",
               "70000", "-70000", "65536", "-1", "0x", "0xZZ", "1.5", "1e3", "'a'", "abc",
               "0b2", "7uu", "5lul", "+", "-", "{", "}", ",", ";", "", "0x1FFFF", "(int16_t)",
               "/*", "*/", "\"x\"", "0777777777777777777777", "1U", "0XFFFFu", "\\", "?")


def _header_edit(rng, data):
    text = data.decode("latin1")
    nums = list(re.finditer(r"-?\b\d+\b", text))
    what = rng.choice(("literal", "literal", "delete_row", "type", "dims", "name"))
    if what == "literal" and nums:
        m = rng.choice(nums)
        v = rng.choice(_C_LITERALS)
        return (f"literal at {m.start()} -> {v!r}",
                (text[:m.start()] + v + text[m.end():]).encode("latin1"))
    if what == "delete_row":
        lines = text.split("\n")
        i = rng.randrange(len(lines))
        return f"delete line {i}", "\n".join(lines[:i] + lines[i + 1:]).encode("latin1")
    if what == "type":
        v = rng.choice(("int8_t", "uint8_t", "int16_t", "int32_t", "uint64_t", "char",
                        "float", "double", "unsigned long", "short", "bool"))
        return f"type -> {v}", re.sub(r"u?int16_t lut", v + " lut", text, count=1).encode("latin1")
    if what == "dims":
        v = rng.choice(("0", "1", "3", "4", "255", "257", "65536", "99999999999999999999", "", "-256"))
        return f"dims -> {v}", text.replace("[256][256]", f"[{v}][256]", 1).encode("latin1")
    return "name", text.replace(" lut[", " 9lut[", 1).encode("latin1")


_C_SNIPPETS = ("while (1) ;", "for (;;) { }", "return 1 / 0;", "*(volatile int *)0 = 1;",
               "abort();", "exit(3);", "return (uint16_t)(a * b * 1000);", "return -1;",
               "{ volatile char big[1 << 30]; big[0] = 1; return big[0]; }",
               "printf(\"%d\\n\", a);", "a = b;", "#include <nonexistent.h>",
               "return 99999999999999999999999;", "}", "{", "int x = ;")


def _c_edit(rng, data):
    text = data.decode("latin1")
    what = rng.choice(("snippet", "snippet", "signature", "literal", "comment"))
    body = text.find("{", text.find("mul8u_trunc2("))
    if what == "snippet" and body >= 0:
        s = rng.choice(_C_SNIPPETS)
        if s.startswith("#include"):
            return f"prepend {s!r}", (s + "\n" + text).encode("latin1")
        needs_stdlib = "abort" in s or "exit" in s or "printf" in s
        prefix = "#include <stdlib.h>\n#include <stdio.h>\n" if needs_stdlib else ""
        return (f"insert {s!r}", (prefix + text[:body + 1] + "\n    " + s + "\n"
                                  + text[body + 1:]).encode("latin1"))
    if what == "signature":
        v = rng.choice(("uint16_t mul8u_trunc2(uint8_t a)", "float mul8u_trunc2(float a, float b)",
                        "uint16_t mul8u_trunc2(uint8_t a, uint8_t b, uint8_t c)",
                        "uint16_t mul8u_trunc2(uint32_t a, uint32_t b)",
                        "int64_t mul8u_trunc2(int64_t a, int64_t b)",
                        "uint16_t mul8u_trunc2(uint1_t a, uint8_t b)",
                        "void mul8u_trunc2(uint8_t a, uint8_t b)",
                        "uint16_t mul8u_trunc2(uint8_t a, uint8_t b) ;"))
        return f"signature -> {v}", re.sub(r"uint16_t mul8u_trunc2\([^)]*\)", v, text,
                                           count=1).encode("latin1")
    if what == "literal":
        nums = list(re.finditer(r"\b\d+u?\b", text))
        if nums:
            m = rng.choice(nums)
            v = rng.choice(("0", "64", "99999999999999999999", "-1", "08", "1u << 40"))
            return (f"literal at {m.start()} -> {v}",
                    (text[:m.start()] + v + text[m.end():]).encode("latin1"))
    v = rng.choice(("// SIGNED = yes", "// DELAY = 1e999", "// POWER = nan", "/* unclosed",
                    "// BITS = 99", "// PP_BITS = -5"))
    return f"comment {v!r}", (v + "\n" + text).encode("latin1")


def _json_edit(rng, header):
    """Edit one value of a model's JSON header (a dict) in place; returns a description."""
    paths = []

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                paths.append((obj, k, path + [k]))
                walk(v, path + [k])
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                paths.append((obj, i, path + [i]))
                walk(v, path + [i])

    walk(header, [])
    parent, key, path = rng.choice(paths)
    v = rng.choice((None, -1, 0, 10 ** 30, 2 ** 62, 1.5, float("nan"), "x", "SAME", [], {},
                    [1], [0, 0], [[1, 2], [3]], [2 ** 40, 1], True, "Conv2D", "Dense",
                    [[0, 0], [0, 2 ** 40]], "\u00e9" * 3))
    if rng.random() < 0.15 and isinstance(parent, dict):
        del parent[key]
        return f"delete {path}"
    parent[key] = v
    return f"{path} = {v!r}"[:120]


def _npz_edit(rng, data, kind):
    """Rewrite one member of an .npz archive (JSON header, hostile .npy header, dtype, shape)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(i.filename, z.read(i)) for i in z.infolist()]
    except Exception:
        return _bytes_generic(rng, data)
    idx = rng.randrange(len(members))
    name, blob = members[idx]
    what = rng.choice(("json", "json", "npy_header", "array") if kind == "model"
                      else ("npy_header", "array", "rename"))
    desc = what
    if what == "json" and name == "__axkern__.npy" or (what == "json" and kind == "model"):
        idx = next(i for i, (n, _) in enumerate(members) if n == "__axkern__.npy")
        name, blob = members[idx]
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
        header = json.loads(str(arr[()]))
        desc = "json " + _json_edit(rng, header)
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps(header)))
        blob = buf.getvalue()
    elif what == "npy_header":
        d, blob = _npy_header_edit(rng, blob)
        desc = f"{name}: {d}"
    elif what == "array":
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
        choice = rng.choice(("empty", "transpose", "float64", "int", "nan", "inf", "huge",
                             "scalar", "3d", "bool"))
        if choice == "empty":
            arr = np.zeros((0,) + arr.shape[1:], arr.dtype)
        elif choice == "transpose":
            arr = np.ascontiguousarray(arr.T)
        elif choice == "float64":
            arr = arr.astype(np.float64)
        elif choice == "int":
            arr = arr.astype(np.int64) if arr.dtype.kind in "biuf" else arr
        elif choice in ("nan", "inf", "huge") and arr.dtype.kind == "f" and arr.size:
            arr = arr.copy()
            arr.flat[rng.randrange(arr.size)] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[choice]
        elif choice == "scalar":
            arr = np.array(7, arr.dtype) if arr.dtype.kind in "biuf" else arr
        elif choice == "3d":
            arr = arr.reshape(arr.shape + (1,))
        elif choice == "bool":
            arr = arr != 0 if arr.dtype.kind in "biuf" else arr
        buf = io.BytesIO()
        np.save(buf, arr)
        blob = buf.getvalue()
        desc = f"{name}: array {choice} -> {arr.dtype}{arr.shape}"
    else:
        name = rng.choice(("X.npy", "x", "y.npy.npy", "", "../x.npy"))
        desc = f"rename member {members[idx][0]} -> {name!r}"
    members[idx] = (name, blob)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in members:
            z.writestr(n or "unnamed", b)
    return desc, out.getvalue()


def mutate(kind, rng, data):
    """One seeded mutant of a valid file of ``kind``: (description, bytes)."""
    generic = rng.random() < 0.5
    if generic:
        return _bytes_generic(rng, data)
    if kind == "npy":
        return _npy_header_edit(rng, data)
    if kind == "h":
        return _header_edit(rng, data)
    if kind == "c":
        return _c_edit(rng, data)
    if kind in ("model", "data"):
        return _npz_edit(rng, data, kind)
    return _bytes_generic(rng, data)   # .bin: every byte is data


# ------------------------------------------------------------------------------ running
def command(kind, path, workdir, exact, args):
    ax = [sys.executable, "-m", "axkern"]
    if kind in ("bin", "h", "npy"):
        return ax + ["metrics", path]
    if kind == "c":
        return ax + ["lut", path, "-o", path + ".out.bin", "--timeout", str(args.c_timeout)]
    if kind == "model":
        return ax + ["eval", path, "-m", exact, "--limit", str(args.limit)]
    return ax + ["eval", "--data", path, "-m", exact]


def classify(rc, err, timed_out):
    if timed_out:
        return "hang"
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if rc < 0:
        return "crash"
    if rc == 0:
        return "accepted"
    if rc == 1:
        lines = err.strip().splitlines()
        # Python warnings (a "file:line: XWarning: ..." line and its source line) may precede
        warned = False
        while len(lines) > 1 and (re.search(r":\d+: \w*Warning: ", lines[0])
                                  or lines[0].startswith("axkern: warning: ")):
            python_form = not lines[0].startswith("axkern: ")
            lines = lines[2:] if python_form and len(lines) > 2 and lines[1].startswith("  ") \
                else lines[1:]
            warned = True
        if lines and lines[0].startswith("axkern: error: ") and \
                all(ln.startswith("  ") for ln in lines[1:]):
            return "refused, warned" if warned else "refused"
        return "unclean error"
    return f"exit {rc}"


def run_one(job, env, timeout):
    kind, i, desc, path, cmd = job
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        rc, err, timed_out = p.returncode, p.stderr, False
    except subprocess.TimeoutExpired as e:
        rc, timed_out = None, True
        err = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    return kind, i, desc, path, cmd, classify(rc, err, timed_out), err, time.monotonic() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300, help="mutants per kind (default 300)")
    ap.add_argument("--c-count", type=int, default=60,
                    help="mutants of the C source (each one is compiled; default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds before a child counts as hung (default 60)")
    ap.add_argument("--c-timeout", type=float, default=5.0,
                    help="axkern lut --timeout for C mutants (default 5)")
    ap.add_argument("--limit", type=int, default=20, help="eval --limit for model mutants")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy the mutants behind findings here (default: a folder in the "
                         "temporary directory, printed)")
    ap.add_argument("--messages", action="store_true",
                    help="also list the distinct error lines of refused mutants (paths and "
                         "numbers elided), to review their wording")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error(f"unknown kinds {bad}: expected some of {KINDS}")

    work = tempfile.mkdtemp(prefix="axkern-fault-hunt-")
    try:
        env = dict(os.environ, AXKERN_CACHE_DIR=os.path.join(work, "cache"),
                   OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        env.pop("AXKERN_DEBUG", None)
        bases, exact = make_bases(work)
        jobs = []
        for kind in kinds:
            base = open(bases[kind], "rb").read()
            rng = random.Random(f"{args.seed}-{kind}")
            n = args.c_count if kind == "c" else args.count
            ext = {"model": ".npz", "data": ".npz"}.get(kind, "." + kind)
            for i in range(n):
                desc, data = mutate(kind, rng, base)
                path = os.path.join(work, f"{kind}_{i:04d}{ext}")
                with open(path, "wb") as f:
                    f.write(data)
                jobs.append((kind, i, desc, path, command(kind, path, work, exact, args)))
        print(f"fault hunt: {len(jobs)} mutants ({', '.join(kinds)}), seed {args.seed}, "
              f"{args.jobs} at a time", flush=True)
        results = []
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futs = [pool.submit(run_one, j, env, args.timeout) for j in jobs]
            for n_done, fut in enumerate(concurrent.futures.as_completed(futs), 1):
                results.append(fut.result())
                if n_done % 100 == 0:
                    print(f"  {n_done}/{len(jobs)} done ({time.monotonic() - t0:.0f} s)",
                          flush=True)
        findings = [r for r in results if r[5] not in ("accepted", "refused", "refused, warned")]
        if findings:
            keep = args.keep or tempfile.mkdtemp(prefix="axkern-fault-hunt-findings-")
            os.makedirs(keep, exist_ok=True)
            print(f"\nfindings ({len(findings)}), mutants kept in {keep}:")
            for kind, i, desc, path, cmd, verdict, err, secs in sorted(findings):
                kept = os.path.join(keep, os.path.basename(path))
                shutil.copy(path, kept)
                last = (err.strip().splitlines() or ["(no stderr)"])[-1]
                print(f"  [{verdict}] {kind} #{i} ({desc}): {last[:160]}")
                print(f"      {' '.join(cmd[1:3])} ... {kept}")
        if args.messages:
            msgs = collections.Counter()
            for r in results:
                if r[5].startswith("refused"):
                    line = next((ln for ln in r[6].splitlines() if ln.startswith("axkern: error")), "")
                    line = re.sub(r"\S*axkern-fault-hunt-\w+/", "", line)
                    msgs[(r[0], re.sub(r"\d+", "N", line)[:150])] += 1
            print("\nerror lines of refused mutants (kind, count, line):")
            for (kind, line), n in sorted(msgs.items()):
                print(f"  {kind:<6}{n:>5}  {line}")
        table = collections.defaultdict(collections.Counter)
        for r in results:
            table[r[0]][r[5]] += 1
        cols = ["accepted", "refused", "refused, warned", "traceback", "crash", "hang",
                "unclean error", "other"]
        print("\nsummary (mutants per outcome):")
        print(f"  {'kind':<6}{'total':>7}" + "".join(f"{c:>17}" for c in cols))
        for kind in kinds:
            c = table[kind]
            other = sum(v for k, v in c.items() if k not in cols)
            vals = [c[k] for k in cols[:-1]] + [other]
            print(f"  {kind:<6}{sum(c.values()):>7}" + "".join(f"{v:>17}" for v in vals))
        print(f"\n{len(results)} mutants in {time.monotonic() - t0:.0f} s: {len(findings)} "
              f"findings (tracebacks, crashes, hangs, unclean errors)")
        return 1 if findings else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
