"""The hybrid op's three schedules per layer at training shapes (8,192 tokens per call: batch x T), by CUDA-graph
replay (GPU time alone), bf16, sliding window 64: the walks, the parallel schedule at 2, 4 and 8 chunks per segment,
and the quadratic mode, beside SDPA (the teacher's layer).

    PYTHONPATH=$PWD python3 results/perf/schedules_20261207/par_bench.py OUT.csv [--shapes ...] [--lengths ...]

Passes as in op_bench.py: ``fwd`` (no autograd), ``lora`` (all six gradients), ``at`` (phi_q, phi_k, gamma). Every
schedule's output and six gradients are checked against the walks' (largest relative error, ``max_rel_err``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import op_bench as ob  # noqa: E402
from lolsearch.kernels import _bench_impls as bi  # noqa: E402
from lolsearch.kernels import hybrid_attention  # noqa: E402

BIG = str(1 << 30)
MODES = {"walk": ("0", "0", None), "par2": ("0", BIG, "2"), "par4": ("0", BIG, "4"), "par8": ("0", BIG, "8"),
         "quad": (BIG, "0", None)}


def use(mode: str) -> None:
    quad, par, seg = MODES[mode]
    os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = quad
    os.environ["LOLSEARCH_KERNELS_PARALLEL_T"] = par
    if seg is None:
        os.environ.pop("LOLSEARCH_KERNELS_PARALLEL_SEG", None)
    else:
        os.environ["LOLSEARCH_KERNELS_PARALLEL_SEG"] = seg


def outputs(x: dict) -> list[torch.Tensor]:
    leaves = [x[n].detach().requires_grad_(True) for n in ob.NAMES]
    o = hybrid_attention(*leaves, bi.WINDOW, "sliding")
    return [o, *torch.autograd.grad(o, leaves, x["do"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shapes", nargs="+", default=["smollm2", "llama3-8b"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 8192])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    args = ap.parse_args()
    rows = []
    print(torch.cuda.get_device_name(), flush=True)  # noqa: T201
    for name in args.shapes:
        for t in args.lengths:
            b = max(1, ob.TOKENS // t)
            x = ob.inputs(bi.SHAPES[name], b, t)
            use("walk")
            ref = outputs(x)
            errs = {}
            for mode in args.modes:
                use(mode)
                errs[mode] = max(ob.rel(a, r) for a, r in zip(outputs(x), ref, strict=True))
            for pas in ("fwd", "lora", "at"):
                cell = {"shape": name, "batch": b, "T": t, "pass": pas}
                for mode in args.modes:
                    if mode == "quad" and t > 2048:
                        continue
                    use(mode)
                    cell[mode] = ob.graphed_us(ob.step(x, pas))
                cell["sdpa"] = ob.graphed_us(ob.sdpa_step(x, "fwd" if pas == "fwd" else "lora"))
                best = min((m for m in args.modes if m in cell), key=lambda m: cell[m])
                cell["best"] = best
                cell["walk/best"] = cell["walk"] / cell[best]
                cell["best/sdpa"] = cell[best] / cell["sdpa"]
                cell["max_rel_err"] = max(errs.values())
                rows.append(cell)
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items()),  # noqa: T201
                      flush=True)
            del x, ref
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
