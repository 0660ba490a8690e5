"""Appends the rows of the fmap16_20261207 calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/fmap16_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/fmap16_20261207"
H = "2026-12-07 H100 (eighteenth session)"
T = "graphed, tree ab9975f"
RUNS = [("h100_call1", "lora_1_1", f"{T}: fused maps with 16-bit products (FEATURES_16BIT=1, default), --check"),
        ("h100_call1", "lora_2_0", f"{T}: fused maps in one TF32 pass (FEATURES_16BIT=0, the old path), same machine"),
        ("h100_call1", "lora_teacher", f"{T}: the teacher's LoRA, same machine"),
        ("h100_call1", "at_0", f"{T}: FEATURES_16BIT=0, same machine"),
        ("h100_call1", "at_1", f"{T}: FEATURES_16BIT=1, same machine")]
append(R, H, RUNS)
