"""axkern bench --networks (axkern.netbench): the records it reports, on a tiny run (speed
figures are the benchmark's business, not the tests')."""
import pytest

torch = pytest.importorskip("torch")

from axkern import netbench  # noqa: E402
from axkern.cli import main  # noqa: E402


def test_run_networks_records(one_thread):
    (r,) = netbench.run_networks([8], batch=2, repeat=1, copies=1, num_threads=1)
    # ResNet-8 (Keras design) MACs per 32x32 image, written out: first conv, stage convs,
    # the two 1x1 projections, the dense layer
    macs = (1024 * (27 * 16 + 2 * 2304) + 256 * (4608 + 9216) + 64 * (18432 + 36864)
            + 256 * 16 * 32 + 64 * 32 * 64 + 640)
    assert r["macs"] == macs and r["batch"] == 2 and r["threads"] == 1
    assert r["float_s"] > 0 and r["approx_s"] > 0
    assert r["ratio"] == pytest.approx(r["approx_s"] / r["float_s"])
    assert r["approx_10k_s"] == pytest.approx(1e4 / r["approx_ips"])
    assert (r["tfapprox_float_10k_s"], r["tfapprox_approx_10k_s"]) == (4.4, 341)
    o = r["overhead"]
    # every approximated layer (9 convolutions and the dense layer) timed against the bare
    # NumPy-level call, whose output it reproduces bit for bit
    assert [x["layer"] for x in o["layers"]][:2] == ["conv1", "stage1.0.conv1"]
    assert len(o["layers"]) == 10 and o["same_output"]
    assert r["float_part_numpy_s"] > 0 and r["float_part_torch_s"] > 0
    table = netbench.format_networks([r], per_layer=True)
    assert "| ResNet-8 | 12.5 |" in table and "stage3.0.shortcut" in table


def test_cli_bad_depths(capsys):
    assert main(["bench", "--networks", "8,9"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("axkern: error:") and "6n + 2" in err


def test_cli_without_torch_names_the_extra(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)   # import torch -> ImportError
    assert main(["bench", "--networks", "8"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "axkern[torch]"' in err
