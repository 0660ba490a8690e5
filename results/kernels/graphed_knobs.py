"""H200 diagnostic (issue 17): our sliding forward at 2K and 8K timed by CUDA-graph replay (GPU time alone, no host
launch path) under the segment plan's knob, with the GPU time per kernel at 2K (Llama-3-8B heads, bf16, batch 1,
window 64).

    PYTHONPATH=$PWD python3 results/kernels/graphed_knobs.py     # on the GPU machine (rerun.sh perf sets PYTHONPATH)

The eager bench times these cells on the host's launch path at 2K (0.20-0.45 ms whatever the knob), so it cannot
rank schedules there. Each line prints as soon as it is measured (a call's time limit keeps what ran).
"""

import os

import torch
import triton.testing
from lolsearch.kernels import _bench_impls as bi
from lolsearch.kernels import hybrid_attention
from torch.profiler import ProfilerActivity, profile

SHAPE = bi.SHAPES["llama3-8b"]
KNOBS = [None, "1", "2", "4", "16"]  # LOLSEARCH_KERNELS_PPS (None: the default, 8 programs per SM)


def fwd(x: dict) -> torch.Tensor:
    return hybrid_attention(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], bi.WINDOW, "sliding")


def kernel_us(x: dict, calls: int = 20) -> str:
    """GPU microseconds per forward, per kernel (torch.profiler), largest first."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fwd(x)
        torch.cuda.synchronize()
    rows = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) / calls
        if us > 0:
            rows[e.key[:32]] = us
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1]))


def main() -> None:
    for t in (2048, 8192):
        x = bi.make_prefill(SHAPE, t, grad=False)
        ref = fwd(x).float()
        for pps in KNOBS:
            if pps is None:
                os.environ.pop("LOLSEARCH_KERNELS_PPS", None)
            else:
                os.environ["LOLSEARCH_KERNELS_PPS"] = pps
            rel = ((fwd(x).float() - ref).abs().max() / ref.abs().max()).item()
            torch.cuda.synchronize()
            ms = triton.testing.do_bench_cudagraph(lambda x=x: fwd(x), rep=30, return_mode="median")
            line = f"T={t} pps={pps or 'default(8)'}: graphed {ms * 1e3:.1f} us, max|o - o_default|/max|o| {rel:.1e}"
            if t == 2048:
                line += f"; GPU us per kernel: {kernel_us(x)}"
            print(line, flush=True)  # noqa: T201
        os.environ.pop("LOLSEARCH_KERNELS_PPS", None)
        x.clear()


if __name__ == "__main__":
    main()
