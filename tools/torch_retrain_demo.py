#!/usr/bin/env python3
"""Approximate a small residual CNN with a harsh multiplier, then retrain it: axkern.torch.

1. Trains a small residual CNN in float32 PyTorch on scikit-learn's ``load_digits`` (1797
   real 8x8 digits, no download; the held-out split of the shipped digits model:
   ``train_test_split(test_size=0.25, random_state=0, stratify=labels)``, 450 test digits).
2. Replaces every Conv2d and Linear with ``axkern.torch.approximate(model, MULTIPLIER)`` and
   measures the held-out accuracy: the drop.
3. Retrains the approximated model for a few epochs (forward through the multiplier's table,
   backward by the straight-through estimator, ``grad="ste"``, or by the multiplier's
   gradient tables, ``grad="table"``: one run each from the same float weights) and measures
   the accuracy again: the recovery.

Deterministic for a given ``--seed`` and ``--threads`` (default 1: PyTorch's float sums
depend on the thread count; axkern's integer sums do not); under a minute on two cores.

Network (NCHW, inputs = pixel / 16 in [0, 1])::

    stem    conv3x3 1 -> 16, BN, ReLU                         8x8
    block1  [conv3x3 16 -> 16, BN, ReLU, conv3x3, BN] + x, ReLU
    down    conv3x3 16 -> 32 stride 2, BN, ReLU                4x4
    block2  [conv3x3 32 -> 32, BN, ReLU, conv3x3, BN] + x, ReLU
    head    global average pool, linear 32 -> 10

Usage::

    python tools/torch_retrain_demo.py [--multiplier mul8u_drum4] [--epochs 20]
        [--retrain-epochs 3] [--grad ste,table] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    sys.exit('this demo needs PyTorch: pip install "axkern[torch]"')

SPLIT = dict(test_size=0.25, random_state=0)


def load_data():
    """(x_train, y_train, x_test, y_test) tensors: NCHW float32 in [0, 1], int64 labels."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit('this demo needs scikit-learn: pip install "axkern[survey]"')
    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = train_test_split(np.arange(len(y)), stratify=d.target, **SPLIT)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return x[tr], y[tr], x[te], y[te]


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class DigitsResNet(nn.Module):
    """The small residual CNN of the module docstring."""

    def __init__(self, width=16, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Block(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.block2 = Block(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def accuracy(model, x, y, batch=512):
    """Top-1 accuracy in percent, eval mode."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(y)


def train_epoch(model, opt, x, y, batch, gen):
    """One epoch of cross-entropy training on shuffled batches; returns the mean loss."""
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    total = 0.0
    for i in range(0, len(y), batch):
        idx = perm[i:i + batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(y)


def train(model, x, y, epochs, lr, batch=64, seed=0, log=None):
    """Adam with a cosine learning-rate schedule, ``epochs`` epochs."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for ep in range(epochs):
        loss = train_epoch(model, opt, x, y, batch, gen)
        sched.step()
        if log is not None:
            log(ep, loss)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--multiplier", default="mul8u_drum4",
                   help="shipped name or .c/.bin file (default: mul8u_drum4)")
    p.add_argument("--epochs", type=int, default=20, help="float training epochs")
    p.add_argument("--retrain-epochs", type=int, default=3, help="retraining epochs")
    p.add_argument("--lr", type=float, default=3e-3, help="float training learning rate")
    p.add_argument("--retrain-lr", type=float, default=1e-3, help="retraining learning rate")
    p.add_argument("--grad", default="ste,table",
                   help="comma-separated backward rules to retrain with, each from the same "
                        "float weights: ste, table (default: both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="threads of PyTorch and of axkern's kernels (default 1: these layers "
                        "are too small to gain from more, and the figures depend on it)")
    args = p.parse_args(argv)
    grads = [g.strip() for g in args.grad.split(",") if g.strip()]
    if not grads or any(g not in _RULES for g in grads):
        p.error(f"--grad takes a comma-separated list of {', '.join(_RULES)}, got {args.grad!r}")

    import axkern.torch as axtorch

    torch.set_num_threads(args.threads)   # one OpenMP runtime: axkern's kernels too
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    xtr, ytr, xte, yte = load_data()
    net = DigitsResNet()
    train(net, xtr, ytr, args.epochs, args.lr, seed=args.seed)
    acc_float = accuracy(net, xte, yte)
    print(f"float32 model: {acc_float:.2f}% on {len(yte)} held-out digits "
          f"({args.epochs} epochs, {time.perf_counter() - t_start:.1f} s)")

    approx = axtorch.approximate(net, args.multiplier)
    acc_approx = accuracy(approx, xte, yte)
    print(f"approximated with {args.multiplier}: {acc_approx:.2f}% "
          f"({acc_approx - acc_float:+.2f} points)")
    acc_tuned = accuracy(axtorch.approximate(net, args.multiplier, tune=True), xte, yte)
    print(f"  with ALWANN weight tuning, no retraining: {acc_tuned:.2f}% "
          f"({acc_tuned - acc_float:+.2f} points)")

    results = {"float32": acc_float, "approximated": acc_approx, "tuned": acc_tuned}
    for grad in grads:
        label = _RULES[grad]
        model = axtorch.approximate(net, args.multiplier, grad=grad)   # a copy: net stays float
        t0 = time.perf_counter()
        curve = []
        train(model, xtr, ytr, args.retrain_epochs, args.retrain_lr, seed=args.seed + 1,
              log=lambda ep, loss: curve.append(accuracy(model, xte, yte)))
        acc = curve[-1] if curve else accuracy(model, xte, yte)
        print(f"retrained {args.retrain_epochs} epochs ({label}): {acc:.2f}% "
              f"({acc - acc_float:+.2f} points vs float, {acc - acc_approx:+.2f} recovered, "
              f"{time.perf_counter() - t0:.1f} s); after each epoch: "
              + ", ".join(f"{a:.2f}%" for a in curve))
        # the retrained weights in exact float32: adapted to the multiplier, not to exactness
        plain = DigitsResNet()
        plain.load_state_dict(model.state_dict())
        print(f"  the retrained weights in exact float32: {accuracy(plain, xte, yte):.2f}%")
        results[grad] = acc
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return results


# The backward rules of axkern.torch: the straight-through estimator (the float layer's
# gradients on the fake-quantized operands) and the multiplier's gradient tables.
_RULES = {"ste": "straight-through estimator", "table": "gradient tables"}


if __name__ == "__main__":
    main()
