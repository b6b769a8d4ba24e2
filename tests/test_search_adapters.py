"""axkern search on framework models: the adapters' ``layer_macs`` (what the search weighs
multiplier costs with) against MACs counted by hand, and a small search on a PyTorch module.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs PyTorch: pip install "axkern[torch]"')
pytest.importorskip("pymoo", reason='the search needs pymoo: pip install "axkern[search]"')
pytest.importorskip("distributed", reason='the search needs dask: pip install "axkern[search]"')

import axkern  # noqa: E402
import axkern.torch  # noqa: E402


class _Net(torch.nn.Module):
    """A residual block on 8x8 digits: stride-2 conv, a grouped conv, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.down = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.head = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = torch.relu(self.down(y) + y[:, :, ::2, ::2])
        return self.head(y.flatten(1))


# per sample: output elements x reduction length
HAND = {"stem": (8 * 8 * 8) * (1 * 3 * 3), "down": (8 * 4 * 4) * (4 * 3 * 3), "head": 10 * 128}


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:60, None] / 16.0).astype(np.float32), d.target[:60].astype(np.int64)


def test_torch_layer_macs_by_hand():
    torch.manual_seed(0)
    sm = axkern.torch.as_survey_model(_Net())
    assert sm.layer_macs((1, 8, 8)) == HAND
    nhwc = axkern.torch.as_survey_model(_Net(), input_layout="NHWC")
    assert nhwc.layer_macs((8, 8, 1)) == HAND


def test_onnx_layer_macs_by_hand(tmp_path):
    pytest.importorskip("onnx", reason='needs onnx: pip install "axkern[onnx]"')
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    from axkern.onnx import load_model

    torch.manual_seed(0)
    path = str(tmp_path / "net.onnx")
    torch.onnx.export(_Net().eval(), (torch.zeros(1, 1, 8, 8),), path,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    m = load_model(path)
    macs = m.layer_macs((1, 8, 8))
    assert sorted(macs.values()) == sorted(HAND.values()), macs
    assert list(macs) == m.compute_layers


def test_search_on_a_torch_module(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    x, y = _digits()
    r = axkern.search(model=net, data=(x, y), multipliers=["mul8u_exact", "mul8u_trunc8"],
                      population=4, generations=1, seed=1, workers=1, output=str(tmp_path),
                      progress=False, plot=False, verbose=False)
    assert r["layers"] == ["stem", "down", "head"]
    assert r["macs"] == HAND
    # every uniform configuration is evaluated; its accuracy is the survey's
    sm = axkern.torch.as_survey_model(net)
    acc = {}
    for name in ("mul8u_exact", "mul8u_trunc8"):
        sm.configure(multiplier=name, tune=False)
        acc[name] = 100.0 * sm.accuracy(x, y)
    untuned = {r_["stem"]: float(r_["accuracy"]) for r_ in r["uniform"] if r_["tuned"] == "none"}
    assert set(untuned) == set(acc)
    for name, a in acc.items():
        assert abs(untuned[name] - a) < 1e-9, (name, untuned[name], a)


def test_search_on_a_torch_module_resumes(tmp_path):
    """--resume compares a hash of the model: a torch model's came from its pickle, which
    names each storage by its address, so every resume was refused as "another model"."""
    import csv

    torch.manual_seed(0)
    net = _Net()
    x, y = _digits()
    kw = dict(model=net, data=(x, y), multipliers=["mul8u_exact", "mul8u_trunc8"],
              workers=1, seed=1, progress=False, plot=False, verbose=False)
    out = tmp_path / "s"
    axkern.search(population=4, generations=0, output=str(out), **kw)
    first = (out / "evaluations.csv").read_text().splitlines()
    r = axkern.search(resume=str(out), population=4, generations=1, **kw)
    with open(out / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (out / "evaluations.csv").read_text().splitlines()[:len(first)] == first
    assert len(rows) > len(first) - 1 and r["layers"] == ["stem", "down", "head"]
    # other weights: refused
    other = _Net()
    with torch.no_grad():
        other.load_state_dict(net.state_dict())
        other.head.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match="another model"):
        axkern.search(resume=str(out), generations=1, **dict(kw, model=other))
    # the fingerprint: the same for copies and across calls, not for other weights
    sm = axkern.torch.as_survey_model(net)
    assert sm.fingerprint() == sm.copy().fingerprint() == sm.fingerprint()
    assert axkern.torch.as_survey_model(other).fingerprint() != sm.fingerprint()


def test_fingerprint_of_extra_state_and_sparse_buffers():
    """Modules with extra state (get_extra_state) or sparse buffers: the fingerprint took
    every state_dict value for a dense tensor and raised, so every search on them failed."""
    from axkern.search import _model_hash

    class Extra(torch.nn.Module):
        def __init__(self, version):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.register_buffer("mask", torch.eye(3).to_sparse())
            self.version = version

        def forward(self, x):
            return self.fc(x)

        def get_extra_state(self):
            return {"version": self.version}

        def set_extra_state(self, state):
            self.version = state["version"]

    torch.manual_seed(0)
    a = Extra(1)
    h = _model_hash(axkern.torch.as_survey_model(a))
    assert h == _model_hash(axkern.torch.as_survey_model(a))
    b = Extra(2)
    b.load_state_dict(a.state_dict())   # the same weights, its extra state then 1 again
    assert _model_hash(axkern.torch.as_survey_model(b)) == h
    b.version = 2
    assert _model_hash(axkern.torch.as_survey_model(b)) != h
    with torch.no_grad():
        a.mask.values()[0] = 5.0
    assert _model_hash(axkern.torch.as_survey_model(a)) != h
