"""Offline sm_90 compile (no GPU; Triton's bundled ptxas): registers, spill bytes and shared memory of the hybrid
kernels at bf16 D = F = 128 under the launch configs and register caps this folder's README discusses.

    .venv/bin/python results/perf/gqa_order_20261206/compile_regs.py > results/perf/gqa_order_20261206/compile_regs.log
"""

from __future__ import annotations

import warnings

import triton
from lolsearch.kernels import compile_check

# (kernel, warps, stages, maxnreg or None, extra constexprs)
CASES = [
    ("fwd_window", 4, 1, None, {"SAVE_LO": False}), ("fwd_window", 8, 1, None, {"SAVE_LO": False}),
    ("fwd_window", 4, 1, None, {"SAVE_LO": True}), ("fwd_window", 8, 1, None, {"SAVE_LO": True}),
    ("fwd_window", 4, 1, 168, {"SAVE_LO": False}), ("fwd_window", 4, 1, 200, {"SAVE_LO": False}),
    ("fwd_state", 8, 1, None, {}), ("fwd_state", 8, 1, 128, {}),
    ("bwd_q", 4, 1, None, {}), ("bwd_q", 4, 1, 168, {}),
    ("bwd_kv", 4, 1, None, {}), ("bwd_kv", 4, 1, 168, {}),
]


def main() -> None:
    warnings.filterwarnings("ignore")
    jobs = compile_check._jobs("bf16", 128, 128, True)
    print(f"triton {triton.__version__}, bf16 D = F = 128, window <= 64 variants")  # noqa: T201
    for name, warps, stages, maxnreg, extra in CASES:
        kernel, types, consts = jobs[name]
        _, r = compile_check.compile_sm90(kernel, types, {**consts, **extra}, warps, stages, maxnreg)
        regs, stack, smem = r["reg"], r["stack"], r["smem"]
        label = f"{name} warps {warps} stages {stages} maxnreg {maxnreg or '-'} {extra or ''}"
        print(f"{label:60s} regs {regs:3d} spill {stack:4d} B smem {smem:6d}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
