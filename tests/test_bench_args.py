"""Argument handling of ``axkern bench`` and of the benchmark tools (tools/bench_*.py): a user
error is one ``<prog>: error: ...`` line (after argparse's usage, for usage errors) with exit
status 2 (usage) or 1, never a traceback, and nothing measures nothing silently.

Fast: only argument checks and error paths, plus a few runs of ``--repeat 1`` / ``--rounds 1``
on the smallest shapes; never a full benchmark.
"""
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from axkern import _fast
from axkern.backends import freeze_table

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
UNSUPPORTED = [p for p in _fast.PATHS if p not in _fast.available_paths()]
SMALL_GEMM = "gemm 8x2048x1024"


# the axkern these tests imported (built in place, or installed: in an installed run the
# source tree next to the tests has no compiled kernels, so it must not come first)
PACKAGE_PARENT = pathlib.Path(_fast.__file__).resolve().parent.parent


def _run(cmd, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_PARENT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                 if p]))
    # not from the source tree: "python -m" puts the working directory first on sys.path
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tempfile.gettempdir())


def bench(*args):
    return _run(["-m", "axkern", "bench", *args])


def tool(name, *args):
    script = TOOLS / name
    if not script.is_file():
        pytest.skip("tools/ is not next to the tests")
    return _run([str(script), *args])


def error_line(proc, status, prog, *words):
    """The one error line of ``proc`` (its last stderr line), after checking the exit status,
    that there is no traceback and that the line names every one of ``words``."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr
    assert errors[0].startswith(f"{prog}: error: "), proc.stderr
    if status == 1:
        assert len(lines) == 1, proc.stderr   # no usage for a non-usage error
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def squeeze(text):
    return " ".join(text.split())


# ------------------------------------------------------------------------ axkern bench
@pytest.mark.parametrize("args, words", [
    (["--threads", "-1"], ["--threads"]),
    (["--threads", "0"], ["--threads"]),
    (["--repeat", "0"], ["--repeat"]),
    (["--runs", "0"], ["--runs"]),
    (["--paths", ","], ["--paths", "names nothing"]),
    (["--paths", "mmx"], ["--paths", "'mmx'", "avx2"]),
    (["--methods", "nosuch"], ["--methods", "nosuch", "direct"]),
    (["--methods", ","], ["--methods", "names nothing"]),
    (["--shapes", "foo"], ["--shapes", "foo"]),
    (["--batch", "4"], ["--batch", "--networks"]),
    (["--networks", "8", "--batch", "0"], ["--batch"]),
])
def test_bench_usage_errors(args, words):
    error_line(bench(*args), 2, "axkern bench", *words)


@pytest.mark.skipif(not UNSUPPORTED, reason="this CPU runs every dispatch path")
def test_bench_unsupported_path():
    error_line(bench("--paths", UNSUPPORTED[0]), 2, "axkern bench", UNSUPPORTED[0],
               "not supported by this CPU")


def test_bench_networks_refuses_kernel_options():
    proc = bench("--networks", "8", "--batch", "2", "--repeat", "1", "--runs", "1", "--signed",
                 "--shapes", "foo", "--paths", "scalar", "--methods", "nosuch", "--kernel-only",
                 "--no-torch")
    line = error_line(proc, 2, "axkern bench", "--networks")
    for opt in ("--paths", "--shapes", "--methods", "--runs", "--kernel-only", "--signed",
                "--no-torch"):
        assert opt in line
    assert proc.stdout == ""


def test_bench_nothing_to_time_is_an_error():
    proc = bench("--methods", "depthwise", "--shapes", SMALL_GEMM, "--repeat", "1",
                 "--kernel-only", "--no-torch", "--json")
    error_line(proc, 1, "axkern bench", "nothing to time", "depthwise", SMALL_GEMM)
    assert proc.stdout == ""


def test_bench_skipped_pairs_noted_and_duplicates_dropped():
    proc = bench("--paths", "scalar,scalar", "--methods", "direct,depthwise,direct", "--shapes",
                 f"{SMALL_GEMM},{SMALL_GEMM}", "--repeat", "1", "--kernel-only", "--no-torch",
                 "--json")
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(proc.stdout)
    assert [(r["shape"], r["path"], r["method"]) for r in recs] == [(SMALL_GEMM, "scalar",
                                                                     "direct")]
    (note,) = proc.stderr.strip().splitlines()
    assert note.startswith("axkern bench: note: ") and "'depthwise'" in note
    assert SMALL_GEMM in note and "scalar" in note


def test_bench_cpu_usage_is_truthful():
    proc = tool("bench_cpu.py", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: bench_cpu [-h]") and "bench_cpu bench" not in proc.stdout


@pytest.mark.parametrize("args, status, words", [
    (["--shapes", "foo"], 2, ["--shapes", "foo"]),
    (["--repeat", "0"], 2, ["--repeat"]),
    (["--paths", "nosuch"], 2, ["--paths", "nosuch"]),
    (["--threads", "-1"], 2, ["--threads"]),
    (["--batch", "2"], 2, ["--batch"]),
    (["--networks", "8,9"], 1, ["6n + 2"]),
])
def test_bench_cpu_errors(args, status, words):
    error_line(tool("bench_cpu.py", *args), status, "bench_cpu", *words)


@pytest.mark.skipif(not UNSUPPORTED, reason="this CPU runs every dispatch path")
def test_bench_cpu_unsupported_path():
    error_line(tool("bench_cpu.py", "--paths", UNSUPPORTED[0]), 2, "bench_cpu", UNSUPPORTED[0])


def test_run_bench_empty_lists_and_threads():
    from axkern import bench

    for kw in (dict(paths=[]), dict(methods=[]), dict(shapes=[]), dict(num_threads=-1)):
        with pytest.raises(ValueError):
            bench.run_bench(repeat=1, torch=False, api=False, **kw)


def test_bench_inputs_take_a_new_range_every_call():
    """The float-level calls' input changes its range before every call (a new maximum in
    its first value, the rest as it was), so that no call finds its quantization
    parameters remembered from the one before."""
    from axkern import bench
    from axkern.quant import tf_quant_params

    x = np.random.default_rng(3).standard_normal((4, 5, 6)).astype(np.float32)
    new = bench._NewRange(x.copy())
    seen = set()
    for _ in range(50):
        y = new()
        np.testing.assert_array_equal(y.flat[1:], x.flat[1:])
        assert y.flat[0] == y.max() > np.abs(x).max()
        p = tf_quant_params(y.min(), y.max())
        seen.add((float(y.max()), p.scale.tobytes()))
    assert len(seen) == 50


# ------------------------------------------------------------------------- --networks
@pytest.mark.parametrize("args, words", [
    (["--depths", "8", "--batch", "0"], ["--batch"]),
    (["--threads", "0"], ["--threads"]),
    (["--copies", "0"], ["--copies"]),
    (["--depths", ","], ["6n + 2"]),
])
def test_bench_networks_usage_errors(args, words):
    error_line(tool("bench_networks.py", *args), 2, "bench_networks", *words)


def test_bench_networks_unknown_multiplier():
    pytest.importorskip("torch")
    proc = tool("bench_networks.py", "--depths", "8", "--batch", "1", "--repeat", "1",
                "--copies", "1", "--multiplier", "nosuch")
    error_line(proc, 1, "bench_networks", "nosuch")
    assert proc.stdout == ""   # no header before the arguments are checked


def test_netbench_report_checks_before_the_header(capsys):
    from axkern import netbench

    for kw in (dict(batch=0), dict(repeat=0), dict(copies=0), dict(num_threads=-1)):
        with pytest.raises(ValueError):
            netbench.report([8], **kw)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------ bench_methods
@pytest.mark.parametrize("args, words", [
    (["--methods", "nosuch,direct"], ["--methods", "nosuch"]),
    (["--methods", "direct"], ["--methods", "two"]),
    (["--methods", "direct,direct"], ["--methods", "two different"]),
    (["--paths", "nosuch"], ["--paths", "nosuch"]),
    (["--paths", ","], ["--paths"]),
    (["--threads", "-1"], ["--threads"]),
    (["--rounds", "0"], ["--rounds"]),
    (["--depthwise", "1,2"], ["--depthwise", "N,H,W,C"]),
    (["--depthwise", "1,4,4,0"], ["--depthwise"]),
    (["--shapes", "foo"], ["foo"]),
    (["--multiplier", "nosuch"], ["--multiplier", "nosuch"]),
])
def test_bench_methods_usage_errors(args, words):
    error_line(tool("bench_methods.py", *args), 2, "bench_methods.py", *words)


@pytest.mark.skipif(not UNSUPPORTED, reason="this CPU runs every dispatch path")
def test_bench_methods_unsupported_path():
    proc = tool("bench_methods.py", "--methods", "direct,expand", "--paths", UNSUPPORTED[0],
                "--rounds", "1")
    error_line(proc, 2, "bench_methods.py", UNSUPPORTED[0], "not supported by this CPU")


def test_bench_methods_says_what_it_skipped():
    proc = tool("bench_methods.py", "--methods", "direct,depthwise", "--shapes", SMALL_GEMM,
                "--paths", "scalar", "--rounds", "1")
    error_line(proc, 1, "bench_methods.py", "nothing timed")
    assert "skipped" in proc.stdout and "depthwise cannot serve it" in proc.stdout
    proc = tool("bench_methods.py", "--methods", "direct,depthwise", "--depthwise", "1,4,4,8",
                "--paths", "scalar", "--rounds", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "GMAC/s" in proc.stdout and "skipped" not in proc.stdout


def test_bench_methods_on_a_shipped_table():
    """--multiplier times the multiplier's own table, which the factored method takes by its
    factors (the synthetic table has none: the factored method cannot serve it)."""
    args = ("--methods", "depthwise,factored", "--depthwise", "1,4,4,8", "--paths", "scalar",
            "--rounds", "1", "--threads", "1")
    proc = tool("bench_methods.py", *args, "--multiplier", "mul8u_drum4")
    assert proc.returncode == 0, proc.stderr
    assert "table of mul8u_drum4" in proc.stdout and "factored" in proc.stdout
    assert "GMAC/s" in proc.stdout and "skipped" not in proc.stdout
    proc = tool("bench_methods.py", *args)
    error_line(proc, 1, "bench_methods.py", "nothing timed")
    assert "factored cannot serve it" in proc.stdout


# ------------------------------------------------------------------------- bench_stages
@pytest.mark.parametrize("args, words", [
    (["--threads", "-1"], ["--threads"]),
    (["--multiplier", "nosuch"], ["--multiplier", "nosuch"]),
    (["--rounds", "0"], ["--rounds"]),
    (["--shapes", ","], ["--shapes"]),
])
def test_bench_stages_usage_errors(args, words):
    error_line(tool("bench_stages.py", *args), 2, "bench_stages.py", *words)


def test_bench_stages_help():
    proc = tool("bench_stages.py", "--help")
    assert proc.returncode == 0
    out = squeeze(proc.stdout)
    assert "next to the whole call, in both layouts." in out   # the whole first paragraph
    assert "(default: all)" in out


# --------------------------------------------------------------- bench_conv, bench_onnx
@pytest.mark.parametrize("args, words", [
    (["--repeat", "0"], ["--repeat"]),
    (["--batch", "0"], ["--batch"]),
    (["--reference-batch", "0"], ["--reference-batch"]),
    (["--threads", "-1"], ["--threads"]),
    (["--backends", "nosuch"], ["--backends", "nosuch"]),
    (["--multiplier", "nosuch"], ["--multiplier", "nosuch"]),
])
def test_bench_conv_usage_errors(args, words):
    error_line(tool("bench_conv.py", *args), 2, "bench_conv.py", *words)


@pytest.mark.parametrize("args, words", [
    (["--repeat", "0"], ["--repeat"]),
    (["--batch", "0"], ["--batch"]),
    (["--multiplier", "nosuch"], ["--multiplier", "nosuch"]),
])
def test_bench_onnx_usage_errors(args, words):
    error_line(tool("bench_onnx.py", *args), 2, "bench_onnx.py", *words)


# -------------------------------------------------------------------- bench_range_check
def test_bench_range_check_parses_its_arguments():
    proc = tool("bench_range_check.py", "--help")
    assert proc.returncode == 0 and "--cases" in proc.stdout and "--rounds" in proc.stdout
    assert "ms with the check" not in proc.stdout   # it did not run the benchmark
    error_line(tool("bench_range_check.py", "extra"), 2, "bench_range_check.py", "extra")
    error_line(tool("bench_range_check.py", "--cases", "foo"), 2, "bench_range_check.py", "foo")
    error_line(tool("bench_range_check.py", "--rounds", "0"), 2, "bench_range_check.py",
               "--rounds")


@pytest.mark.skipif("avx2" not in _fast.available_paths() or not shutil.which("gcc"),
                    reason="the C driver needs gcc and an AVX2 CPU")
def test_c_driver_of_rows_checks_its_loops(tmp_path):
    # tools/drivers/rows_u8.c backs a figure in docs/performance.md: it must still build and
    # its loops still match plain C sums (one timed round only); bad arguments exit 2
    exe = tmp_path / "rows_u8"
    subprocess.run(["gcc", "-O2", "-mavx2", "-o", str(exe),
                    str(TOOLS / "drivers" / "rows_u8.c")], check=True, capture_output=True)
    for codes in ("256", "7"):
        r = subprocess.run([str(exe), codes, "1"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[0] == "check ok"
        assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == [
            "int16x16", "u8x32", "u8x32+pmadd"]
    bad = subprocess.run([str(exe), "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.skipif(not shutil.which("gcc") or platform.machine() not in ("x86_64", "AMD64"),
                    reason="the C driver needs gcc on x86-64")
def test_c_driver_of_instruction_costs(tmp_path):
    # tools/drivers/ports.c backs the table of instruction costs in docs/performance.md: it
    # must build; where the CPU has the instructions, a short run prints a cost for each
    # (at least a quarter of a dependent vpaddd: no chain merged away), else it exits 2
    exe = tmp_path / "ports"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(TOOLS / "drivers" / "ports.c")],
                   check=True, capture_output=True)
    bad = subprocess.run([str(exe), "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr
    r = subprocess.run([str(exe), "200000"], capture_output=True, text=True, timeout=120)
    # the CPU has VBMI and VNNI where the exact table takes the byte-residual form
    exact = np.multiply.outer(np.arange(256), np.arange(256)).astype(np.int32)
    if "avx512_vbmi" not in _fast.available_paths() or \
            not _fast.byte_residual(freeze_table(exact), "avx512_vbmi"):
        assert r.returncode == 2 and "lacks" in r.stderr
        return
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("clock ") and len(lines) == 9
    names = [line.split("  ")[1].strip() for line in lines[1:]]
    assert names[0] == "vpermi2b zmm" and names[-1] == "vpshufb ymm"
    for line in lines[1:]:
        cycles = float(line.split()[-2])
        assert 0.2 <= cycles <= 50, line


# ------------------------------------------------------- bench_resnet18, bench_mobilenet
IMAGENET_TOOLS = [("bench_resnet18.py", "ResNet-18"), ("bench_mobilenet.py", "MobileNetV2")]


@pytest.mark.parametrize("name", [t for t, _ in IMAGENET_TOOLS])
@pytest.mark.parametrize("args, words", [
    (["--batch", "0"], ["--batch"]),
    (["--size", "x"], ["--size"]),
    (["--threads", "-1"], ["--threads"]),
    (["--repeat", "0"], ["--repeat"]),
])
def test_imagenet_bench_usage_errors(name, args, words):
    error_line(tool(name, *args), 2, name, *words)


@pytest.mark.parametrize("name", [t for t, _ in IMAGENET_TOOLS])
def test_imagenet_bench_unknown_multiplier(name):
    proc = tool(name, "--multiplier", "nosuch", "--size", "32")
    error_line(proc, 1, name, "nosuch")


@pytest.mark.parametrize("name, title", IMAGENET_TOOLS)
def test_imagenet_bench_runs(name, title):
    pytest.importorskip("torch")
    proc = tool(name, "--size", "32", "--repeat", "1", "--threads", "1",
                "--multiplier", "mul8u_drum4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"{title}, batch 1, 32 x 32, multiplier mul8u_drum4")
    assert lines[1].startswith("float32 PyTorch ") and " ratio " in lines[1]


def test_mobilenet_v2_layout():
    """The published MobileNetV2: 3,504,872 parameters (batch normalizations' scales and
    shifts included), 52 convolutions of which 17 depthwise, and 7 x 7 maps of 1280
    channels before the pooling at 224 x 224."""
    torch = pytest.importorskip("torch")
    if not (TOOLS / "bench_mobilenet.py").is_file():
        pytest.skip("tools/ is not next to the tests")
    sys.path.insert(0, str(TOOLS))
    try:
        from bench_mobilenet import mobilenet_v2
    finally:
        sys.path.remove(str(TOOLS))
    net = mobilenet_v2().eval()
    assert sum(p.numel() for p in net.parameters()) == 3504872
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 52
    assert sum(m.groups > 1 and m.groups == m.in_channels for m in convs) == 17
    with torch.no_grad():
        y = net[:-3](torch.zeros(1, 3, 224, 224))
    assert tuple(y.shape) == (1, 1280, 7, 7)
