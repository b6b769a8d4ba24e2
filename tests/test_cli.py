"""The `axkern` command line, run in-process through main() and once as `python -m axkern`.

Expected tables and metrics are computed here with plain NumPy from the documented definitions
in docs/conventions.md.
"""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from axkern import cli

CODES = np.arange(256, dtype=np.int64)
SVALS = np.where(CODES >= 128, CODES - 256, CODES)
A_U, B_U = CODES[:, None], CODES[None, :]
A_S, B_S = SVALS[:, None], SVALS[None, :]

# The four signature styles documented in docs/conventions.md, each asymmetric in its operands.
FIXTURES = {
    "style_u8": (
        "// DESIGN = test fixture\n#include <stdint.h>\n"
        "uint16_t approx_u(uint8_t a, uint8_t b) { return a * (b & 0xFE) + (a >> 4); }\n",
        [], A_U * (B_U & 0xFE) + (A_U >> 4), False),
    "style_u64_swapped": (
        "#include <stdint.h>\n#include <stdlib.h>\n"
        "uint64_t approx_w(const uint64_t B, const uint64_t A) { return B * (A & ~3ULL); }\n",
        [], A_U * (B_U & ~3), False),
    "style_s8": (
        "#include <stdint.h>\n"
        "int16_t approx_s(int8_t A, int8_t B) { return A * B + (A < 0 ? 1 : 0); }\n",
        [], A_S * B_S + (A_S < 0), True),
    "style_s_unsigned_types": (
        "#include <stdint.h>\n"
        "uint16_t approx_bits(uint8_t A, uint8_t B)\n"
        "{ return (uint16_t)((int8_t)A * (int8_t)B - (B & 1)); }\n",
        ["--signed"], A_S * B_S - (CODES[None, :] & 1), True),
}


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(capsys, argv, *fragments):
    rc, out, err = run(capsys, *argv)
    assert rc != 0
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("axkern: error: "), err
    first = err.splitlines()[0]
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"
    return first, err


def numpy_metrics(values, exact):
    """The EvoApproxLib definitions of docs/conventions.md, computed directly."""
    err = values.astype(np.int64) - exact
    n_pairs = err.size
    nz = exact != 0
    rel = np.abs(err[nz]) / np.abs(exact[nz])
    return dict(mae=np.abs(err).mean(), mae_pct=100 * np.abs(err).mean() / n_pairs,
                wce=int(np.abs(err).max()), wce_pct=100 * np.abs(err).max() / n_pairs,
                wcre_pct=100 * rel.max(), ep_pct=100 * np.count_nonzero(err) / n_pairs,
                mre_pct=100 * rel.mean(), mse=(err.astype(np.float64) ** 2).mean(),
                bias=err.mean(), std=err.std())


@pytest.fixture
def sources(tmp_path):
    paths = {}
    for key, (text, _, _, _) in FIXTURES.items():
        p = tmp_path / f"{key}.c"
        p.write_text(text)
        paths[key] = str(p)
    return paths


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_lut_bin_matches_numpy(capsys, tmp_path, sources, key):
    _, extra, expected, signed = FIXTURES[key]
    out = tmp_path / f"{key}.bin"
    rc, stdout, err = run(capsys, "lut", sources[key], "-o", str(out), *extra)
    assert rc == 0, err
    assert "wrote" in stdout
    dtype = "<i2" if signed else "<u2"
    assert out.read_bytes() == expected.astype(dtype).tobytes()


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_metrics_json_matches_numpy(capsys, sources, key):
    _, extra, expected, signed = FIXTURES[key]
    rc, out, err = run(capsys, "metrics", sources[key], "--json", *extra)
    assert rc == 0, err
    d = json.loads(out)
    assert set(d) == {"name", "bits", "signed", "mae", "mae_pct", "wce", "wce_pct", "wcre_pct",
                      "ep_pct", "mre_pct", "mse", "bias", "std", "factors"}
    assert d["bits"] == 8 and d["signed"] is signed
    exact = (A_S * B_S) if signed else (A_U * B_U)
    ref = numpy_metrics(expected, exact)
    assert d["wce"] == ref["wce"]
    for k, v in ref.items():
        assert d[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_exact_bin_is_byte_identical_outer_product(capsys, tmp_path):
    src = tmp_path / "ex.c"
    src.write_text("#include <stdint.h>\nuint16_t ex(uint8_t a, uint8_t b) { return a * b; }\n")
    out = tmp_path / "ex.bin"
    assert run(capsys, "lut", str(src), "-o", str(out))[0] == 0
    outer = np.multiply.outer(np.arange(256), np.arange(256))
    assert out.read_bytes() == outer.astype("<u2").tobytes()
    assert len(out.read_bytes()) == 131072


def test_lut_npy_and_header_outputs_and_bits(capsys, tmp_path, sources):
    key = "style_u8"
    expected = FIXTURES[key][2]
    assert run(capsys, "lut", sources[key], "-o", str(tmp_path / "t.npy"))[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), expected)
    assert run(capsys, "lut", sources[key], "-o", str(tmp_path / "t.h"), "--var", "tbl")[0] == 0
    assert "const uint16_t tbl[256][256]" in (tmp_path / "t.h").read_text()
    # 4-bit tabulation of the same function: codes 0..15
    assert run(capsys, "lut", sources[key], "-o", str(tmp_path / "t4.npy"), "--bits", "4")[0] == 0
    c = np.arange(16)
    np.testing.assert_array_equal(np.load(tmp_path / "t4.npy"),
                                  c[:, None] * (c[None, :] & 0xFE) + (c[:, None] >> 4))


def test_lut_picks_function_among_several(capsys, tmp_path):
    src = tmp_path / "two.c"
    src.write_text("#include <stdint.h>\n"
                   "uint16_t f(uint8_t a, uint8_t b) { return a * b; }\n"
                   "uint16_t g(uint8_t a, uint8_t b) { return (a | 1) * b; }\n")
    out = tmp_path / "g.npy"
    assert run(capsys, "lut", str(src), "-o", str(out), "--function", "g")[0] == 0
    np.testing.assert_array_equal(np.load(out), (A_U | 1) * B_U)


def test_header_round_trip(capsys, tmp_path, sources):
    # signed .bin -> header (int16_t) -> metrics of the header equal the source's
    key = "style_s_unsigned_types"
    expected = FIXTURES[key][2]
    b = tmp_path / "s.bin"
    assert run(capsys, "lut", sources[key], "-o", str(b), "--signed")[0] == 0
    h = tmp_path / "s.h"
    assert run(capsys, "header", str(b), "--signed", "-o", str(h))[0] == 0
    text = h.read_text()
    assert "#include <stdint.h>" in text and "const int16_t lut[256][256]" in text
    from axkern.lut import Multiplier

    back = Multiplier.from_header(h)
    assert back.signed
    np.testing.assert_array_equal(back.table, expected)
    # header from a shipped name and from a C source
    h2 = tmp_path / "u.h"
    assert run(capsys, "header", "mul8u_trunc2", "-o", str(h2))[0] == 0
    t = Multiplier.from_header(h2).table
    exact = A_U * B_U
    dropped = ((A_U & 1) * (B_U & 1) + 2 * ((A_U >> 1) & 1) * (B_U & 1)
               + 2 * (A_U & 1) * ((B_U >> 1) & 1))
    np.testing.assert_array_equal(t, exact - dropped)
    h3 = tmp_path / "c.h"
    assert run(capsys, "header", sources["style_u8"], "-o", str(h3))[0] == 0
    np.testing.assert_array_equal(Multiplier.from_header(h3).table, FIXTURES["style_u8"][2])


def test_metrics_table_several_inputs_sorted(capsys, sources):
    rc, out, err = run(capsys, "metrics", "mul8u_drum4", "mul8u_exact", sources["style_u8"],
                       "--sort", "MAE%")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["name", "bits", "signed", "MAE"]
    names = [ln.split()[0] for ln in lines[2:]]
    assert names[0] == "mul8u_exact" and len(names) == 3
    maes = [float(ln.split()[4]) for ln in lines[2:]]
    assert maes == sorted(maes)
    # columns are aligned: every row has the same length as the rule under the header
    assert len({len(ln) for ln in lines[1:]}) == 1
    rc, out, _ = run(capsys, "metrics", "mul8u_drum4", "mul8u_exact", "--sort", "wce",
                     "--reverse", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["mul8u_drum4", "mul8u_exact"]
    rc, out, _ = run(capsys, "metrics", "mul8u_exact", "mul8u_trunc2", "--markdown")
    assert out.splitlines()[0].startswith("| name") and out.splitlines()[1].startswith("|--")


def test_list(capsys):
    import axkern

    rc, out, err = run(capsys, "list")
    assert rc == 0, err
    body = out.strip().splitlines()[2:]
    assert [ln.split()[0] for ln in body] == axkern.list_multipliers()
    assert {"MAE%", "WCE%", "EP%", "MRE%"} <= set(out.splitlines()[0].split())
    # the exact multipliers show zero error
    exact_row = next(ln for ln in body if ln.startswith("mul8u_exact "))
    assert exact_row.split()[-6:-1] == ["0.0000", "0.0000", "0.00", "0.000", "0.00"]
    # ... and are one product of their operands (the factors column)
    assert exact_row.split()[-1] == "1"
    mitchell_row = next(ln for ln in body if ln.startswith("mul8u_mitchell "))
    assert mitchell_row.split()[-1] == "-"
    rc, out, _ = run(capsys, "list", "--json", "--signed")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == axkern.list_multipliers(signed=True)
    ref = numpy_metrics(axkern.load_multiplier("mul8s_drum4").table, A_S * B_S)
    drum = next(r for r in rows if r["name"] == "mul8s_drum4")
    assert drum["mae_pct"] == pytest.approx(ref["mae_pct"], rel=1e-12)
    assert drum["pp_bits"] == 16 and drum["family"] == "drum"
    assert drum["factors"] == 1


def test_metrics_factors_column(capsys, tmp_path):
    # the rank of the table's exact factors (axkern.lowrank), any multiplier: a C source of
    # one exact product of mapped operands is 1, Mitchell's logarithms have none
    src = tmp_path / "mapped.c"
    src.write_text("#include <stdint.h>\n"
                   "uint16_t mul8u_mapped(uint8_t a, uint8_t b) {\n"
                   "    return (uint16_t)((a | 1) * (b & 0xF0));\n}\n")
    rc, out, err = run(capsys, "metrics", str(src), "mul8u_mitchell", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert rows[0]["factors"] == 1 and rows[1]["factors"] == "-"
    rc, out, _ = run(capsys, "metrics", "mul8u_trunc2")
    assert rc == 0 and out.splitlines()[0].split()[-1] == "factors"
    assert out.splitlines()[2].split()[-1] == "3"


# --------------------------------------------------------------------------- user errors
def test_error_missing_file(capsys, tmp_path):
    assert_user_error(capsys, ["metrics", str(tmp_path / "nope.c")], "not found", "nope.c")
    assert_user_error(capsys, ["header", str(tmp_path / "nope.bin"), "-o", str(tmp_path / "x.h")],
                      "nope.bin")


def test_error_bin_wrong_size(capsys, tmp_path):
    b = tmp_path / "short.bin"
    b.write_bytes(b"\0" * 1000)
    assert_user_error(capsys, ["metrics", str(b)], "1000 bytes", "131072")


def test_error_header_without_full_table(capsys, tmp_path):
    h = tmp_path / "part.h"
    h.write_text("#include <stdint.h>\nconst int16_t lut[256][256] = {1, 2, 3};\n")
    assert_user_error(capsys, ["metrics", str(h)], "holds 3 values", "65536")


def test_error_compile_shows_compiler_message(capsys, tmp_path):
    c = tmp_path / "broken.c"
    c.write_text("#include <stdint.h>\nuint16_t f(uint8_t a, uint8_t b) { return a * b + ; }\n")
    first, err = assert_user_error(capsys, ["lut", str(c), "-o", str(tmp_path / "x.bin")],
                                   "does not compile")
    assert "broken.c:2" in err  # the compiler's own message, indented under the error line
    assert not (tmp_path / "x.bin").exists()


def test_error_no_function_and_ambiguous(capsys, tmp_path):
    c = tmp_path / "none.c"
    c.write_text("int x = 3;\n")
    assert_user_error(capsys, ["lut", str(c), "-o", str(tmp_path / "x.bin")], "no function")
    c2 = tmp_path / "two.c"
    c2.write_text("#include <stdint.h>\nuint16_t f(uint8_t a, uint8_t b) { return a * b; }\n"
                  "uint16_t g(uint8_t a, uint8_t b) { return a; }\n")
    first, _ = assert_user_error(capsys, ["lut", str(c2), "-o", str(tmp_path / "x.bin")], "f", "g")
    assert "function" in first


def test_error_unsupported_signature(capsys, tmp_path):
    c = tmp_path / "fl.c"
    c.write_text("float f(float a, float b) { return a * b; }\n")
    assert_user_error(capsys, ["lut", str(c), "-o", str(tmp_path / "x.bin")], "fl.c")


def test_error_crash_and_endless_loop(capsys, tmp_path):
    c = tmp_path / "crash.c"
    c.write_text("#include <stdint.h>\n#include <stdlib.h>\n"
                 "uint16_t f(uint8_t a, uint8_t b) { if (a == 200) abort(); return a * b; }\n")
    assert_user_error(capsys, ["lut", str(c), "-o", str(tmp_path / "x.bin")], "crash.c")
    c2 = tmp_path / "loop.c"
    c2.write_text("#include <stdint.h>\n"
                  "uint16_t f(uint8_t a, uint8_t b)\n"
                  "{ volatile int x = 1; while (x) {} return 0; }\n")
    assert_user_error(capsys, ["lut", str(c2), "-o", str(tmp_path / "x.bin"), "--timeout", "1"],
                      "loop.c")


def test_error_bits_out_of_range(capsys, tmp_path, sources):
    assert_user_error(capsys, ["lut", sources["style_u8"], "-o", str(tmp_path / "x.bin"),
                               "--bits", "9"], "9", "2 to 8")


def test_error_values_do_not_fit_format(capsys, tmp_path):
    big = tmp_path / "big.npy"
    np.save(big, np.full((256, 256), 70000, dtype=np.int32))
    assert_user_error(capsys, ["lut", str(big), "-o", str(tmp_path / "x.bin")],
                      "do not fit", "uint16")
    assert_user_error(capsys, ["header", str(big), "-o", str(tmp_path / "x.h")], "do not fit")


def test_error_unknown_name_and_extensions(capsys, tmp_path):
    first, _ = assert_user_error(capsys, ["metrics", "mul8u_drum9"], "unknown multiplier",
                                 "mul8u_drum")
    assert_user_error(capsys, ["lut", "mul8u_exact", "-o", str(tmp_path / "x.csv")],
                      "x.csv", ".bin")
    (tmp_path / "t.txt").write_text("0")
    assert_user_error(capsys, ["metrics", str(tmp_path / "t.txt")], "unsupported", ".txt")
    assert_user_error(capsys, ["header", "mul8u_exact", "-o", str(tmp_path / "x.bin")], ".h")
    assert_user_error(capsys, ["metrics", "mul8u_exact", "--sort", "speed"], "sort key", "mae_pct")
    assert_user_error(capsys, ["metrics", "mul8u_exact", "--signed"], "unsigned")


def test_error_unwritable_output(capsys, tmp_path):
    missing_dir = tmp_path / "no" / "dir" / "x.bin"
    assert_user_error(capsys, ["lut", "mul8u_exact", "-o", str(missing_dir)], "x.bin")


def test_usage_errors_exit_2(capsys):
    rc, out, err = run(capsys)
    assert rc == 2 and "usage:" in err and "Traceback" not in err
    rc, out, err = run(capsys, "lut", "x.c")  # missing -o
    assert rc == 2 and "-o" in err
    rc, out, err = run(capsys, "lut", "x.c", "-o", "x.bin", "--timeout", "-1")
    assert rc == 2 and "positive" in err
    rc, out, err = run(capsys, "header", "mul8u_exact", "-o", "x.h", "--var", "2x")
    assert rc == 2 and "C identifier" in err
    rc, out, err = run(capsys, "--help")
    assert rc == 0 and "metrics" in out


# --------------------------------------------------------------------------- extension hook
def test_extra_command_modules(capsys, monkeypatch):
    assert {"axkern.survey", "axkern.bench", "axkern.search"} <= set(cli._EXTRA_COMMAND_MODULES)
    fake = types.ModuleType("axkern_fake_ext")

    def add_parser(subparsers):
        p = subparsers.add_parser("fake", help="a test command")
        p.add_argument("--n", type=int, default=2)
        p.set_defaults(func=lambda args: print("fake", args.n * 21) or 0)

    fake.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "axkern_fake_ext", fake)
    monkeypatch.setattr(cli, "_EXTRA_COMMAND_MODULES", ("axkern_fake_missing", "axkern_fake_ext"))
    rc, out, _ = run(capsys, "fake")
    assert rc == 0 and out.strip() == "fake 42"
    # a module that exists but fails to import one of ITS dependencies is not silently skipped
    monkeypatch.setattr(cli, "_EXTRA_COMMAND_MODULES", ("axkern_fake_broken",))
    monkeypatch.delitem(sys.modules, "axkern_fake_broken", raising=False)

    real_import = cli.importlib.import_module

    def fake_import(name, *a):
        if name == "axkern_fake_broken":
            raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")
        return real_import(name, *a)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


# --------------------------------------------------------------------------- python -m axkern
def test_python_dash_m(tmp_path):
    env = dict(os.environ)
    env.pop("AXKERN_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "axkern", "metrics", "mul8u_trunc2", "--json"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    exact = A_U * B_U
    ref = numpy_metrics(exact - ((A_U & 1) * (B_U & 1) + 2 * ((A_U >> 1) & 1) * (B_U & 1)
                                 + 2 * (A_U & 1) * ((B_U >> 1) & 1)), exact)
    assert d["name"] == "mul8u_trunc2"
    assert d["mae_pct"] == pytest.approx(ref["mae_pct"], rel=1e-12)
    r = subprocess.run([sys.executable, "-m", "axkern", "metrics", "no_such_multiplier"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("axkern: error: unknown multiplier")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_docs_table_is_current(capsys):
    # docs/multipliers.md holds the output of `axkern list --markdown`; regenerate it when a
    # shipped multiplier changes
    doc = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "multipliers.md")
    if not os.path.exists(doc):
        pytest.skip("docs/ is not part of this checkout")
    rc, out, _ = run(capsys, "list", "--markdown")
    assert rc == 0
    with open(doc, encoding="utf-8") as f:
        assert out.strip() in f.read()
