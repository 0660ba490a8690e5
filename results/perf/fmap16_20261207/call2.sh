#!/usr/bin/env bash
# Llama-3-8B shape (random weights), 8 x 1024, eager: attention transfer and LoRA with the fused maps' 16-bit products
# (LOLSEARCH_KERNELS_FEATURES_16BIT=1, the default) and without (=0), alternating. Carrying .dev/p0, after
# `bash results/h200/lighten.sh out`:
# Run so on 2026-12-07 (nineteenth session, tree e4b3fe4): results/perf/lowp_20261207b/h100_call2/
#   PERF_CMDS="bash results/perf/fmap16_20261207/call2.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack  (timeout 520 there)
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
for run in "lora 1" "lora 0" "attention_transfer 1" "attention_transfer 0"; do
  set -- $run
  LOLSEARCH_KERNELS_FEATURES_16BIT=$2 timeout 110 python3 -m lolsearch.perf --model llama3-8b-shape \
    --out "$O/l8b_$1_$2" train --seq 1024 --backends triton --compile off --steps 8 --warmup 3 --sync-every 5 \
    --stages $1 > "$O/l8b_$1_$2.log" 2>&1
  tail -1 "$O/l8b_$1_$2.log" | cut -c1-250
done
