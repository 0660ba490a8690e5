#!/usr/bin/env bash
# Right after call.sh on the same warm machine, carrying .dev/p0 (call.sh's kernels):
#   PERF_CMDS="bash results/perf/bwd_grads_20261206/call2.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. why the linearized LoRA step trails the teacher's at 8K: 2 x 8192 per micro-batch, the step graphed and eager
#    (cuda_graph: auto leaves micro-batches over 8,192 tokens eager), compile off and default, with --check;
# 2. operator and host profiles of the eager 1K steps (what is left of the attention's share).
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S8="train --seq 8192 --micro-batch 2 --backends triton --stages lora teacher_lora"
timeout 300 $P --out "$O/smol8k_graph" $S8 --compile off default --accum 4 --cuda-graph off on --steps 8 --warmup 2 --check \
  > "$O/smol8k_graph.log" 2>&1
tail -6 "$O/smol8k_graph.log"
timeout 120 $P --out "$O/profile1k" train --seq 1024 --backends triton --stages attention_transfer lora teacher_lora \
  --compile off --cuda-graph off --steps 3 --profile > "$O/profile1k.log" 2>&1
tail -5 "$O/profile1k.log"
