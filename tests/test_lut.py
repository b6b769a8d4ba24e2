"""Multiplier tables and their file formats (.bin, C header, .npy), checked byte for byte."""
import numpy as np
import pytest

from axkern import Multiplier
from axkern.lut import operand_values


def signed_value(code, bits):
    """Two's-complement value of an n-bit code, computed independently of axkern."""
    return ((code + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))


def random_table(rng, bits, signed):
    n = 1 << bits
    if signed:
        return rng.integers(-32768, 32768, size=(n, n))
    return rng.integers(0, 65536, size=(n, n))


# ------------------------------------------------------------------ .bin format
def test_exact_unsigned_bin_is_the_uint16_outer_product(tmp_path):
    p = tmp_path / "exact.bin"
    Multiplier.exact(8).to_bin(p)
    a = np.arange(256)
    want = np.multiply.outer(a, a).astype("<u2").tobytes()
    data = p.read_bytes()
    assert len(data) == 131072
    assert data == want
    # entry (a << 8) | b: a = 255, b = 254 -> 64770 = 0xFD02, little endian
    off = 2 * ((255 << 8) | 254)
    assert data[off:off + 2] == bytes([0x02, 0xFD])
    assert Multiplier.from_bin(p) == Multiplier.exact(8)


def test_signed_bin_int16_twos_complement_indices(tmp_path):
    p = tmp_path / "exact_s.bin"
    Multiplier.exact(8, signed=True).to_bin(p)
    codes = np.arange(256)
    v = signed_value(codes, 8)
    want = np.multiply.outer(v, v).astype("<i2").tobytes()
    assert p.read_bytes() == want
    raw = np.frombuffer(p.read_bytes(), dtype="<i2")
    assert raw[(255 << 8) | 2] == -2       # a = -1, b = 2
    assert raw[(128 << 8) | 128] == 16384  # a = b = -128
    assert raw[(128 << 8) | 127] == -16256  # -128 * 127
    m = Multiplier.from_bin(p, signed=True)
    assert m.signed and m.is_exact() and m.name == "exact_s"


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_round_trips_exact(tmp_path, bits, signed):
    rng = np.random.default_rng(bits * 2 + signed)
    t = random_table(rng, bits, signed)
    m = Multiplier.from_array(t, signed=signed, name="rnd")
    assert np.array_equal(m.table, t) and m.table.dtype == np.int32
    assert m.bits == bits and m.signed == signed

    m.to_bin(tmp_path / "t.bin")
    assert (tmp_path / "t.bin").stat().st_size == 2 * 4 ** bits
    b = Multiplier.from_bin(tmp_path / "t.bin", signed=signed)
    assert np.array_equal(b.table, t) and b.bits == bits

    m.to_header(tmp_path / "t.h")
    h = Multiplier.from_header(tmp_path / "t.h")
    assert h.signed == signed  # from the element type
    assert np.array_equal(h.table, t)
    text = (tmp_path / "t.h").read_text()
    n = 1 << bits
    assert f"const {'int16_t' if signed else 'uint16_t'} lut[{n}][{n}] = {{" in text
    assert "#include <stdint.h>" in text

    m.to_npy(tmp_path / "t.npy")
    arr = np.load(tmp_path / "t.npy")
    # the dtype records the signedness, as the .bin and .h element types do
    assert arr.dtype == (np.int16 if signed else np.uint16) and np.array_equal(arr, t)
    assert Multiplier.from_array(arr, signed=signed) == m
    assert Multiplier.from_npy(tmp_path / "t.npy") == m


def test_parse_adapt_style_header(tmp_path):
    rng = np.random.default_rng(7)
    t = rng.integers(-32768, 32768, size=(256, 256))
    rows = ",\n".join("    {" + ", ".join(str(x) for x in row) + "}" for row in t)
    text = ("// LUT exported by a notebook\n#include <stdint.h>\n\n/* [(uint8_t)a][(uint8_t)b] */\n"
            "const int16_t lut[256][256] = {\n" + rows + "\n};\n")
    p = tmp_path / "mul8s_custom.h"
    p.write_text(text)
    m = Multiplier.from_header(p)
    assert m.signed and m.bits == 8 and m.name == "mul8s_custom"
    assert np.array_equal(m.table, t)
    # the same values written as hex, unsigned type
    u = rng.integers(0, 65536, size=(4, 4))
    body = ",".join("{" + ",".join(hex(x) for x in row) + "}" for row in u)
    p2 = tmp_path / "u.h"
    p2.write_text("static const uint16_t table_u[4][4] = {" + body + "};")
    m2 = Multiplier.from_header(p2)
    assert not m2.signed and np.array_equal(m2.table, u)
    # casts, C suffixes, octal and signs spread over lines, as hand-edited headers have them
    p3 = tmp_path / "odd.h"
    p3.write_text("const int16_t lut[4][4] = {\n {(int16_t)-5, 7u, 010, 0x1FL},\n"
                  " {- 3, +2, 0, 1}, {1, 2, 3, 4}, {5, 6, 7, 8}};\n")
    assert np.array_equal(Multiplier.from_header(p3).table[:2],
                          [[-5, 7, 8, 31], [-3, 2, 0, 1]])


def test_from_function_and_values():
    m = Multiplier.from_function(lambda a, b: a * b + (a & 1), bits=3, signed=True, name="f")
    want = np.zeros((8, 8), dtype=np.int64)
    for i in range(8):
        for j in range(8):
            a, b = signed_value(i, 3), signed_value(j, 3)
            want[i, j] = a * b + (a & 1)
    assert np.array_equal(m.table, want)
    assert list(operand_values(3, True)) == [0, 1, 2, 3, -4, -3, -2, -1]
    assert list(m.values()) == [0, 1, 2, 3, -4, -3, -2, -1]
    assert m(-4, 3) == -12 + 0 and m(3, -1) == -3 + 1
    assert np.array_equal(m(np.array([-1, 1]), np.array([2, 2])), [-2 + 1, 2 + 1])
    with pytest.raises(ValueError, match="out of range"):
        m(4, 0)
    assert np.array_equal(m.error_map(), want - np.multiply.outer(m.values(), m.values()))
    assert m.max_abs() == np.abs(want).max()


def test_exact_tables():
    for bits in (2, 5, 8):
        a = np.arange(1 << bits)
        assert np.array_equal(Multiplier.exact(bits).table, np.multiply.outer(a, a))
        v = signed_value(a, bits)
        assert np.array_equal(Multiplier.exact(bits, signed=True).table, np.multiply.outer(v, v))
    assert Multiplier.exact().bits == 8
    assert Multiplier.exact(8).max_abs() == 65025
    assert Multiplier.exact(8, signed=True).max_abs() == 16384


def test_table_is_read_only_and_copied():
    src = np.arange(16).reshape(4, 4)
    m = Multiplier.from_array(src)
    src[0, 0] = 99
    assert m.table[0, 0] == 0
    with pytest.raises(ValueError):
        m.table[0, 0] = 5


def test_equality_hash_repr():
    e = Multiplier.exact(8)
    f = Multiplier.from_function(lambda a, b: a * b, bits=8, name="mine")
    assert e == f and hash(e) == hash(f)  # equality is about the table, not the name
    assert e != Multiplier.exact(8, signed=True)
    assert e != Multiplier.exact(7)
    t = np.array(e.table)
    t[3, 5] += 1
    g = Multiplier.from_array(t, name="approx")
    assert e != g
    assert e != "exact8u" and not (e == 42)
    assert repr(e) == "Multiplier(name='exact8u', bits=8, unsigned, exact)"
    assert repr(g) == "Multiplier(name='approx', bits=8, unsigned)"
    assert repr(Multiplier.exact(4, signed=True)) == "Multiplier(name='exact4s', bits=4, signed, exact)"


# ------------------------------------------------------------------ bad input
def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        Multiplier.from_bin(tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError, match="missing.h"):
        Multiplier.from_header(tmp_path / "missing.h")
    with pytest.raises(FileNotFoundError, match="missing.c"):
        Multiplier.from_c(tmp_path / "missing.c")


@pytest.mark.parametrize("size", [0, 1, 131071, 131074, 3000])
def test_bin_of_wrong_size(tmp_path, size):
    p = tmp_path / "bad.bin"
    p.write_bytes(b"\x01" * size)
    with pytest.raises(ValueError, match=rf"{size} bytes.*expected.*131072"):
        Multiplier.from_bin(p)


def test_header_without_full_table(tmp_path):
    p = tmp_path / "short.h"
    p.write_text("#include <stdint.h>\nconst int16_t lut[4][4] = {{1,2,3,4},{5,6,7,8},{9,10}};\n")
    with pytest.raises(ValueError, match=r"holds 10 values: expected 16"):
        Multiplier.from_header(p)
    p.write_text("#include <stdint.h>\nint x = 3;\n")
    with pytest.raises(ValueError, match="no two-dimensional table"):
        Multiplier.from_header(p)
    p.write_text("const int16_t lut[4][8] = {0};")
    with pytest.raises(ValueError, match=r"\[4\]\[8\].*square"):
        Multiplier.from_header(p)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, -3])
def test_bit_width_out_of_range(bits):
    with pytest.raises(ValueError, match=f"bit width {bits} is out of range.*2 to 8"):
        Multiplier.exact(bits)
    with pytest.raises(ValueError, match="out of range"):
        Multiplier.from_function(lambda a, b: a * b, bits=bits)


def test_bad_tables():
    with pytest.raises(ValueError, match=r"shape \(512, 512\)"):
        Multiplier.from_array(np.zeros((512, 512), dtype=int))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        Multiplier.from_array(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match=r"shape \(256, 128\)"):
        Multiplier.from_array(np.zeros((256, 128), dtype=int))
    with pytest.raises(ValueError, match=r"shape \(256,\)"):
        Multiplier.from_array(np.zeros(256, dtype=int))
    with pytest.raises(TypeError, match="integers"):
        Multiplier.from_array(np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="int32"):
        Multiplier.from_array(np.full((4, 4), 2 ** 31))
    with pytest.raises(TypeError, match="bits must be an integer"):
        Multiplier.exact(8.0)
    with pytest.raises(TypeError, match="callable"):
        Multiplier.from_function(3, bits=4)


@pytest.mark.parametrize("value,signed,rng", [
    (70000, False, r"\[0, 65535\]"), (-1, False, r"\[0, 65535\]"),
    (40000, True, r"\[-32768, 32767\]"), (-40000, True, r"\[-32768, 32767\]")])
def test_values_that_do_not_fit_the_format(tmp_path, value, signed, rng):
    t = np.zeros((16, 16), dtype=np.int64)
    t[3, 9] = value
    m = Multiplier.from_array(t, signed=signed, name="big")
    with pytest.raises(ValueError, match=r"'big'.*do not fit.*" + rng):
        m.to_bin(tmp_path / "x.bin")
    with pytest.raises(ValueError, match="do not fit"):
        m.to_header(tmp_path / "x.h")
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.h").exists()
    m.to_npy(tmp_path / "x.npy")  # int32 holds it
    assert np.load(tmp_path / "x.npy")[3, 9] == value
