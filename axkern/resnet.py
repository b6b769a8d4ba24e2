"""CIFAR-10 ResNet v1 of depth 6n + 2 as plain PyTorch modules (no torchvision).

The family of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section
4.2, and of the Keras example ``cifar10_resnet.py`` (``resnet_v1``), whose ResNet-8 ... 62
are the networks of TFApprox's and ALWANN's tables:

* a 3x3 convolution with 16 filters, BatchNorm, ReLU;
* three stages of ``n`` basic blocks with 16, 32 and 64 filters on 32x32, 16x16 and 8x8
  feature maps (for 32x32 inputs); a block is conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut,
  then ReLU; the first block of stages 2 and 3 has stride 2 in its first convolution and in
  its shortcut;
* global average pooling and a fully connected layer to ``num_classes`` logits.

Depth = 6n + 2 (ResNet-8: n = 1, ResNet-20: n = 3, ResNet-62: n = 10). Two shortcut designs
at the stride-2 blocks (every other shortcut is the identity):

* ``shortcut="projection"`` (default): the Keras example's ``resnet_v1``: a 1x1 convolution
  with stride 2 and a bias, no BatchNorm on the shortcut; every convolution has a bias, as
  Keras' ``Conv2D`` does by default (274,442 parameters for ResNet-20).
* ``shortcut="A"``: the paper's option A, parameter-free: the input subsampled with stride 2
  and padded with zero channels; convolutions without bias (BatchNorm follows each),
  269,722 parameters for ResNet-20 (the paper's "0.27M").

Padding is PyTorch's symmetric ``padding=1`` (TensorFlow's SAME would pad only the bottom and
right at stride 2): same shapes and MACs as the Keras model, not the same outputs for the same
weights.

This module imports torch; ``import axkern`` does not import it.
"""
from __future__ import annotations

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('axkern.resnet needs PyTorch: pip install "axkern[torch]"') from exc

__all__ = ["ResNetCIFAR", "BasicBlock", "resnet_cifar", "resnet8", "resnet14", "resnet20",
           "resnet32", "resnet44", "resnet50", "resnet56", "resnet62", "SHORTCUTS"]

SHORTCUTS = ("projection", "A")
WIDTHS = (16, 32, 64)


class _ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and append zero channels up to ``planes``."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.extra, self.stride = planes - in_planes, stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self):
        return f"stride={self.stride}, zero_channels={self.extra}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU (ResNet v1)."""

    def __init__(self, in_planes, planes, stride=1, shortcut="projection"):
        super().__init__()
        bias = shortcut == "projection"
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)
        else:
            self.shortcut = _ZeroPadShortcut(in_planes, planes, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet v1 with ``n`` basic blocks per stage (depth 6n + 2).

    Parameters
    ----------
    n : int
        Blocks per stage (>= 1).
    num_classes : int
    shortcut : {"projection", "A"}
        See the module docstring.
    in_channels : int
        Input channels (3 for CIFAR images).
    """

    def __init__(self, n, num_classes=10, shortcut="projection", in_channels=3):
        super().__init__()
        self.depth, self.shortcut_kind = 6 * n + 2, shortcut
        bias = shortcut == "projection"
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        stages, in_planes = [], WIDTHS[0]
        for s, planes in enumerate(WIDTHS):
            blocks = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):   # He et al.'s initialisation ("he_normal")
                nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_cifar(depth, num_classes=10, *, shortcut="projection", in_channels=3):
    """CIFAR-10 ResNet v1 of depth ``6n + 2``.

    Parameters
    ----------
    depth : int
        8, 14, 20, 26, 32, 38, 44, 50, 56, 62, ... (``depth - 2`` divisible by 6, >= 8).
    num_classes : int, default 10
    shortcut : {"projection", "A"}, default "projection"
        "projection": the Keras example's ``resnet_v1`` (1x1 convolution shortcuts at the
        stride-2 blocks, convolutions with bias); "A": He et al.'s parameter-free option A
        (subsample and zero-pad the channels), convolutions without bias.
    in_channels : int, default 3

    Returns
    -------
    ResNetCIFAR
        An ``nn.Module`` taking ``(N, in_channels, H, W)`` float32 tensors and returning
        ``(N, num_classes)`` logits, freshly initialised (He normal convolutions).

    Examples
    --------
    >>> import torch
    >>> from axkern.resnet import resnet_cifar
    >>> net = resnet_cifar(20).eval()
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be an integer 6n + 2 with n >= 1 (8, 14, 20, ...), "
                         f"got {depth!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return ResNetCIFAR((depth - 2) // 6, num_classes, shortcut, in_channels)


def _named(depth):
    def make(num_classes=10, *, shortcut="projection", in_channels=3):
        return resnet_cifar(depth, num_classes, shortcut=shortcut, in_channels=in_channels)
    make.__name__ = make.__qualname__ = f"resnet{depth}"
    make.__doc__ = (f"CIFAR-10 ResNet-{depth} v1 ({(depth - 2) // 6} blocks per stage): "
                    f"``resnet_cifar({depth}, ...)``.")
    return make


resnet8, resnet14, resnet20, resnet32 = (_named(d) for d in (8, 14, 20, 32))
resnet44, resnet50, resnet56, resnet62 = (_named(d) for d in (44, 50, 56, 62))
