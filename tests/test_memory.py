"""Peak memory of the fast float-level calls: the extra memory a call needs beyond its
float32 input and output stays below the size of that input plus output (no float32
im2col of the batch, no integer copy of the output). Measured as the growth of the
process's peak resident set in a fresh interpreter, so C allocations count too."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("axkern._fast")

SCRIPT = r"""
import json, resource, sys
import numpy as np
from axkern import Multiplier, axconv2d, axmatmul

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kilobytes on Linux

kind = sys.argv[1]
rng = np.random.default_rng(0)
t = np.clip(np.outer(np.arange(256), np.arange(256)) + rng.integers(-64, 65, (256, 256)), 0, 65535)
m = Multiplier(t, name="noisy")
# everything loaded and every pool started on a tiny call first
axconv2d(np.ones((1, 4, 4, 4), np.float32), np.ones((3, 3, 1, 4), np.float32), m, groups=4)
axconv2d(np.ones((1, 4, 4, 4), np.float32), np.ones((3, 3, 4, 4), np.float32), m)
axmatmul(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), m)
if kind == "gemm":
    x = rng.standard_normal((8192, 576), dtype=np.float32)
    w = rng.standard_normal((576, 64), dtype=np.float32)
    out_bytes = 8192 * 64 * 4
    call = lambda: axmatmul(x, w, m)
else:
    groups = 64 if kind == "depthwise" else 1
    x = rng.standard_normal((16, 64, 64, 64), dtype=np.float32)
    w = rng.standard_normal((3, 3, 64 // groups, 64), dtype=np.float32)
    out_bytes = x.nbytes
    call = lambda: axconv2d(x, w, m, groups=groups)
before = peak()
y = call()
print(json.dumps(dict(extra=peak() - before - y.nbytes, limit=x.nbytes + out_bytes,
                      out=y.nbytes == out_bytes)))
"""


@pytest.mark.parametrize("kind", ["conv", "depthwise", "gemm"])
def test_peak_extra_memory_below_input_plus_output(kind, tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["out"]
    assert got["extra"] < got["limit"], got
