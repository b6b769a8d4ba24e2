"""axkern search: NSGA-II over per-layer multipliers, evaluated on Dask.

The searches here are small (a few multipliers, population 8, 2 generations, 45 digits) and
share one 2-worker cluster on 127.0.0.1, so that the file stays within its time budget.
"""
import csv
import json
import os
import socket
import time

import numpy as np
import pytest

pytest.importorskip("sklearn", reason='the search needs scikit-learn: pip install "axkern[survey]"')
pytest.importorskip("pymoo", reason='the search needs pymoo: pip install "axkern[search]"')
distributed = pytest.importorskip("distributed",
                                  reason='the search needs dask: pip install "axkern[search]"')

import axkern  # noqa: E402
from axkern import Multiplier  # noqa: E402
from axkern import search as S  # noqa: E402
from axkern.survey import load_shipped_model  # noqa: E402

MULTS = ["mul8u_exact", "mul8u_trunc6", "mul8u_drum4", "mul8u_bam_v8h4"]
SMALL = dict(multipliers=MULTS, limit=45, population=8, generations=2, seed=3, progress=False,
             plot=False, verbose=False)
LAYERS = ["conv1", "conv2", "conv3", "dense1"]


DASK_WORKERS = 2   # the conftest's cluster fixture: one 2-worker cluster for the module


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The small search on the 2-worker cluster, through the command line."""
    from axkern.cli import main

    out = tmp_path_factory.mktemp("ref")
    rc = main(["search", "--multipliers", ",".join(MULTS), "--limit", "45", "--population", "8",
               "--generations", "2", "--seed", "3", "--no-progress", "--output", str(out),
               "--scheduler", cluster.scheduler_address])
    assert rc == 0
    return out


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _key(r):
    return tuple(r[l] for l in LAYERS) + (r["tuned"], float(r["accuracy"]),
                                          float(r["relative_cost"]))


def _front(out):
    return sorted(_key(r) for r in _read(os.path.join(out, "pareto.csv")))


def _evals(out):
    return sorted(_key(r) for r in _read(os.path.join(out, "evaluations.csv")))


def _macs_by_hand():
    """MACs per sample from the weight shapes (3x3 SAME convolutions, 8x8 input, two 2x2
    max pools before conv3 and dense1)."""
    net = load_shipped_model()
    out = {}
    hw = {"conv1": 8 * 8, "conv2": 8 * 8, "conv3": 4 * 4}
    for name in LAYERS:
        w = net[name].weight
        out[name] = int(w.size) if name == "dense1" else hw[name] * int(np.prod(w.shape))
    return out


def test_files_costs_seeds_and_front(reference, capsys):
    rows = _read(os.path.join(reference, "evaluations.csv"))
    front = _read(os.path.join(reference, "pareto.csv"))
    assert list(front[0]) == LAYERS + ["accuracy", "relative_cost", "tuned"]
    # relative cost: MAC-weighted PP_BITS from the C files' metadata, exact = 64
    macs = _macs_by_hand()
    pp = {m: float(axkern.load_multiplier(m).metadata["PP_BITS"]) for m in MULTS}
    assert pp["mul8u_exact"] == 64
    for r in rows:
        want = sum(macs[l] * pp[r[l]] for l in LAYERS) / (sum(macs.values()) * 64)
        assert float(r["relative_cost"]) == pytest.approx(want, rel=1e-12)
        acc = float(r["accuracy"])
        assert round(acc * 45 / 100) == pytest.approx(acc * 45 / 100, abs=1e-9)  # k of 45
    # never evaluated twice
    configs = [(tuple(r[l] for l in LAYERS), r["tuned"]) for r in rows]
    assert len(configs) == len(set(configs))
    # the exact and every uniform configuration (tuned and untuned) were evaluated
    have = set(configs)
    assert (("mul8u_exact",) * 4, "none") in have
    for m in MULTS[1:]:
        assert ((m,) * 4, "none") in have
        assert ((m,) * 4, ";".join(LAYERS)) in have
    # the front: exactly the rows no evaluation dominates (checked by brute force here)
    pts = [(100 - float(r["accuracy"]), float(r["relative_cost"])) for r in rows]

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts)

    want = sorted(_key(r) for r, p in zip(rows, pts) if not dominated(p))
    assert _front(reference) == want
    doc = json.loads((reference / "search.json").read_text())
    assert doc["finished"] and doc["generations_done"] == 2 and doc["cost_key"] == "pp_bits"
    assert (reference / "pareto.png").is_file()


def test_eval_assign_reproduces_rows(reference, capsys):
    from axkern.cli import main

    front = _read(os.path.join(reference, "pareto.csv"))
    tuned_rows = [r for r in front if r["tuned"] not in ("none",)]
    picks = [front[0], front[-1]] + tuned_rows[:1]
    for r in picks:
        argv = ["eval", "--assign", ",".join(f"{l}={r[l]}" for l in LAYERS), "--limit", "45",
                "--json"]
        if r["tuned"] != "none":
            argv += ["--tune-layers", r["tuned"].replace(";", ",")]
        assert main(argv) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["accuracy"] == float(r["accuracy"])
        tuned = set() if r["tuned"] == "none" else set(r["tuned"].split(";"))
        assert {l for l, s in got["settings"].items() if s["tune"]} == tuned


def test_same_front_with_one_worker_and_after_resume(reference, cluster, tmp_path):
    one = tmp_path / "one"
    S.search(output=str(one), workers=1, **SMALL)  # the default local cluster, 1 process
    assert _evals(one) == _evals(reference)
    assert _front(one) == _front(reference)
    # stopped after generation 1, then resumed (model, data and list given again)
    part = tmp_path / "part"
    S.search(output=str(part), scheduler=cluster.scheduler_address,
             **dict(SMALL, generations=1))
    n_part = len(_read(os.path.join(part, "evaluations.csv")))
    seen = []
    r = S.search(resume=str(part), multipliers=MULTS, limit=45, progress=False, plot=False,
                 verbose=False, generations=2, scheduler=cluster.scheduler_address,
                 on_generation=lambda g, n: seen.append((g, n)))
    assert r["finished"] and _front(part) == _front(reference)
    assert _evals(part) == _evals(reference)
    # generations 0 and 1 were replayed from the cache: nothing new evaluated there
    assert seen[1][1] == n_part


class _WorkerModel:
    """The shipped model behind the survey's protocol, evaluated differently in the search's
    worker processes than in this one (``home``)."""

    def __init__(self, net, home=None):
        self.net = net
        self.home = os.getpid() if home is None else home
        self.name, self.metadata = net.name, net.metadata

    @property
    def compute_layers(self):
        return self.net.compute_layers

    def configure(self, layers=None, **kw):
        self.net.configure(layers, **kw)
        return self

    def settings(self):
        return self.net.settings()

    def layer_macs(self, input_shape):
        return _macs_by_hand()


class SlowModel(_WorkerModel):
    """Each evaluation in a worker takes at least ``delay`` seconds: a budget then stops the
    search whatever the machine's speed."""

    def __init__(self, net, delay, home=None):
        super().__init__(net, home)
        self.delay = delay

    def accuracy(self, x, y, **kw):
        if os.getpid() != self.home:
            time.sleep(self.delay)
        return self.net.accuracy(x, y, **kw)

    def copy(self):
        return SlowModel(self.net.copy(), self.delay, self.home)

    def fingerprint(self):   # the same model whatever the delay
        return S._model_hash(self.net)


def test_budget_stop_then_resume(reference, cluster, tmp_path):
    out = tmp_path / "budget"
    # at least 0.25 s per evaluation on 2 workers: the 1.5 s budget ends the first generations
    r = S.search(model=SlowModel(load_shipped_model(), 0.25), output=str(out),
                 scheduler=cluster.scheduler_address, budget=1.5, **SMALL)
    assert not r["finished"]
    r = S.search(model=SlowModel(load_shipped_model(), 0.0), resume=str(out), limit=45,
                 progress=False, plot=False, verbose=False, scheduler=cluster.scheduler_address)
    assert r["finished"] and _front(out) == _front(reference)


class DyingModel(_WorkerModel):
    """The first evaluation that finds the flag file (and removes it) ends its worker
    process on the spot (only workers die, never this process)."""

    def __init__(self, net, flag, home=None):
        super().__init__(net, home)
        self.flag = flag

    def accuracy(self, x, y, **kw):
        if os.getpid() == self.home:
            return self.net.accuracy(x, y, **kw)
        try:
            os.remove(self.flag)
        except FileNotFoundError:
            return self.net.accuracy(x, y, **kw)
        os._exit(1)  # the worker dies in the middle of its task

    def copy(self):
        return DyingModel(self.net.copy(), self.flag, self.home)


def test_worker_killed_mid_search(reference, cluster, tmp_path):
    client = distributed.Client(cluster, set_as_default=False)
    try:
        before = set(client.run(os.getpid).values())
        flag = tmp_path / "die"
        flag.write_text("")
        out = tmp_path / "killed"
        S.search(model=DyingModel(load_shipped_model(), str(flag)), output=str(out),
                 scheduler=cluster.scheduler_address, **SMALL)
        assert not flag.exists()  # a worker did take the flag and die
        client.wait_for_workers(2, timeout=60)
        assert set(client.run(os.getpid).values()) != before  # one process was replaced
        # the state went to the workers in a plugin, removed when the search ended
        plugins = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        assert not [p for p in plugins if p.startswith("axkern-state-")]
    finally:
        client.close()
    assert _front(out) == _front(reference)
    assert _evals(out) == _evals(reference)


def test_tiles_bound_distinct_multipliers(cluster, tmp_path):
    r = S.search(output=str(tmp_path), scheduler=cluster.scheduler_address, tiles=2,
                 tune="no", **dict(SMALL, generations=1, population=6))
    assert r["evaluations"]
    for row in r["evaluations"]:
        assert len({row[l] for l in LAYERS}) <= 2
        assert row["tuned"] == "none"


def test_survey_on_scheduler_matches_local(cluster):
    kw = dict(multipliers=["mul8u_trunc6", "mul8u_drum4"], limit=45, tune="both",
              output=None, progress=False, plot=False, verbose=False)
    a = axkern.survey(**kw)
    b = axkern.survey(scheduler=cluster.scheduler_address, **kw)
    assert a["rows"] == b["rows"]


# ------------------------------------------------------------------------------ bad input
def test_fewer_than_two_multipliers(tmp_path):
    with pytest.raises(ValueError, match="at least two multipliers"):
        S.search(multipliers=["mul8u_trunc6"], output=str(tmp_path), progress=False)


def test_mixed_signedness_or_width(tmp_path):
    with pytest.raises(ValueError, match="bit width and signedness.*signed: mul8s_trunc6"):
        S.search(multipliers=["mul8u_trunc6", "mul8s_trunc6"], output=str(tmp_path))
    four = Multiplier.exact(4, False)
    with pytest.raises(ValueError, match="4-bit unsigned"):
        S.search(multipliers=["mul8u_trunc6", four], output=str(tmp_path))


def test_cost_key_missing_names_the_multiplier(tmp_path):
    a = Multiplier(Multiplier.exact(8, False).table, name="ex", metadata={"area": "10 um2"})
    b = Multiplier(axkern.load_multiplier("mul8u_trunc6").table, name="t6", metadata={})
    with pytest.raises(ValueError, match=r"\['t6'\] have no numeric metadata 'area'"):
        S.search(multipliers=[a, b], cost="area", output=str(tmp_path))


def test_exact_cost_must_be_positive(tmp_path):
    a = Multiplier(Multiplier.exact(8, False).table, name="ex", metadata={"PDK45_PWR": "0 mW"})
    b = Multiplier(axkern.load_multiplier("mul8u_trunc6").table, name="t6",
                   metadata={"PDK45_PWR": "0.2 mW"})
    with pytest.raises(ValueError, match="exact multiplier ex has cost power=0"):
        S.search(multipliers=[a, b], output=str(tmp_path))
    a.metadata["PDK45_PWR"] = "-1"
    with pytest.raises(ValueError, match="cost power=-1"):
        S.search(multipliers=[a, b], output=str(tmp_path))


def test_power_metadata_is_the_default_cost():
    m = Multiplier(Multiplier.exact(8, False).table, name="e",
                   metadata={"PDK45_PWR": "0.391 mW", "PP_BITS": "64"})
    assert S.multiplier_cost(m) == pytest.approx(0.391)
    assert S.multiplier_cost(Multiplier(m.table, metadata={"power": "2.5"})) == 2.5
    assert S.multiplier_cost(m, "pp_bits") == 64
    assert S.relative_cost([1, 3], [2, 2], 2) == 1.0
    assert S.relative_cost([1, 3], [1, 3], 4) == pytest.approx((1 + 9) / 16)


def test_missing_optional_dependency(monkeypatch, capsys, tmp_path):
    from axkern.cli import main

    monkeypatch.setitem(__import__("sys").modules, "pymoo", None)  # makes `import pymoo` fail
    rc = main(["search", "--limit", "20", "--output", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "'pymoo'" in err and 'pip install "axkern[search]"' in err


def test_unreachable_scheduler_fails_fast(tmp_path, capsys):
    from axkern.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    rc = main(["search", "--multipliers", "mul8u_exact,mul8u_trunc6", "--limit", "20",
               "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1",
               "--output", str(tmp_path), "--no-progress", "--no-plot"])
    assert rc == 1 and time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert err.startswith("axkern: error: cannot reach the Dask scheduler at "
                          f"tcp://127.0.0.1:{port}")


def test_resume_from_other_model_or_data(reference):
    kw = dict(resume=str(reference), multipliers=MULTS, progress=False, plot=False,
              verbose=False)
    with pytest.raises(ValueError, match="other data"):
        S.search(limit=44, **kw)
    net = load_shipped_model()
    net["conv1"].weight = net["conv1"].weight * np.float32(1.01)
    with pytest.raises(ValueError, match="another model"):
        S.search(model=net, limit=45, **kw)
    with pytest.raises(ValueError, match="population=8"):
        S.search(limit=45, population=9, **kw)


def test_resume_accepts_the_same_tune_setting_as_a_bool(cluster, tmp_path):
    kw = dict(SMALL, generations=0, population=4)
    S.search(output=str(tmp_path), scheduler=cluster.scheduler_address, **dict(kw, tune="yes"))
    r = S.search(resume=str(tmp_path), tune=True, generations=0, limit=45, progress=False,
                 plot=False, verbose=False, scheduler=cluster.scheduler_address)
    assert r["finished"]
    with pytest.raises(ValueError, match="tune"):
        S.search(resume=str(tmp_path), tune=False, limit=45, progress=False, plot=False,
                 verbose=False, scheduler=cluster.scheduler_address)


def test_tuned_field_of_layer_names_holding_semicolons(tmp_path):
    # TensorFlow-converted ONNX graphs name nodes "a/BiasAdd;a/Conv2D": the tuned field joins
    # such names with ';' as well, and a resumed search must read each row's tuning back
    layers = ["m/c0/BiasAdd;m/c0/Conv2D", "m/c1/BiasAdd;m/c1/Conv2D", "fc"]
    names = ["exact", "t6"]
    configs = [((1, True), (1, False), (1, True)), ((1, False), (1, True), (0, False)),
               ((1, False), (1, False), (1, False)), ((1, True), (1, True), (1, True))]
    rows = [S._row(layers, names, c, 50.0 + i, 0.5, gen=i) for i, c in enumerate(configs)]
    assert rows[0]["tuned"] == "m/c0/BiasAdd;m/c0/Conv2D;fc"
    path = str(tmp_path / "evaluations.csv")
    S._write_csv(path, layers, rows, extra=("generation",))
    back = S._read_evaluations(path, layers, names, exact=0)
    assert back == {c: (50.0 + i, i) for i, c in enumerate(configs)}
    assert S._split_tuned("none", layers) == []
    assert S._split_tuned(rows[1]["tuned"], layers) == ["m/c1/BiasAdd;m/c1/Conv2D"]
    with pytest.raises(ValueError, match="more than one way"):
        S._split_tuned("a;b", ["a", "b", "a;b"])
    # names that are others joined by ';' are refused before the search, and a longer
    # collision when its row is written: never a field that cannot be read back
    with pytest.raises(ValueError, match="'a;b' is other layers' names joined"):
        S._check_layer_names(["a", "b", "a;b"])
    with pytest.raises(ValueError, match="ambiguous"):
        S._row(["a", "b;c", "a;b", "c"], names, ((1, True), (1, True), (1, False), (0, False)),
               1.0, 0.5)
    with pytest.raises(ValueError, match="in no way"):
        S._split_tuned("fc;m/c0/BiasAdd", layers)   # out of the layers' order
    # an eval command cannot name layers holding commas (--assign, --tune-layers split there)
    row = S._row(["a,b", "c"], names, ((1, True), (0, False)), 90.0, 0.5)
    assert S._eval_command(row, ["a,b", "c"], {"t6": "t6.c", "exact": "mul8u_exact"}, (),
                           "net.onnx", "d.npz", None, None) is None


def test_pp_bits_cost_leaves_logarithmic_multipliers_without_a_figure():
    mults = [axkern.load_multiplier(n) for n in ("mul8u_exact", "mul8u_drum6", "mul8u_mitchell")]
    # PP_BITS = 0 is no figure, whether the key is the default or named (was: cost 0, free)
    for key in (None, "pp_bits", "PP_BITS"):
        with pytest.raises(ValueError, match=r"\['mul8u_mitchell'\] have .*partial-product bit"):
            S._resolve_costs(list(mults), key, True)
        costs, k, exact, notes, kept = S._resolve_costs(list(mults), key, False)
        assert k == "pp_bits" and [m.name for m in kept] == ["mul8u_exact", "mul8u_drum6"]
        assert all(c > 0 for c in costs) and any("left out mul8u_mitchell" in n for n in notes)
    # power figures on every listed multiplier but none on the exact one added: say so
    t4 = Multiplier(axkern.load_multiplier("mul8u_trunc4").table, name="t4",
                    metadata={"power": "0.3 mW"})
    t8 = Multiplier(axkern.load_multiplier("mul8u_trunc8").table, name="t8",
                    metadata={"power": "0.2 mW"})
    with pytest.raises(ValueError, match="have power figures .* exact multiplier added"):
        S._resolve_costs([t4, t8], None, True)


def test_bad_labels_leave_no_search_folder(cluster, tmp_path):
    from axkern.survey import load_data

    x, y, _ = load_data(load_shipped_model(), None, 45)
    out = tmp_path / "s"
    with pytest.raises(ValueError, match="10 scores per sample"):
        S.search(**{**SMALL, "limit": None}, data=(x, y + 10), output=str(out),
                 scheduler=cluster.scheduler_address)
    assert not out.exists()   # a corrected rerun into the same folder is a new search
    S.search(**{**SMALL, "limit": None}, data=(x, y), output=str(out),
             scheduler=cluster.scheduler_address)


def test_bad_options_fail_before_any_evaluation(reference, tmp_path, capsys):
    from axkern.cli import main

    # an empty list (an unset shell variable) is refused, not the default list
    assert main(["search", "--multipliers", "", "--output", str(tmp_path / "a"),
                 "--no-progress"]) != 0
    assert "names no multiplier" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    for kw, msg in ((dict(num_threads=0), "num_threads"), (dict(backend="bogus"), "backend")):
        with pytest.raises(ValueError, match=msg):
            S.search(**{**SMALL, **kw}, output=str(tmp_path / "b"))
        assert not (tmp_path / "b").exists()   # before the model, the data or any file
    with pytest.raises(ValueError, match="raised, not lowered"):
        S.search(resume=str(reference), generations=1, progress=False, verbose=False)
    with pytest.raises(ValueError, match="continues in that folder: leave --output out"):
        S.search(resume=str(reference), output=str(tmp_path / "elsewhere"), progress=False)
    assert not (tmp_path / "elsewhere").exists()


def test_stopped_search_folder_and_resume_without_objects(cluster, tmp_path):
    t6 = Multiplier(axkern.load_multiplier("mul8u_trunc6").table, name="t6",
                    metadata={"PP_BITS": "49"})
    ex = Multiplier(Multiplier.exact(8, False).table, name="ex", metadata={"PP_BITS": "64"})
    out = str(tmp_path / "s")
    kw = {**SMALL, "multipliers": [ex, t6], "scheduler": cluster.scheduler_address}
    S.search(**kw, output=out)
    # as a search stopped after its second generation leaves it (a budget cannot stop one
    # at a given point on a shared machine)
    state_path = os.path.join(out, "search.json")
    state = json.load(open(state_path))
    state.update(finished=False, generations_done=1)
    with open(state_path, "w") as f:
        json.dump(state, f)
    # starting over there would overwrite the evaluations: refused, --resume named
    with pytest.raises(ValueError, match="stopped before its end: --resume"):
        S.search(**kw, output=out)
    # the objects are recorded by name only: resuming needs them again, and says so
    with pytest.raises(ValueError, match="'t6' .* passed again"):
        S.search(resume=out, limit=45, progress=False, verbose=False, plot=False,
                 scheduler=cluster.scheduler_address)
    r = S.search(resume=out, multipliers=[ex, t6], limit=45, progress=False, verbose=False,
                 plot=False, scheduler=cluster.scheduler_address)
    assert json.load(open(os.path.join(out, "search.json")))["finished"]
    with pytest.raises(ValueError, match=r"macs names layers \['conv9'\]"):
        S.search(**kw, output=str(tmp_path / "m"),
                 macs={**{l: 1 for l in LAYERS}, "conv9": 5})
    assert r["front"]
