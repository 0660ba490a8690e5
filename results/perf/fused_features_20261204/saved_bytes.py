# ruff: noqa: T201 - a measurement that reports by printing
"""Activation memory the feature maps keep for the backward pass, fused kernels vs modules (CPU, Triton interpreter).

    TRITON_INTERPRET=1 python results/perf/fused_features_20261204/saved_bytes.py > results/perf/fused_features_20261204/saved_bytes.txt

Per linearized layer of a step of 8 x 1024 tokens: the bytes of the tensors autograd saves while φ(q), φ(k) are
computed from 16-bit q and k (fp16 here: the interpreter has no bf16; bf16 has the same sizes), beyond q and k
themselves (the attention keeps those anyway) and the maps' weights. Shapes: SmolLM2-135M (9 heads, 3 kv heads, D 64) and Llama-3-8B
(32 heads, 8 kv heads, D 128); Hedgehog with 64 features per sign (F = 128, the recipe's map) and T2R with F = 128.
"""

from __future__ import annotations

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "kernels"))
from _launch import ensure_importable  # noqa: E402

ensure_importable()
from lolsearch.attention.featuremaps import T2R, Hedgehog  # noqa: E402
from lolsearch.attention.layer import LinearizedAttention  # noqa: E402
from lolsearch.config.plugins import HedgehogParams, ProjectionParams  # noqa: E402

SHAPES = {"smollm2-135m": (9, 3, 64, 30), "llama3-8b": (32, 8, 128, 32)}  # heads, kv heads, head dim, layers


def saved_bytes(layer: LinearizedAttention, q: torch.Tensor, k: torch.Tensor, fused: bool) -> int:
    """Bytes of distinct storages autograd saves during ``layer._features(q, k)``, except q's, k's and the maps'
    weights' (resident anyway)."""
    skip = {x.untyped_storage().data_ptr() for x in (q, k, *layer.parameters())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    layer.fuse_features = fused
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer._features(q, k)
    return sum(seen.values())


def main() -> None:
    torch.manual_seed(0)
    b, t = 8, 1024
    print(f"saved for backward by φ(q), φ(k) per layer, {b} x {t} tokens, fp16 inputs (MiB)")
    print("| model | map | modules | fused | modules, all layers (GiB) | fused, all layers (GiB) |")
    print("|---|---|---:|---:|---:|---:|")
    maps = {"hedgehog": lambda h, d: Hedgehog(h, d, HedgehogParams(feature_dim=64, init="kaiming")),
            "t2r": lambda h, d: T2R(h, d, ProjectionParams(feature_dim=128, init="kaiming"))}
    for (name, (h, hkv, d, layers)), (kind, make) in [(s, m) for s in SHAPES.items() for m in maps.items()]:
        layer = LinearizedAttention.__new__(LinearizedAttention)
        torch.nn.Module.__init__(layer)
        layer.feature_map_q, layer.feature_map_k = make(h, d), make(h, d)
        layer.num_heads, layer.backend, layer.recompute_features = h, "triton", False
        q = torch.randn(b, h, t, d, dtype=torch.float16, requires_grad=True)
        k = torch.randn(b, hkv, t, d, dtype=torch.float16, requires_grad=True)
        mods, fused = (saved_bytes(layer, q, k, f) / 2**20 for f in (False, True))
        print(f"| {name} | {kind} | {mods:.1f} | {fused:.1f} | {mods * layers / 1024:.2f} | {fused * layers / 1024:.2f} |")


if __name__ == "__main__":
    main()
