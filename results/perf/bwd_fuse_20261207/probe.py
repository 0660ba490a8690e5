"""The hybrid op's backward, kernel by kernel, timed on the GPU.

    python3 results/perf/bwd_fuse_20261207/probe.py OUT.json

At the SmolLM2 shape (8 x 9 heads, 3 kv heads, T = 1024, D = 64, Hedgehog F = 128, sliding window 64, bf16) with the
gradients of a LoRA step (q, k, v and the features) and of attention transfer (features and gamma only), and at the
Llama-3-8B shape (32 heads, 8 kv heads, D = 128) for attention transfer: records every launch of one backward
(``hybrid.launch``), then times each recorded launch alone (median of CUDA events over 50 launches), the whole
backward (``torch.autograd.grad``), and ``bwd_kv`` by part (dk, dv, dphi_k programs alone) and with other query
blocks BQ.
"""

from __future__ import annotations

import json
import sys

import torch
from lolsearch.kernels import hybrid
from lolsearch.kernels._bwd_window import bwd_kv_kernel
from lolsearch.kernels._direct import _jit_fn, launch

# (name, B, H, HKV, T, D, F, which inputs need a gradient)
SHAPES = [("smol-lora", 8, 9, 3, 1024, 64, 128, "qkvf"), ("smol-at", 8, 9, 3, 1024, 64, 128, "f"),
          ("l8b-at", 8, 32, 8, 1024, 128, 128, "f")]


def timed(fn, reps: int = 50) -> float:
    """Median µs of ``fn()`` over ``reps`` calls (CUDA events around each)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000)
    return sorted(times)[len(times) // 2]


def inputs(b: int, h: int, hkv: int, t: int, d: int, f: int, need: str):
    g = torch.Generator("cuda").manual_seed(0)
    bf = torch.bfloat16

    def rnd(*shape, grad: bool):
        return torch.randn(*shape, device="cuda", dtype=bf, generator=g).requires_grad_(grad)

    q, k, v = rnd(b, h, t, d, grad="q" in need), rnd(b, hkv, t, d, grad="k" in need), rnd(b, hkv, t, d, grad="v" in need)
    fq = torch.softmax(torch.randn(b, h, t, f, device="cuda", generator=g), -1).to(bf).requires_grad_("f" in need)
    fk = torch.softmax(torch.randn(b, h, t, f, device="cuda", generator=g), -1).to(bf).requires_grad_("f" in need)
    gamma = torch.full((h,), 0.5, device="cuda", requires_grad=True)
    return q, k, v, fq, fk, gamma


def timed_launch(kernel, grid: tuple[int, ...], args: tuple, kwargs: dict) -> float:
    return timed(lambda: launch(kernel, grid, *args, **kwargs))


def probe_shape(b: int, h: int, hkv: int, t: int, d: int, f: int, need: str) -> dict[str, float]:
    """µs per kernel of one backward (summed over its launches), the whole backward, and bwd_kv's variants."""
    q, k, v, fq, fk, gamma = inputs(b, h, hkv, t, d, f, need)
    o = hybrid.hybrid_attention(q, k, v, fq, fk, gamma, 64, "sliding", token_major_out=True)
    do = torch.randn_like(o)
    leaves = [x for x in (q, k, v, fq, fk, gamma) if x.requires_grad]

    def backward() -> None:
        torch.autograd.grad(o, leaves, do, retain_graph=True)

    backward()  # compiles and autotunes
    calls = []
    real = hybrid.launch

    def spy(kernel, grid, *args, **kwargs):
        calls.append((kernel, grid, args, kwargs))
        return real(kernel, grid, *args, **kwargs)

    hybrid.launch = spy
    try:
        backward()
    finally:
        hybrid.launch = real
    row = {"backward": timed(backward)}
    for kernel, grid, args, kwargs in calls:
        jit = _jit_fn(kernel)
        kname = getattr(jit, "__name__", None) or jit.fn.__name__
        row[kname] = row.get(kname, 0.0) + timed_launch(kernel, grid, args, kwargs)
        if kernel is not bwd_kv_kernel:
            continue
        for bq in (16, 32, 64):
            row[f"bwd_kv BQ{bq}"] = timed_launch(kernel, grid, args, {**kwargs, "BQ": bq})
        if kwargs["NEED_DK"]:
            row["bwd_kv dk part"] = timed_launch(kernel, (*grid[:2], 1), args, kwargs)
        if kwargs["NEED_DV"]:
            row["bwd_kv dv part"] = timed_launch(kernel, (*grid[:2], 1), args, {**kwargs, "NEED_DK": False})
        nkv = kwargs["NEED_DK"] + kwargs["NEED_DV"]
        only_f = {**kwargs, "NEED_DK": False, "NEED_DV": False}
        row["bwd_kv dfk parts"] = timed_launch(kernel, (*grid[:2], grid[2] - nkv), args, only_f)
    return row


def main(out: str) -> None:
    result: dict = {}
    for name, *shape in SHAPES:
        result[name] = probe_shape(*shape)
        print(name, json.dumps({k: round(x, 1) for k, x in result[name].items()}), flush=True)  # noqa: T201
        torch.cuda.empty_cache()
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
