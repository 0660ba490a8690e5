#!/usr/bin/env bash
# The 8K question and the Llama-3-8B shape on an H200 (the call after call1.sh, same carry and wrapper):
#   PERF_CMDS="bash results/perf/features_dx_20261206/call2.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. whether a CUDA graph helps the 8K step (cuda_graph: auto leaves micro-batches over 8,192 tokens eager): 2 x 8192,
#    2 accumulated, graph off/on, 10 steps with a read-back every 2, so that steady_tok_s leaves out the capture;
# 2. the Llama-3-8B shape, 8 x 1024, eager: attention transfer and LoRA.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 230 $P --model smollm2-135m-shape --out "$O/smol8k_graph" train --seq 8192 --micro-batch 2 --accum 2 --backends triton \
  --stages lora teacher_lora --compile off --cuda-graph off on --steps 10 --sync-every 2 --warmup 2 > "$O/smol8k_graph.log" 2>&1
tail -6 "$O/smol8k_graph.log"
timeout 200 $P --model llama3-8b-shape --out "$O/l8b" train --seq 1024 --backends triton --stages attention_transfer lora \
  --compile off --steps 6 --sync-every 2 --warmup 2 > "$O/l8b.log" 2>&1
tail -4 "$O/l8b.log"
