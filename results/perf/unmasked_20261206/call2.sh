#!/usr/bin/env bash
# The second call of 2026-12-06 (fourth session), right after call1.sh on the same warm H100, carrying .dev/p0:
#   PERF_CMDS="bash results/perf/unmasked_20261206/call2.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# (it ran as the same two commands inlined in PERF_CMDS): the segment plan at the 1K training shape
# (features_dx_20261206/next_call_pps.sh, LOLSEARCH_KERNELS_PPS 1/2/4/8), then the Llama-3-8B shape's LoRA as
# 4 x 1024 with 2 accumulated.
set -u
O=$1
bash results/perf/features_dx_20261206/next_call_pps.sh "$O/pps"
timeout 120 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_lora" train --seq 1024 --micro-batch 4 --accum 2 \
  --backends triton --stages lora --compile off --steps 6 --sync-every 2 --warmup 2 > "$O/l8b_lora.log" 2>&1
tail -3 "$O/l8b_lora.log"
