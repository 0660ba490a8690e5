"""Fixed cost per trial on the H200, from the timings the issue-14 re-run recorded (15 smollm2_series trials,
four sharing one GPU), and the efficiency measurements a cache shared by all workers would have skipped (every
trial after the first of its design, in start order).

    python results/perf/fixed_gpu/fixed_cost.py      # writes fixed_cost.txt beside this file
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
TRIALS = HERE.parents[1] / "smollm2-ablation/rerun/smollm2_series/trials"

rows = sorted((r["env"]["started_at"], r["design_id"], r["timing"]) for r in
              (json.loads(p.read_text()) for p in TRIALS.glob("*/result.json")))
lines, seen, saved = [], set(), 0.0
for name, get in [("training (both stages)", lambda t: t["distill_s"] + t["finetune_s"]),
                  ("fixed rest", lambda t: t["total_s"] - t["distill_s"] - t["finetune_s"]),
                  ("final evaluations", lambda t: t["eval_s"]), ("efficiency", lambda t: t["efficiency_s"]),
                  ("load", lambda t: t["load_s"]), ("baselines", lambda t: t["baseline_s"])]:
    v = [get(t) for _, _, t in rows]
    lines.append(f"{name}: median {statistics.median(v):.1f} s, range {min(v):.1f}-{max(v):.1f}")
for _, design, t in rows:
    saved += t["efficiency_s"] if design in seen else 0.0
    seen.add(design)
lines.append(f"efficiency measurements of repeated designs: {len(rows) - len(seen)} of {len(rows)}, {saved:.0f} s "
             f"of {sum(t['total_s'] for _, _, t in rows):.0f} trial-seconds")
(HERE / "fixed_cost.txt").write_text("\n".join(lines) + "\n")
