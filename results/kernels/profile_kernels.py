"""GPU diagnostic (issues 16, 17): GPU time per Triton kernel of ``hybrid_attention`` at the shapes the goals use.

    python3 results/kernels/profile_kernels.py [--cases smol1k-lora smol1k-at l8b-32k-fwd ...]

Each case: median time of one call (forward, or forward + backward) by ``triton.testing.do_bench``, then the GPU
time of every kernel over 10 calls (torch.profiler), per call. bf16, sliding window 64, random Hedgehog-like
features. ``-lora`` cases ask for all six gradients (a LoRA step), ``-at`` cases only φq, φk and γ (attention
transfer: q, k, v come from frozen projections).
"""

from __future__ import annotations

import argparse

import torch
import triton.testing
from lolsearch.kernels import hybrid_attention
from torch.profiler import ProfilerActivity, profile

# name -> (B, H, Hkv, D, F, T, mode)
CASES = {
    "smol1k-lora": (8, 9, 3, 64, 128, 1024, "lora"),
    "smol1k-at": (8, 9, 3, 64, 128, 1024, "at"),
    "smol1k-fwd": (8, 9, 3, 64, 128, 1024, "fwd"),
    "l8b1k-at": (8, 32, 8, 128, 128, 1024, "at"),
    "l8b1k-fwd": (8, 32, 8, 128, 128, 1024, "fwd"),
    "l8b-2k-fwd": (1, 32, 8, 128, 128, 2048, "fwd"),
    "l8b-32k-fwd": (1, 32, 8, 128, 128, 32768, "fwd"),
    "l8b-8k-lora": (1, 32, 8, 128, 128, 8192, "lora"),
}


def inputs(b: int, h: int, hkv: int, d: int, f: int, t: int, mode: str) -> dict:
    """q ``[B, H, T, D]``, k, v ``[B, Hkv, T, D]``, φq, φk ``[B, H, T, F]`` (each half a softmax), γ ``[H]``."""
    gen = torch.Generator("cuda").manual_seed(0)

    def rnd(*s):
        return torch.randn(*s, device="cuda", generator=gen, dtype=torch.bfloat16)

    def feats():
        x = torch.randn(b, h, t, 2, f // 2, device="cuda", generator=gen)
        return torch.softmax(x, -1).reshape(b, h, t, f).to(torch.bfloat16)

    x = {"q": rnd(b, h, t, d), "k": rnd(b, hkv, t, d), "v": rnd(b, hkv, t, d), "phi_q": feats(), "phi_k": feats(),
         "gamma": torch.full((h,), 0.5, device="cuda")}
    grads = {"lora": set(x), "at": {"phi_q", "phi_k", "gamma"}, "fwd": set()}[mode]
    for name in grads:
        x[name].requires_grad_(True)
    return x


def call(x: dict, mode: str) -> None:
    o = hybrid_attention(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], 64, "sliding")
    if mode != "fwd":
        o.backward(x["do"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    for name in args.cases:
        b, h, hkv, d, f, t, mode = CASES[name]
        x = inputs(b, h, hkv, d, f, t, mode)
        if mode != "fwd":
            x["do"] = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)
        with torch.set_grad_enabled(mode != "fwd"):
            call(x, mode)
            torch.cuda.synchronize()
            ms = triton.testing.do_bench(lambda: call(x, mode), warmup=25, rep=200, return_mode="median")
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    call(x, mode)
                torch.cuda.synchronize()
        rows = {}
        for e in prof.key_averages():
            us = getattr(e, "device_time_total", 0) / 10
            if us > 0 and e.device_type.name == "CUDA":
                rows[e.key[:32]] = us
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1]))
        print(f"{name} (B {b}, H {h}/{hkv}, D {d}, F {f}, T {t}, {mode}): {ms * 1e3:.1f} us per call; "
              f"GPU us per call: {parts}", flush=True)


if __name__ == "__main__":
    main()
