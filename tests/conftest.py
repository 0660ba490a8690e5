"""Session-wide test settings."""

import os

import torch

if not torch.cuda.is_available():
    # On CPU the Triton kernels run in the interpreter. Triton reads this when a kernel is decorated, so it
    # must be set before any test module imports lolsearch.kernels (whatever the collection order).
    os.environ.setdefault("TRITON_INTERPRET", "1")
