"""Session-wide test settings."""

import os
import tempfile

import pytest
import torch

# Tests never write into the user's cache: a fresh one per session unless LOLSEARCH_CACHE is set already
# (point it at a persistent folder to keep the downloaded SmolLM2 GGUF between runs).
os.environ.setdefault("LOLSEARCH_CACHE", tempfile.mkdtemp(prefix="lolsearch-test-cache-"))

if not torch.cuda.is_available():
    # On CPU the Triton kernels run in the interpreter. Triton reads this when a kernel is decorated, so it
    # must be set before any test module imports lolsearch.kernels (whatever the collection order).
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and much faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
