#!/usr/bin/env bash
# SmolLM2 shape, 2 x 8192 (2 accumulated), graphed: the linearized LoRA step and the teacher's, with the 16-bit
# products' launch configs. Carrying .dev/p0:
#   PERF_CMDS="bash results/perf/lowp_20261207b/call3.sh \$OUT/perf" timeout 300 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
S8="train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2"
timeout 200 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/rows8k" $S8 --stages lora teacher_lora \
  > "$O/rows8k.log" 2>&1
grep '^| smollm2' "$O/rows8k.log" | cut -c1-250
