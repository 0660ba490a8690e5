"""bwd_kv's query blocks of 16 rows against 32 (``kernels/hybrid.py: KV_QUERY_ROWS``), per layer at training shapes
(8,192 tokens per call), by CUDA-graph replay, bf16, sliding window 64, each schedule as the defaults pick it
(SmolLM2: parallel from 1K; Llama-3-8B: walks; both: quadratic at 512). Autotuned as in training.

    PYTHONPATH=$PWD python3 results/perf/fmap16_20261207/bq_bench.py OUT.csv   (on the device: rerun.sh sets it)

Passes of ``../schedules_20261207/op_bench.py``: ``lora`` (all six gradients) and ``at`` (phi_q, phi_k, gamma).
BQ 32 and 16 alternate twice per cell; the output and six gradients of BQ 16 are checked against BQ 32's.
"""

from __future__ import annotations

import csv
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "schedules_20261207"))
import op_bench as ob  # noqa: E402
from lolsearch.kernels import _bench_impls as bi  # noqa: E402
from lolsearch.kernels import hybrid as hy  # noqa: E402

CELLS = [("smollm2", 1024), ("smollm2", 2048), ("smollm2", 8192), ("smollm2", 512), ("llama3-8b", 1024),
         ("llama3-8b", 8192), ("llama3-8b", 512)]


def grads(x: dict) -> list[torch.Tensor]:
    leaves = [x[n].detach().requires_grad_(True) for n in ob.NAMES]
    o = hy.hybrid_attention(*leaves, bi.WINDOW, "sliding")
    return [o, *torch.autograd.grad(o, leaves, x["do"])]


def main() -> None:
    rows = []
    print(torch.cuda.get_device_name(), flush=True)  # noqa: T201
    for name, t in CELLS:
        x = ob.inputs(bi.SHAPES[name], max(1, ob.TOKENS // t), t)
        outs = {}
        for bq in (32, 16):
            hy.KV_QUERY_ROWS = bq
            outs[bq] = grads(x)
        err = max(ob.rel(a, b) for a, b in zip(outs[16], outs[32], strict=True))
        for pas in ("lora", "at"):
            cell = {"shape": name, "T": t, "pass": pas}
            for rep in (1, 2):
                for bq in (32, 16):
                    hy.KV_QUERY_ROWS = bq
                    cell[f"bq{bq}_{rep}"] = ob.graphed_us(ob.step(x, pas))
            cell["bq16/bq32"] = (cell["bq16_1"] + cell["bq16_2"]) / (cell["bq32_1"] + cell["bq32_2"])
            cell["max_rel_err"] = err
            rows.append(cell)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items()),  # noqa: T201
                  flush=True)
        del x, outs
    hy.KV_QUERY_ROWS = 32
    with open(sys.argv[1], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
