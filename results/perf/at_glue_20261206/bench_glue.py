"""GPU time (all kernels of a call, summed by torch.profiler) of attention transfer's per-layer glue at the trial
shapes, bf16: the MSE of student and teacher outputs, forward + backward, plain (`F.mse_loss` on fp32 copies) and
fused (`lolsearch.kernels.fused_mse`), with the teacher's output in SDPA's [B, T, H, D] memory; the teacher's
attention (no grad) with keys and values expanded to query heads against SDPA's own GQA (`enable_gqa=True`); the
model's RMSNorm (transformers' LlamaRMSNorm, fp32 round trip) against `F.rms_norm`, forward only (as in the teacher-
forced forward, which needs no gradient through the norms).

    PYTHONPATH=$PWD:/tmp/site python3 results/perf/at_glue_20261206/bench_glue.py

Prints one line per case: shape, case, µs per call (20 calls after one untimed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lolsearch.attention.chunked import expand_kv
from lolsearch.kernels import fused_mse

SHAPES = {"smollm2-1k": (8, 9, 3, 1024, 64), "llama3-8b-1k": (8, 32, 8, 1024, 128)}  # B, H, Hkv, T, D


def gpu_us(fn, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / calls


def main() -> None:
    print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)
    dt = torch.bfloat16
    for name, (b, h, hkv, t, d) in SHAPES.items():
        a = torch.randn(b, h, t, d, device="cuda", dtype=dt, requires_grad=True)
        y = torch.randn(b, t, h, d, device="cuda", dtype=dt).transpose(1, 2)

        def plain():
            torch.autograd.grad(F.mse_loss(a.float(), y.float()), a)

        def fused():
            torch.autograd.grad(fused_mse(a, y), a)

        q = torch.randn(b, t, h, d, device="cuda", dtype=dt).transpose(1, 2)
        k = torch.randn(b, t, hkv, d, device="cuda", dtype=dt).transpose(1, 2)
        v = torch.randn(b, t, hkv, d, device="cuda", dtype=dt).transpose(1, 2)

        @torch.no_grad()
        def expanded():
            F.scaled_dot_product_attention(q, expand_kv(k, h), expand_kv(v, h), is_causal=True)

        @torch.no_grad()
        def gqa():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        ref = F.scaled_dot_product_attention(q, expand_kv(k, h), expand_kv(v, h), is_causal=True)
        diff = (F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) - ref).abs().max().item()
        norm = LlamaRMSNorm(h * d, eps=1e-5).to("cuda", dt)
        x = torch.randn(b, t, h * d, device="cuda", dtype=dt)

        @torch.no_grad()
        def rms_plain():
            norm(x)

        @torch.no_grad()
        def rms_fused():
            F.rms_norm(x, (h * d,), norm.weight, 1e-5)

        with torch.no_grad():
            ndiff = (F.rms_norm(x, (h * d,), norm.weight, 1e-5).float() - norm(x).float()).abs().max().item()
        for case, fn in (("mse plain fwd+bwd", plain), ("mse fused fwd+bwd", fused), ("teacher sdpa expanded", expanded),
                         ("teacher sdpa enable_gqa", gqa), ("rmsnorm llama", rms_plain), ("rmsnorm F.rms_norm", rms_fused)):
            print(f"{name:14s} {case:26s} {gpu_us(fn):9.1f} us", flush=True)
        print(f"{name:14s} enable_gqa max abs diff {diff:.3g}; F.rms_norm max abs diff {ndiff:.3g}", flush=True)


if __name__ == "__main__":
    main()
