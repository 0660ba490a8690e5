# ruff: noqa: T201 - a measurement that reports by printing
"""What autotuning costs a process: the first forward + backward of hybrid_attention (compiles, and with
autotuning on, the timing of every config) and a steady one, at the SmolLM2 trial shape (8 x 1024, 9 / 3 heads,
D 64, F 128, bf16, sliding 64) and at Llama-3-8B heads (1 x 4096, 32 / 8, D = F = 128). Run it once per setting
in fresh processes, e.g. (cold Triton cache, then warm; autotuning off, then on):

    export TRITON_CACHE_DIR=$(mktemp -d)
    LOLSEARCH_KERNELS_AUTOTUNE=0 python3 results/kernels/seg_walk_20261204/autotune_warmup.py   # cold, first configs
    LOLSEARCH_KERNELS_AUTOTUNE=0 python3 results/kernels/seg_walk_20261204/autotune_warmup.py   # warm
    export TRITON_CACHE_DIR=$(mktemp -d)
    python3 results/kernels/seg_walk_20261204/autotune_warmup.py                                 # cold, autotuned
    python3 results/kernels/seg_walk_20261204/autotune_warmup.py                                 # warm: choices on disk
"""

from __future__ import annotations

import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "kernels")]
from _launch import ensure_importable  # noqa: E402

ensure_importable()
from lolsearch.kernels import hybrid_attention  # noqa: E402
from lolsearch.kernels._common import AUTOTUNE  # noqa: E402

SHAPES = {"smollm2 8x1024": (8, 9, 3, 1024, 64, 128), "llama3-8b 1x4096": (1, 32, 8, 4096, 128, 128)}


def step(b, h, hkv, t, d, f) -> float:
    """Seconds for one forward + backward, synchronized."""
    g = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(b, hkv, t, d, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True) for _ in "kv")
    fq, fk = (torch.rand(b, h, t, f, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True) for _ in "qk")
    gamma = torch.full((h,), 0.5, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    hybrid_attention(q, k, v, fq, fk, gamma, 64, "sliding").float().sum().backward()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    torch.ones(1, device="cuda")
    for name, shape in SHAPES.items():
        first = step(*shape)
        steady = sorted(step(*shape) for _ in range(10))[5]
        print(f"autotune={int(AUTOTUNE)} cache={os.environ.get('TRITON_CACHE_DIR', '~/.triton')} {name}: "
              f"first fwd+bwd {first:.2f} s, steady {steady * 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
