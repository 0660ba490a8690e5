"""Appends the rows of the lowp_20261207b calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/lowp_20261207b/append_rows.py           # calls 1-3
    .venv/bin/python results/perf/lowp_20261207b/append_rows.py --call4   # call 4
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/lowp_20261207b"
H = "2026-12-07 H100 (nineteenth session), tree e4b3fe4 (16-bit products, FWD_LOWP/BWD_LOWP)"
RUNS = [("h100_call1", "lora_1", "graphed, --check"),
        ("h100_call1", "teacher_1", "graphed: the teacher's LoRA, same machine"),
        ("h100_call1", "lora_2", "graphed, same machine"),
        ("h100_call1", "teacher_2", "graphed: the teacher's LoRA, same machine"),
        ("h100_call1", "at_1", "graphed, same machine"),
        ("h100_call2", "l8b_lora_1", "eager, FEATURES_16BIT=1"),
        ("h100_call2", "l8b_lora_0", "eager, FEATURES_16BIT=0 (one TF32 pass), same machine"),
        ("h100_call2", "l8b_attention_transfer_1", "eager, FEATURES_16BIT=1, same machine"),
        ("h100_call2", "l8b_attention_transfer_0", "eager, FEATURES_16BIT=0, same machine"),
        ("h100_call3", "rows8k", "2 x 8192 x 2 graphed, the linearized LoRA and the teacher's, same machine")]
RUNS4 = [("h100_call4", "l8b_attention_transfer", "eager (call 4: asked for an H200, ran on an H100)"),
         ("h100_call4", "l8b_lora", "eager, same machine"),
         ("h100_call4", "lora_1", "graphed, same machine"),
         ("h100_call4", "teacher_1", "graphed: the teacher's LoRA, same machine"),
         ("h100_call4", "lora_2", "graphed, same machine"),
         ("h100_call4", "teacher_2", "graphed: the teacher's LoRA, same machine"),
         ("h100_call4", "at_1", "graphed, same machine"),
         ("h100_call4", "rows8k", "2 x 8192 x 2 graphed, the linearized LoRA and the teacher's, same machine")]
if "--call4" in sys.argv:  # appended later, in the same session
    append(R, H, RUNS4)
else:
    append(R, H, RUNS)
