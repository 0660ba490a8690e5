#!/usr/bin/env bash
# Device call (2026-12-06, eleventh session, commit after e11d5a9), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/profile_20261206_eleventh/call.sh \$OUT/perf" timeout 230 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# Operator profiles (eager, 2 profiled steps) of what is left: the Llama-3-8B shape's attention transfer and LoRA, and
# the SmolLM2 LoRA step beside the teacher's, with the feature maps' new configs.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 110 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_profile" train --seq 1024 \
  --backends triton --compile off --steps 4 --sync-every 2 --warmup 2 --stages attention_transfer lora --profile \
  > "$O/l8b_profile.log" 2>&1
tail -3 "$O/l8b_profile.log" | cut -c1-200
timeout 80 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol1k_profile" train --seq 1024 \
  --backends triton --compile off --steps 4 --sync-every 2 --stages lora teacher_lora --profile \
  > "$O/smol1k_profile.log" 2>&1
tail -3 "$O/smol1k_profile.log" | cut -c1-200
