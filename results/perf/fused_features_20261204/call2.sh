#!/usr/bin/env bash
# Second H200 call, back to back after call.sh (the settings named on the command line, so it needs no default
# changed in between), carrying nothing new:
#   PERF_CMDS="bash results/perf/fused_features_20261204/call2.sh \$OUT/perf" bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. SmolLM2-135M shape at 8K (2 x 8192 per micro-batch, 4 accumulated): the linearized LoRA step against the
#    teacher's own (issue 16: at least 2x faster at 8K), fused off/on x LoRA products float32/model.
# 2. Llama-3-8B shape at 8 x 2048 with both on: does LoRA now fit beside attention transfer (issue 16: memory that
#    leaves room for 8 x 2048; it ran out of memory at 8 x 2048 before).
# 3. Llama-3-8B shape at 8 x 1024 with both on, compile default against off.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 200 $P --model smollm2-135m-shape --out "$O/smol8k" train --seq 8192 --micro-batch 2 --accum 4 --backends triton \
  --stages lora teacher_lora --compile off --fused-features off on --lora-compute float32 model --steps 4 --warmup 1 \
  > "$O/smol8k.log" 2>&1
tail -3 "$O/smol8k.log"
timeout 170 $P --model llama3-8b-shape --out "$O/l8b2k" train --seq 2048 --backends triton --stages attention_transfer lora \
  --fused-features on --lora-compute model --steps 3 --warmup 1 > "$O/l8b2k.log" 2>&1
tail -3 "$O/l8b2k.log"
timeout 170 $P --model llama3-8b-shape --out "$O/l8b_compiled" train --seq 1024 --backends triton \
  --stages attention_transfer lora --fused-features on --lora-compute model --compile off default --steps 4 --warmup 2 \
  > "$O/l8b_compiled.log" 2>&1
tail -3 "$O/l8b_compiled.log"
