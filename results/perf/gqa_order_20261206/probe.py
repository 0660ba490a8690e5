"""GPU probe (2026-12-06): the 32K forward's kernels for Nsight Compute, or the eager 2K forward's host path.

    python3 results/perf/gqa_order_20261206/probe.py fwd32k       # run under ncu: two forwards, the second profiled
    python3 results/perf/gqa_order_20261206/probe.py host2k OUT   # cProfile of 300 eager forwards -> OUT

Llama-3-8B heads (32 query / 8 kv heads, D = F = 128), bf16, batch 1, sliding window 64, as the bench.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import torch
from lolsearch.kernels import hybrid_attention


def inputs(t: int) -> list[torch.Tensor]:
    gen = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(1, 32, t, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, t, 128, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(2))
    fq, fk = (torch.softmax(torch.randn(1, 32, t, 2, 64, device="cuda", generator=gen), -1).reshape(1, 32, t, 128)
              .to(torch.bfloat16) for _ in range(2))
    return [q, k, v, fq, fk, torch.full((32,), 0.5, device="cuda")]


def main() -> None:
    what = sys.argv[1]
    with torch.no_grad():
        if what == "fwd32k":
            x = inputs(32768)
            for _ in range(2):
                hybrid_attention(*x, 64, "sliding")
            torch.cuda.synchronize()
            return
        x = inputs(2048)
        for _ in range(50):
            hybrid_attention(*x, 64, "sliding")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(300):
            hybrid_attention(*x, 64, "sliding")
        host = (time.perf_counter() - t0) / 300
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 300
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            hybrid_attention(*x, 64, "sliding")
        prof.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        with open(sys.argv[2], "w") as fh:
            fh.write(f"eager 2K forward: host {host * 1e6:.1f} us per call issued, {wall * 1e6:.1f} us per call with "
                     f"the GPU's work (300 calls, one sync)\n\n{buf.getvalue()}")


if __name__ == "__main__":
    main()
