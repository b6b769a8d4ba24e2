"""Shared pytest fixtures for the axkern tests (keep this file small)."""
import os
import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Point axkern's table cache at a fresh directory so tests never read or fill the user's
    ~/.cache/axkern, and always exercise the uncached path first."""
    old = os.environ.get("AXKERN_CACHE_DIR")
    os.environ["AXKERN_CACHE_DIR"] = str(tmp_path_factory.mktemp("axkern-cache"))
    yield
    if old is None:
        os.environ.pop("AXKERN_CACHE_DIR", None)
    else:
        os.environ["AXKERN_CACHE_DIR"] = old


@pytest.fixture
def fixtures_dir():
    """Directory of the C and table fixtures (tests/fixtures)."""
    return FIXTURES


@pytest.fixture
def one_thread():
    """PyTorch on one thread for the test (tiny layers: one thread is fastest and robust on a
    busy machine, where spinning OpenMP workers of two threads on loaded cores cost 20x)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cluster(request):
    """A local Dask cluster on 127.0.0.1 for the searches of a test module (skipped without
    pymoo or distributed): the module's ``DASK_WORKERS`` worker processes (default 1)."""
    import logging

    pytest.importorskip("pymoo", reason='the search needs pymoo: pip install "axkern[search]"')
    distributed = pytest.importorskip("distributed")
    c = distributed.LocalCluster(n_workers=getattr(request.module, "DASK_WORKERS", 1),
                                 threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def run_contended():
    """``run((fn, *args), ...)``: the calls in threads at once, the interpreter switching
    between them every 10 us (instead of 5 ms), so that races in Python-level caches show."""
    import sys
    import threading

    def run(*calls):
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        try:
            threads = [threading.Thread(target=c[0], args=c[1:]) for c in calls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)

    return run
