"""3-seed means of the confirm3 designs from what came back of that run: its log (sweep.log, values to 4 significant
digits) and the seed-0 records of results/h200/partial/beyond_recipe. Run from the repository root:
    python results/beyond-recipe/confirm3/pool.py"""

import json
import re
import statistics
from pathlib import Path

T975_DF2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom (3 seeds)
HERE = Path(__file__).parent
SWEEP = Path("results/h200/partial/beyond_recipe/trials")
# replicate trial ids -> the sweep trial they repeat; the `start` lines of sweep.log show the same design string
REPLICATES = {"9b68eafe76": ("02de8b5de7", "c090ea54f0"), "b1332bb0a8": ("e6c8cf3afa", "a8bd9f0adc"),
              "7476f83078": ("2fe264f4ec", "bd39a07e15")}

LINE = re.compile(r"^\d+/6\s+ok\s+(\w+)\s+([\d.]+)\s+([\d.]+)", re.M)
done = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in LINE.finditer((HERE / "sweep.log").read_text())}
for seed0, reps in REPLICATES.items():
    metrics = json.loads((SWEEP / seed0 / "result.json").read_text())["metrics"]
    values = [metrics["ppl_ratio_ft"]] + [done[r][0] for r in reps]
    states = {round(metrics["state_ratio_32k"], 4)} | {round(done[r][1], 4) for r in reps}
    mean = statistics.mean(values)
    half = T975_DF2 * statistics.stdev(values) / len(values) ** 0.5
    print(f"{seed0}: ppl_ratio_ft {', '.join(f'{v:.4f}' for v in values)}; mean {mean:.4f} "
          f"[{mean - half:.4f}, {mean + half:.4f}]; state_ratio_32k {sorted(states)}")
