"""GPU diagnostic (issues 16, 17): GPU time per Triton kernel of ``hybrid_attention`` at the shapes the goals use.

    python3 results/kernels/profile_kernels.py [--cases smol1k-lora l8b-32k-fwd ...] [--variants MIN_SEG=1 "" ...]
    python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd --variants "" fwd_window@8x1 GQA_ORDER=0

Each case: median time of one call (forward, or forward + backward) by ``triton.testing.do_bench``, then the GPU
time of every kernel over 10 calls (torch.profiler), per call, and the largest difference of o and the gradients
from the first variant's. bf16, sliding window 64, random Hedgehog-like features. Each variant (comma-separated
``NAME=value`` of ``LOLSEARCH_KERNELS_NAME`` settings, ``kernel@WxS[rN]`` to give an autotuned kernel the one
launch config of W warps, S stages and at most N registers per thread, or ``MODULE.NAME=value`` to set a constant
of ``lolsearch.kernels.MODULE`` such as ``hybrid.MIN_SEGMENT_CHUNKS=4`` or ``_direct.ENABLED=False``; "" = the
defaults) runs every case, in this process, one after the other. ``-lora`` cases ask for all six gradients (a LoRA step), ``-at`` cases only φq, φk and γ
(attention transfer: q, k, v come from frozen projections).
"""

from __future__ import annotations

import argparse
import ast
import os

import torch
import triton
import triton.testing
from lolsearch.kernels import _bwd, _bwd_window, _direct, _fwd, hybrid, hybrid_attention
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
    "l8b-2k-lora": (1, 32, 8, 128, 128, 2048, "lora"),
    "l8b-8k-lora": (1, 32, 8, 128, 128, 8192, "lora"),
}


# the autotuned kernels a variant may pin to one config, and the configs they offer
TUNED = {name: getattr(mod, name + "_kernel") for mod, names in ((_fwd, ("fwd_state", "fwd_window")),
         (_bwd, ("bwd_state_kv", "bwd_state_q")), (_bwd_window, ("bwd_q", "bwd_kv"))) for name in names}
OFFERED = {name: list(kernel.configs) for name, kernel in TUNED.items()}


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
    ap.add_argument("--variants", nargs="+", default=[""])
    args = ap.parse_args()
    for name in args.cases:
        for variant in args.variants:
            try:
                run(name, variant)
            except Exception as err:  # noqa: BLE001 - a variant that cannot run at this shape is reported, not fatal
                print(f"{name} [{variant}]: {type(err).__name__}: {str(err).splitlines()[0][:200]}", flush=True)  # noqa: T201


_FIRST: dict[str, list[torch.Tensor]] = {}  # o and the gradients of each case under the first variant
_MODULES = {"hybrid": hybrid, "_direct": _direct}
_CONSTANTS: dict[tuple[str, str], object] = {}  # the defaults of the module constants a variant has changed


def run(name: str, variant: str) -> None:
    """One case under one variant's settings (the previous variant's are removed first). Prints the median time,
    GPU time per kernel, and the largest relative difference of o and the gradients from the first variant's."""
    for key in [k for k in os.environ if k.startswith("LOLSEARCH_KERNELS_") and k != "LOLSEARCH_KERNELS_AUTOTUNE"]:
        del os.environ[key]
    for kname, kernel in TUNED.items():
        kernel.configs, kernel.cache = list(OFFERED[kname]), {}
    for (mname, cname), value in _CONSTANTS.items():
        setattr(_MODULES[mname], cname, value)
    _direct.clear()  # kept kernels were compiled or tuned under the previous variant's configs
    for item in filter(None, variant.split(",")):
        if "@" in item:
            kname, cfg = item.split("@")
            cfg, _, maxnreg = cfg.partition("r")
            warps, stages = (int(x) for x in cfg.split("x"))
            extra = {"maxnreg": int(maxnreg)} if maxnreg else {}
            one = triton.Config({}, num_warps=warps, num_stages=stages, **extra)
            TUNED[kname].configs, TUNED[kname].cache = [one], {}
            continue
        key, value = item.split("=")
        if "." in key:
            mname, cname = key.split(".")
            _CONSTANTS.setdefault((mname, cname), getattr(_MODULES[mname], cname))
            setattr(_MODULES[mname], cname, ast.literal_eval(value))
            continue
        os.environ["LOLSEARCH_KERNELS_" + key] = value
    b, h, hkv, d, f, t, mode = CASES[name]
    x = inputs(b, h, hkv, d, f, t, mode)
    if mode != "fwd":
        x["do"] = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(1))
    with torch.set_grad_enabled(mode != "fwd"):
        o = hybrid_attention(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], 64, "sliding")
        outs = [o.float()]
        if mode != "fwd":
            names = [n for n in ("q", "k", "v", "phi_q", "phi_k", "gamma") if x[n].requires_grad]
            outs += [g.float() for g in torch.autograd.grad(o, [x[n] for n in names], x["do"])]
        refs = _FIRST.setdefault(name, outs)
        diff = max(((a - r).abs().max() / r.abs().max().clamp_min(1e-30)).item() for a, r in zip(outs, refs, strict=True))
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
    line = (f"{name} [{variant or 'default'}] (B {b}, H {h}/{hkv}, D {d}, F {f}, T {t}, {mode}): {ms * 1e3:.1f} us "
            f"per call; o, grads vs the first variant {diff:.1e}; GPU us per call: {parts}")
    print(line, flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
