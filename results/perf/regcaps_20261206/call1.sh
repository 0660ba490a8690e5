#!/usr/bin/env bash
# First device call of 2026-12-06 (tenth session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/regcaps_20261206/call1.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# The autotuner now also times (4 warps, 1 stage, at most 168 registers) for fwd_window, bwd_q and bwd_kv
# (LOLSEARCH_KERNELS_REG_CAPS, default on). Issue 16's SmolLM2 rows with the caps offered and without, one after the
# other on this machine, then the 8K rows with them.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
LOLSEARCH_KERNELS_REG_CAPS=1 timeout 170 $P --out "$O/rows1k_caps" train --seq 1024 --backends triton --cuda-graph on \
  --compile off --steps 30 --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k_caps.log" 2>&1
tail -4 "$O/rows1k_caps.log" | cut -c1-330
LOLSEARCH_KERNELS_REG_CAPS=0 timeout 130 $P --out "$O/rows1k_nocaps" train --seq 1024 --backends triton --cuda-graph on \
  --compile off --steps 30 --sync-every 5 --stages attention_transfer lora > "$O/rows1k_nocaps.log" 2>&1
tail -3 "$O/rows1k_nocaps.log" | cut -c1-330
timeout 150 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -4 "$O/rows8k.log" | cut -c1-330
