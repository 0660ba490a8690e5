"""Host time per eager 2K forward of the hybrid op and SDPA's beside it, in the tree on PYTHONPATH (2026-12-07).

    PYTHONPATH=<tree>:/tmp/site python3 results/perf/bench2k_20261207/host_ab.py LABEL
    PYTHONPATH=<tree>:/tmp/site python3 results/perf/bench2k_20261207/host_ab.py --bwd LABEL   # forward + backward
    PYTHONPATH=<tree>:/tmp/site python3 results/perf/bench2k_20261207/host_ab.py --profile-bwd OUT   # cProfile -> OUT

Llama-3-8B heads (32 query / 8 kv heads, D = F = 128), bf16, batch 1, T 2048, sliding window 64, no autograd, as the
bench's eager 2K cell. Five rounds of 300 forwards issued back to back and one sync at the end: the host's time to
issue them, and the time with the GPU's work (when the host is slower than the GPU, the two are the same). Each
round also times SDPA's forward of the same q, k, v (cuDNN, causal, GQA) the same way and triton's do_bench of
both, as the bench times them. One line per round. ``--bwd``: the same rounds (100 calls each) of the eager forward +
backward (``.backward(do)`` with q, k, v, the features and γ trainable, as the bench's fwd+bwd cell) against SDPA's
forward + backward. ``--profile-bwd``: cProfile of 100 eager forward + backward
calls (``.backward(do)``, as the bench's fwd+bwd cell), and their host and GPU time.
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
from lolsearch.kernels import hybrid_attention
from torch.nn.attention import SDPBackend, sdpa_kernel


def inputs(t: int) -> list[torch.Tensor]:
    gen = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(1, 32, t, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, t, 128, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(2))
    fq, fk = (torch.softmax(torch.randn(1, 32, t, 2, 64, device="cuda", generator=gen), -1).reshape(1, 32, t, 128)
              .to(torch.bfloat16) for _ in range(2))
    return [q, k, v, fq, fk, torch.full((32,), 0.5, device="cuda")]


def issue(call, calls: int = 300) -> tuple[float, float]:
    """µs per call: issuing ``calls`` calls, and with the GPU's work (one sync at the end)."""
    for _ in range(30):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    host = (time.perf_counter() - t0) / calls
    torch.cuda.synchronize()
    return host * 1e6, (time.perf_counter() - t0) / calls * 1e6


def fwd_bwd_steps():
    """(ours, SDPA's) eager forward + backward at 2K, the bench's fwd+bwd cell."""
    x = [t.requires_grad_(True) for t in inputs(2048)]
    do = torch.randn_like(x[0])

    def step():
        for t in x:
            t.grad = None
        hybrid_attention(*x, 64, "sliding").backward(do)

    def sdpa_step():
        for t in x:
            t.grad = None
        fn.scaled_dot_product_attention(x[0], x[1], x[2], is_causal=True, enable_gqa=True).backward(do)

    return step, sdpa_step


def profile_backward(out: str) -> None:
    step, _ = fwd_bwd_steps()
    host, wall = issue(step, 100)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(100):
        step()
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(35)
    with open(out, "w") as fh:
        fh.write(f"eager 2K forward + backward: host {host:.1f} us per call issued, {wall:.1f} us with the GPU's work "
                 f"(100 calls, one sync)\n\n{buf.getvalue()}")


def main() -> None:
    if sys.argv[1] == "--profile-bwd":
        profile_backward(sys.argv[2])
        return
    bwd = sys.argv[1] == "--bwd"
    label = sys.argv[-1]
    x = inputs(2048)

    def ours():
        return hybrid_attention(*x, 64, "sliding")

    def sdpa():
        return fn.scaled_dot_product_attention(x[0], x[1], x[2], is_causal=True, enable_gqa=True)

    if bwd:
        ours, sdpa = fwd_bwd_steps()
    with torch.set_grad_enabled(bwd), sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        for rnd in range(5):
            h1, w1 = issue(ours, 100 if bwd else 300)
            h2, w2 = issue(sdpa, 100 if bwd else 300)
            b1 = triton.testing.do_bench(ours, warmup=10, rep=40) * 1e3
            b2 = triton.testing.do_bench(sdpa, warmup=10, rep=40) * 1e3
            print(f"{label} {'fwd+bwd ' if bwd else ''}round {rnd}: ours host {h1:6.1f} us, with GPU {w1:6.1f} us, do_bench {b1:6.1f} us | "  # noqa: T201
                  f"SDPA host {h2:5.1f} us, with GPU {w2:5.1f} us, do_bench {b2:5.1f} us | "
                  f"do_bench ratio {b1 / b2:.2f}", flush=True)


if __name__ == "__main__":
    main()
