"""Faults a user can hit around processes and files: survey workers that die, signals to
`axkern lut` while a C driver runs, circuits that flood or hold their output, a damaged table
cache. Every test runs the real thing (child processes, the C compiler, /proc) with short
timeouts, and kills whatever it started in a `finally`."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np
import pytest

from axkern import csource
from axkern.csource import cache_dir, tabulate_c

U8 = np.arange(256, dtype=np.int64)
EXACT_U8 = np.multiply.outer(U8, U8)
LINUX = sys.platform.startswith("linux")
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
                              reason="no C compiler")
needs_proc = pytest.mark.skipif(not LINUX or not os.path.isdir("/proc/self"),
                                reason="needs Linux /proc (and its parent-death signal)")


def _env(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


def _pids_mentioning(text, program=False):
    """Live processes whose command line (with ``program``: its program, argv[0]) contains
    ``text`` (the test's private temp dir)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if program:
            cmd = cmd.split(b"\0")[0]
        if state != b"Z" and text.encode() in cmd:
            found.append(int(entry))
    return found


def _wait_for(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def _run_script(argv, cwd, timeout):
    """Run a Python child in its own session; on any way out, kill its whole process group
    (spawned workers included). (returncode, stdout, stderr) as text."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
    return proc.returncode, out, err


def _kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ------------------------------------------------------------------ item 5: survey workers
# four blank digits: no data set to load, so the child starts fast
_SURVEY_ARGS = ('multipliers=["mul8u_exact"], jobs=2, output=None, tune=False, progress=False, '
                'plot=False, verbose=False, data=(np.zeros((4, 8, 8, 1), np.float32), '
                'np.zeros(4, np.int64))')


def test_survey_jobs_without_main_guard_fails_fast_naming_the_guard(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text("import numpy as np\nfrom axkern.survey import survey\n"
                      f"r = survey({_SURVEY_ARGS})\nprint('finished')\n")
    t0 = time.monotonic()
    rc, out, err = _run_script([sys.executable, str(script)], tmp_path, 30)
    assert rc != 0 and "finished" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("RuntimeError") and 'if __name__ == "__main__":' in last
    assert str(script) in last
    assert time.monotonic() - t0 < 25


def test_survey_worker_killed_midway_ends_with_error(tmp_path):
    # a model whose evaluation kills its own (worker) process: the pool must notice
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, signal
        import numpy as np
        from axkern.survey import load_shipped_model, survey

        class Killer:
            def __init__(self, net):
                self.net, self.name, self.metadata = net, "killer", net.metadata
                self.compute_layers = net.compute_layers
            def configure(self, *a, **k):
                return self.net.configure(*a, **k)
            def settings(self):
                return self.net.settings()
            def copy(self):
                return Killer(self.net.copy())
            def accuracy(self, *a, **k):
                if multiprocessing.parent_process() is not None:
                    os.kill(os.getpid(), signal.SIGKILL)
                return self.net.accuracy(*a, **k)

        if __name__ == "__main__":
            survey(Killer(load_shipped_model()), {_SURVEY_ARGS})
            print("finished")
        """))
    rc, out, err = _run_script([sys.executable, str(script)], tmp_path, 30)
    assert rc != 0 and "finished" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("RuntimeError") and "worker process died" in last
    assert "after 0 of 1 evaluations" in last


# ------------------------------------------------------------------ item 6: signals
SLOW_C = ("#include <stdint.h>\n"
          "uint16_t slow(uint8_t a, uint8_t b) { volatile unsigned long i = 0; "
          "for (;;) i++; return a * b; }\n")


@needs_cc
@needs_proc
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_lut_killed_by_signal_leaves_no_driver_and_no_temp_dir(tmp_path, sig):
    signum = getattr(signal, sig)
    src = tmp_path / "slow.c"
    src.write_text(SLOW_C)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    cmd = [sys.executable, "-m", "axkern", "lut", str(src), "-o", str(tmp_path / "o.bin"),
           "--timeout", "30"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(TMPDIR=str(tmpdir), AXKERN_CACHE_DIR=str(tmp_path / "c")))
    try:
        # the driver runs as <temp dir>/axkern-c-*/axkern_driver (the compiler only names it)
        driver = _wait_for(lambda: _pids_mentioning(str(tmpdir), program=True), 20)
        assert driver, "the tabulating driver never started"
        time.sleep(0.2)  # let it settle into the endless loop
        # its CPU-time limit follows --timeout 30: 31 s, then SIGKILL at 32 s
        with open(f"/proc/{driver[0]}/limits") as f:
            cpu = next(line for line in f if line.startswith("Max cpu time")).split()
        assert cpu[3:5] == ["31", "32"]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
        if signum == signal.SIGKILL:
            assert proc.returncode == -signum
        else:
            assert proc.returncode == 128 + signum, err
            assert err.decode().strip().splitlines()[-1].startswith("axkern: ")
        left = _wait_for(lambda: not _pids_mentioning(str(tmpdir)), 5)
        assert left, f"driver still running after {sig}: {_pids_mentioning(str(tmpdir))}"
        assert [n for n in os.listdir(tmpdir) if n.startswith("axkern")] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(_pids_mentioning(str(tmpdir)))


# ------------------------------------------------------------------ item 7: flooded output
@needs_cc
@pytest.mark.skipif(not LINUX, reason="peak memory read from ru_maxrss in KiB (Linux)")
def test_circuit_output_is_not_kept_in_memory(tmp_path):
    # 65536 calls x 4 KiB = 256 MiB on stdout, then a crash after 1 MiB on stderr
    flood = tmp_path / "flood.c"
    flood.write_text("#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n"
                     "static char buf[4096];\n"
                     "uint16_t f(uint8_t a, uint8_t b) { memset(buf, 'x', sizeof buf); "
                     "fwrite(buf, 1, sizeof buf, stdout); return a * b; }\n")
    crash = tmp_path / "crash.c"
    crash.write_text("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
                     "uint16_t g(uint8_t a, uint8_t b) { int k; if (a == 0 && b == 0) {"
                     " for (k = 0; k < 16384; k++) fprintf(stderr, \"line %05d of junk %s\\n\", k,"
                     " \"0123456789012345678901234567890123456789\");"
                     " fprintf(stderr, \"THE LAST WORD\\n\"); abort(); } return a * b; }\n")
    code = textwrap.dedent(f"""
        import resource, numpy as np
        from axkern.csource import tabulate_c, CExecutionError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = tabulate_c({str(flood)!r}, cache=False, timeout=20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.array_equal(m.table, np.multiply.outer(np.arange(256), np.arange(256)))
        try:
            tabulate_c({str(crash)!r}, cache=False, timeout=20)
        except CExecutionError as e:
            msg = str(e)
        print((after - before) // 1024, len(msg), "THE LAST WORD" in msg, "SIGABRT" in msg)
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    grew_mib, msg_len, has_last, has_sig = r.stdout.split()
    assert int(grew_mib) < 64  # the 256 MiB of output were not kept
    assert int(msg_len) < 8000 and has_last == "True" and has_sig == "True"


# ------------------------------------------------------------------ item 8: held output
@needs_cc
@needs_proc
def test_child_holding_stdout_does_not_delay_the_table(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    src = tmp_path / "forker.c"
    src.write_text("#include <stdint.h>\n#include <unistd.h>\n"
                   "static int forked;\n"
                   "uint16_t f(uint8_t a, uint8_t b) {\n"
                   "    if (!forked) { forked = 1; if (fork() == 0) { sleep(30); _exit(0); } }\n"
                   "    return a * b;\n}\n")
    try:
        t0 = time.monotonic()
        m = tabulate_c(src, cache=False, timeout=20)   # the child sleeps 30 s
        took = time.monotonic() - t0
        assert np.array_equal(m.table, EXACT_U8)
        assert took < 15, f"took {took:.1f} s"
        # the forked child went with the driver's process group
        assert _wait_for(lambda: not _pids_mentioning(str(tmpdir)), 3)
        assert [n for n in os.listdir(tmpdir) if n.startswith("axkern")] == []
    finally:
        _kill_all(_pids_mentioning(str(tmpdir)))


# ------------------------------------------------------------------ cache (items 11, 19)
def _cache_entries(d):
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


@needs_cc
def test_cache_entry_with_a_flipped_bit_is_rebuilt(tmp_path, monkeypatch, fixtures_dir):
    cdir = tmp_path / "cache"
    monkeypatch.setenv("AXKERN_CACHE_DIR", str(cdir))
    src = fixtures_dir / "style1_asym_u.c"  # a * b + (a & 3), written out in NumPy here
    want = EXACT_U8 + (U8 & 3)[:, None]
    assert np.array_equal(tabulate_c(src).table, want)
    (entry,) = _cache_entries(cdir)
    good = entry.read_bytes()
    for pos in (len(good) - 1, len(good) // 2):  # in the table data, wherever it lies
        bad = bytearray(good)
        bad[pos] ^= 0x10
        entry.write_bytes(bytes(bad))
        assert np.array_equal(tabulate_c(src).table, want), pos
        assert entry.read_bytes() == good  # rewritten
    # shorter, longer, empty, garbage, hostile .npy headers: never used, never raised
    hostile = []
    for shape in ("(10**12, 10**12)", "(256, 256, }"):
        header = ("{'descr': '<i4', 'fortran_order': False, 'shape': %s, }" % shape).encode()
        header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
        hostile.append(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                       + b"\0" * 1024)
    key = entry.name[2:-4]  # c-KEY.tbl
    for damaged in [good[:-4], good + b"\0" * 4, b"", b"\x93NUMPY garbage"] + hostile:
        entry.write_bytes(damaged)
        assert csource._cache_load(key, 8) is None
    assert np.array_equal(tabulate_c(src).table, want)  # the last one, rebuilt
    assert entry.read_bytes() == good
    # a directory in the way: rebuilt, not raised (the warning is tested below)
    entry.unlink()
    entry.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(tabulate_c(src).table, want)


def test_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("AXKERN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == os.path.join(str(tmp_path / "xdg"), "axkern")
    monkeypatch.setenv("AXKERN_CACHE_DIR", str(tmp_path / "mine"))  # the override wins
    assert cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("AXKERN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "axkern")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "axkern")


@needs_cc
def test_unusable_cache_dir_is_reported_once(tmp_path, monkeypatch, fixtures_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    where = str(blocker / "sub")
    monkeypatch.setenv("AXKERN_CACHE_DIR", where)  # cannot be created: a file is in the way
    src = fixtures_dir / "style1_exact_u.c"
    with pytest.warns(RuntimeWarning) as record:
        assert tabulate_c(src).is_exact()
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1 and where in msgs[0] and "AXKERN_CACHE_DIR" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second time: no new warning
        assert tabulate_c(src).is_exact()
    assert blocker.read_text() == "x"
