#!/usr/bin/env bash
# The goals of issues 16 and 17 on the device they are set for, an H200, with the committed code (tree 9781801):
# 1. Llama-3-8B shape (random weights), 8 x 1024, eager: attention transfer and LoRA;
# 2. the kernel bench's 32K forward row (Llama-3-8B heads, autotuned, cuDNN SDPA and fla's pair beside it);
# 3. SmolLM2 shape, 8 x 1024 graphed: the linearized LoRA step and the teacher's (ABAB), attention transfer;
# 4. SmolLM2 shape, 2 x 8192 x 2 graphed: the linearized LoRA step and the teacher's.
# Carrying .dev/p0 on an nvidia-h200, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/lowp_20261207b/h200_call.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
for st in attention_transfer lora; do
  timeout 110 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_$st" train --seq 1024 --backends triton \
    --compile off --steps 8 --warmup 3 --sync-every 5 --stages $st > "$O/l8b_$st.log" 2>&1
  tail -1 "$O/l8b_$st.log" | cut -c1-250
done
timeout 170 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 32768 --budget 120 \
  > "$O/bench.log" 2>&1
grep -i "32K\|32768" "$O/bench/bench.md" | head -8
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S1="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
for run in lora_1 teacher_1 lora_2 teacher_2 at_1; do
  case $run in lora*) st=lora ;; teacher*) st=teacher_lora ;; at*) st=attention_transfer ;; esac
  timeout $([ $run = lora_1 ] && echo 90 || echo 45) $P --out "$O/$run" $S1 --stages $st > "$O/$run.log" 2>&1
  grep '^| smollm2' "$O/$run.log" | cut -c1-250
done
S8="train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2"
timeout 100 $P --out "$O/rows8k" $S8 --stages lora teacher_lora > "$O/rows8k.log" 2>&1
grep '^| smollm2' "$O/rows8k.log" | cut -c1-250
