#!/usr/bin/env bash
# Planned (not yet run): why the linearized LoRA step trails the teacher's at 8K. At 2 x 8192 per micro-batch its
# GPU time equals the teacher's (h200_20261206/call7/) but its wall time is 1.6x. One call, carrying .dev/p0:
#   PERF_CMDS="bash results/perf/fused_features_20261204/call4.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the step graphed and eager (cuda_graph: auto leaves micro-batches over 8,192 tokens eager), with --check;
# 2. the eager step's operator table and its Python host profile (profile_<stage>_off_host.txt).
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 8192 --micro-batch 2 --backends triton --stages lora teacher_lora --compile off"
timeout 200 $P --out "$O/smol8k_graph" $S --accum 4 --cuda-graph off on --steps 8 --warmup 2 --check \
  > "$O/smol8k_graph.log" 2>&1
tail -6 "$O/smol8k_graph.log"
timeout 150 $P --out "$O/smol8k_host" $S --accum 1 --cuda-graph off --steps 3 --profile > "$O/smol8k_host.log" 2>&1
tail -4 "$O/smol8k_host.log"
