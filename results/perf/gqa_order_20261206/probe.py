"""GPU probe (2026-12-06): the 32K forward's kernels for Nsight Compute, or the eager 2K forward's host path.

    python3 results/perf/gqa_order_20261206/probe.py fwd32k       # run under ncu: two forwards, the second profiled
    python3 results/perf/gqa_order_20261206/probe.py host2k OUT   # cProfile of 300 eager forwards -> OUT
    python3 results/perf/gqa_order_20261206/probe.py cdiv2k       # host time per eager forward, with the launch paths'
                                                                  # integer helpers and with Triton's, alternating
    python3 results/perf/gqa_order_20261206/probe.py direct2k     # the same with launches through the kept compiled
                                                                  # kernels (kernels/_direct.py) and without, beside SDPA

Llama-3-8B heads (32 query / 8 kv heads, D = F = 128), bf16, batch 1, sliding window 64, as the bench.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import torch
import torch.nn.functional as fn
import triton
from lolsearch.kernels import _common, _direct, hybrid, hybrid_attention


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
        if what == "cdiv2k":
            compare_helpers(x)
            return
        if what == "direct2k":
            compare_direct(x)
            return
        host, wall = time_calls(x, warmup=50)
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


def time_calls(x: list[torch.Tensor], warmup: int, calls: int = 300, call=None) -> tuple[float, float]:
    """Seconds per eager forward of ``x`` over ``calls`` calls after ``warmup``: host time to issue them, and with
    the GPU's work (one sync at the end). ``call(x)`` replaces the hybrid forward when given."""
    call = call or (lambda x: hybrid_attention(*x, 64, "sliding"))
    for _ in range(warmup):
        call(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        call(x)
    host = (time.perf_counter() - t0) / calls
    torch.cuda.synchronize()
    return host, (time.perf_counter() - t0) / calls


def report(rnd: int, label: str, host: float, wall: float) -> None:
    """One line of an alternating comparison: seconds per call, host only and with the GPU's work."""
    line = f"round {rnd} {label:12s}: host {host * 1e6:6.1f} us, with the GPU {wall * 1e6:6.1f} us per call"
    print(line, flush=True)  # noqa: T201


def compare_helpers(x: list[torch.Tensor]) -> None:
    """Host µs per eager 2K forward (300 calls, then one sync), five rounds alternating the host helpers
    (``_common.cdiv``/``next_pow2``, the default) with Triton's constexpr ``cdiv``/``next_power_of_2`` in their place."""
    ours = (_common.cdiv, _common.next_pow2)
    theirs = (triton.cdiv, triton.next_power_of_2)
    for rnd in range(5):
        for label, (cdiv, pow2) in (("host helpers", ours), ("triton's", theirs)):
            _common.cdiv, _common.next_pow2, hybrid.cdiv = cdiv, pow2, cdiv
            report(rnd, label, *time_calls(x, warmup=30))
    _common.cdiv, _common.next_pow2, hybrid.cdiv = ours[0], ours[1], ours[0]


def compare_direct(x: list[torch.Tensor]) -> None:
    """Host µs per eager 2K forward, five rounds alternating launches through the kept compiled kernels (the default)
    with ``kernel[grid]`` for every launch, and SDPA's forward of the same q, k, v (GQA, causal) in the same round."""
    def sdpa(x):
        return fn.scaled_dot_product_attention(x[0], x[1], x[2], is_causal=True, enable_gqa=True)

    for rnd in range(5):
        for label, on in (("direct", True), ("kernel[grid]", False)):
            _direct.ENABLED = on
            report(rnd, label, *time_calls(x, warmup=30))
        report(rnd, "SDPA", *time_calls(x, warmup=30, call=sdpa))
    _direct.ENABLED = True


if __name__ == "__main__":
    main()
