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
