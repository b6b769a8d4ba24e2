"""Faults found in the survey / eval / search workflow, in quantization and in weight tuning:
each test fails on the faulty code and checks the result against an independent computation.

Small settings throughout (a few dozen digits, one search generation on a 1-worker cluster).
"""
import csv
import json
import os
import shlex
import warnings

import numpy as np
import pytest

import axkern
from axkern import Multiplier
from axkern.nn import Dense, Sequential
from axkern.quant import (QuantizationRangeWarning, QuantParams, calibrate, dequantize, quantize,
                          symmetric_params)

pytest.importorskip("sklearn", reason='the survey needs scikit-learn: pip install "axkern[survey]"')

from axkern import survey as S  # noqa: E402


def run_cli(argv):
    from axkern.cli import main

    return main(argv)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float_accuracy_by_hand(model, x, y):
    """Float accuracy of the shipped CNN from its raw arrays (SciPy, not axkern.nn)."""
    from test_survey import _independent_forward

    return 100.0 * np.mean(np.argmax(_independent_forward(model, x), axis=1) == y)


# ------------------------------------------------------------------ 1: evaluate's float figure
def test_evaluate_float_accuracy_of_a_configured_model():
    fresh = S.load_shipped_model()
    x, y, _ = S.load_data(fresh, limit=100)
    model = axkern.nn.load(S.shipped_model_path())
    model.configure(multiplier="mul8u_drum4")
    r = S.evaluate(model, "mul8u_exact", limit=100)
    # the float figure is the float model's, not the drum4 model's the caller passed in
    assert r["float_accuracy"] == pytest.approx(_float_accuracy_by_hand(fresh, x, y))
    fresh.configure(multiplier="mul8u_exact")
    assert r["accuracy"] == pytest.approx(100 * fresh.accuracy(x, y))
    assert model.settings()["conv1"][0] == "mul8u_drum4"   # the caller's model is untouched


# ------------------------------------------------------------------ 2: --tune with --assign
def test_eval_tune_with_assign_tunes_the_multiplier_layers(capsys):
    args = ["eval", "-m", "mul8u_drum4", "--tune", "--limit", "60"]
    assert run_cli(args + ["--assign", "dense1=mul8u_drum4", "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert run_cli(args + ["--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    # the same configuration: drum4 tuned in every layer
    assert all(s["tune"] and s["multiplier"] == "mul8u_drum4" for s in mixed["settings"].values())
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model, limit=60)
    model.configure(multiplier="mul8u_drum4", tune=True)
    want = 100 * model.accuracy(x, y)
    assert mixed["accuracy"] == pytest.approx(want) and plain["accuracy"] == pytest.approx(want)
    py = S.evaluate(None, "mul8u_drum4", tune=True, assign={"conv2": "mul8u_trunc8"}, limit=60)
    assert {k: s["tune"] for k, s in py["settings"].items()} == dict.fromkeys(py["settings"], True)
    # the printed label names the multiplier of the other layers too
    assert run_cli(args + ["--assign", "dense1=mul8u_drum4"]) == 0
    assert capsys.readouterr().out.startswith(
        "dense1=mul8u_drum4 (other layers mul8u_drum4) tuned: accuracy")
    # a plain --assign keeps its exact filler untuned, as the survey does
    r = S.evaluate(None, tune=True, assign="conv2=mul8u_trunc8", limit=20)
    assert r["settings"]["conv1"]["multiplier"] is not None
    assert r["settings"]["conv1"]["tune"] is False
    assert r["settings"]["conv2"]["tune"] is True


# ------------------------------------------------------------------ 3: the search's reproduce line

def _exact_c(path, func, pp_bits):
    path.write_text(f"// PP_BITS = {pp_bits}\n#include <stdint.h>\n"
                    f"uint16_t {func}(uint8_t a, uint8_t b) {{ return a * b; }}\n")
    return path


def test_search_reproduce_command_names_files(cluster, tmp_path, capsys):
    from axkern import search as SR
    from axkern.library import list_multipliers

    folder = tmp_path / "my mults"   # a space: the command must be quoted
    folder.mkdir()
    # exact tables with a small (made-up) cost: the cheapest configuration within the
    # tolerance uses the file's multiplier everywhere
    cfile = _exact_c(folder / "mymul.c", "mymul", 10)
    r = SR.search(multipliers=["mul8u_exact", str(cfile)], limit=20, population=4,
                  generations=0, seed=1, output=str(tmp_path / "out"), progress=False,
                  plot=False, verbose=True, scheduler=cluster.scheduler_address)
    text = capsys.readouterr().out
    best = r["best"]
    assert [best[l] for l in r["layers"]] == ["mymul"] * 4
    cmd = r["command"]
    assert f"reproduce: {cmd}" in text
    argv = shlex.split(cmd)
    assert argv[:2] == ["axkern", "eval"]
    assert f"conv1=mymul={cfile}" in argv[argv.index("--assign") + 1]
    assert run_cli(argv[1:] + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["accuracy"] == pytest.approx(best["accuracy"])
    # by hand: an exact table is the shipped exact multiplier
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model, limit=20)
    model.configure(multiplier="mul8u_exact")
    assert best["accuracy"] == pytest.approx(100 * model.accuracy(x, y))
    # a .bin (with its sidecar) given by path: NAME=ABSOLUTE_PATH, which eval loads
    m = Multiplier(Multiplier.exact(8).table, name="binmul", metadata={"PP_BITS": "12"})
    bin_path = folder / "b.bin"
    m.to_bin(bin_path)
    loaded = S._load_multiplier(str(bin_path))
    spec = SR._cli_spec(os.path.relpath(bin_path), loaded, set(list_multipliers()))
    assert spec == f"{loaded.name}={bin_path}"
    assert run_cli(["eval", "--assign", f"conv1={spec}", "--limit", "20", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["conv1"]["multiplier"] == loaded.name
    # a Multiplier object of one's own has no command-line name: no command rather than a wrong one
    assert SR._cli_spec(m, m, set(list_multipliers())) is None


def test_search_budget_spent_before_the_first_generation(cluster, tmp_path, capsys):
    from axkern import search as SR

    r = SR.search(multipliers=["mul8u_exact", "mul8u_trunc8"], limit=20, population=4,
                  generations=1, seed=1, output=str(tmp_path / "b"), progress=False, plot=False,
                  verbose=True, budget=1e-6, scheduler=cluster.scheduler_address)
    assert r["generations_done"] == -1 and not r["finished"]
    text = capsys.readouterr().out
    assert "stopped (budget) before the first population was evaluated" in text
    assert "generation -1" not in text


# ------------------------------------------------------------------ 4: one reading of the metadata
def test_pdk45_metadata_in_survey_and_search(tmp_path):
    from axkern import search as SR

    path = tmp_path / "evo.c"
    path.write_text("// PDK45_PWR = 0.391 mW\n// PDK45_AREA = 709.8 um2\n"
                    "// PDK45_DELAY = 1.43 ns\n// Power (45) = 0.5\n#include <stdint.h>\n"
                    "uint16_t evo(uint8_t a, uint8_t b) { return a * b; }\n")
    r = S.survey(None, [str(path)], tune=False, limit=10, output=str(tmp_path / "o"),
                 progress=False, plot=False, verbose=False)
    row = _read_csv(tmp_path / "o" / "results.csv")[0]
    assert (float(row["power"]), float(row["area"]), float(row["delay"])) == (0.391, 709.8, 1.43)
    assert r["rows"][0]["power"] == 0.391
    m = S._load_multiplier(str(path))
    assert SR.multiplier_cost(m) == 0.391 and SR.multiplier_cost(m, "area") == 709.8
    # only the plain keys: the same columns, in the same order of precedence for both
    plain = Multiplier(m.table, metadata={"power_mw": "2", "Power": "3 mW", "delay": "4"})
    assert S._meta_columns(plain) == {"power": 3, "delay": 4}
    assert SR.multiplier_cost(plain) == 3 and SR.multiplier_cost(plain, "delay") == 4


# ------------------------------------------------------------------ 5, 6: QuantParams checks
def test_per_channel_dequantize_checks_the_channel_axis():
    p = QuantParams([1.0, 2.0, 4.0], [0, 1, 2])
    with pytest.raises(ValueError, match="3 channels but the tensor has 1 along axis 1"):
        p.dequantize(np.array([[5], [6], [7]]), channel_axis=1)
    with pytest.raises(ValueError, match="3 channels but the tensor has 2 along axis 1"):
        dequantize(np.zeros((3, 2), np.int64), p)
    q = np.array([[5, 6, 7], [0, 1, 2]])
    want = np.array([[1.0 * 5, 2.0 * 5, 4.0 * 5], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(p.dequantize(q, channel_axis=1), want)
    np.testing.assert_array_equal(p.dequantize(q.T, channel_axis=0), want.T)


def test_scale_with_an_infinite_reciprocal_is_refused():
    for scale in (1e-40, [1.0, 1e-40], 2e-39):
        with pytest.raises(ValueError, match="too small: 1 / scale overflows float32"):
            QuantParams(scale)
    # the smallest scale accepted quantizes as the formula says: 0 -> the zero point
    s = np.float32(3e-39)
    assert np.isfinite(np.float32(1) / s)
    assert quantize([0.0], QuantParams(s, 7)).tolist() == [7]


# ------------------------------------------------------------------ 7: stale survey files
def test_survey_removes_its_own_stale_files(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "o"
    common = ["--multipliers", "mul8u_trunc8", "--limit", "20", "--tune", "no", "--no-progress",
              "--output", str(out)]
    assert run_cli(["survey", "--per-layer"] + common) == 0
    for name in ("per_layer.csv", "per_layer.png", "accuracy_vs_mae.png"):
        assert (out / name).is_file()
    (out / "notes.txt").write_text("mine")
    (out / "per_layer_old.csv").write_text("mine too")
    assert run_cli(["survey", "--no-plot"] + common) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["per_layer"] is None
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "per_layer_old.csv", "results.csv", "results.json"]


# ------------------------------------------------------------------ 8: the smaller ones
def test_per_layer_table_header_matches_its_cells():
    r = S.survey(None, ["mul8u_trunc8"], per_layer=True, tune=True, limit=20, output=None,
                 progress=False, plot=False, verbose=False)
    lines = S.format_table(r).splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith("per layer"))
    assert lines[i].endswith("accuracy % tuned")
    cells = lines[i + 3].split()
    assert cells[0] == "mul8u_trunc8" and len(cells) == 5   # one figure per layer, no " / "
    # each cell by hand: that layer tuned trunc8, the others exact
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model, limit=20)
    for layer, cell in zip(model.compute_layers, cells[1:]):
        model.configure(multiplier="mul8u_exact", tune=False)
        model.configure([layer], multiplier="mul8u_trunc8", tune=True)
        assert float(cell) == pytest.approx(100 * model.accuracy(x, y), abs=0.006)
    both = dict(r, per_layer=dict(r["per_layer"], accuracy=[[50.0] * 4]))
    table = S.format_table(both)
    assert "accuracy % untuned / tuned" in table and "50.00 / " in table


def test_channel_axis_of_a_scalar_and_mismatched_batches():
    with pytest.raises(ValueError, match="0-d tensor"):
        symmetric_params(np.float32(3), channel_axis=0)
    with pytest.raises(ValueError, match="0-d tensor"):
        calibrate(np.float32(3), scheme="symmetric", channel_axis=0)
    a, b = np.ones((2, 3), np.float32), np.ones((2, 3, 1), np.float32)
    with pytest.raises(ValueError, match="batch 1 has 3 dimensions.*batch 0 has 2"):
        calibrate([a, b], scheme="symmetric", channel_axis=-1)
    with pytest.raises(ValueError, match="batch 1 has 4 channels .*batch 0 has 3"):
        calibrate([a, np.ones((5, 4), np.float32)], scheme="symmetric", channel_axis=-1)
    with pytest.raises(ValueError, match="empty data"):
        calibrate([], scheme="symmetric", channel_axis=0)
    # batches that agree: the per-channel amax of their union, by hand
    c = np.array([[1.0, -6.0, 2.0]], np.float32)
    p = calibrate([a, c], scheme="symmetric", channel_axis=-1)
    np.testing.assert_allclose(p.scale, np.array([1.0, 6.0, 2.0]) / 127, rtol=1e-6)


def test_range_warning_once_per_layer_of_each_model():
    rng = np.random.default_rng(0)
    x = rng.random((8, 16), dtype=np.float32)
    x[0, 0] = 1e30   # dominates the input range of 'fc'

    def model():
        m = Sequential([Dense(rng.standard_normal((16, 3)), name="fc")], input_shape=(16,))
        return m.configure(multiplier=Multiplier.exact(8))

    first, second = model(), model()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        first.predict(x)
        first.predict(x)    # the same layer: not again
        second.predict(x)   # another model's layer of the same name: warns too
    msgs = [str(r.message) for r in rec if r.category is QuantizationRangeWarning]
    assert len(msgs) == 2 and all(m.startswith("layer 'fc': x:") for m in msgs)


def test_bad_layer_keys_name_the_valid_ones():
    model = S.load_shipped_model()
    with pytest.raises(IndexError, match=r"layer index 99 is out of range.*'conv1' \(0\)"):
        model.assign({99: "mul8u_exact"})
    with pytest.raises(TypeError, match=r"layer key 2\.5 .*expected a layer name or index"):
        model.configure([2.5], multiplier="mul8u_exact")
    with pytest.raises(KeyError, match=r"no layer named 'conv9'.*'dense1'"):
        model.configure("conv9", multiplier="mul8u_exact")
    relu = next(i for i, l in enumerate(model.layers) if l.kind == "ReLU")
    with pytest.raises(ValueError, match="is a ReLU"):
        model.configure(relu, multiplier="mul8u_exact")
    # a single index is one layer, as model[i] is
    model.configure(0, multiplier="mul8u_trunc8")
    assert model.settings()["conv1"][0] == "mul8u_trunc8" and model.settings()["conv2"][0] is None
    model.assign({-1: "mul8u_drum4"})
    assert model.settings()["dense1"][0] == "mul8u_drum4"


def _tuning_by_hand(m, p):
    """ALWANN mapping in Python integers (no overflow possible)."""
    v = [int(a) for a in m.values()]
    T = np.asarray(m.table).tolist()
    n = len(v)
    mapping = []
    for w in range(n):
        cost = [sum(int(p[a]) * abs(v[a] * v[w] - T[a][u]) for a in range(n)) for u in range(n)]
        best = min(cost)
        mapping.append(w if cost[w] == best else cost.index(best))
    return mapping


def test_tune_weights_with_huge_counts():
    m = axkern.load_multiplier("mul8u_drum4")
    uniform = axkern.tune_weights(m)
    huge = np.full(256, 10 ** 15, np.int64)   # the same weights as uniform: the same mapping
    np.testing.assert_array_equal(axkern.tune_weights(m, huge), uniform)
    # unequal huge counts on a 4-bit table, against Python-integer sums
    rng = np.random.default_rng(5)
    a, b = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    small = Multiplier(a * b + rng.integers(-20, 21, (16, 16)), name="noisy4")
    p = rng.integers(10 ** 15, 10 ** 17, 16)
    assert axkern.tune_weights(small, p).tolist() == _tuning_by_hand(small, p)
    assert axkern.tune_weights(small, p * 3).tolist() == _tuning_by_hand(small, p)


def test_help_without_the_frameworks(tmp_path):
    """help(axkern) (pydoc gets every name dir() lists) works where torch and Keras are not
    installed, and the submodules that need them still say what to install."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['keras'] = None\n"
            "import pydoc, axkern\n"
            "assert 'Multiplier' in pydoc.render_doc(axkern)\n"
            "try:\n"
            "    import axkern.keras\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'pip install "axkern[keras]"' in r.stdout


def test_missing_dependency_names_what_pip_installs(monkeypatch):
    import sys

    from axkern.survey import MissingDependency, _require

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingDependency, match="'scikit-learn'"):
        _require("sklearn", "loading the digits data")


# ------------------------------------------------------------------ eval's --quant, messages
def test_eval_checks_quant_for_a_float_evaluation(capsys):
    """`axkern eval -m float --quant bogus` printed an accuracy and exited 0."""
    with pytest.raises(ValueError, match="unknown quant 'bogus'"):
        S.evaluate(S.load_shipped_model(), None, quant="bogus", limit=10)
    rc = run_cli(["eval", "-m", "float", "--quant", "bogus", "--limit", "10"])
    assert rc != 0
    assert "unknown quant 'bogus'" in capsys.readouterr().err
    r = S.evaluate(S.load_shipped_model(), None, quant="symmetric", limit=10)
    assert r["accuracy"] == r["float_accuracy"]   # a float model: the mode changes nothing
    with pytest.raises(ValueError, match="unknown quant 5"):
        S.evaluate(S.load_shipped_model(), None, quant=5, limit=10)


def test_signedness_message_grammar():
    """The quant/multiplier signedness error read "or a unsigned multiplier"."""
    x = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match=r"or an unsigned multiplier$"):
        axkern.axmatmul(x, x.T, axkern.load_multiplier("mul8s_drum4"), quant="tfapprox")
    with pytest.raises(ValueError, match=r"or a signed multiplier$"):
        axkern.axmatmul(x, x.T, axkern.load_multiplier("mul8u_drum4"), quant="symmetric")


# ------------------------------------------------------------------ axkern.nn and QuantParams
def test_fractional_geometry_is_refused_not_truncated(tmp_path):
    from axkern.nn import Conv2D, MaxPool2D

    w = np.ones((1, 1, 1, 1), np.float32)
    for make in (lambda: Conv2D(w, stride=(2.5, 1)), lambda: Conv2D(w, dilation=(1, 1.5)),
                 lambda: MaxPool2D((1.5, 2)), lambda: Conv2D(w, padding=(1.9, 0, 0, 0)),
                 lambda: Conv2D(w, padding=((0, 0.5), (0, 0))), lambda: Conv2D(w, stride=("2", 1))):
        with pytest.raises(ValueError, match="must be|padding must"):
            make()
    # integral values of any numeric type are still taken (JSON headers hold floats)
    assert Conv2D(w, stride=(2.0, np.int64(1))).stride == (2, 1)
    # a saved model whose header says stride 2.5 does not load as stride 2
    m = Sequential([Conv2D(w, stride=2, name="c")], input_shape=(4, 4, 1))
    path = str(tmp_path / "m.npz")
    m.save(path)
    data = dict(np.load(path, allow_pickle=False))
    header = json.loads(str(data["__axkern__"]))
    header["layers"][0]["stride"] = [2.5, 1]
    data["__axkern__"] = np.array(json.dumps(header))
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **data)
    with pytest.raises(ValueError, match="stride"):
        Sequential.load(bad)


def test_flatten_of_an_empty_batch():
    from axkern.nn import Conv2D, Flatten

    m = Sequential([Conv2D(np.ones((3, 3, 1, 2), np.float32)), Flatten(),
                    Dense(np.ones((32, 3), np.float32))], input_shape=(4, 4, 1))
    assert m(np.zeros((0, 4, 4, 1), np.float32)).shape == (0, 3)
    m.configure(multiplier="mul8u_exact")
    assert m(np.zeros((0, 4, 4, 1), np.float32)).shape == (0, 3)


def test_batchnorm_that_cannot_divide_or_fold():
    from axkern.nn import BatchNorm

    with pytest.raises(ValueError, match=r"var \+ eps must be > 0"):
        BatchNorm(np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2), eps=0)
    m = Sequential([Dense(np.ones((3, 2), np.float32), name="d"),
                    BatchNorm(np.full(2, 3e38), np.zeros(2), np.zeros(2), np.zeros(2),
                              eps=1e-6, name="bn")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no overflow warning either
        with pytest.raises(ValueError, match="folding BatchNorm 'bn' into 'd'"):
            m.fold_batchnorm()
    assert [l.name for l in m.layers] == ["d", "bn"]          # left as it was
    assert np.array_equal(m.layers[0].weight, np.ones((3, 2), np.float32))
    # a good fold before a bad one is not applied either: the whole model stays as it was
    m = Sequential([Dense(np.ones((3, 2), np.float32), name="d0"),
                    BatchNorm(np.full(2, 2.0), np.ones(2), np.zeros(2), np.ones(2), eps=0,
                              name="bn0"),
                    Dense(np.ones((2, 2), np.float32), name="d"),
                    BatchNorm(np.full(2, 3e38), np.zeros(2), np.zeros(2), np.zeros(2),
                              eps=1e-6, name="bn")])
    with pytest.raises(ValueError, match="folding BatchNorm 'bn' into 'd'"):
        m.fold_batchnorm()
    assert [l.name for l in m.layers] == ["d0", "bn0", "d", "bn"]
    assert np.array_equal(m.layers[0].weight, np.ones((3, 2), np.float32))
    assert m.layers[0].bias is None or not np.any(m.layers[0].bias)
    # two BatchNorms after one layer fold one after the other, as before
    x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    m = Sequential([Dense(np.ones((3, 2), np.float32), name="d"),
                    BatchNorm(np.full(2, 2.0), np.ones(2), np.zeros(2), np.ones(2), eps=0),
                    BatchNorm(np.full(2, 0.5), np.zeros(2), np.ones(2), np.full(2, 4.0), eps=0)])
    want = m(x)
    m.fold_batchnorm()
    assert len(m.layers) == 1
    np.testing.assert_allclose(m(x), want, rtol=1e-6)


def test_scale_too_large_for_the_codes():
    """(qmin - zp) * scale overflowed float32 and every code became qmax."""
    # ranges reaching float32's largest values still quantize (symmetric: x / scale; an
    # unsigned range from 0: only the upper end is infinite, and codes clamp to qmax)
    big = np.finfo(np.float32).max
    x = np.array([big, -big, big * 0.3, 0.0], np.float32)
    p = symmetric_params(x)
    assert quantize(x, p).tolist() == [127, -127, 38, 0]
    from axkern.quant import tf_quant_params

    u = tf_quant_params(0.0, float(big))
    assert quantize(np.array([0.0, big], np.float32), u).tolist() == [0, 255]
    with pytest.raises(ValueError, match="too large"):
        QuantParams(3e37, 128)
    with pytest.raises(ValueError, match="too large"):
        QuantParams(np.array([1.0, 3e37], np.float32), np.array([0, 128]))
    p = QuantParams(1e36, 128)                 # the largest ranges still work, exactly
    assert quantize(np.array([0.0, 1e36, -1e36], np.float32), p).tolist() == [128, 129, 127]
    from axkern import _fast

    assert _fast.quantize_indices(np.array([0.0, 1e36, -1e36], np.float32), p).tolist() == \
        [128, 129, 127]


def test_accuracy_labels_and_batch_size_checked():
    m = S.load_shipped_model()
    x, y, _ = S.load_data(m, limit=3)
    with pytest.raises(TypeError, match="class indices"):
        m.accuracy(x, y.astype(str))
    assert m.accuracy(x, y.astype(np.float64)) == m.accuracy(x, y)
    assert m.accuracy(x, y == 1) == float(np.mean(m.predict(x) == (y == 1)))   # bool labels
    for bad in ("2", 4.5, 0, True):
        with pytest.raises(ValueError, match="batch_size"):
            m(x, batch_size=bad)
