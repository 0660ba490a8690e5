"""The hybrid op's quadratic mode against its chunked schedule and SDPA, per layer at training shapes (8,192 tokens
per call: batch x T), by CUDA-graph replay (GPU time alone), bf16, sliding window 64.

    PYTHONPATH=$PWD python3 results/perf/schedules_20261207/op_bench.py OUT.csv [--shapes smollm2 llama3-8b]

Passes: ``fwd`` (no autograd), ``lora`` (forward + backward, all six gradients), ``at`` (forward + backward, the
gradients of phi_q, phi_k and gamma alone, as attention transfer asks). ``sdpa`` is causal softmax attention
(PyTorch's default backend, GQA) on the same q, k, v: the teacher's layer. Each line prints as it is measured; the
quadratic mode's output and gradients are checked against the chunked schedule's at every shape.
"""

from __future__ import annotations

import argparse
import csv
import os

import torch
import torch.nn.functional as F
import triton.testing
from lolsearch.kernels import _bench_impls as bi
from lolsearch.kernels import hybrid_attention

TOKENS = 8192
LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
NAMES = ("q", "k", "v", "phi_q", "phi_k", "gamma")
WANT = {"lora": NAMES, "at": ("phi_q", "phi_k", "gamma")}


def inputs(shape: bi.Shape, b: int, t: int) -> dict:
    g = torch.Generator("cuda").manual_seed(t)

    def rnd(*s):
        return torch.randn(*s, device="cuda", generator=g, dtype=torch.bfloat16)

    def feats(*s):
        x = torch.randn(*s[:-1], 2, s[-1] // 2, device="cuda", generator=g)
        return x.softmax(-1).flatten(-2).to(torch.bfloat16)

    return dict(q=rnd(b, shape.h, t, shape.d), k=rnd(b, shape.hkv, t, shape.d), v=rnd(b, shape.hkv, t, shape.d),
                phi_q=feats(b, shape.h, t, shape.f), phi_k=feats(b, shape.h, t, shape.f),
                gamma=torch.full((shape.h,), 0.1, device="cuda"), do=rnd(b, shape.h, t, shape.d))


def step(x: dict, pas: str):
    """The timed function: forward alone, or forward + backward of the gradients ``pas`` asks for."""
    if pas == "fwd":
        return lambda: hybrid_attention(*(x[n] for n in NAMES), bi.WINDOW, "sliding")
    leaves = {n: x[n].detach().requires_grad_(n in WANT[pas]) for n in NAMES}
    wanted = [leaves[n] for n in WANT[pas]]

    def run():
        o = hybrid_attention(*(leaves[n] for n in NAMES), bi.WINDOW, "sliding")
        return torch.autograd.grad(o, wanted, x["do"])

    return run


def sdpa_step(x: dict, pas: str):
    q, k, v = (x[n].detach().requires_grad_(pas != "fwd") for n in ("q", "k", "v"))

    def run():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return o if pas == "fwd" else torch.autograd.grad(o, [q, k, v], x["do"])

    return run


def graphed_us(fn) -> float:
    fn()
    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench_cudagraph(fn, rep=40, return_mode="median")) * 1e3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def check(x: dict) -> float:
    """Largest relative error of o and the six gradients, quadratic mode against the chunked schedule."""
    outs = []
    for limit in ("0", str(1 << 30)):
        os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = limit
        leaves = [x[n].detach().requires_grad_(True) for n in NAMES]
        o = hybrid_attention(*leaves, bi.WINDOW, "sliding")
        outs.append([o, *torch.autograd.grad(o, leaves, x["do"])])
    return max(rel(a, b) for a, b in zip(outs[1], outs[0], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shapes", nargs="+", default=["smollm2", "llama3-8b"])
    ap.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    args = ap.parse_args()
    rows = []
    print(torch.cuda.get_device_name(), flush=True)  # noqa: T201
    for name in args.shapes:
        shape = bi.SHAPES[name]
        for t in args.lengths:
            b = max(1, TOKENS // t)
            x = inputs(shape, b, t)
            err = check(x)
            for pas in ("fwd", "lora", "at"):
                cell = {"shape": name, "batch": b, "T": t, "pass": pas}
                for mode, limit in (("chunked", "0"), ("quadratic", str(1 << 30))):
                    os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = limit
                    cell[mode] = graphed_us(step(x, pas))
                cell["sdpa"] = graphed_us(sdpa_step(x, "fwd" if pas == "fwd" else "lora"))
                cell["chunked/quadratic"] = cell["chunked"] / cell["quadratic"]
                cell["quadratic/sdpa"] = cell["quadratic"] / cell["sdpa"]
                cell["max_rel_err"] = err
                rows.append(cell)
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items()),  # noqa: T201
                      flush=True)
            del x
    os.environ.pop("LOLSEARCH_KERNELS_QUADRATIC_T", None)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
