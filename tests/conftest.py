"""Session-wide test settings."""

import os

import pytest
import torch

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
