#!/usr/bin/env bash
# Profiles with the fused RoPE on (carry .dev/p0, after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/rope_20261206/profile_call.sh \$OUT/perf" timeout 300 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# SmolLM2 shape 8 x 1024, eager (the profiler's kernels per step), LoRA and the teacher's LoRA; Llama-3-8B shape
# 8 x 1024 attention transfer, eager.
set -u
O=$1
mkdir -p "$O"
timeout 100 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol1k_profile" train --seq 1024 \
  --backends triton --compile off --steps 4 --sync-every 2 --stages lora teacher_lora --profile \
  > "$O/smol1k_profile.log" 2>&1
tail -4 "$O/smol1k_profile.log" | cut -c1-200
timeout 120 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_profile" train --seq 1024 \
  --backends triton --compile off --steps 4 --sync-every 2 --warmup 2 --stages attention_transfer --profile \
  > "$O/l8b_profile.log" 2>&1
tail -2 "$O/l8b_profile.log" | cut -c1-200
