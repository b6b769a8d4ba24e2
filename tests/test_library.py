"""The shipped multiplier library: every C source against an independent NumPy model.

Each model below is written from the design description (docs/multipliers.md), vectorized over
all 65536 operand pairs, and never calls the C code. The C sources compute the same designs in
a different form (row masks, leading-one loops, fixed-point logarithms), so agreement is a real
check of both.
"""
import os

import numpy as np
import pytest

import axkern
from axkern import library
from axkern.lut import Multiplier

CODES = np.arange(256, dtype=np.int64)
SVALS = np.where(CODES >= 128, CODES - 256, CODES)  # operand value of each signed code


def _bit(v, i):
    return (v >> i) & 1


def cell_sum(A, B, keep):
    """Sum of the partial-product cells a_i b_j 2^(i+j) for which keep(i, j) holds.

    A and B are non-negative bit patterns (codes)."""
    out = np.zeros(np.broadcast(A, B).shape, dtype=np.int64)
    for i in range(8):
        for j in range(8):
            if keep(i, j):
                out += (_bit(A, i) * _bit(B, j)) << (i + j)
    return out


# ------------------------------------------------------------------------- unsigned models
def u_exact():
    return np.multiply.outer(CODES, CODES)


def u_trunc(k):
    A, B = CODES[:, None], CODES[None, :]
    return A * B - cell_sum(A, B, lambda i, j: i + j < k)


def u_bam(v, h):
    A, B = CODES[:, None], CODES[None, :]
    return A * B - cell_sum(A, B, lambda i, j: i + j < v or j < h)


def u_perf(rows):
    # Closed form: skipping rows of weight bits is multiplying by b with those bits cleared.
    mask = sum(1 << r for r in rows)
    return np.multiply.outer(CODES, CODES & ~mask)


def drum_operand(v, k):
    """DRUM's approximation of non-negative operand values v."""
    v = np.asarray(v, dtype=np.int64)
    t = np.floor(np.log2(np.maximum(v, 1))).astype(np.int64)  # leading-one position
    s = np.maximum(t - k + 1, 0)
    approx = ((v // (2 ** s)) | 1) * 2 ** s
    return np.where(t >= k, approx, v)


def u_drum(k):
    d = drum_operand(CODES, k)
    return np.multiply.outer(d, d)


def mitchell_float(x, y, frac_bits=None):
    """Mitchell's product of positive values, computed in float64 (all values are exact
    binary fractions) and truncated to an integer; 0 where an operand is 0."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xs, ys = np.maximum(x, 1), np.maximum(y, 1)
    kx, ky = np.floor(np.log2(xs)), np.floor(np.log2(ys))
    fx, fy = xs / 2 ** kx - 1, ys / 2 ** ky - 1
    if frac_bits is not None:
        fx = np.floor(fx * 2 ** frac_bits) / 2 ** frac_bits
        fy = np.floor(fy * 2 ** frac_bits) / 2 ** frac_bits
    log = kx + ky + fx + fy
    ch = np.floor(log)
    p = np.floor(2 ** ch * (1 + (log - ch)))
    return np.where((x == 0) | (y == 0), 0, p).astype(np.int64)


def u_mitchell(frac_bits=None):
    return mitchell_float(CODES[:, None], CODES[None, :], frac_bits)


# ------------------------------------------------------------------------- signed models
def s_exact():
    return np.multiply.outer(SVALS, SVALS)


def s_trunc(k):
    # Only positive-weight cells (magnitude bits i, j < 7) lie in the columns below k <= 7.
    assert k <= 7
    A, B = CODES[:, None], CODES[None, :]
    return np.multiply.outer(SVALS, SVALS) - cell_sum(A, B, lambda i, j: i + j < k)


def sign_magnitude(unsigned_model):
    A, B = SVALS[:, None], SVALS[None, :]
    return np.sign(A) * np.sign(B) * unsigned_model(np.abs(A), np.abs(B))


def s_drum(k):
    return sign_magnitude(lambda x, y: drum_operand(x, k) * drum_operand(y, k))


def s_mitchell():
    return sign_magnitude(mitchell_float)


# name -> (model, kept partial-product cells or None where PP_BITS is not a cell count)
MODELS = {
    "mul8u_exact": (u_exact, 64),
    "mul8s_exact": (s_exact, 64),
    **{f"mul8u_trunc{k}": ((lambda k=k: u_trunc(k)),
                           sum(i + j >= k for i in range(8) for j in range(8)))
       for k in (2, 4, 6, 8, 10)},
    **{f"mul8u_bam_v{v}h{h}": ((lambda v=v, h=h: u_bam(v, h)),
                               sum(i + j >= v and j >= h for i in range(8) for j in range(8)))
       for v, h in ((4, 2), (8, 2), (8, 4), (10, 5))},
    "mul8u_perf1": (lambda: u_perf([0]), 56),
    "mul8u_perf2": (lambda: u_perf([0, 1]), 48),
    "mul8u_perf2s2": (lambda: u_perf([2, 3]), 48),
    "mul8u_perf4": (lambda: u_perf([0, 1, 2, 3]), 32),
    **{f"mul8u_drum{k}": ((lambda k=k: u_drum(k)), k * k) for k in (3, 4, 5, 6)},
    "mul8u_mitchell": (u_mitchell, 0),
    "mul8u_mitchell_f3": (lambda: u_mitchell(3), 0),
    "mul8s_trunc4": (lambda: s_trunc(4), 54),
    "mul8s_trunc6": (lambda: s_trunc(6), 43),
    "mul8s_drum4": (lambda: s_drum(4), 16),
    "mul8s_drum6": (lambda: s_drum(6), 36),
    "mul8s_mitchell": (s_mitchell, 0),
}


def test_every_shipped_multiplier_has_a_model():
    names = axkern.list_multipliers()
    assert set(names) == set(MODELS)
    assert len(names) >= 16
    approx_signed = [n for n in names if n.startswith("mul8s_") and n != "mul8s_exact"]
    assert len(approx_signed) >= 3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_table_matches_independent_model(name):
    m = axkern.load_multiplier(name)
    model, pp_bits = MODELS[name]
    expected = model()
    assert m.name == name
    assert m.bits == 8
    assert m.signed == name.startswith("mul8s_")
    assert m.table.shape == (256, 256)
    mismatch = np.argwhere(m.table != expected)
    assert mismatch.size == 0, (
        f"{name}: {len(mismatch)} entries differ, first at codes {tuple(mismatch[0])}: "
        f"C {m.table[tuple(mismatch[0])]} vs model {expected[tuple(mismatch[0])]}")
    # metadata from the `// KEY = value` header
    for key in ("DESIGN", "FAMILY", "PARAMS", "SIGNED", "PP_BITS"):
        assert m.metadata.get(key), f"{name} lacks metadata {key}"
    assert int(m.metadata["PP_BITS"]) == pp_bits
    assert library.describe(name) == m.metadata


def test_hand_checked_entries():
    # a few values worked out on paper from the design descriptions
    t = lambda n: axkern.load_multiplier(n).table  # noqa: E731
    assert t("mul8u_exact")[255, 255] == 65025
    # trunc4: 15*15 = 225 keeps only cells in columns >= 4: 225 - (1+2+4+8 + 2+4+8 + 4+8 + 8) = 176
    assert t("mul8u_trunc4")[15, 15] == 176
    # DRUM4: 200 = 0b11001000 -> top bits 1100, LSB forced -> 1101 << 4 = 208; 208 * 3 = 624
    assert t("mul8u_drum4")[200, 3] == 624
    # Mitchell: 3 * 3: log = 1.5 + 1.5 = 3.0 -> 2^3 * 1 = 8
    assert t("mul8u_mitchell")[3, 3] == 8
    # perf1 ignores b's bit 0: 7 * 5 -> 7 * 4
    assert t("mul8u_perf1")[7, 5] == 28
    # signed: codes are two's complement, -128 * -128 = 16384 at code (128, 128)
    assert t("mul8s_exact")[128, 128] == 16384
    assert t("mul8s_exact")[255, 1] == -1
    # sign-magnitude DRUM4 is odd in each operand
    d = t("mul8s_drum4")
    assert d[(-100) & 255, 77] == -d[100, 77] == d[100, (-77) & 255]


def test_tables_fit_16bit_formats():
    for name in axkern.list_multipliers():
        m = axkern.load_multiplier(name)
        lo, hi = (-32768, 32767) if m.signed else (0, 65535)
        assert lo <= m.table.min() and m.table.max() <= hi, name


def test_error_span_and_orderings():
    mae = {n: axkern.metrics(axkern.load_multiplier(n)).mae_pct for n in axkern.list_multipliers()}
    assert mae["mul8u_exact"] == 0 and mae["mul8s_exact"] == 0
    nonzero = [v for v in mae.values() if v > 0]
    assert min(nonzero) < 0.01  # tiny
    assert max(nonzero) > 3.0  # severe
    chain = lambda names: [mae[n] for n in names]  # noqa: E731
    trunc = chain([f"mul8u_trunc{k}" for k in (2, 4, 6, 8, 10)])
    assert trunc == sorted(trunc) and len(set(trunc)) == 5
    drum = chain([f"mul8u_drum{k}" for k in (6, 5, 4, 3)])
    assert drum == sorted(drum) and len(set(drum)) == 4
    perf = chain(["mul8u_perf1", "mul8u_perf2", "mul8u_perf4"])
    assert perf == sorted(perf)
    assert mae["mul8u_bam_v8h2"] < mae["mul8u_bam_v8h4"] < mae["mul8u_bam_v10h5"]
    assert mae["mul8u_mitchell"] < mae["mul8u_mitchell_f3"]
    assert mae["mul8s_drum6"] < mae["mul8s_drum4"]
    # a horizontal break that removes cells the vertical one kept costs accuracy
    assert mae["mul8u_trunc8"] < mae["mul8u_bam_v8h2"]


def test_list_filters_and_natural_order():
    names = axkern.list_multipliers()
    assert names.index("mul8u_trunc8") < names.index("mul8u_trunc10")
    assert axkern.list_multipliers(signed=True) == [n for n in names if n.startswith("mul8s_")]
    assert axkern.list_multipliers(signed=False) == [n for n in names if n.startswith("mul8u_")]
    with pytest.raises(TypeError, match="signed"):
        axkern.list_multipliers(signed="yes")


def test_shipped_sources_are_self_contained_single_functions():
    from axkern.csource import find_functions

    for name in axkern.list_multipliers():
        path = library.shipped_source(name)
        assert os.path.basename(path) == name + ".c"
        text = open(path, encoding="utf-8").read()
        includes = [ln for ln in text.splitlines() if ln.startswith("#include")]
        assert includes == ["#include <stdint.h>"], name
        funcs = [f for f in find_functions(text) if f.is_candidate]
        assert [f.name for f in funcs] == [name]
        ret = "int16_t" if name.startswith("mul8s_") else "uint16_t"
        arg = "int8_t" if name.startswith("mul8s_") else "uint8_t"
        assert f"{ret} {name}({arg} a, {arg} b)" in text


def test_cache_hands_out_independent_copies():
    m1 = axkern.load_multiplier("mul8u_drum5")
    m1.name = "renamed"
    m1.metadata["X"] = "1"
    m2 = axkern.load_multiplier("mul8u_drum5")
    assert m2.name == "mul8u_drum5" and "X" not in m2.metadata
    assert m1 == m2
    assert "mul8u_drum5" in library._CACHE
    assert not m2.table.flags.writeable


def test_load_from_files_round_trip(tmp_path):
    ref = axkern.load_multiplier("mul8s_drum4")
    ref.to_bin(tmp_path / "t.bin")
    ref.to_header(tmp_path / "t.h")
    ref.to_npy(tmp_path / "t.npy")
    assert axkern.load_multiplier(str(tmp_path / "t.bin"), signed=True) == ref
    assert axkern.load_multiplier(tmp_path / "t.h") == ref  # int16_t header: signed inferred
    npy = axkern.load_multiplier(tmp_path / "t.npy", signed=True)
    assert npy == ref and npy.name == "t"
    # .bin does not record signedness: its sidecar t.bin.json does; without it, unsigned
    # unless told, with a warning (the table fits the signed reading far better)
    assert axkern.load_multiplier(tmp_path / "t.bin") == ref
    os.remove(tmp_path / "t.bin.json")
    with pytest.warns(axkern.lut.SignednessWarning, match="signed=True"):
        assert not axkern.load_multiplier(tmp_path / "t.bin").signed
    # a C file by path, with its function chosen among several
    src = tmp_path / "two.c"
    src.write_text("#include <stdint.h>\n"
                   "uint16_t f(uint8_t a, uint8_t b) { return a * b; }\n"
                   "uint16_t g(uint8_t a, uint8_t b) { return a * (b | 1); }\n")
    g = axkern.load_multiplier(str(src), function="g")
    np.testing.assert_array_equal(g.table, np.multiply.outer(CODES, CODES | 1))
    # a Multiplier passes through
    assert axkern.load_multiplier(ref) is ref


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown multiplier 'mul8u_drum7'.*mul8u_drum6"):
        axkern.load_multiplier("mul8u_drum7")
    with pytest.raises(ValueError, match=r"unsupported .*'\.txt'.*\.c, \.bin, \.h, \.npy"):
        (tmp_path / "x.txt").write_text("1")
        axkern.load_multiplier(str(tmp_path / "x.txt"))
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        axkern.load_multiplier(str(tmp_path / "missing.bin"))
    with pytest.raises(ValueError, match="signed"):
        axkern.load_multiplier("mul8u_exact", signed=True)
    with pytest.raises(ValueError, match="function"):
        axkern.load_multiplier("mul8u_exact", function="other")
    with pytest.raises(TypeError, match="name_or_path"):
        axkern.load_multiplier(3)
    with pytest.raises(TypeError, match="signed"):
        axkern.load_multiplier("mul8u_exact", signed="no")
    with pytest.raises(ValueError, match="empty"):
        axkern.load_multiplier("")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5), dtype=np.int32))
    with pytest.raises(ValueError, match=r"bad\.npy.*shape"):
        axkern.load_multiplier(str(bad))
    floats = tmp_path / "floats.npy"
    np.save(floats, np.full((16, 16), 0.5))
    with pytest.raises(TypeError, match=r"floats\.npy.*integers"):
        axkern.load_multiplier(str(floats))
    text_npy = tmp_path / "text.npy"
    text_npy.write_text("hello")
    with pytest.raises(ValueError, match=r"text\.npy: not a NumPy \.npy file"):
        axkern.load_multiplier(str(text_npy))
    with pytest.raises(TypeError, match="C sources only"):
        b = tmp_path / "e.bin"
        Multiplier.exact(8).to_bin(b)
        axkern.load_multiplier(str(b), function="f")
    with pytest.raises(ValueError, match="shipped name"):
        library.shipped_source("nope")


def test_bare_words_are_names_unless_a_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mul8u_exact").write_text("not a table")
    (tmp_path / "tablefile").write_text("not a table")
    # a shipped name wins over a stray file of the same name in the working directory
    assert axkern.load_multiplier("mul8u_exact").is_exact()
    # a bare word that is an existing file, not a shipped name, is read as a file
    with pytest.raises(ValueError, match="unsupported multiplier file type"):
        axkern.load_multiplier("tablefile")
    # a relative path with an extension is a file
    Multiplier.exact(4).to_npy(tmp_path / "e4.npy")
    assert axkern.load_multiplier("e4.npy").bits == 4
