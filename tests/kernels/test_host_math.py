"""The launch paths' host integer helpers against Triton's constexpr versions."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def test_cdiv_and_next_pow2_match_triton():
    import triton
    from lolsearch.kernels._common import block, cdiv, next_pow2, tune_bucket

    for a in range(0, 300):
        for b in (1, 2, 3, 16, 64, 100):
            assert cdiv(a, b) == triton.cdiv(a, b)
    for n in range(1, 5000):
        assert next_pow2(n) == triton.next_power_of_2(n)
    assert next_pow2(0) == 1 and block(3) == 16 and block(100) == 128
    assert tune_bucket(9, 1000) == triton.next_power_of_2(9 * triton.cdiv(1000, 64))
