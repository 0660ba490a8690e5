"""Appends the rows of the long8b_20261207 calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/long8b_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/long8b_20261207"
H = "2026-12-07 H100 (nineteenth session), eager"
RUNS = [("h100_call1", "at_2k", "tree 9b3c0b4, same machine as the LoRA rows of call 1"),
        ("h100_call1", "at_4k", "tree 9b3c0b4"),
        ("h100_call1", "lora_2k", "tree 9b3c0b4: checkpointed layers failed (CheckpointError: the hybrid op read its "
                                  "saved tensors twice, fixed in 769f1b7); without them out of memory"),
        ("h100_call1", "lora_4k", "tree 9b3c0b4: checkpointed layers failed (CheckpointError, fixed in 769f1b7)"),
        ("h100_call2", "lora_4096", "tree with 769f1b7, checkpointed layers"),
        ("h100_call3", "lora_2048", "tree with 769f1b7, checkpointed layers, same machine as call 2")]
append(R, H, RUNS)
