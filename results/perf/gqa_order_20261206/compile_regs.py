"""Offline sm_90 compile (no GPU; Triton's bundled ptxas): registers, spill bytes and shared memory of the hybrid
kernels at bf16 D = F = 128 under the launch configs and register caps this folder's README discusses.

    .venv/bin/python results/perf/gqa_order_20261206/compile_regs.py > results/perf/gqa_order_20261206/compile_regs.log
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings

import triton
from lolsearch.kernels import compile_check
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# (kernel, warps, stages, maxnreg or None, extra constexprs)
CASES = [
    ("fwd_window", 4, 1, None, {"SAVE_LO": False}), ("fwd_window", 8, 1, None, {"SAVE_LO": False}),
    ("fwd_window", 4, 1, None, {"SAVE_LO": True}), ("fwd_window", 8, 1, None, {"SAVE_LO": True}),
    ("fwd_window", 4, 1, 168, {"SAVE_LO": False}), ("fwd_window", 4, 1, 200, {"SAVE_LO": False}),
    ("fwd_state", 8, 1, None, {}), ("fwd_state", 8, 1, 128, {}),
    ("bwd_q", 4, 1, None, {}), ("bwd_q", 4, 1, 168, {}),
    ("bwd_kv", 4, 1, None, {}), ("bwd_kv", 4, 1, 168, {}),
]


def compile_one(kernel, types: dict, consts: dict, warps: int, stages: int, maxnreg: int | None) -> tuple[int, int, int]:
    """(registers, stack bytes, shared memory bytes) of one sm_90 build."""
    fn = kernel.fn if hasattr(kernel, "configs") else kernel
    sig = {a: ("constexpr" if a in consts else types.get(a, "i32")) for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if sig[a].startswith("*")}
    options = {"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})}
    c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options=options)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(c.asm["cubin"])
        fh.flush()
        out = subprocess.run([tool, "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return int(m.group(1)), int(m.group(2)), c.metadata.shared


def main() -> None:
    warnings.filterwarnings("ignore")
    jobs = compile_check._jobs("bf16", 128, 128, True)
    print(f"triton {triton.__version__}, bf16 D = F = 128, window <= 64 variants")  # noqa: T201
    for name, warps, stages, maxnreg, extra in CASES:
        kernel, types, consts = jobs[name]
        regs, stack, smem = compile_one(kernel, types, {**consts, **extra}, warps, stages, maxnreg)
        label = f"{name} warps {warps} stages {stages} maxnreg {maxnreg or '-'} {extra or ''}"
        print(f"{label:60s} regs {regs:3d} spill {stack:4d} B smem {smem:6d}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
