"""Appends the rows of the schedules_20261207 calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/schedules_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/schedules_20261207"
H = "2026-12-07 H100 (sixteenth session)"
RUNS = [("h100_call2", "smol512_quad", "graphed, 16 x 512, tree 2de6816: quadratic mode (default), --check"),
        ("h100_call2", "smol512_chunked", "graphed, 16 x 512, tree 2de6816: walks (LOLSEARCH_KERNELS_QUADRATIC_T=0), same machine"),
        ("h100_call4", "smol1k_par", "graphed, tree 5e07bd9: parallel schedule (default), --check"),
        ("h100_call4", "smol1k_walk", "graphed, tree 5e07bd9: walks (LOLSEARCH_KERNELS_PARALLEL_T=0), same machine"),
        ("h100_call4", "smol8k_walk", "graphed, tree 5e07bd9: walks (LOLSEARCH_KERNELS_PARALLEL_T=0)"),
        ("h100_call4", "smol8k_par", "graphed, tree 5e07bd9: parallel schedule (default), same machine")]
append(R, H, RUNS)
