"""Where the quadratic mode's time goes, and two launch settings tried on it (H100, bf16, sliding 64):

    PYTHONPATH=$PWD python3 results/perf/schedules_20261207/quad_variants.py [--stage3]

Prints, per shape (8,192 tokens per call), the LoRA pass (all six gradients) by CUDA-graph replay: the chunked
schedule, the quadratic mode, and the quadratic mode with ``bwd_kv``'s query blocks of 64 rows instead of 32
(rewritten at launch); then the GPU time per kernel of both schedules (torch.profiler, eager calls). ``--stage3``
(run as a second process: the autotuner keeps its first choices) also offers 3-stage configs to the three kernels
the quadratic mode runs over many tiles, and checks the results against the chunked schedule.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import op_bench as ob  # noqa: E402
from lolsearch.kernels import _bench_impls as bi  # noqa: E402
from lolsearch.kernels import hybrid as hy  # noqa: E402

QUAD, CHUNKED = str(1 << 30), "0"
BQ = {"value": 32}


def launch_with_bq(kernel, grid, *args, **kwargs):
    if kwargs.get("QUAD") and getattr(kernel, "fn", kernel).__name__ == "bwd_kv_kernel":
        kwargs["BQ"] = BQ["value"]
    return REAL_LAUNCH(kernel, grid, *args, **kwargs)


REAL_LAUNCH = hy.launch
hy.launch = launch_with_bq


def per_kernel(fn, calls: int = 10) -> str:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", 0) / calls
        if us > 0.5:
            rows[e.key[:24]] = us
    total = sum(v for k, v in rows.items() if k.endswith("_kernel"))
    return f"kernels {total:.0f} us: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage3", action="store_true")
    args = ap.parse_args()
    if args.stage3:
        for k in (hy.fwd_window_kernel, hy.bwd_kv_kernel, hy.bwd_state_q_kernel):
            warps = 8 if k is hy.bwd_state_q_kernel else 4
            k.configs.append(triton.Config({}, num_warps=warps, num_stages=3))
    print(torch.cuda.get_device_name(), "stage3" if args.stage3 else "", flush=True)  # noqa: T201
    for name, b, t in (("smollm2", 8, 1024), ("smollm2", 16, 512), ("llama3-8b", 8, 1024), ("llama3-8b", 16, 512)):
        x = ob.inputs(bi.SHAPES[name], b, t)
        cells = {}
        for label, limit, bq in (("chunked", CHUNKED, 32), ("quad", QUAD, 32), ("quad_bq64", QUAD, 64)):
            os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = limit
            BQ["value"] = bq
            cells[label] = ob.graphed_us(ob.step(x, "lora"))
            if label == "quad_bq64":
                err = ob.check(x)
        line = " ".join(f"{k}={v:.1f}us" for k, v in cells.items())
        print(f"{name} {b}x{t} lora: {line} chunked/quad={cells['chunked'] / cells['quad']:.3f} "  # noqa: T201
              f"chunked/quad_bq64={cells['chunked'] / cells['quad_bq64']:.3f} max_rel_err(bq64 vs chunked)={err:.1e}",
              flush=True)
        if not args.stage3 and (b, t) == (8, 1024):
            BQ["value"] = 32
            for label, limit in (("chunked", CHUNKED), ("quad", QUAD)):
                os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = limit
                print(f"  {label} per kernel: {per_kernel(ob.step(x, 'lora'))}", flush=True)  # noqa: T201
        del x


if __name__ == "__main__":
    main()
