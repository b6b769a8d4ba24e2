"""Faults a QA pass found in the multiplier toolkit and the command line, one test each (or a
few): a stale table cache, tracebacks, signedness taken from the wrong argument, silently
wrong or misleading output."""
import gc
import json
import warnings

import numpy as np
import pytest

from axkern import Multiplier, cli
from axkern.csource import find_functions, tabulate_c

U8 = np.arange(256, dtype=np.int64)
S8 = np.where(U8 >= 128, U8 - 256, U8)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(capsys, argv, *fragments):
    rc, out, err = run(capsys, *argv)
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("axkern: error: ") and err.count("\n") == 1, err
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"
    return err


# ------------------------------------------------------------------ 1: cache and local headers
@pytest.mark.parametrize("include", ["<cfg.h>", '"cfg.h"', '"sub/outer.h"'])
def test_cache_follows_local_headers(tmp_path, monkeypatch, include):
    from axkern import csource

    monkeypatch.setenv("AXKERN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "sub").mkdir()
    # outer.h reaches cfg.h through the source's folder (-I), as <cfg.h> does
    (tmp_path / "sub" / "outer.h").write_text("#include <cfg.h>\n")
    src = tmp_path / "m.c"
    src.write_text(f"#include <stdint.h>\n#include {include}\n"
                   "uint16_t f(uint8_t a, uint8_t b) { return (a * b) & DROP; }\n")
    exact = np.multiply.outer(U8, U8)
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFF0\n")
    assert np.array_equal(tabulate_c(src).table, exact & 0xFFF0)
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFFF\n")
    assert tabulate_c(src).is_exact()
    # still cached: with the headers unchanged, nothing is compiled again
    monkeypatch.setattr(csource, "_compile_and_run", lambda *a: pytest.fail("recompiled"))
    assert tabulate_c(src).is_exact()
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFF0\n")
    assert np.array_equal(tabulate_c(src).table, exact & 0xFFF0)


def test_cli_metrics_sees_an_edited_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AXKERN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "m.c"
    src.write_text("#include <stdint.h>\n#include <cfg.h>\n"
                   "uint16_t f(uint8_t a,uint8_t b){return (a*b)&DROP;}\n")
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFF0\n")
    rc, out, err = run(capsys, "metrics", src, "--json")
    assert rc == 0 and json.loads(out)["mae"] == 6.5, err
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFFF\n")
    rc, out, err = run(capsys, "metrics", src, "--json")
    assert rc == 0 and json.loads(out)["mae"] == 0, err


def test_computed_include_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AXKERN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cfg.h").write_text("#define DROP 0xFFF0\n")
    src = tmp_path / "m.c"
    src.write_text('#include <stdint.h>\n#define CFG "cfg.h"\n#include CFG\n'
                   "uint16_t f(uint8_t a, uint8_t b) { return (a * b) & DROP; }\n")
    assert tabulate_c(src).table[255, 255] == (255 * 255) & 0xFFF0
    # which file CFG names is known only to the preprocessor: nothing is cached
    assert not list(tmp_path.glob("cache/*.tbl"))


# ------------------------------------------------------------------ 2: header values beyond int32
def test_header_value_beyond_int64_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "big64.h"
    p.write_text("#include <stdint.h>\nconst uint64_t lut[4][4] = {18446744073709551615, "
                 + ", ".join(str(i) for i in range(1, 16)) + "};\n")
    with pytest.raises(ValueError, match=r"big64.h, line 2.*entry \[0\]\[0\] = "
                                         r"18446744073709551615 .*fit int32"):
        Multiplier.from_header(p)
    assert_user_error(capsys, ["metrics", p], "18446744073709551615", "int32")


# ------------------------------------------------------------------ 5: signed must be a bool
@pytest.mark.parametrize("make", [
    lambda s: Multiplier(np.zeros((4, 4), int), signed=s),
    lambda s: Multiplier.exact(8, signed=s),
    lambda s: Multiplier.from_function(lambda a, b: a * b, 4, signed=s),
    lambda s: Multiplier.from_array(np.zeros((4, 4), int), signed=s),
])
@pytest.mark.parametrize("bad", ["no", "false", "yes", 1, 0])
def test_signed_must_be_a_bool(make, bad):
    with pytest.raises(TypeError, match=f"signed must be True.*got {bad!r}"):
        make(bad)


def test_signed_accepts_bools_and_numpy_bools():
    assert Multiplier.exact(4, signed=np.bool_(True)).signed is True
    assert Multiplier(np.zeros((4, 4), int), signed=np.False_).signed is False
    assert Multiplier.from_function(lambda a, b: a * b, 4, signed=True).is_exact()
    assert Multiplier.from_array(Multiplier.exact(4).table, signed=None).signed is False


# ------------------------------------------------------------------ 6: header element types
@pytest.mark.parametrize("ctype, signed", [
    ("unsigned long long", False), ("unsigned", False), ("size_t", False),
    ("static const unsigned short int", False), ("long unsigned", False),
    ("long long", True), ("signed char", True), ("int", True), ("const int_least16_t", True),
    ("uint32_t", False),
])
def test_header_element_types(tmp_path, ctype, signed):
    p = tmp_path / "t.h"
    values = [0] * 15 + [9]
    p.write_text(f"#include <stdint.h>\n{ctype} lut[4][4] = {{"
                 + ", ".join(map(str, values)) + "};\n")
    # 4x4 tables: the signedness check has nothing to say about these values
    m = Multiplier.from_header(p)
    assert m.signed is signed and m.table[3, 3] == 9


def test_header_element_type_ranges_and_casts(tmp_path):
    p = tmp_path / "t.h"
    p.write_text("unsigned long long lut[4][4] = {(unsigned long long)-1"
                 + ", 0" * 15 + "};\n")
    with pytest.raises(ValueError, match=r"= -1 is outside the range of unsigned long long"):
        Multiplier.from_header(p)
    p.write_text("float lut[4][4] = {" + ", ".join(["0"] * 16) + "};\n")
    with pytest.raises(ValueError, match=r"element type 'float': expected a C integer type"):
        Multiplier.from_header(p)
    p.write_text("int lut[4][4] = {(char long)1" + ", 0" * 15 + "};\n")
    with pytest.raises(ValueError, match="unexpected cast"):
        Multiplier.from_header(p)


# ------------------------------------------------------------------ 3: .NPY in capitals
def test_npy_extension_in_any_case(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "lut", "mul8u_trunc8", "-o", "A.NPY")
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.NPY"]
    assert "recorded" not in out and "also wrote" not in out
    assert np.load("A.NPY").dtype == np.uint16
    m = Multiplier.exact(8)
    assert m.to_npy(tmp_path / "b.Npy") == [str(tmp_path / "b.Npy")]
    assert m.to_npy(tmp_path / "c") == [str(tmp_path / "c.npy")]
    # a table beyond 16 bits: int32 and a sidecar, which the message names
    big = Multiplier(np.full((4, 4), 70000), signed=False, name="big")
    assert big.to_npy(tmp_path / "big.NPY") == [str(tmp_path / "big.NPY"),
                                                str(tmp_path / "big.NPY.json")]
    assert Multiplier.from_npy(tmp_path / "big.NPY") == big


# ------------------------------------------------------------------ 7: --bits on metrics and header
def test_metrics_and_header_take_bits(tmp_path, capsys):
    src = tmp_path / "m4.c"
    src.write_text("#include <stdint.h>\nuint8_t m4(uint8_t a, uint8_t b) { return a * b; }\n")
    rc, out, err = run(capsys, "metrics", src, "--bits", "4", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["bits"] == 4 and d["mae"] == 0
    rc, out, err = run(capsys, "header", src, "--bits", "4", "-o", tmp_path / "m4.h")
    assert rc == 0 and "4-bit" in out, err
    assert Multiplier.from_header(tmp_path / "m4.h") == Multiplier.exact(4)


# ------------------------------------------------------------------ 8: the header's array name
@pytest.mark.parametrize("var", ["1 bad;", "int", "while", "uint16_t", "bool", ""])
def test_to_header_checks_the_name(tmp_path, capsys, var):
    with pytest.raises(ValueError, match="table's name"):
        Multiplier.exact(4).to_header(tmp_path / "x.h", var=var)
    assert not (tmp_path / "x.h").exists()
    rc, out, err = run(capsys, "header", "mul8u_drum4", "-o", tmp_path / "kw.h", "--var", var)
    assert rc == 2 and "C identifier" in err and "Traceback" not in err
    assert not (tmp_path / "kw.h").exists()


def test_to_header_name_type():
    with pytest.raises(TypeError, match="must be a string"):
        Multiplier.exact(4).to_header("x.h", var=3)


# ------------------------------------------------------------------ 4 and 9: survey command line
def test_survey_output_under_a_file_fails_before_evaluating(tmp_path, capsys, monkeypatch):
    from axkern import survey as S

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setattr(S, "_evaluate_all", lambda *a, **k: pytest.fail("evaluated"))
    err = assert_user_error(capsys, ["survey", "--multipliers", "mul8u_exact", "--limit", "20",
                                     "--no-progress", "--no-plot",
                                     "--output", blocker / "out"],
                            "cannot create the output folder", "a file is in the way")
    assert str(blocker / "out") in err


def test_survey_prints_its_table_when_writing_fails(tmp_path, capsys, monkeypatch):
    from axkern import survey as S

    def refuse(result, out):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o" / "results.csv"))

    monkeypatch.setattr(S, "_write_tables", refuse)
    rc, out, err = run(capsys, "survey", "--multipliers", "mul8u_exact", "--limit", "20",
                       "--tune", "no", "--no-progress", "--no-plot", "--output", tmp_path / "o")
    assert rc == 1 and err.startswith("axkern: error: ") and "Permission denied" in err
    assert "mul8u_exact" in out and "acc%" in out


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_survey_rejects_an_empty_multiplier_list(capsys, monkeypatch, value):
    from axkern import survey as S

    monkeypatch.setattr(S, "survey", lambda *a, **k: pytest.fail("surveyed"))
    assert_user_error(capsys, ["survey", "--multipliers", value, "--no-progress"],
                      "names no multiplier")


# ------------------------------------------------------------------ 10: #if 0
def test_functions_under_if_0_are_not_candidates(tmp_path):
    src = ("#include <stdint.h>\n"
           "#if 0\nuint16_t old(uint8_t a, uint8_t b) { return a * b; }\n#endif\n"
           "#if false\nuint16_t old2(uint8_t a, uint8_t b) { {{ }\n"
           "#else\nstatic uint16_t helper(uint8_t a, uint8_t b) { return a & b; }\n#endif\n"
           "#if 0\n#ifdef X\n#else\nint dead(int a, int b) { return 0; }\n#endif\n#endif\n"
           "#ifdef NOT_DEFINED\nstatic int kept(int a, int b) { return 0; }\n#endif\n"
           "uint16_t f(uint8_t a, uint8_t b) { return (a * b) ^ helper(a, b); }\n")
    names = [f.name for f in find_functions(src)]
    assert names == ["helper", "kept", "f"]
    (tmp_path / "m.c").write_text(src)
    m = tabulate_c(tmp_path / "m.c")
    assert np.array_equal(m.table, np.multiply.outer(U8, U8) ^ (U8[:, None] & U8[None, :]))


# ------------------------------------------------------------------ 11: small ones
def test_from_header_closes_its_file(tmp_path):
    Multiplier.exact(4).to_header(tmp_path / "x.h")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert Multiplier.from_header(tmp_path / "x.h") == Multiplier.exact(4)
        gc.collect()   # an unclosed file warns when it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_bad_npy_message_says_it_once(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_text("junk")
    with pytest.raises(ValueError) as e:
        Multiplier.from_npy(p)
    assert str(e.value).count("numpy.save") == 1


def test_empty_table_gets_the_shape_error():
    with pytest.raises(ValueError, match=r"shape \(0, 0\): expected \(2\*\*n, 2\*\*n\)"):
        Multiplier.from_array(np.zeros((0, 0)))


def test_call_refuses_fractional_operands():
    m = Multiplier.exact(8)
    with pytest.raises(ValueError, match="operand a holds non-integer values .*2.5"):
        m(2.5, 3)
    with pytest.raises(ValueError, match="operand a holds non-integer"):
        m([0.9], 200)
    with pytest.raises(ValueError, match="operand b holds non-integer"):
        m(1, float("nan"))
    with pytest.raises(TypeError, match="operand a must hold integers"):
        m("3", 1)
    assert m(2.0, 3) == 6 and m(np.int8(4), True) == 4
    assert np.array_equal(m([1, 2], [[3], [4]]), [[3, 6], [4, 8]])


def test_cli_mixed_signedness_names_the_flags(tmp_path, capsys):
    p = tmp_path / "mx.c"
    p.write_text("#include <stdint.h>\nint f(uint8_t a, int8_t b) { return a * b; }\n")
    assert_user_error(capsys, ["metrics", p], "--signed/--unsigned")


def test_unsigned_with_narrow_signed_parameters_is_refused(tmp_path, capsys):
    from axkern.csource import CSourceError

    p = tmp_path / "s8.c"
    p.write_text("#include <stdint.h>\nint16_t f(int8_t a, int8_t b) { return a * b; }\n")
    with pytest.raises(CSourceError, match=r"int8_t operands, which cannot hold the unsigned "
                                           r"8-bit operands 128..255"):
        tabulate_c(p, signed=False)
    assert_user_error(capsys, ["metrics", p, "--unsigned"], "--signed")
    # wide enough: int holds every 8-bit code, and 4-bit codes fit int8_t
    p.write_text("int f(int a, int b) { return a * b; }\n")
    assert tabulate_c(p, signed=False).is_exact()
    p.write_text("#include <stdint.h>\nint16_t f(int8_t a, int8_t b) { return a * b; }\n")
    assert tabulate_c(p, signed=False, bits=4).is_exact()
    assert tabulate_c(p).table[255, 1] == -1   # signed as inferred: unchanged
