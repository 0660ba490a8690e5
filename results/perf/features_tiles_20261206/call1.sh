#!/usr/bin/env bash
# Device call (2026-12-06, tenth session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/features_tiles_20261206/call1.sh \$OUT/perf" timeout 210 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. probe.py: the feature-map kernels' row tiles and launch configs at the SmolLM2 and 8B LoRA shapes;
# 2. SmolLM2 8 x 1024 LoRA rows, graphed, with the probe's best configs and with the old ones (variant.py), plus the
#    teacher's LoRA in the first run (the session's last 300 s of device time: no repeat).
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
D=results/perf/features_tiles_20261206
timeout 80 python3 $D/probe.py "$O/probe.json" > "$O/probe.log" 2>&1
grep -E "best|Error" "$O/probe.log"
V="python3 $D/variant.py"
timeout 70 $V "$O/probe.json" --model smollm2-135m-shape --out "$O/smol_best" train --seq 1024 --backends triton \
  --cuda-graph on --compile off --steps 30 --sync-every 5 --stages lora teacher_lora --check > "$O/smol_best.log" 2>&1
grep -E "configs|Error" "$O/smol_best.log"; tail -3 "$O/smol_best.log" | cut -c1-330
timeout 55 $V old --model smollm2-135m-shape --out "$O/smol_old" train --seq 1024 --backends triton \
  --cuda-graph on --compile off --steps 30 --sync-every 5 --stages lora > "$O/smol_old.log" 2>&1
grep -E "configs|Error" "$O/smol_old.log"; tail -2 "$O/smol_old.log" | cut -c1-330
