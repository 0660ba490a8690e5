"""Fixed cost per trial on the H200, from the timings a sweep's ok trials recorded, and the efficiency measurements
a cache shared by all workers would have skipped (every trial after the first of its design, in start order).

    python results/perf/fixed_gpu/fixed_cost.py      # the issue-14 re-run (15 smollm2_series trials, four sharing
                                                     # one GPU) -> fixed_cost.txt beside this file
    python results/perf/fixed_gpu/fixed_cost.py results/h200/partial/beyond_recipe/trials \
        results/perf/fixed_gpu/fixed_cost_beyond_recipe.txt
"""

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
TRIALS = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "smollm2-ablation/rerun/smollm2_series/trials"
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "fixed_cost.txt"
PARTS = [("config written (fsync)", "record_s"), ("probe and surgery", "swap_s"), ("evaluation after the swap", "swap_eval_s"),
         ("evaluation after attention transfer", "distill_eval_s"), ("attention-transfer set-up", "distill_setup_s"),
         ("LoRA set-up (adapters, optimizer)", "finetune_setup_s"),
         ("final evaluation", "final_eval_s")]
PARTS += [(f"  final evaluation: {p}", f"final_eval_{p}_s")  # recorded since 2026-12-04 evening
          for p in ("main", "lengths", "datasets", "passkey", "mse", "tasks")]

records = [json.loads(p.read_text()) for p in TRIALS.glob("*/result.json")]
rows = sorted((r["env"]["started_at"], r["design_id"], r["timing"]) for r in records if r.get("status") == "ok")
lines, seen, saved = [], set(), 0.0
for name, get in [("training (both stages)", lambda t: t["distill_s"] + t["finetune_s"]),
                  ("fixed rest", lambda t: t["total_s"] - t["distill_s"] - t["finetune_s"]),
                  ("evaluations (eval_s: after the swap, final)", lambda t: t["eval_s"]), ("efficiency", lambda t: t["efficiency_s"]),
                  ("load", lambda t: t["load_s"]), ("baselines", lambda t: t["baseline_s"]),
                  ("unnamed (total minus the parts above and training)", lambda t: t["total_s"] - sum(
                      t[k] for k in ("distill_s", "finetune_s", "eval_s", "efficiency_s", "load_s", "baseline_s")))]:
    v = [get(t) for _, _, t in rows]
    lines.append(f"{name}: median {statistics.median(v):.1f} s, range {min(v):.1f}-{max(v):.1f}")
for name, key in PARTS:  # recorded since 2026-12-03 evening
    v = [t[key] for _, _, t in rows if key in t]
    if v:
        lines.append(f"{name}: median {statistics.median(v):.1f} s, range {min(v):.1f}-{max(v):.1f} ({len(v)} trials)")
for _, design, t in rows:
    saved += t["efficiency_s"] if design in seen else 0.0
    seen.add(design)
lines.append(f"efficiency measurements of repeated designs: {len(rows) - len(seen)} of {len(rows)}, {saved:.0f} s "
             f"of {sum(t['total_s'] for _, _, t in rows):.0f} trial-seconds")
fixed = [(t["total_s"] - t["distill_s"] - t["finetune_s"]) / (t["distill_s"] + t["finetune_s"]) for _, _, t in rows]
lines.append(f"fixed rest / training: median {statistics.median(fixed):.2f}, range {min(fixed):.2f}-{max(fixed):.2f}"
             f" ({len(rows)} ok trials)")
OUT.write_text("\n".join(lines) + "\n")
