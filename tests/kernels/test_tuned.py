"""What ``tuned`` offers the autotuner: every option when autotuning, the register-capped ones only while
LOLSEARCH_KERNELS_REG_CAPS is on, the first option alone otherwise."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.parametrize(("autotune", "caps", "want"), [
    (True, True, [(4, 1, None), (8, 2, None), (4, 1, 168)]),
    (True, False, [(4, 1, None), (8, 2, None)]),
    (False, True, [(4, 1, None)]),
])
def test_offered_configs(monkeypatch, autotune, caps, want):
    import triton
    from lolsearch.kernels import _common

    monkeypatch.setattr(_common, "AUTOTUNE", autotune)
    monkeypatch.setattr(_common, "REG_CAPS", caps)

    @_common.tuned([(4, 1), (8, 2), (4, 1, 168)], key=["N"])
    @triton.jit
    def kernel(x, N: triton.language.constexpr):
        pass

    assert [(c.num_warps, c.num_stages, c.maxnreg) for c in kernel.configs] == want
