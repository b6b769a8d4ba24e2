"""axkern.survey and the `axkern survey` / `axkern eval` commands, on small configurations."""
import csv
import json
import sys

import numpy as np
import pytest

from axkern import Multiplier
from axkern.nn import Conv2D, Dense, Flatten, ReLU, Sequential

pytest.importorskip("sklearn", reason='the survey needs scikit-learn: pip install "axkern[survey]"')

from axkern import survey as S  # noqa: E402


def run_cli(argv):
    from axkern.cli import main

    return main(argv)


@pytest.fixture(scope="module")
def digits():
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model)
    return model, x, y


# ------------------------------------------------------------------ the shipped model
def _independent_forward(model, x):
    """The shipped CNN evaluated from its raw arrays with SciPy, not with axkern.nn."""
    from scipy.signal import correlate

    def conv_same(h, w, b):
        n, hh, ww, c = h.shape
        out = np.zeros((n, hh, ww, w.shape[3]))
        for o in range(w.shape[3]):
            for i in range(n):
                # 'same' correlation centres a 3x3 kernel exactly as TensorFlow's SAME does
                out[i, :, :, o] = correlate(h[i], w[:, :, :, o], mode="same")[:, :, c // 2]
        return out + b

    def pool(h):
        n, hh, ww, c = h.shape
        return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))

    p = {l.name: l for l in model}
    h = np.maximum(conv_same(x.astype(np.float64), p["conv1"].weight, p["conv1"].bias), 0)
    h = pool(np.maximum(conv_same(h, p["conv2"].weight, p["conv2"].bias), 0))
    h = pool(np.maximum(conv_same(h, p["conv3"].weight, p["conv3"].bias), 0))
    return h.reshape(len(x), -1) @ p["dense1"].weight + p["dense1"].bias


def test_shipped_model_and_split(digits):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    model, x, y = digits
    assert model.compute_layers == ["conv1", "conv2", "conv3", "dense1"]
    assert [l.kind for l in model].count("Conv2D") >= 2
    assert x.shape == (450, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # the stored held-out indices are sklearn's stratified split with the documented seed
    d = load_digits()
    _, test_idx = train_test_split(np.arange(len(d.target)), test_size=0.25, random_state=0,
                                   stratify=d.target)
    np.testing.assert_array_equal(np.sort(test_idx), model.metadata["test_indices"])
    np.testing.assert_array_equal(y, d.target[np.sort(test_idx)])
    logits = _independent_forward(model, x)
    want = np.argmax(logits, axis=1)
    np.testing.assert_array_equal(model.predict(x), want)
    assert np.mean(want == y) >= 0.97


def test_exact_multiplier_within_one_point_of_float(digits):
    model, x, y = digits
    r = S.survey(model, ["mul8u_exact", "mul8u_bam_v10h5"], tune=False, output=None,
                 progress=False, plot=False, verbose=False)
    rows = {row["multiplier"]: row for row in r["rows"]}
    assert r["float_accuracy"] >= 97.0
    assert abs(rows["mul8u_exact"]["accuracy"] - r["float_accuracy"]) <= 1.0
    assert rows["mul8u_exact"]["accuracy_tuned"] is None
    # a severe multiplier in every layer visibly costs accuracy
    assert rows["mul8u_bam_v10h5"]["accuracy"] < r["float_accuracy"] - 10
    assert rows["mul8u_exact"]["mae_pct"] == 0.0


# ------------------------------------------------------------------ the commands
def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_survey_tiny_configuration(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    out = tmp_path / "out"
    rc = run_cli(["survey", "--multipliers", "mul8u_exact,mul8u_trunc8", "--limit", "80",
                  "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mul8u_exact" in text and "mul8u_trunc8" in text and "tuned" in text
    rows = _read_csv(out / "results.csv")
    assert [r["multiplier"] for r in rows] == ["mul8u_exact", "mul8u_trunc8"]  # by MAE%
    for col in ("mae_pct", "wce_pct", "ep_pct", "accuracy", "accuracy_tuned", "float_accuracy"):
        assert col in rows[0]
    # metrics are the EvoApproxLib figures of a truncated array: the partial-product bits
    # a_i * b_j with i + j < 8 are dropped, so err = -sum of those bits (computed here directly)
    v = np.arange(256)
    a, b = v[:, None], v[None, :]
    err = -sum((((a >> i) & 1) * ((b >> j) & 1)) << (i + j)
               for i in range(8) for j in range(8) if i + j < 8)
    got = {r["multiplier"]: r for r in rows}
    assert float(got["mul8u_exact"]["mae_pct"]) == 0.0
    assert float(got["mul8u_trunc8"]["mae_pct"]) == pytest.approx(100 * np.abs(err).mean() / 65536)
    assert float(got["mul8u_trunc8"]["wce_pct"]) == pytest.approx(100 * np.abs(err).max() / 65536)
    assert float(got["mul8u_trunc8"]["ep_pct"]) == pytest.approx(100 * np.mean(err != 0))
    doc = json.loads((out / "results.json").read_text())
    assert doc["samples"] == 80 and len(doc["rows"]) == 2
    assert doc["rows"][0]["accuracy"] == pytest.approx(float(rows[0]["accuracy"]))
    png = (out / "accuracy_vs_mae.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # accuracies agree with a direct evaluation through axkern.nn
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model, limit=80)
    model.configure(multiplier="mul8u_trunc8", tune=True)
    assert float(got["mul8u_trunc8"]["accuracy_tuned"]) == pytest.approx(100 * model.accuracy(x, y))


def test_cli_per_layer_with_jobs_matches_serial(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pl"
    rc = run_cli(["survey", "--multipliers", "mul8u_drum4", "--limit", "60", "--per-layer",
                  "--jobs", "2", "--tune", "no", "--no-progress", "--output", str(out)])
    assert rc == 0
    assert (out / "per_layer.png").read_bytes()[:4] == b"\x89PNG"
    rows = _read_csv(out / "per_layer.csv")
    assert len(rows) == 1 and rows[0]["multiplier"] == "mul8u_drum4"
    serial = S.survey(None, ["mul8u_drum4"], per_layer=True, tune=False, limit=60, output=None,
                      progress=False, plot=False, verbose=False)
    per = serial["per_layer"]
    assert per["layers"] == ["conv1", "conv2", "conv3", "dense1"]
    for j, layer in enumerate(per["layers"]):
        assert float(rows[0][layer]) == pytest.approx(per["accuracy"][0][j])
    assert per["accuracy_tuned"] == [[None] * 4]
    main = _read_csv(out / "results.csv")
    assert float(main[0]["accuracy"]) == pytest.approx(serial["rows"][0]["accuracy"])
    assert main[0]["accuracy_tuned"] == ""


def test_assign_mixed_configuration(tmp_path, capsys):
    out = tmp_path / "mix"
    rc = run_cli(["survey", "--assign", "conv2=mul8u_trunc10", "--limit", "60", "--no-progress",
                  "--no-plot", "--output", str(out)])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["assign"]["mapping"] == {"conv2": "mul8u_trunc10"}
    # the same configuration by hand: conv2 approximate, every other layer the exact multiplier
    model = S.load_shipped_model()
    x, y, _ = S.load_data(model, limit=60)
    model.configure(multiplier=Multiplier.exact(8))
    model.configure(["conv2"], multiplier="mul8u_trunc10")
    assert doc["assign"]["accuracy"] == pytest.approx(100 * model.accuracy(x, y))
    capsys.readouterr()
    assert run_cli(["eval", "--assign", "conv2=mul8u_trunc10", "--limit", "60", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == doc["assign"]["accuracy"]
    capsys.readouterr()
    assert run_cli(["survey", "--assign", "conv9=mul8u_exact", "--output", str(out)]) == 1
    assert "conv9" in capsys.readouterr().err
    assert run_cli(["survey", "--assign", "conv1", "--output", str(out)]) == 1
    assert "layer=multiplier" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot be combined"):
        S.survey(assign={"conv1": "mul8u_exact"}, per_layer=True, output=None)


def test_cli_eval(tmp_path, capsys):
    assert run_cli(["eval", "--multiplier", "mul8u_exact", "--limit", "50", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 50 and abs(r["accuracy"] - r["float_accuracy"]) <= 4.0
    assert set(r["settings"]) == {"conv1", "conv2", "conv3", "dense1"}
    # a user's own table file gives the same as the shipped exact multiplier
    path = tmp_path / "mine.bin"
    Multiplier.exact(8).to_bin(path)
    model_path = tmp_path / "model.npz"
    S.load_shipped_model().save(model_path)
    assert run_cli(["eval", str(model_path), "-m", str(path), "--limit", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == r["accuracy"]
    assert run_cli(["eval", "--multiplier", "mul8u_drum4", "--tune", "--limit", "50"]) == 0
    assert "mul8u_drum4 tuned: accuracy" in capsys.readouterr().out
    assert run_cli(["eval", str(tmp_path / "nope.npz")]) == 1
    assert "not found" in capsys.readouterr().err


def test_user_model_and_data(tmp_path):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(rng.standard_normal((3, 3, 1, 3)), name="c"), ReLU(), Flatten(),
                        Dense(rng.standard_normal((4 * 4 * 3, 2)), name="d")], input_shape=(4, 4, 1))
    x = rng.uniform(0, 1, (30, 4, 4, 1)).astype(np.float32)
    y = model.predict(x)  # labels the float model gets right by construction
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    m = Multiplier.exact(8)
    m.metadata = {"power": "0.391 mW", "area": "710.2 um2"}
    m.name = "my_exact"
    r = S.survey(model, [m], data=str(data), output=str(tmp_path / "o"), progress=False,
                 plot=False, verbose=False)
    assert r["float_accuracy"] == 100.0
    rows = _read_csv(tmp_path / "o" / "results.csv")
    assert float(rows[0]["power"]) == 0.391 and float(rows[0]["area"]) == 710.2
    with pytest.raises(ValueError, match="no data set"):
        S.survey(model, [m], output=None, progress=False, verbose=False)
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=x)
    with pytest.raises(ValueError, match="'x'"):
        S.load_data(model, str(bad))
    with pytest.raises(ValueError, match="limit"):
        S.load_data(model, (x, y), limit=0)
    # labels the model cannot predict (2 scores per sample) score 0 under every multiplier:
    # refused instead of surveyed
    for labels, msg in ((y + 2, r"labels go up to 3, .* 2 scores per sample"),
                        (y - 1, "class indices >= 0")):
        with pytest.raises(ValueError, match=msg):
            S.survey(model, [m], data=(x, labels), output=None, progress=False, verbose=False)
        with pytest.raises(ValueError, match=msg):
            S.evaluate(model, m, data=(x, labels))


def test_missing_optional_dependency(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    with pytest.raises(S.MissingDependency, match=r'pip install "axkern\[survey\]"'):
        S.survey(multipliers=["mul8u_exact"], output=None, progress=True)
    assert run_cli(["survey", "--multipliers", "mul8u_exact", "--limit", "10", "--no-plot",
                    "--output", str(tmp_path)]) == 2
    assert 'pip install "axkern[survey]"' in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(ValueError, match="tune"):
        S.survey(tune="sometimes", output=None)
    with pytest.raises(ValueError, match="jobs"):
        S.survey(jobs=0, output=None)
    with pytest.raises(ValueError, match="signedness"):
        S.survey(signedness="both", output=None)
    with pytest.raises(ValueError, match="more than once"):
        S.survey(multipliers=["mul8u_exact", "mul8u_exact"], output=None, progress=False)
    with pytest.raises(TypeError, match="model"):
        S.survey(model=42, output=None)
