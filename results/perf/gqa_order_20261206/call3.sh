#!/usr/bin/env bash
# call1.sh's profile again (its first run failed on a name clash in profile_kernels.py, fixed), then issue 16's
# SmolLM2 rows at 2 x 8192 x 2. Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call3.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 300 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd l8b-2k-fwd l8b1k-at l8b-8k-lora smol1k-lora \
  --variants GQA_ORDER=0 "" fwd_window@4x1 fwd_window@4x2 fwd_window@8x1 fwd_window@8x2 > "$O/profile_kernels.log" 2>&1
cut -c1-200 "$O/profile_kernels.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 150 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -4 "$O/rows8k.log" | cut -c1-300
