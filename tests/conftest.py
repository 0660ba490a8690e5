"""Session-wide test settings."""

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Tests never write into the user's cache: a fresh one per session unless LOLSEARCH_CACHE is set already
# (point it at a persistent folder to keep the downloaded SmolLM2 GGUF between runs). The process that makes the
# fresh one removes it when it exits; pytest-xdist's workers inherit the variable, so they never make their own.
if "LOLSEARCH_CACHE" not in os.environ:
    _session_cache = tempfile.mkdtemp(prefix="lolsearch-test-cache-")
    os.environ["LOLSEARCH_CACHE"] = _session_cache
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)

if not torch.cuda.is_available():
    # On CPU the Triton kernels run in the interpreter. Triton reads this when a kernel is decorated, so it
    # must be set before any test module imports lolsearch.kernels (whatever the collection order).
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks ``serial`` the tests `make test` runs after the others and alone, not beside pytest-xdist workers: the
    Ray sweeps (tests/sweep), which size their clusters to the machine and time their trials. A test that compares
    wall-clock times carries the mark itself."""
    for item in items:
        if item.nodeid.startswith("tests/sweep/"):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def _same_global_seed():
    """Every test starts from the same global RNG state, whatever ran before it: modules draw their init from it, so
    a test's inputs no longer depend on the order or the subset of tests run (a tolerance once failed that way)."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and much faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
