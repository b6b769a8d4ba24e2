#!/usr/bin/env python3
"""ImageNet-size MobileNetV2 (random weights, eval mode) in float32 PyTorch against the same
model approximated through :func:`axkern.torch.approximate`, timed in one run.

Its layers are the ones ResNets lack: depthwise 3 x 3 convolutions (stride 1 and 2) between
1 x 1 expansions and projections, from 112 x 112 maps of 16 - 96 channels to 7 x 7 maps of
160 - 1280. The model is built here (torchvision is not needed) with MobileNetV2's published
layout: a 3 x 3 stride-2 stem of 32 channels, 17 inverted residual blocks (expansion 1 then
6; 16, 24, 32, 64, 96, 160 and 320 output channels; batch normalization and ReLU6 after
every convolution but the projections; a shortcut where the shape is kept), a 1 x 1
convolution to 1280 channels, global pooling and a 1000-way linear layer. Both models are
timed in alternating rounds on the same input, each figure the best call (the options and
the timing are tools/bench_resnet18.py's).

Examples::

    python tools/bench_mobilenet.py                       # batch 1, the synthetic table
    python tools/bench_mobilenet.py --multiplier mul8u_drum4 --threads 2
    AXKERN_CPU_PATH=avx2 python tools/bench_mobilenet.py  # the AVX2 kernels
"""
import sys

from bench_resnet18 import parser, run

from axkern.bench import run_tool

# (expansion, output channels, blocks, stride of the first block)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2():
    """MobileNetV2 (width 1.0) from torch.nn modules."""
    from torch import nn

    def conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if relu else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expansion):
            super().__init__()
            hidden = cin * expansion
            layers = conv_bn(cin, hidden, 1) if expansion != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, relu=False)
            self.body = nn.Sequential(*layers)
            self.shortcut = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.shortcut else y

    layers = conv_bn(3, 32, 3, 2)
    cin = 32
    for expansion, cout, blocks, stride in SETTINGS:
        for i in range(blocks):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
            cin = cout
    layers += conv_bn(cin, 1280, 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def main(argv=None):
    a = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    return run_tool("bench_mobilenet.py", run, a.batch, a.size, a.multiplier, a.threads,
                    a.repeat, build=mobilenet_v2, title="MobileNetV2")


if __name__ == "__main__":
    sys.exit(main())
