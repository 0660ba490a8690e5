#!/usr/bin/env bash
# Planned (not yet run): the next call on an H200, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bwd_grads_20261206/call2.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. issue 16's goal rows on the H200 with this tree (the H100 ran call.sh): SmolLM2 shape, 8 x 1024, graphed,
#    attention transfer, LoRA and the teacher's LoRA, compile off/default, --check;
# 2. whether a CUDA graph helps the 8K step (cuda_graph: auto leaves micro-batches over 8,192 tokens eager): 2 x 8192,
#    graph off/on, 10 steps with a read-back every 2, so that steady_tok_s leaves out the capture (the H100's 4-step
#    run of call3/ counted it);
# 3. the Llama-3-8B shape, 8 x 1024, eager: attention transfer and LoRA.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 160 $P --model smollm2-135m-shape --out "$O/defaults" train --seq 1024 --backends triton --cuda-graph on \
  --compile off default --stages attention_transfer lora teacher_lora --steps 30 --sync-every 5 --check > "$O/defaults.log" 2>&1
tail -8 "$O/defaults.log"
timeout 200 $P --model smollm2-135m-shape --out "$O/smol8k_graph" train --seq 8192 --micro-batch 2 --accum 2 --backends triton \
  --stages lora teacher_lora --compile off --cuda-graph off on --steps 10 --sync-every 2 --warmup 2 > "$O/smol8k_graph.log" 2>&1
tail -6 "$O/smol8k_graph.log"
timeout 150 $P --model llama3-8b-shape --out "$O/l8b" train --seq 1024 --backends triton --stages attention_transfer lora \
  --compile off --steps 4 --warmup 2 > "$O/l8b.log" 2>&1
tail -4 "$O/l8b.log"
