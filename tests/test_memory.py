"""Peak memory of the fast float-level calls: the extra memory a call needs beyond its
float32 input and output stays below the size of that input plus output (no float32
im2col of the batch, no integer copy of the output). Measured in a fresh interpreter as the
peak resident set during the call (reset just before it) minus the resident set before it
and the output, so C allocations count too."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("axkern._fast")

SCRIPT = r"""
import ctypes, json, resource, sys
import numpy as np
from axkern import Multiplier, axconv2d, axmatmul

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024

# Start the peak resident set (VmHWM) afresh at the current size, so that a call's peak is
# not hidden by the larger peak of the setup (Linux >= 4.0). 0 where that is not possible:
# then the call's growth over the setup's peak is measured (ru_maxrss).
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS:")
    except OSError:
        return 0

def peak(reset):
    if reset:
        return status("VmHWM:")
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
    # the ResNet-8 layers at batch 32 (expanded tables), or a larger image
    C, HW = {"resnet16": (16, 32), "resnet32": (32, 16), "resnet64": (64, 8)}.get(kind, (64, 64))
    x = rng.standard_normal((32 if kind.startswith("resnet") else 16, HW, HW, C), dtype=np.float32)
    w = rng.standard_normal((3, 3, C // groups, C), dtype=np.float32)
    out_bytes = x.nbytes
    call = lambda: axconv2d(x, w, m, groups=groups)
if kind.startswith("resnet"):
    # a network layer in its steady state: the one-time caches of a layer (its quantized
    # filter, folded and prepared tables: about 0.7 MB, as much as the whole input and
    # output of these small layers) are filled by the first batch. The memory that call
    # freed goes back to the system, so that the next call's buffers count again.
    y0 = call()
    ctypes.CDLL(None).malloc_trim(0)
base = reset_peak()
before = base or peak(0)
y = call()
print(json.dumps(dict(extra=peak(base) - before - y.nbytes, limit=x.nbytes + out_bytes,
                      out=y.nbytes == out_bytes)))
"""


@pytest.mark.parametrize("kind", ["conv", "depthwise", "gemm", "resnet16", "resnet32", "resnet64"])
def test_peak_extra_memory_below_input_plus_output(kind, tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["out"]
    assert got["extra"] < got["limit"], got
