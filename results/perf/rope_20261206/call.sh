#!/usr/bin/env bash
# One call on one GPU (carry .dev/p0, after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/rope_20261206/call.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. GPU tests of the fused RoPE (kernel against transformers in float64, the layer with and without it) and of the
#    graphed steps and evaluation passes that now capture it;
# 2. the steps with LOLSEARCH_KERNELS_FUSED_ROPE=0 and =1 one after the other: SmolLM2 shape 8 x 1024 graphed
#    (attention transfer, LoRA, --check on the fused run), Llama-3-8B shape 8 x 1024 eager (attention transfer with a
#    steady window, LoRA); ratios printed at the end;
# 3. the evaluation-pass probe (results/perf/eval_probe_20261206/probe.py).
set -u
O=$1
mkdir -p "$O"
timeout 150 python3 -m pytest -q -rf -p no:cacheprovider tests/kernels/test_rope_kernel.py tests/trial/test_step_graph.py \
  tests/trial/test_eval_graph.py tests/trial/test_surgery.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
for R in 0 1; do
  CHECK=$([ $R = 1 ] && echo --check)
  LOLSEARCH_KERNELS_FUSED_ROPE=$R timeout 80 $P --out "$O/smol1k_rope$R" train --seq 1024 --backends triton \
    --cuda-graph on --compile off --steps 30 --sync-every 5 --stages attention_transfer lora $CHECK \
    > "$O/smol1k_rope$R.log" 2>&1
  tail -3 "$O/smol1k_rope$R.log" | cut -c1-250
done
for R in 0 1; do
  LOLSEARCH_KERNELS_FUSED_ROPE=$R timeout 70 $P8 --out "$O/l8b_at_rope$R" train --seq 1024 --backends triton \
    --stages attention_transfer --compile off --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at_rope$R.log" 2>&1
  tail -1 "$O/l8b_at_rope$R.log" | cut -c1-250
done
for R in 0 1; do
  LOLSEARCH_KERNELS_FUSED_ROPE=$R timeout 80 $P8 --out "$O/l8b_lora_rope$R" train --seq 1024 --backends triton \
    --stages lora --compile off --steps 4 --sync-every 2 --warmup 1 > "$O/l8b_lora_rope$R.log" 2>&1
  tail -1 "$O/l8b_lora_rope$R.log" | cut -c1-250
done
python3 - "$O" <<'PY'
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
for name in ("smol1k", "l8b_at", "l8b_lora"):
    runs = {r: out / f"{name}_rope{r}" / "train.csv" for r in (0, 1)}
    if not all(p.is_file() for p in runs.values()):
        print(name, "incomplete")
        continue
    a, b = (pd.read_csv(runs[r]).set_index("stage") for r in (0, 1))
    for stage in a.index:
        col = "steady_tok_s" if a.loc[stage, "steady_tok_s"] == a.loc[stage, "steady_tok_s"] else "tok_s"
        print(f"{name} {stage}: rope off {a.loc[stage, col]:.0f}, on {b.loc[stage, col]:.0f} tok/s ({col}), "
              f"on/off {b.loc[stage, col] / a.loc[stage, col]:.3f}; peak GiB {a.loc[stage, 'peak_gib']:.2f} -> "
              f"{b.loc[stage, 'peak_gib']:.2f}")
PY
timeout 100 python3 results/perf/eval_probe_20261206/probe.py --out "$O/probe" > "$O/probe.log" 2>&1
tail -22 "$O/probe.log"
