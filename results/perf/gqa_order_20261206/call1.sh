#!/usr/bin/env bash
# The chunk-parallel kernels (fwd_window, bwd_q) with a kv head's query heads on adjacent programs
# (LOLSEARCH_KERNELS_GQA_ORDER, default on; 0 = one row of chunks per query head, the order before), and
# fwd_window's launch configs pinned one at a time. Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. every kernel GPU test (the issue-17 matrix included) under the defaults (first launch configs);
# 2. GPU time per kernel at the goals' shapes, the old order and fwd_window's configs side by side in one process;
# 3. issue 16's SmolLM2 rows at 8 x 1024 (graphed, --check).
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 210 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup tests/kernels \
  > "$O/pytest_kernels_gpu.log" 2>&1
tail -3 "$O/pytest_kernels_gpu.log"
timeout 170 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd l8b-2k-fwd l8b1k-at l8b-8k-lora smol1k-lora \
  --variants GQA_ORDER=0 "" fwd_window@4x1 fwd_window@4x2 fwd_window@8x1 fwd_window@8x2 > "$O/profile_kernels.log" 2>&1
cut -c1-220 "$O/profile_kernels.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 110 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
  --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -4 "$O/rows1k.log" | cut -c1-300
