#!/usr/bin/env bash
# With the fused loss and LoRA layer (same machine as calls 3-4): SmolLM2 2 x 8192 x 2 graphed LoRA and the teacher's
# LoRA; where the Llama-3-8B LoRA step's time goes now (eager, 2 profiled steps, profile_lora_off_by_op.txt).
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call5.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 100 $P --model smollm2-135m-shape --out "$O/smol8k_new" train --seq 8192 --micro-batch 2 --accum 2 \
  --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages lora teacher_lora \
  > "$O/smol8k_new.log" 2>&1
grep '^| smollm2' "$O/smol8k_new.log" | cut -c1-250
timeout 90 $P --model llama3-8b-shape --out "$O/prof_l8b_new" train --seq 1024 --backends triton --compile off \
  --steps 3 --stages lora --profile > "$O/prof_l8b_new.log" 2>&1
head -1 "$O"/prof_l8b_new/profile_lora_off_by_op.txt
rm -f "$O"/prof_l8b_new/profile_lora_off_trace.json.gz
