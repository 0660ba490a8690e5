#!/usr/bin/env bash
# The training steps with BASE and with VARIANT (LOLSEARCH_KERNELS_* settings, e.g. "LOLSEARCH_KERNELS_PPS=2"; either
# may be empty: the defaults), one process after the other on one GPU. Carry .dev/p0, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="VARIANT='...' bash results/perf/segments_20261206/call2.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
BASE=${BASE:-}
echo "base: $BASE; variant: $VARIANT"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
for R in base new; do
  E=$([ $R = new ] && echo "$VARIANT" || echo "$BASE")
  CHECK=$([ $R = new ] && echo --check)
  env $E timeout 100 $P --out "$O/smol1k_$R" train --seq 1024 --backends triton --cuda-graph on --compile off \
    --steps 30 --sync-every 5 --stages attention_transfer lora teacher_lora $CHECK > "$O/smol1k_$R.log" 2>&1
  tail -4 "$O/smol1k_$R.log" | cut -c1-300
done
for R in base new; do
  E=$([ $R = new ] && echo "$VARIANT" || echo "$BASE")
  env $E timeout 70 $P8 --out "$O/l8b_at_$R" train --seq 1024 --backends triton --stages attention_transfer \
    --compile off --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at_$R.log" 2>&1
  tail -1 "$O/l8b_at_$R.log" | cut -c1-300
done
python3 - "$O" <<'PY'
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
for name in ("smol1k", "l8b_at"):
    runs = {r: out / f"{name}_{r}" / "train.csv" for r in ("base", "new")}
    if not all(p.is_file() for p in runs.values()):
        print(name, "incomplete")
        continue
    a, b = (pd.read_csv(runs[r]).set_index("stage") for r in ("base", "new"))
    for stage in a.index.intersection(b.index):
        col = "steady_tok_s" if a.loc[stage, "steady_tok_s"] == a.loc[stage, "steady_tok_s"] else "tok_s"
        print(f"{name} {stage}: base {a.loc[stage, col]:.0f}, new {b.loc[stage, col]:.0f} tok/s ({col}), "
              f"new/base {b.loc[stage, col] / a.loc[stage, col]:.3f}; peak GiB {a.loc[stage, 'peak_gib']:.2f} -> "
              f"{b.loc[stage, 'peak_gib']:.2f}")
PY
