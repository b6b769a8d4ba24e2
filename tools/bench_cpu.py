#!/usr/bin/env python3
"""Benchmark of the fast CPU kernels: GMAC/s of each dispatch path and of float32 NumPy
matmul on the same im2col GEMM shape, and their ratio, from one run.

Same as ``axkern bench``, with the same options (``--help`` lists them) and errors.
Example: ``python tools/bench_cpu.py --repeat 5``.
"""
import sys

from axkern.bench import main

if __name__ == "__main__":
    sys.exit(main())
