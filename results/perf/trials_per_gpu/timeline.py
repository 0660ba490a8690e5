"""Where a short sweep's wall time goes, per trials-per-GPU setting, from the records of `perf scaling`.

    python results/perf/trials_per_gpu/timeline.py results/perf/trials_per_gpu   # writes timeline.md there

Reads `scaling.csv` (the wall time of each `lolsearch sweep` process) and `records/gpus1-per-gpuK/` (sweep.json's
start and finish, each trial's start and `timing`). Trial start times are whole seconds.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

TRAIN = ("distill_s", "finetune_s")


def main(folder: Path) -> None:
    with open(folder / "scaling.csv") as fh:
        walls = {int(r["trials_per_gpu"]): float(r["wall_s"]) for r in csv.DictReader(fh)}
    lines = ["| trials per GPU | process wall s | before sweep.json start | start to first trial | trials running "
             "| last trial to end | trial s (median) | training s (median) | in-trial rest s (median) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in sorted(walls):
        rec = folder / "records" / f"gpus1-per-gpu{k}"
        sweep = json.loads((rec / "sweep.json").read_text())
        s0 = datetime.fromisoformat(sweep["started_at"]).timestamp()
        s1 = datetime.fromisoformat(sweep["finished_at"]).timestamp()
        trials = [json.loads(p.read_text()) for p in rec.glob("trials/*/result.json")]
        starts = [datetime.fromisoformat(t["env"]["started_at"]).timestamp() for t in trials]
        ends = [a + t["timing"]["total_s"] for a, t in zip(starts, trials, strict=True)]
        total = [t["timing"]["total_s"] for t in trials]
        train = [sum(t["timing"][x] for x in TRAIN) for t in trials]
        rest = [a - b for a, b in zip(total, train, strict=True)]
        lines.append(f"| {k} | {walls[k]:.0f} | {walls[k] - (s1 - s0):.0f} | {min(starts) - s0:.0f} | "
              f"{max(ends) - min(starts):.0f} | {s1 - max(ends):.0f} | {statistics.median(total):.1f} | "
              f"{statistics.median(train):.1f} | {statistics.median(rest):.1f} |")
    (folder / "timeline.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
