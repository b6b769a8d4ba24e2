#!/usr/bin/env python3
"""Whole-network benchmark: CIFAR ResNet-8, 20, 32, 50, 62 in float32 PyTorch against the same
models approximated through axkern.torch, in one run (images/s, the ratio, seconds per 10,000
images beside TFApprox's CPU figures, the adapter's overhead over the bare axconv2d calls).

Same as ``axkern bench --networks``. Example:
``python tools/bench_networks.py --depths 8,20 --batch 128 --repeat 5 --per-layer``.
"""
import sys

from axkern.netbench import main

if __name__ == "__main__":
    sys.exit(main())
