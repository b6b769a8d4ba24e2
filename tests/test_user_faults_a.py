"""Faults a new user hit (issue 14, items 1-4 and 15): signedness lost in table files, names of
C multipliers, weighted metrics out of sight, outliers that silently zero a layer, and inputs
accepted that should be refused. References are plain NumPy computations."""
import json
import os
import warnings

import numpy as np
import pytest

import axkern
from axkern import Multiplier, cli, nn
from axkern.lut import SignednessWarning, check_signedness
from axkern.quant import QuantizationRangeWarning

CODES = np.arange(256, dtype=np.int64)
SVALS = np.where(CODES >= 128, CODES - 256, CODES)   # two's-complement value of each code


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def signed_approx():
    """A signed 8-bit multiplier that is not exact: a*b + (a & 1) on operand values."""
    return Multiplier(np.multiply.outer(SVALS, SVALS) + (SVALS & 1)[:, None], signed=True,
                      name="sapprox")


def numpy_mae_pct(table, signed):
    v = SVALS if signed else CODES
    return 100.0 * np.abs(table - np.multiply.outer(v, v)).mean() / 65536


# ------------------------------------------------------------------ item 1: signedness
def test_item1_signed_table_survives_bin_npy_h(tmp_path):
    m = signed_approx()
    m.metadata["POWER"] = "0.1 mW"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SignednessWarning)   # nothing to warn about here
        for ext in (".bin", ".npy", ".h"):
            path = tmp_path / ("t" + ext)
            getattr(m, {".bin": "to_bin", ".npy": "to_npy", ".h": "to_header"}[ext])(path)
            for got in (axkern.load_multiplier(path), axkern.load_multiplier(str(path))):
                assert got.signed and got == m and got.name == "t", ext
        assert Multiplier.from_bin(tmp_path / "t.bin").signed
        assert Multiplier.from_bin(tmp_path / "t.bin").metadata == {"POWER": "0.1 mW"}
        assert Multiplier.from_npy(tmp_path / "t.npy").signed
    # the .npy carries it in its dtype, as .bin and .h carry int16 / uint16
    assert np.load(tmp_path / "t.npy").dtype == np.int16
    u = Multiplier.exact(8)
    u.to_npy(tmp_path / "u.npy")
    assert np.load(tmp_path / "u.npy").dtype == np.uint16
    assert axkern.load_multiplier(tmp_path / "u.npy") == u
    # the .bin itself stays the TFApprox format; its sidecar records the signedness
    assert (tmp_path / "t.bin").read_bytes() == m.table.astype("<i2").tobytes()
    side = json.loads((tmp_path / "t.bin.json").read_text())
    assert side["signed"] is True and side["bits"] == 8
    # without a sidecar: an EvoApproxLib name decides, then an explicit marker
    os.replace(tmp_path / "t.bin", tmp_path / "mul8s_mine.bin")
    assert axkern.load_multiplier(tmp_path / "mul8s_mine.bin").signed
    os.replace(tmp_path / "mul8s_mine.bin", tmp_path / "plain.bin")
    with pytest.warns(SignednessWarning, match=r"plain\.bin.*unsigned.*near a\*b as signed"):
        wrong = axkern.load_multiplier(tmp_path / "plain.bin")
    assert not wrong.signed
    assert axkern.load_multiplier(f"{tmp_path / 'plain.bin'}:signed") == m
    assert axkern.load_multiplier(tmp_path / "plain.bin", signed=True) == m


def test_item1_signedness_warnings_rule():
    m = signed_approx()
    # the same values as an "unsigned" table: far better read as signed (MAE% 0.38 vs 24.9)
    with pytest.warns(SignednessWarning, match="signed=True"):
        Multiplier.from_array(m.table)
    # an unsigned table stored as int16 patterns and read as signed: warns the other way
    as_i16 = np.where(np.multiply.outer(CODES, CODES) >= 32768,
                      np.multiply.outer(CODES, CODES) - 65536, np.multiply.outer(CODES, CODES))
    with pytest.warns(SignednessWarning):
        assert "signed=False" in check_signedness(Multiplier(as_i16, signed=True))
    # no false alarm on real multipliers: exact, truncated (NumPy models), random tables
    bits_a = (CODES[:, None] >> np.arange(8)) & 1
    for k in (4, 8, 10):
        cut = sum(np.multiply.outer(bits_a[:, i], bits_a[:, j]) << (i + j)
                  for i in range(8) for j in range(8) if i + j < k)
        trunc = np.multiply.outer(CODES, CODES) - cut
        assert check_signedness(Multiplier(trunc)) is None   # trunc10: MAE% 2.5, still fine
    rng = np.random.default_rng(1)
    for signed in (False, True):
        assert check_signedness(Multiplier.exact(8, signed)) is None
        assert check_signedness(Multiplier(rng.integers(0, 65536, (256, 256)), signed=signed)) is None


def test_item1_cli_routes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = axkern.load_multiplier("mul8s_drum4")
    want = numpy_mae_pct(ref.table.astype(np.int64), True)
    for out in ("s4.bin", "s4.npy", "s4.h"):
        rc, text, _ = run(capsys, "lut", "mul8s_drum4", "-o", out)
        assert rc == 0 and "8-bit signed" in text
        rc, text, err = run(capsys, "metrics", out, "--json")
        row = json.loads(text)
        assert rc == 0 and err == "" and row["signed"] is True, out
        assert row["mae_pct"] == pytest.approx(want, rel=1e-12)
    # a .bin without its sidecar: a one-line warning, and --signed or a marker fixes it
    os.remove("s4.bin.json")
    rc, text, err = run(capsys, "metrics", "s4.bin", "--json")
    assert rc == 0 and json.loads(text)["signed"] is False
    assert err.count("\n") == 1 and err.startswith("axkern: warning: s4.bin: read as an unsigned")
    for argv in (["s4.bin", "--signed"], ["s4.bin:signed"]):
        rc, text, err = run(capsys, "metrics", *argv, "--json")
        assert rc == 0 and err == "" and json.loads(text)["mae_pct"] == pytest.approx(want)
    # survey and eval give the same accuracy as the shipped signed multiplier itself
    common = ["--limit", "40", "--no-progress", "--no-plot", "--tune", "no"]
    assert run(capsys, "survey", "--multipliers", "mul8s_drum4", "--output", "a", *common)[0] == 0
    assert run(capsys, "survey", "--multipliers", "s4.bin", "--signed", "--output", "b",
               *common)[0] == 0
    assert run(capsys, "survey", "--multipliers", "s4.npy", "--output", "c", *common)[0] == 0
    rows = [json.load(open(os.path.join(d, "results.json")))["rows"][0] for d in "abc"]
    assert all(r["signed"] for r in rows)
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == rows[2]["accuracy"] > 50
    rc, text, _ = run(capsys, "eval", "-m", "s4.bin:signed", "--limit", "40", "--json")
    assert rc == 0 and json.loads(text)["accuracy"] == rows[0]["accuracy"]


def test_item1_c_circuit_declared_unsigned(tmp_path, capsys):
    # an EvoApproxLib-style signed circuit written with unsigned types
    src = tmp_path / "mul8s_gate.c"
    src.write_text("#include <stdint.h>\nuint16_t mul8s_gate(uint8_t a, uint8_t b)\n"
                   "{ return (uint16_t)((int8_t)a * (int8_t)b + (a & 1)); }\n")
    with pytest.warns(SignednessWarning, match=r"mul8s_gate.*EvoApproxLib signed"):
        m = Multiplier.from_c(src)
    assert not m.signed
    rc, _, err = run(capsys, "metrics", src)
    assert rc == 0 and err.startswith("axkern: warning:") and err.count("\n") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SignednessWarning)
        assert Multiplier.from_c(src, signed=True) == signed_approx()


# ------------------------------------------------------------------ item 2: names
def test_item2_c_multipliers_named_after_their_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stem, body in (("fast", "a * b"), ("slow", "a * (b & ~1)")):
        (tmp_path / f"{stem}.c").write_text(
            f"#include <stdint.h>\nuint16_t mul(uint8_t a, uint8_t b) {{ return {body}; }}\n")
    assert Multiplier.from_c("fast.c").name == "fast"
    rc, text, _ = run(capsys, "metrics", "fast.c", "slow.c", "other=slow.c", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(text)] == ["fast", "slow", "other"]
    assert axkern.load_multiplier("mine=fast.c").name == "mine"
    rc, _, err = run(capsys, "survey", "--multipliers", "fast.c", "slow.c", "--limit", "20",
                     "--tune", "no", "--no-progress", "--no-plot", "--output", "out")
    assert rc == 0, err
    names = {r["multiplier"] for r in json.load(open("out/results.json"))["rows"]}
    assert names == {"fast", "slow"}
    rc, text, _ = run(capsys, "eval", "--assign", "conv1=A=slow.c", "-m", "B=fast.c",
                      "--limit", "20", "--json")
    settings = json.loads(text)["settings"]
    assert rc == 0 and settings["conv1"]["multiplier"] == "A"
    assert settings["conv2"]["multiplier"] == "B"


# ------------------------------------------------------------------ item 3: weighted metrics
def test_item3_weighted_metrics_are_attributes_and_in_repr():
    m = axkern.Multiplier.from_function(lambda a, b: a * (b & ~3) + (a >> 5), name="w")
    rng = np.random.default_rng(3)
    ha, hb = rng.random(256) ** 4, rng.random(256)
    r = axkern.metrics(m, a_weights=ha, b_weights=hb)
    p = np.multiply.outer(ha / ha.sum(), hb / hb.sum())
    err = m.table - np.multiply.outer(CODES, CODES)
    wmae = (p * np.abs(err)).sum()
    assert r.weighted_mae == pytest.approx(wmae, rel=1e-12)
    assert r.weighted_mae_pct == pytest.approx(100 * wmae / 65536, rel=1e-12)
    assert r.weighted_ep_pct == pytest.approx(100 * p[err != 0].sum(), rel=1e-12)
    assert r.weighted_bias == pytest.approx((p * err).sum(), rel=1e-12)
    assert f"weighted_mae_pct={100 * wmae / 65536:.6g}" in repr(r)
    assert r.to_dict()["weighted_mae_pct"] == r.weighted_mae_pct
    plain = axkern.metrics(m)
    assert "weighted" not in repr(plain) and plain.weighted_mae_pct is None
    assert r.mae_pct == plain.mae_pct   # the unweighted figures keep their meaning


# ------------------------------------------------------------------ item 4: outliers
def test_item4_outliers_warn_and_overflow_is_reported():
    rng = np.random.default_rng(4)
    x = rng.random((2, 12, 12, 4), dtype=np.float32)
    w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)
    m = Multiplier.exact(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationRangeWarning)
        axkern.axconv2d(x, w, m)
        axkern.axconv2d(np.maximum(x - 0.9, 0), w, m)   # sparse post-ReLU data: fine
        axkern.axmatmul(x.reshape(-1, 4), w[0, 0], m)
    bad = x.copy()
    bad[0, 0, 0, 0] = 1e30
    with pytest.warns(QuantizationRangeWarning, match=r"x: .*dominated .*calibrate") as rec:
        for _ in range(2):   # one call site: one warning
            y = axkern.axconv2d(bad, w, m)
    assert len([r for r in rec if r.category is QuantizationRangeWarning]) == 1
    assert np.mean(y == 0) > 0.9          # what the warning is about
    with pytest.warns(QuantizationRangeWarning, match=r"dominated"):   # NCHW: a strided view
        axkern.axconv2d(bad.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), m,
                        data_format="NCHW", backend="reference")
    # the calibrated remedy of the docs: no warning, and no output collapses to 0
    xp = axkern.quant.calibrate(bad, method="percentile", percentile=99.0)
    wp = axkern.quant.calibrate(w, method="minmax")
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationRangeWarning)
        yc = axkern.axconv2d(bad, w, m, quant=(xp, wp))
    assert np.mean(yc == 0) < 0.1
    # inf from finite inputs is reported as a scale overflow
    huge = x.copy()
    huge[0, 0, 0, 0] = 3e38
    with warnings.catch_warnings(record=True) as rec, np.errstate(over="ignore"):
        warnings.simplefilter("always")
        y = axkern.axconv2d(huge, w, m, backend="reference")
        axkern.axmatmul(huge.reshape(-1, 4), w[0, 0] * 100, m)
    assert np.isinf(y).any()
    msgs = [str(r.message) for r in rec if r.category is QuantizationRangeWarning]
    assert sum("overflow float32 (inf)" in t and "scale overflow" in t for t in msgs) == 2
    huge[0, 0, 0, 1] = -3e38
    with pytest.raises(ValueError, match=r"too wide.*overflows float32"):
        axkern.axconv2d(huge, w, m)


def test_item4_model_warns_once_per_layer():
    model = axkern.survey.load_shipped_model()
    x, y, _ = axkern.survey.load_data(model, limit=30)
    x = x.copy()
    x[0, 0, 0, 0] = 1e30
    model.configure(multiplier=Multiplier.exact(8))
    with pytest.warns(QuantizationRangeWarning) as rec:
        model.predict(x)
    first = [str(r.message) for r in rec if r.category is QuantizationRangeWarning]
    # the outlier dominates conv1's input, and its huge response may dominate later layers
    assert first[0].startswith("layer 'conv1': x:")
    layers = [msg.split(":")[0] for msg in first]
    assert len(set(layers)) == len(layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationRangeWarning)
        model.predict(x)   # once per layer: not again


# ------------------------------------------------------------------ item 15: refuse bad input
def test_item15_bad_tables_and_models_refused(tmp_path):
    with pytest.raises(ValueError, match="int32"):
        Multiplier(np.full((4, 4), np.float32(2 ** 31)))
    with pytest.raises(ValueError, match="int32"):
        Multiplier(np.full((4, 4), 2 ** 31, dtype=np.uint64))
    with pytest.raises(TypeError, match="integers"):
        Multiplier(np.full((4, 4), 2.5))
    lo = Multiplier(np.full((4, 4), np.float32(-2 ** 31)))   # fits exactly
    assert lo.table.min() == -2 ** 31
    with pytest.raises(ValueError, match="at least one layer"):
        nn.Sequential([])
    with pytest.raises(ValueError, match="empty dimension"):
        nn.Conv2D(np.zeros((0, 3, 1, 8)))
    with pytest.raises(ValueError, match="empty dimension"):
        nn.Dense(np.zeros((10, 0)))
    # siblings: an empty input shape, and channels that do not match the first filter
    layers = [nn.Conv2D(np.ones((3, 3, 1, 4))), nn.Flatten(), nn.Dense(np.ones((256, 2)))]
    with pytest.raises(ValueError, match="input_shape must be positive"):
        nn.Sequential(layers, input_shape=(8, 8, 0))
    with pytest.raises(ValueError, match="expects 1 input channels"):
        nn.Sequential(layers, input_shape=(8, 8, 3))
    assert nn.Sequential(layers, input_shape=(8, 8, 1)).shapes()[-1] == ("dense1", (2,))
    # the same through files: refused at load, naming the file
    good = nn.Sequential([nn.Conv2D(np.ones((3, 3, 1, 8)), name="c"), nn.Flatten(),
                          nn.Dense(np.ones((8, 2)), name="d")])
    path = tmp_path / "m.npz"
    good.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    header = json.loads(str(arrays["__axkern__"][()]))
    for case, change in (("empty", None), ("zero", (0, 3, 1, 8))):
        a, h = dict(arrays), json.loads(json.dumps(header))
        if change is None:
            h["layers"] = []
            a = {"__axkern__": a["__axkern__"]}
        else:
            a["c/weight"] = np.zeros(change, np.float32)
        a["__axkern__"] = np.array(json.dumps(h))
        bad = tmp_path / f"{case}.npz"
        with open(bad, "wb") as f:
            np.savez(f, **a)
        with pytest.raises(ValueError, match="no layers" if change is None else "empty dimension"):
            nn.Sequential.load(bad)


def test_rewriting_a_table_removes_its_stale_sidecar(tmp_path):
    # a signed table written with its sidecar, then an unsigned one to the same files: the
    # old sidecar must not make the new table read back as signed
    s = axkern.load_multiplier("mul8s_drum4")
    u = axkern.Multiplier.exact(8)
    s.to_bin(tmp_path / "t.bin")
    u.to_bin(tmp_path / "t.bin", sidecar=False)
    assert not (tmp_path / "t.bin.json").exists()
    assert axkern.load_multiplier(str(tmp_path / "t.bin")) == u
    big = axkern.Multiplier(np.full((256, 256), 70000, np.int64))   # needs int32 + sidecar
    big.to_npy(tmp_path / "t.npy")
    u.to_npy(tmp_path / "t.npy")
    assert not (tmp_path / "t.npy.json").exists()
    assert axkern.load_multiplier(str(tmp_path / "t.npy")) == u
