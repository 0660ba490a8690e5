# ruff: noqa: T201 - a measurement that reports by printing
"""Does the autotune key's size class (``TUNE``) keep a process from reusing choices made at other sizes? Times
the bench's own cells (``_bench_impls.ours``: B = 1, Llama-3-8B heads, bf16, window 64, both layouts) forward and
forward + backward at 2K, 8K and 32K, and SmolLM2's heads (9 / 3, D 64, F 128) at 1K and 8K. Prints the first call's seconds (compile and,
with autotuning, the timing of every config) and the steady median ms. Run it in fresh processes, e.g.

    LOLSEARCH_KERNELS_AUTOTUNE=0 python3 results/kernels/tune_key_20261204/tune_check.py untuned
    LOLSEARCH_KERNELS_AUTOTUNE=1 python3 results/kernels/tune_key_20261204/tune_check.py tuned-after-tests

(``call.sh`` beside this file is the whole device call.)
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
from lolsearch.kernels import _bench_impls as bi  # noqa: E402
from lolsearch.kernels._common import AUTOTUNE  # noqa: E402


def first_and_steady(fn, leaves) -> tuple[float, float]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    return first, bi.time_ms(fn, 60.0, grad_to_none=leaves)


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else ""
    torch.ones(1, device="cuda")
    for name, t in [("llama3-8b", 2048), ("llama3-8b", 8192), ("llama3-8b", 32768), ("smollm2", 1024), ("smollm2", 8192)]:
        shape = bi.SHAPES[name]
        for bwd in (False, True):
            x = bi.make_prefill(shape, t, grad=bwd)
            for layout in ("sliding", "terrace"):
                built = bi.ours(x, layout, bwd)
                fn, leaves = built[0], built[1]
                first, ms = first_and_steady(fn, leaves)
                print(f"{label} autotune={int(AUTOTUNE)} {name} T={t} {'fwd+bwd' if bwd else 'fwd'} {layout}: "
                      f"first {first:.2f} s, steady {ms:.4f} ms", flush=True)
            del x
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
