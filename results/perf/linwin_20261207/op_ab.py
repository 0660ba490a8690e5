"""The hybrid op of whichever source tree ``lolsearch`` imports from (PYTHONPATH), timed by CUDA-graph replay
(GPU time alone, median µs), bf16, Hedgehog-like features (F = 128), window 64. Run once per tree, alternating,
to compare two trees on one machine:

    PYTHONPATH=TREE:/tmp/site python3 results/perf/linwin_20261207/op_ab.py LABEL OUT_DIR

Cells (Llama-3-8B heads, 32 q / 8 kv, D = 128, and SmolLM2's, 9 / 3, D = 64): ``fwd`` (no autograd), ``lora``
(forward + backward, all six gradients), ``at`` (the gradients of phi_q, phi_k and gamma alone). Also writes the
per-kernel GPU time of the 32K forward (torch.profiler) and the outputs + gradients of one 4097-token call
(``LABEL_check.pt``), so that two trees' results can be compared afterwards (``--compare A B``).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import lolsearch.kernels as lk
import torch
import triton.testing
from lolsearch.kernels import hybrid_attention

NAMES = ("q", "k", "v", "phi_q", "phi_k", "gamma")
WANT = {"lora": NAMES, "at": ("phi_q", "phi_k", "gamma")}
HEADS = {"llama3-8b": (32, 8, 128, 128), "smollm2": (9, 3, 64, 128)}
# (heads, layout, batch, T, pass)
CELLS = [
    ("llama3-8b", "sliding", 1, 32768, "fwd"), ("llama3-8b", "terrace", 1, 32768, "fwd"),
    ("llama3-8b", "sliding", 1, 2048, "fwd"), ("llama3-8b", "sliding", 1, 8192, "fwd"),
    ("llama3-8b", "sliding", 8, 1024, "fwd"), ("llama3-8b", "sliding", 8, 1024, "lora"),
    ("llama3-8b", "sliding", 8, 1024, "at"), ("llama3-8b", "sliding", 1, 8192, "lora"),
    ("llama3-8b", "sliding", 8, 2048, "lora"), ("smollm2", "sliding", 8, 1024, "lora"),
]


def inputs(heads: str, b: int, t: int, dtype=torch.bfloat16) -> dict:
    h, hkv, d, f = HEADS[heads]
    g = torch.Generator("cuda").manual_seed(t)

    def rnd(*s):
        return torch.randn(*s, device="cuda", generator=g).to(dtype)

    def feats(*s):
        x = torch.randn(*s[:-1], 2, s[-1] // 2, device="cuda", generator=g)
        return x.softmax(-1).flatten(-2).to(dtype)

    return dict(q=rnd(b, h, t, d), k=rnd(b, hkv, t, d), v=rnd(b, hkv, t, d), phi_q=feats(b, h, t, f),
                phi_k=feats(b, h, t, f), gamma=torch.full((h,), 0.1, device="cuda"), do=rnd(b, h, t, d))


def step(x: dict, pas: str, layout: str):
    if pas == "fwd":
        return lambda: hybrid_attention(*(x[n] for n in NAMES), 64, layout)
    leaves = {n: x[n].detach().requires_grad_(n in WANT[pas]) for n in NAMES}
    wanted = [leaves[n] for n in WANT[pas]]

    def run():
        o = hybrid_attention(*(leaves[n] for n in NAMES), 64, layout)
        return torch.autograd.grad(o, wanted, x["do"])

    return run


def graphed_us(fn) -> float:
    fn()
    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")) * 1e3


def kernel_times(fn, reps: int = 10) -> dict:
    """GPU µs per call of each kernel name (torch.profiler), over ``reps`` calls."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    out = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out[e.name] += e.device_time_total / reps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def check_tensors(t: int = 4097) -> dict:
    out = {}
    for layout, w in (("sliding", 64), ("sliding", 256), ("terrace", 16), ("linear", 0)):
        x = inputs("llama3-8b", 1, t)
        leaves = [x[n].detach().requires_grad_(True) for n in NAMES]
        o = hybrid_attention(*leaves, w, layout)
        out[f"{layout}{w}"] = [o.float().cpu(), *(g.float().cpu() for g in torch.autograd.grad(o, leaves, x["do"]))]
    return out


def compare(a: str, b: str) -> None:
    ta, tb = torch.load(a), torch.load(b)
    for key in ta:
        errs = [((x - y).norm() / y.norm().clamp_min(1e-30)).item() for x, y in zip(ta[key], tb[key], strict=True)]
        print(key, "rel diff o, dq, dk, dv, dphi_q, dphi_k, dgamma:", " ".join(f"{e:.2e}" for e in errs))  # noqa: T201


def main() -> None:
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
        return
    label, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    print(label, lk.__file__, torch.cuda.get_device_name(), flush=True)  # noqa: T201
    rows = []
    for heads, layout, b, t, pas in CELLS:
        x = inputs(heads, b, t)
        us = graphed_us(step(x, pas, layout))
        rows.append(dict(tree=label, heads=heads, layout=layout, batch=b, T=t, pas=pas, us=round(us, 1)))
        print(json.dumps(rows[-1]), flush=True)  # noqa: T201
        if (t, pas, layout) == (32768, "fwd", "sliding"):
            kt = kernel_times(step(x, pas, layout))
            print("kernels 32K fwd:", {k[:40]: round(v, 1) for k, v in kt.items()}, flush=True)  # noqa: T201
        del x
        torch.cuda.empty_cache()
    if label.startswith("new"):  # the parallel schedule at D = 128 (not chosen there by _schedule.py), 32K forward
        from lolsearch.kernels import _schedule

        _schedule.PARALLEL_MAX_D = 128
        x = inputs("llama3-8b", 1, 32768)
        for seg in (4, 8, 16):
            os.environ["LOLSEARCH_KERNELS_PARALLEL_SEG"] = str(seg)
            us = graphed_us(step(x, "fwd", "sliding"))
            rows.append(dict(tree=f"{label}-par{seg}", heads="llama3-8b", layout="sliding", batch=1, T=32768, pas="fwd",
                             us=round(us, 1)))
            print(json.dumps(rows[-1]), flush=True)  # noqa: T201
        del x
        os.environ.pop("LOLSEARCH_KERNELS_PARALLEL_SEG")
        _schedule.PARALLEL_MAX_D = 64
    with open(os.path.join(out, f"{label}.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    torch.save(check_tensors(), os.path.join(out, f"{label}_check.pt"))


if __name__ == "__main__":
    main()
