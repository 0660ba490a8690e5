#!/usr/bin/env bash
# Planned (not yet run), same carry and wrapper as next_call.sh:
#   PERF_CMDS="bash results/perf/features_dx_20261206/next_call_pps.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# The segment plan at the 1K training shape. Under autograd the plan fills PROGRAMS_PER_SM = 8 walks per SM: on an
# H100, 8 x 9 heads at T = 1024 get 8 segments of 2 chunks. Every segment boundary moves an fp32 state
# [F, D] + [F] (33 KB at F = 128, D = 64) through seg_sums, the scan and the walks, both ways: about 21 MB per pass.
# In the eager 1K LoRA profile (h100_20261206/call1/smol1k_profile/) everything but the window kernels takes about
# 60 of the forward's 107 us and up to 167 of the backward's 393 us per layer. Fewer, longer segments
# (LOLSEARCH_KERNELS_PPS = 1, 2, 4: 2, 4 and 8 segments) trade that traffic for longer serial walks. Graphed steps,
# compile off, attention transfer and LoRA; operator profiles at the best setting come next.
set -u
O=$1
mkdir -p "$O"
for pps in 1 2 4 8; do
  LOLSEARCH_KERNELS_PPS=$pps timeout 90 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/pps$pps" train --seq 1024 \
    --backends triton --cuda-graph on --compile off --stages attention_transfer lora --steps 30 --sync-every 5 > "$O/pps$pps.log" 2>&1
  tail -3 "$O/pps$pps.log"
done
