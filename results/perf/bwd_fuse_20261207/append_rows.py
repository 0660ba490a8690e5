"""Appends the rows of the bwd_fuse_20261207 calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/bwd_fuse_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/bwd_fuse_20261207"
H = "2026-12-07 H100 (thirteenth session)"
NEW, BASE = "this tree (44e48ff)", "base tree (44e48ff with change.patch, the fused walks of 8fbf65f, reversed), same machine"
RUNS = [("h100_call2", "smol1k_new", f"graphed, {NEW}, --check"),
        ("h100_call2", "smol1k_base", f"graphed, {BASE}"),
        ("h100_call2", "l8b_new", f"eager, {NEW}, first of two pairs"),
        ("h100_call2", "l8b_base", f"eager, {BASE}, first of two pairs"),
        ("h100_call2", "smol8k_new", f"graphed, {NEW}"),
        ("h100_call3", "l8b_lora_base", f"eager, {BASE}"),
        ("h100_call3", "l8b_lora_new", f"eager, {NEW}"),
        ("h100_call4", "l8b2_base", f"eager, {BASE}, second pair"),
        ("h100_call4", "l8b2_new", f"eager, {NEW}, second pair")]
append(R, H, RUNS)
