"""GPU time of the fused feature maps' backward (all kernels it launches, summed by torch.profiler, per call) at the
trial shapes, for frozen maps (a LoRA stage: dx alone) and for trained maps (attention transfer: dW alone).

    PYTHONPATH=$PWD:/tmp/site python3 results/perf/features_dx_20261206/bench_features.py [label]

Prints one line per case: label, shape, case, µs per backward call (median of 5 rounds of 20 calls).
"""

from __future__ import annotations

import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lolsearch.attention.featuremaps import Hedgehog
from lolsearch.config.plugins import HedgehogParams
from lolsearch.kernels import fused_features

SHAPES = {  # name: (B, H, Hkv, T, D, P)
    "smollm2-1k": (8, 9, 3, 1024, 64, 64),
    "smollm2-8k": (2, 9, 3, 8192, 64, 64),
    "llama3-8b-1k": (8, 32, 8, 1024, 128, 64),
}


def gpu_us(fn, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / calls


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "tree"
    for name, (b, h, hkv, t, d, p) in SHAPES.items():
        fm = Hedgehog(h, d, HedgehogParams(feature_dim=p)).cuda()
        for heads, role in ((h, "q"), (hkv, "k")):
            x = torch.randn(b, heads, t, d, device="cuda", dtype=torch.bfloat16)
            g = torch.randn(b, h, t, 2 * p, device="cuda", dtype=torch.bfloat16)
            for case in ("frozen maps, dx", "trained maps, dW"):
                fm.requires_grad_(case.startswith("trained"))
                xi = x.clone().requires_grad_(case.startswith("frozen"))
                out = fused_features("hedgehog", xi, fm.weight, None, False)
                wrt = (xi,) if case.startswith("frozen") else (fm.weight,)

                def step(out=out, wrt=wrt, g=g):
                    torch.autograd.grad(out, wrt, g, retain_graph=True)

                us = statistics.median(gpu_us(step) for _ in range(5))
                print(f"{label}\t{name}\t{role}\t{case}\t{us:.1f}", flush=True)


if __name__ == "__main__":
    main()
