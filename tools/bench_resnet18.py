#!/usr/bin/env python3
"""ImageNet-size ResNet-18 (random weights, eval mode) in float32 PyTorch against the same
model approximated through :func:`axkern.torch.approximate`, timed in one run.

Where the CIFAR networks of ``axkern bench --networks`` have at most 64 channels on 8 x 8
maps, this one ends in 512 channels on 7 x 7 maps: at batch 1 its last stages are layers of
few output pixels by many filters. The model is built here (torchvision is not needed): a
7 x 7 stem with max pooling, four stages of two basic blocks of :mod:`axkern.resnet` (64,
128, 256, 512 channels, 1 x 1 projections where the shape changes), global pooling and a
1000-way linear layer. Both models are timed in alternating rounds on the same input, each
figure the best call.

Examples::

    python tools/bench_resnet18.py                       # batch 1, the synthetic table
    python tools/bench_resnet18.py --batch 8 --multiplier mul8u_drum4 --threads 2
    AXKERN_CPU_PATH=avx2 python tools/bench_resnet18.py  # the AVX2 kernels
"""
import argparse
import sys
import time

import numpy as np

import axkern
from axkern.bench import _table, positive_int, run_tool, thread_count


def resnet18():
    """ResNet-18's layout from axkern.resnet's basic blocks (their shortcuts project by 1 x 1
    convolutions with a bias where the shape changes, as the Keras CIFAR example's do)."""
    from torch import nn

    from axkern.resnet import BasicBlock

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def run(batch, size, multiplier, threads, repeat, build=resnet18, title="ResNet-18"):
    """Time ``build()`` (an ImageNet-size torch model) in float32 and approximated, in
    alternating rounds on one input, and print both best times and their ratio."""
    try:
        import torch
    except ImportError:
        raise ImportError("this benchmark needs PyTorch: pip install 'axkern[torch]'") from None
    from axkern import _fast
    from axkern.torch import ApproxConv2d, ApproxLinear, approximate

    torch.manual_seed(0)
    if threads is not None:
        torch.set_num_threads(threads)
    if multiplier == "synthetic":
        mult = axkern.Multiplier(_table(np.random.default_rng(0)))
    else:
        mult = axkern.load_multiplier(multiplier)
    net = build().eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        net(x)
        approx = approximate(net, mult)
        for mod in approx.modules():
            if isinstance(mod, (ApproxConv2d, ApproxLinear)):
                mod.num_threads = threads   # None: OpenMP's default, as PyTorch's
        approx(x)   # warm-up: calibrations, prepared weights, page faults
        best = {"float": np.inf, "approx": np.inf}
        for _ in range(repeat):
            for name, model in (("float", net), ("approx", approx)):
                t0 = time.perf_counter()
                model(x)
                best[name] = min(best[name], time.perf_counter() - t0)
    print(f"{title}, batch {batch}, {size} x {size}, multiplier {multiplier}, path "
          f"{_fast.default_path()}, threads {threads or torch.get_num_threads()}; best of "
          f"{repeat}")
    print(f"float32 PyTorch {best['float'] * 1e3:.1f} ms, approximated "
          f"{best['approx'] * 1e3:.1f} ms, ratio {best['approx'] / best['float']:.2f}")


def parser(description):
    """The options of this script and of tools/bench_mobilenet.py."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch", type=positive_int, default=1, help="images (default 1)")
    p.add_argument("--size", type=positive_int, default=224,
                   help="image height and width (default 224)")
    p.add_argument("--multiplier", default="synthetic",
                   help="a shipped multiplier or file, or 'synthetic' (the bench's 16-bit "
                        "table: exact product plus noise; default)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads of PyTorch and of the kernels (default: OpenMP's)")
    p.add_argument("--repeat", type=positive_int, default=5, help="timing rounds (default 5)")
    return p


def main(argv=None):
    a = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    return run_tool("bench_resnet18.py", run, a.batch, a.size, a.multiplier, a.threads,
                    a.repeat)


if __name__ == "__main__":
    sys.exit(main())
