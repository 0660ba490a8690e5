"""Appends the rows of the step_parity_20261207 call to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/step_parity_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/step_parity_20261207"
H = "2026-12-07 H100 (seventeenth session)"
T = "graphed, tree 06ffbd8"
RUNS = [("h100_call1", "smol1k_2_add", f"{T}: the mapped node, maps' dx added into dq and dk (MAPPED_OP=add; reverted)"),
        ("h100_call1", "smol1k_3_off", f"{T}: separate ops (MAPPED_OP=off, the committed code's path), same machine"),
        ("h100_call1", "smol1k_4_fused", f"{T}: the mapped node with the fused query-map backward (MAPPED_OP=fused; reverted), same machine"),
        ("h100_call1", "smol1k_teacher", f"{T}: the teacher's LoRA, same machine")]
append(R, H, RUNS)
