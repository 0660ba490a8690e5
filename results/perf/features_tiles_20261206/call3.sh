#!/usr/bin/env bash
# Device call after 723a153 (the measured configs adopted, shared-memory fallback), carrying .dev/p0, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/features_tiles_20261206/call3.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# Issue 16's rows with the committed code: SmolLM2 8 x 1024 graphed (with --check) and 2 x 8192 x 2, each beside the
# teacher's LoRA; the Llama-3-8B shape 8 x 1024 eager.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 170 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on \
  --compile off --steps 30 --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -4 "$O/rows1k.log" | cut -c1-330
timeout 150 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -4 "$O/rows8k.log" | cut -c1-330
timeout 130 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b" train --seq 1024 --backends triton \
  --compile off --steps 6 --warmup 3 --stages attention_transfer lora > "$O/l8b.log" 2>&1
tail -3 "$O/l8b.log" | cut -c1-330
