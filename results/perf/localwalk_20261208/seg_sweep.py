"""Chunks per segment of the walks' forward, timed by CUDA-graph replay (median µs) in one process, in whichever tree
``lolsearch`` imports from (PYTHONPATH): Llama-3-8B heads (32 q / 8 kv, D = F = 128), bf16, sliding window 64,
batch 1, no autograd. Without seg_sums a segment costs the forward only its fp32 state (the scan, and the state each
chunk of fwd_window reads), so longer segments than the default may pay.

    PYTHONPATH=TREE:/tmp/site python3 results/perf/localwalk_20261208/seg_sweep.py LABEL
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "linwin_20261207"))
from op_ab import graphed_us, inputs, step  # noqa: E402

# (T, setting name, value): None is the default plan (8 programs per SM, at least sqrt(nt / 2) chunks)
SETTINGS = [(32768, None, None), (32768, "LOLSEARCH_KERNELS_PPS", "16"), (32768, "LOLSEARCH_KERNELS_MIN_SEG", "32"),
            (32768, "LOLSEARCH_KERNELS_MIN_SEG", "64"), (8192, None, None), (8192, "LOLSEARCH_KERNELS_MIN_SEG", "16"),
            (8192, "LOLSEARCH_KERNELS_MIN_SEG", "32"), (2048, None, None), (2048, "LOLSEARCH_KERNELS_MIN_SEG", "8"),
            (2048, "LOLSEARCH_KERNELS_MIN_SEG", "16")]


def main() -> None:
    label = sys.argv[1]
    x, t_x = None, None
    for t, name, value in SETTINGS:
        if t != t_x:
            x, t_x = inputs("llama3-8b", 1, t), t
        if name:
            os.environ[name] = value
        us = graphed_us(step(x, "fwd", "sliding"))
        if name:
            os.environ.pop(name)
        row = dict(tree=label, T=t, setting=f"{name}={value}" if name else "default", us=round(us, 1))
        print(json.dumps(row), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
