"""Faults a user can meet with damaged files and hostile arguments: each one is a clean
ValueError naming what was wrong (a one-line error on the command line), never a traceback,
a crash or an allocation the input cannot back. Empty products follow numpy.matmul, and the
JSON axkern writes is strict."""
import json
import shutil
import zipfile

import numpy as np
import pytest

import axkern
from axkern import cli, nn
from axkern.lut import Multiplier
from axkern.survey import load_data, shipped_model_path

EXACT = Multiplier.exact(8)
BACKENDS = ("reference", "cpu")


def _cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(rc, out, err, *fragments):
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in err and err.startswith("axkern: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    for frag in fragments:
        assert frag in err, (frag, err)


def _flip(src, dst, pos):
    data = bytearray(src.read_bytes() if hasattr(src, "read_bytes") else open(src, "rb").read())
    data[pos] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _npy_with_header(path, header_text, payload=b"\0" * 64):
    """A .npy file (format 1.0) whose header dictionary is ``header_text`` verbatim."""
    hdr = header_text + " " * (63 - (len(header_text) + 10) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode()
                     + payload)
    return path


# ------------------------------------------------------------------ item 9: damaged .npz
@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.npz"
    shutil.copy(shipped_model_path(), p)
    return p


def test_corrupt_model_npz_is_a_value_error(model_file, tmp_path):
    size = model_file.stat().st_size
    # inside the first member's compressed data (zlib.error before), in the middle (a CRC
    # mismatch: zipfile.BadZipFile before), in the central directory and in the end record
    for pos in (200, size // 2, size - 40, size - 22):
        bad = _flip(model_file, tmp_path / f"bad{pos}.npz", pos)
        with pytest.raises(ValueError, match="bad%d.npz" % pos):
            nn.load(bad)


def test_npy_where_npz_expected(tmp_path, model_file):
    p = tmp_path / "arr.npy"
    np.save(p, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"arr\.npy.*\.npy array.*\.npz"):
        nn.load(p)
    with pytest.raises(ValueError, match=r"arr\.npy.*\.npy array.*\.npz"):
        load_data(nn.load(model_file), p)


def test_corrupt_data_npz_is_a_value_error(tmp_path, model_file):
    d = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(d, x=rng.random((20, 8, 8, 1), dtype=np.float32), y=np.arange(20))
    model = nn.load(model_file)
    assert load_data(model, d)[0].shape == (20, 8, 8, 1)
    size = d.stat().st_size
    for pos in (100, size // 2, size - 30):
        bad = _flip(d, tmp_path / f"d{pos}.npz", pos)
        with pytest.raises(ValueError, match=f"d{pos}.npz"):
            load_data(model, bad)


def test_cli_eval_corrupt_files_one_line(capsys, tmp_path, model_file):
    bad = _flip(model_file, tmp_path / "bad.npz", 200)
    _assert_one_line_error(*_cli(capsys, "eval", bad, "--limit", "5"), "bad.npz")
    npy = tmp_path / "x.npy"
    np.save(npy, np.arange(3))
    _assert_one_line_error(*_cli(capsys, "eval", npy, "--limit", "5"), "x.npy", ".npz")
    d = tmp_path / "data.npz"
    np.savez_compressed(d, x=np.zeros((5, 8, 8, 1), np.float32), y=np.arange(5))
    badd = _flip(d, tmp_path / "badd.npz", d.stat().st_size // 2)
    _assert_one_line_error(*_cli(capsys, "eval", model_file, "--data", badd), "badd.npz")


def test_model_metadata_out_of_range_is_a_value_error(tmp_path, model_file):
    # found by tools/fault_hunt.py: a huge test index escaped as OverflowError
    model = nn.load(model_file)
    for meta in ({"test_indices": [10 ** 30]}, {"test_indices": [[1, 2], [3]]},
                 {"test_indices": [1, 2], "input_scale": [1]}):
        model.metadata.update(meta)
        with pytest.raises(ValueError, match="test_indices|input_scale"):
            load_data(model)


# ------------------------------------------------------------------ item 10: strict .h parser
_ROWS = ", ".join(str(v) for v in range(1, 16))


@pytest.mark.parametrize("body, fragments", [
    ("99999999999999999999999, " + _ROWS, ["line 2", "outside the range of int16_t"]),
    ("{08, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}", ["line 2", "'08'"]),
    ("0, abc, " + _ROWS, ["line 2", "'abc'"]),
    ("70000, " + _ROWS, ["line 2", "entry [0][0] = 70000", "-32768..32767"]),
    ("0, 1; 2, " + _ROWS[6:], ["unexpected ';'", "line 2"]),
    ("0, 1, 2, " + _ROWS[6:] + "}, 3", ["expected ';' after", "line 2"]),
    ("0, , " + _ROWS, ["empty entry"]),
    ("0 1, " + _ROWS[3:], ["comma is missing"]),
])
def test_header_parser_is_strict(tmp_path, body, fragments):
    p = tmp_path / "bad_table.h"
    p.write_text("#include <stdint.h>\nconst int16_t lut[4][4] = {" + body + "};\n")
    with pytest.raises(ValueError) as e:
        Multiplier.from_header(p)
    msg = str(e.value)
    assert "bad_table.h" in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_header_rows_and_types(tmp_path):
    # a braced row of the wrong length is refused even when the total is right
    p = tmp_path / "rows.h"
    p.write_text("const uint8_t lut[4][4] = {{0, 1, 2}, {3, 4, 5, 6}, {7, 8, 9, 10, 11}, "
                 "{12, 13, 14, 15}};")
    with pytest.raises(ValueError, match=r"rows\.h.*row 0 holds 3 values"):
        Multiplier.from_header(p)
    # the element type's range: uint8_t holds 0..255 only
    p.write_text("const uint8_t lut[4][4] = {256, " + _ROWS + "};")
    with pytest.raises(ValueError, match=r"outside the range of uint8_t: expected 0\.\.255"):
        Multiplier.from_header(p)
    # valid C still parses: extremes, a trailing comma, binary and octal literals, casts
    p.write_text("const int16_t lut[4][4] = {(int16_t)-32768, 32767, 0b101, 017, "
                 + ", ".join(map(str, range(12))) + ",};")
    t = Multiplier.from_header(p).table
    assert t[0].tolist() == [-32768, 32767, 5, 15] and t[3].tolist() == [8, 9, 10, 11]


def test_cli_metrics_bad_header_one_line(capsys, tmp_path):
    p = tmp_path / "junk.h"
    p.write_text("const int16_t lut[4][4] = {08, " + _ROWS + "};")
    _assert_one_line_error(*_cli(capsys, "metrics", p), "junk.h", "line 1", "'08'")


# ------------------------------------------------------------------ item 11: hostile .npy headers
@pytest.mark.parametrize("header, fragment", [
    ("{'descr': '<i4', 'fortran_order': False, 'shape': (1000000, 1000000), }", "at most 65536"),
    ("{'descr': '<i4', 'fortran_order': False, 'shape': (256, 256, }", "header"),
    ("{'descr': '<i4', 'fortran_order': False, 'shape': (16, 16), }", "truncated"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (4, 4), }", "dtype"),
])
def test_hostile_npy_table_header(tmp_path, header, fragment):
    p = _npy_with_header(tmp_path / "hostile.npy", header)
    with pytest.raises(ValueError, match=fragment) as e:
        axkern.load_multiplier(p)
    assert "hostile.npy" in str(e.value)


def test_hostile_npy_member_in_model_and_data(tmp_path, model_file):
    hostile = tmp_path / "member.npy"
    _npy_with_header(hostile, "{'descr': '<f4', 'fortran_order': False, "
                              "'shape': (1000000, 1000000), }")
    out = tmp_path / "hostile_model.npz"
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("weight.npy"):
                data = hostile.read_bytes()
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match=r"hostile_model\.npz.*announces shape \(1000000, 1000000\)"):
        nn.load(out)
    d = tmp_path / "hostile_data.npz"
    with zipfile.ZipFile(d, "w") as z:
        z.writestr("x.npy", hostile.read_bytes())
        z.writestr("y.npy", hostile.read_bytes())
    with pytest.raises(ValueError, match=r"hostile_data\.npz"):
        load_data(nn.load(model_file), d)


def test_cli_metrics_hostile_npy_one_line(capsys, tmp_path):
    p = _npy_with_header(tmp_path / "h.npy", "{'descr': '<i4', 'fortran_order': False, "
                                             "'shape': (256, 256, }")
    _assert_one_line_error(*_cli(capsys, "metrics", p), "h.npy")


# ------------------------------------------------------------------ item 12: hostile arguments
def _conv_calls(backend, **kw):
    x = np.ones((1, 8, 8, 3))
    w = np.ones((3, 3, 3, 4))
    return [lambda: axkern.axconv2d(x, w, EXACT, backend=backend, **kw),
            lambda: axkern.lut_conv2d(x.astype(int), w.astype(int), EXACT, backend=backend, **kw)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(padding=2 ** 40), dict(stride=2 ** 62),
                                dict(padding=10 ** 6), dict(dilation=2 ** 40, padding=0),
                                dict(padding=((0, 0), (0, 2 ** 63)))])
def test_conv_geometry_limits(backend, kw):
    for call in _conv_calls(backend, **kw):
        with pytest.raises(ValueError, match=r"at most 65536"):
            call()


def test_conv_geometry_limits_backends_and_layers():
    from axkern.backends import get_backend

    x = np.zeros((1, 8, 8, 3), np.uint8)
    w = np.zeros((3, 3, 3, 4), np.uint8)
    t = axkern.backends.table256(EXACT)
    for name in BACKENDS:
        be = get_backend(name)
        with pytest.raises(ValueError, match="at most 65536"):
            be.conv2d(x, w, t, (2 ** 62, 1), (0, 0, 0, 0), (1, 1), 1, 0, np.int32, None)
        with pytest.raises(ValueError, match="at most 65536"):
            be.conv2d(x, w, t, (1, 1), (0, 2 ** 40, 0, 0), (1, 1), 1, 0, np.int32, None)
    with pytest.raises(ValueError, match="at most 65536"):
        nn.Conv2D(np.ones((3, 3, 1, 2), np.float32), stride=2 ** 62)
    with pytest.raises(ValueError, match="at most 65536"):
        nn.Conv2D(np.ones((3, 3, 1, 2), np.float32), padding=10 ** 6)
    with pytest.raises(ValueError, match="at most 65536"):
        nn.MaxPool2D(2, strides=2 ** 62)


@pytest.mark.parametrize("backend", BACKENDS)
def test_num_threads_is_capped(backend):
    from axkern.backends import MAX_THREADS, get_backend

    too_many = MAX_THREADS + 1
    a = np.ones((2, 3))
    b = np.ones((3, 2))
    calls = _conv_calls(backend, num_threads=too_many) + [
        lambda: axkern.axmatmul(a, b, EXACT, backend=backend, num_threads=too_many),
        lambda: axkern.axdense(a, b, EXACT, backend=backend, num_threads=too_many),
        lambda: axkern.lut_matmul(a.astype(int), b.astype(int), EXACT, backend=backend,
                                  num_threads=too_many),
        lambda: get_backend(backend).gemm(np.ones((2, 3), np.uint8), np.ones((3, 2), np.uint8),
                                          axkern.backends.table256(EXACT), np.int32, too_many),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"at most {MAX_THREADS}"):
            call()
    # the limit itself is accepted and gives the exact result
    assert axkern.lut_matmul([[1, 2]], [[3], [4]], EXACT, backend=backend,
                             num_threads=MAX_THREADS).tolist() == [[11]]


def test_survey_jobs_capped():
    from axkern.backends import MAX_THREADS

    with pytest.raises(ValueError, match=f"at most {MAX_THREADS}"):
        axkern.survey(None, ["mul8u_trunc2"], jobs=10 ** 6, output=None, progress=False)


def test_num_threads_capped_for_models(model_file):
    from axkern.backends import MAX_THREADS

    model = nn.load(model_file)
    x = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=f"at most {MAX_THREADS}"):
        model.forward(x, num_threads=MAX_THREADS + 1)


# ------------------------------------------------------------------ item 13: empty products
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a_shape, b_shape", [((3, 0), (0, 4)), ((0, 5), (5, 4)), ((3, 5), (5, 0)),
                                              ((2, 3, 0), (2, 0, 4)), ((0, 3, 2), (1, 2, 4)),
                                              ((0,), (0,)), ((2, 3, 0), (0, 4))])
def test_empty_products_follow_numpy(backend, a_shape, b_shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, a_shape)
    b = rng.integers(0, 256, b_shape)
    expected = np.matmul(a, b)   # the exact multiplier's sums are the integer product
    got = axkern.lut_matmul(a, b, EXACT, backend=backend)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    fa, fb = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    got = axkern.axmatmul(fa, fb, EXACT, backend=backend)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.matmul(fa, fb))   # empty or zero sums: exact


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_dense_and_conv(backend):
    bias = np.array([0.5, -1.0, 2.0, 0.0])
    # K = 0: every sum is empty, the result is the bias (as x @ w + bias in NumPy)
    x, w = np.zeros((2, 0)), np.zeros((0, 4))
    np.testing.assert_array_equal(axkern.axdense(x, w, EXACT, bias, backend=backend),
                                  np.matmul(x, w) + bias)
    np.testing.assert_array_equal(axkern.axmatmul(x, w, EXACT, bias=bias, backend=backend),
                                  np.matmul(x, w) + bias)
    assert axkern.axdense(np.zeros((0, 3, 5)), np.ones((5, 4)), EXACT, bias,
                          backend=backend).shape == (0, 3, 4)
    # empty batch: an empty result of the convolution's output shape, both layouts
    w = np.ones((3, 3, 3, 4))
    assert axkern.axconv2d(np.zeros((0, 8, 8, 3)), w, EXACT, padding="VALID",
                           backend=backend).shape == (0, 6, 6, 4)
    assert axkern.axconv2d(np.zeros((0, 3, 8, 8)), w.transpose(3, 2, 0, 1), EXACT,
                           data_format="NCHW", backend=backend).shape == (0, 4, 8, 8)
    assert axkern.lut_conv2d(np.zeros((0, 8, 8, 3), int), w.astype(int), EXACT,
                             backend=backend).shape == (0, 6, 6, 4)
    # no input channels: zero sums (lut_conv2d) and the bias (axconv2d)
    x0, w0 = np.zeros((2, 5, 5, 0)), np.zeros((3, 3, 0, 4))
    np.testing.assert_array_equal(axkern.lut_conv2d(x0.astype(int), w0.astype(int), EXACT,
                                                    backend=backend), np.zeros((2, 3, 3, 4)))
    np.testing.assert_array_equal(axkern.axconv2d(x0, w0, EXACT, bias=bias, backend=backend),
                                  np.broadcast_to(bias, (2, 5, 5, 4)))


# ------------------------------------------------------------------ item 14: strict JSON
def _strict_loads(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_survey_results_json_is_strict(tmp_path):
    m = Multiplier.exact(8)
    m = Multiplier(m.table, name="slow_exact", metadata={"DELAY": "1e999", "POWER": "nan mW",
                                                         "AREA": "12.5"})
    out = tmp_path / "survey"
    axkern.survey(None, [m], output=str(out), limit=30, tune=False, plot=False, progress=False,
                  verbose=False)
    doc = _strict_loads((out / "results.json").read_text())
    row = next(r for r in doc["rows"] if r["multiplier"] == "slow_exact")
    assert row["delay"] is None and row["area"] == 12.5


def test_strict_json_helper():
    from axkern import _json

    doc = {"a": float("inf"), "b": [np.float32("nan"), np.int64(3), -float("inf")],
           "c": np.array([1.5, np.inf])}
    assert _strict_loads(_json.dumps(doc)) == {"a": None, "b": [None, 3, None], "c": [1.5, None]}
