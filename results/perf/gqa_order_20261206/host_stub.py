"""CPU-only: the Python part of one ``hybrid_attention`` forward, with the Triton launches stubbed out, using the
launch paths' host integer helpers and then Triton's constexpr ``cdiv`` / ``next_power_of_2`` in their place.

    .venv/bin/python results/perf/gqa_order_20261206/host_stub.py

Shape: batch 1, 2 query / 1 kv head, T 256, D = F = 128, bf16, sliding 64 (small, so the CPU tensors cost little).
"""

from __future__ import annotations

import time

import torch
import triton
from lolsearch.kernels import _common, hybrid


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def main() -> None:
    for name in ("seg_sums_kernel", "scan_kernel", "fwd_state_kernel", "fwd_window_kernel"):
        setattr(hybrid, name, _NoLaunch())
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 256, 128, generator=gen).bfloat16()
    k = torch.randn(1, 1, 256, 128, generator=gen).bfloat16()
    fq = torch.rand(1, 2, 256, 128, generator=gen).bfloat16()
    x = (q, k, k.clone(), fq, fq.clone(), torch.full((2,), 0.5))
    helpers = {"host helpers": (_common.cdiv, _common.next_pow2), "triton's": (triton.cdiv, triton.next_power_of_2)}
    with torch.no_grad():
        for rnd in range(3):
            for label, (cdiv, pow2) in helpers.items():
                _common.cdiv, _common.next_pow2, hybrid.cdiv = cdiv, pow2, cdiv
                for _ in range(200):
                    hybrid.hybrid_attention(*x, 64, "sliding")
                t0 = time.perf_counter()
                for _ in range(3000):
                    hybrid.hybrid_attention(*x, 64, "sliding")
                us = (time.perf_counter() - t0) / 3000 * 1e6
                print(f"round {rnd} {label:12s}: {us:5.1f} us per forward (Python part)")  # noqa: T201


if __name__ == "__main__":
    main()
