"""Kernel tests: the Triton interpreter on CPU, real kernels on GPU.

The interpreter is chosen when ``@triton.jit`` decorates a kernel, i.e. when ``lolsearch.kernels.hybrid`` /
``decode`` are first imported; the tests import them inside the test functions, after the fixture below has
set ``TRITON_INTERPRET=1`` (only for these tests: other tests keep seeing ``triton_available() == False`` on CPU).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels"))
from _launch import ensure_importable  # noqa: E402

sys.path.pop(0)
ensure_importable()


@pytest.fixture(autouse=True)
def kernel_env(monkeypatch):
    """CPU: run the kernels in the Triton interpreter. Everywhere, unless LOLSEARCH_KERNELS_AUTOTUNE is set: the
    first launch config of each kernel (autotuning, the default of real runs, compiles and times every config at
    each size class: ``kernels/gpu_check.sh`` runs the GPU matrix that way). Unless LOLSEARCH_KERNELS_QUADRATIC_T
    and _PARALLEL_T are set: the hybrid op's walk schedule at every length (the others have their own tests, and a
    run with a variable set, e.g. to 100000, puts every test through that schedule)."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    if "LOLSEARCH_KERNELS_AUTOTUNE" not in os.environ:
        monkeypatch.setenv("LOLSEARCH_KERNELS_AUTOTUNE", "0")
    for name in ("LOLSEARCH_KERNELS_QUADRATIC_T", "LOLSEARCH_KERNELS_PARALLEL_T"):
        if name not in os.environ:  # the walk schedule, unless a test or the run asks
            monkeypatch.setenv(name, "0")


@pytest.fixture
def quadratic(monkeypatch):
    """The hybrid op's quadratic mode at every length (``LOLSEARCH_KERNELS_QUADRATIC_T``) for one test."""
    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", str(1 << 30))


@pytest.fixture
def parallel(monkeypatch):
    """``parallel(seg)``: the hybrid op's parallel schedule at every length, segments of ``seg`` chunks, for one
    test (``LOLSEARCH_KERNELS_PARALLEL_T``, ``_PARALLEL_SEG``; the quadratic mode off)."""

    def set_(seg: int) -> None:
        monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "0")
        monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_T", str(1 << 30))
        monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_SEG", str(seg))

    return set_


@pytest.fixture
def schedule(monkeypatch, parallel):
    """``schedule(mode)``: the hybrid op's "walk", "quadratic" or "parallel" (segments of 2 chunks) schedule at every
    length, for one test."""

    def set_(mode: str) -> None:
        if mode == "parallel":
            parallel(2)
        else:
            monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", str(1 << 30) if mode == "quadratic" else "0")
            monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_T", "0")

    return set_


@pytest.fixture
def nan_alloc(monkeypatch):
    """torch.empty / empty_like return NaN-filled (floats) or -123456789-filled (ints) tensors, so that an
    element a kernel forgets to write shows up in the comparison (as in fla's tests/conftest.py)."""
    from kernel_testlib import nan_filled

    real_empty, real_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_filled(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_filled(real_like(*a, **k)))
