"""Kernel tests: the Triton interpreter on CPU (set up here, before Triton is imported), real kernels on GPU."""

from __future__ import annotations

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# one launch config per kernel: autotuning every config would multiply the compile time of the GPU tests
os.environ.setdefault("LOLSEARCH_KERNELS_AUTOTUNE", "0")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels"))
from _launch import ensure_importable  # noqa: E402

sys.path.pop(0)
ensure_importable()


@pytest.fixture
def nan_alloc(monkeypatch):
    """torch.empty / empty_like return NaN-filled (floats) or -123456789-filled (ints) tensors, so that an
    element a kernel forgets to write shows up in the comparison (as in fla's tests/conftest.py)."""
    real_empty, real_like = torch.empty, torch.empty_like

    def fill(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype in (torch.int32, torch.int64):
            t.fill_(-123456789)
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_like(*a, **k)))
