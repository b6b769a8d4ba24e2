"""The retraining demonstration's pieces (tools/torch_retrain_demo.py) on axkern.torch: a few
straight-through-estimator steps on a fixed batch lower the approximate model's loss."""
import importlib.util
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
import torch.nn.functional as F  # noqa: E402

import axkern.torch as axtorch  # noqa: E402

DEMO = pathlib.Path(__file__).parent.parent / "tools" / "torch_retrain_demo.py"


@pytest.fixture(scope="module")
def demo():
    if not DEMO.exists():
        pytest.skip("tools/ is not next to the tests")
    spec = importlib.util.spec_from_file_location("torch_retrain_demo", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_split_is_the_shipped_models(demo):
    xtr, ytr, xte, yte = demo.load_data()
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    # stratified: every class in the test split, about 45 each
    assert np.bincount(yte.numpy(), minlength=10).min() >= 43


def test_retraining_steps_lower_the_approximate_loss(demo, one_thread):
    torch.manual_seed(0)
    xtr, ytr, _, _ = demo.load_data()
    x, y = xtr[:128], ytr[:128]
    net = demo.DigitsResNet()
    model = axtorch.approximate(net, "mul8u_drum4")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"ApproxConv2d", "ApproxLinear"} <= kinds and not {"Conv2d", "Linear"} & kinds
    model.eval(), net.eval()
    with torch.no_grad():   # the forward really is the approximate one
        assert not torch.allclose(model(x), net(x), atol=1e-3)
    model.train()

    def loss():
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    demo.train_epoch(model, opt, x, y, len(y), gen)
    for m in model.modules():   # the gradient reached every approximated layer's weight
        if isinstance(m, (axtorch.ApproxConv2d, axtorch.ApproxLinear)):
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    for _ in range(9):
        demo.train_epoch(model, opt, x, y, len(y), gen)
    after = loss()
    assert after < 0.5 * before, (before, after)
    # approximate() copied the model: the float network's weights were not trained
    assert not torch.equal(net.stem[0].weight, model.stem[0].weight)
