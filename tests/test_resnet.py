"""CIFAR ResNet v1 definitions (axkern.resnet): parameter counts, shapes, structure."""
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from axkern import resnet  # noqa: E402


def expected_params(depth, shortcut):
    """Parameter count written out from the architecture (not from the modules): 3x3 convs
    (with a bias each in the Keras design), two BatchNorm parameters per channel, the 1x1
    projections of the Keras design at the two stride-2 blocks, the final dense layer."""
    n = (depth - 2) // 6
    bias = shortcut == "projection"

    def conv(cin, cout, k=3, b=bias):
        return k * k * cin * cout + (cout if b else 0)

    def bn(c):
        return 2 * c

    total = conv(3, 16) + bn(16)
    cin = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, planes) + bn(planes) + conv(planes, planes) + bn(planes)
            if cin != planes and shortcut == "projection":
                total += conv(cin, planes, k=1, b=True)
            cin = planes
    return total + 64 * 10 + 10


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 50, 56, 62])
@pytest.mark.parametrize("shortcut", ["projection", "A"])
def test_parameter_count_matches_architecture(depth, shortcut):
    assert count(resnet.resnet_cifar(depth, shortcut=shortcut)) == expected_params(depth, shortcut)


def test_parameter_counts_match_published_figures():
    # He et al. 2016, table 6 (option A): 0.27M, 0.46M, 0.66M, 0.85M.
    for depth, millions in ((20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)):
        assert round(count(resnet.resnet_cifar(depth, shortcut="A")) / 1e6, 2) == millions
    # The Keras example's resnet_v1: model.summary() of ResNet-20 v1 gives 274,442 params,
    # of which 1,376 non-trainable (BatchNorm's moving mean and variance: buffers here).
    net = resnet.resnet20()
    stats = sum(b.numel() for name, b in net.named_buffers() if name.endswith(("_mean", "_var")))
    assert (count(net), stats) == (274442 - 1376, 1376)
    assert expected_params(20, "A") == 269722


@pytest.mark.parametrize("shortcut", ["projection", "A"])
def test_shapes_layers_and_macs(shortcut):
    net = resnet.resnet_cifar(20, shortcut=shortcut).eval()
    assert isinstance(net, nn.Module) and net.depth == 20
    shapes, macs = {}, []

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            macs.append(out.numel() // out.shape[0] * mod.weight[0].numel())
        else:
            macs.append(mod.in_features * mod.out_features)

    for name in ("stage1", "stage2", "stage3"):
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in weighted:
        m.register_forward_hook(hook)
    with torch.no_grad():
        y = net(torch.randn(3, 3, 32, 32))
    assert y.shape == (3, 10) and y.dtype == torch.float32
    assert shapes == {"stage1": (3, 16, 32, 32), "stage2": (3, 32, 16, 16),
                      "stage3": (3, 64, 8, 8)}
    # depth = weighted layers on the main path: 1 + 6n convolutions + the dense layer
    projections = 2 if shortcut == "projection" else 0
    assert len(weighted) == 20 + projections
    # MACs per image: 32x32 x (3*16*9 + 6 * 16*16*9) + 16x16 x (16*32*9 + 5 * 32*32*9)
    # + 8x8 x (32*64*9 + 5 * 64*64*9) + 640 (+ the projections): about 41M (He et al.)
    expect = (1024 * (27 * 16 + 6 * 2304) + 256 * (4608 + 5 * 9216)
              + 64 * (18432 + 5 * 36864) + 640)
    expect += (256 * 16 * 32 + 64 * 32 * 64) * (shortcut == "projection")
    assert sum(macs) == expect
    assert 40e6 < expect < 42e6


def test_identity_and_option_a_shortcuts():
    net = resnet.resnet_cifar(8, shortcut="A").eval()
    blk = net.stage2[0]
    x = torch.randn(2, 16, 32, 32)
    s = blk.shortcut(x)
    assert s.shape == (2, 32, 16, 16)
    assert torch.equal(s[:, :16], x[:, :, ::2, ::2]) and not s[:, 16:].any()
    assert isinstance(net.stage1[0].shortcut, nn.Identity)
    assert isinstance(resnet.resnet8().stage3[0].shortcut, nn.Conv2d)


def test_named_constructors_and_other_inputs():
    for depth in (8, 14, 20, 32, 44, 50, 56, 62):
        net = getattr(resnet, f"resnet{depth}")(num_classes=100)
        assert net.depth == depth and net.fc.out_features == 100
    net = resnet.resnet_cifar(8, in_channels=1, num_classes=4).eval()
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 4)   # adaptive pooling: any size


@pytest.mark.parametrize("bad", [7, 9, 2, 0, -4, 20.0, True, "20"])
def test_bad_depth(bad):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet.resnet_cifar(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shortcut must be one of"):
        resnet.resnet_cifar(20, shortcut="B")
    with pytest.raises(ValueError, match="num_classes"):
        resnet.resnet_cifar(20, num_classes=0)


def test_import_axkern_does_not_import_torch():
    code = "import sys, axkern; assert 'torch' not in sys.modules and 'axkern.resnet' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
