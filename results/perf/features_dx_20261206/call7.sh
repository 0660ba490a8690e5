#!/usr/bin/env bash
# Last call of the session (about 280 s of device time left), same carry and wrapper as call1.sh:
#   PERF_CMDS="bash results/perf/features_dx_20261206/call7.sh \$OUT/perf" timeout 200 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. issue 16's rows at 8 x 1024 with this tree (graphed, compile off/default), for an H200 if one is lent;
# 2. the Llama-3-8B shape's LoRA step as 4 x 1024 with 2 accumulated (8 x 1024 does not fit an H100), eager.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 100 $P --model smollm2-135m-shape --out "$O/rows" train --seq 1024 --backends triton --cuda-graph on \
  --compile off default --stages attention_transfer lora teacher_lora --steps 30 --sync-every 5 > "$O/rows.log" 2>&1
tail -8 "$O/rows.log"
timeout 80 $P --model llama3-8b-shape --out "$O/l8b_lora" train --seq 1024 --micro-batch 4 --accum 2 --backends triton \
  --stages lora --compile off --steps 6 --sync-every 2 --warmup 2 > "$O/l8b_lora.log" 2>&1
tail -3 "$O/l8b_lora.log"
