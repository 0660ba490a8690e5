"""Appends the rows of the fused_loss_lora_20261207 calls to results/perf/train.csv, each with a note naming its folder.

    .venv/bin/python results/perf/fused_loss_lora_20261207/append_rows.py
"""
import sys

sys.path.insert(0, "results/perf")
from append_rows import append  # noqa: E402

R = "results/perf/fused_loss_lora_20261207"
H = "2026-12-07 H100 (fifteenth session)"
NEW = "this tree (33d5c7d: fused next-token loss and LoRA layer)"
NOXENT = f"{NEW} with LOLSEARCH_KERNELS_FUSED_XENT=0 (the LoRA layer alone)"
BASE = "base tree (change.patch reversed: 8f94bc8), same machine"
SEG = "8f94bc8, LOLSEARCH_KERNELS_MIN_SEG={}, same machine"
RUNS = [("h100_call1", "l8b_attention_transfer", "eager, 8f94bc8"),
        ("h100_call1", "l8b_lora", "eager, 8f94bc8"),
        ("h100_call1", "smol1k_seg8", f"graphed, {SEG.format(8)}, first pair"),
        ("h100_call1", "smol1k_seg4", f"graphed, {SEG.format(4)}, first pair"),
        ("h100_call2", "smol1k_seg4", f"graphed, {SEG.format(4)}, second pair"),
        ("h100_call2", "smol1k_seg8", f"graphed, {SEG.format(8)}, second pair"),
        ("h100_call2", "l8b_at_seg4", f"eager, {SEG.format(4)}"),
        ("h100_call2", "l8b_at_seg8", f"eager, {SEG.format(8)}"),
        ("h100_call3", "smol1k_new", f"graphed, {NEW}, --check"),
        ("h100_call3", "smol1k_noxent", f"graphed, {NOXENT}"),
        ("h100_call4", "smol1k_base", f"graphed, {BASE}"),
        ("h100_call3", "l8b_lora_new", f"eager, {NEW}"),
        ("h100_call3", "l8b_lora_noxent", f"eager, {NOXENT}"),
        ("h100_call4", "l8b_lora_base", f"eager, {BASE}, first pair"),
        ("h100_call4", "l8b_lora_new2", f"eager, {NEW}, first pair"),
        ("h100_call6", "l8b_lora2_base", f"eager, {BASE}, second pair"),
        ("h100_call6", "l8b_lora2_new", f"eager, {NEW}, second pair"),
        ("h100_call5", "smol8k_new", f"graphed, {NEW}")]
append(R, H, RUNS)
