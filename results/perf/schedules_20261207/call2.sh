#!/usr/bin/env bash
# The quadratic mode: where its time goes, two settings tried on it, and the training steps at 16 x 512 with it on and
# off (LOLSEARCH_KERNELS_QUADRATIC_T=0). Carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/schedules_20261207/call2.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/schedules_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 $D/quad_variants.py > "$O/variants.log" 2>&1; cut -c1-400 "$O/variants.log"
timeout 90 python3 $D/quad_variants.py --stage3 > "$O/variants_stage3.log" 2>&1; cut -c1-300 "$O/variants_stage3.log"
S="train --seq 512 --micro-batch 16 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 --stages attention_transfer lora teacher_lora"
for which in quad chunked; do
  limit=$([ $which = quad ] && echo 512 || echo 0)
  extra=$([ $which = quad ] && echo "--check")
  LOLSEARCH_KERNELS_QUADRATIC_T=$limit timeout 140 python3 -m lolsearch.perf --model smollm2-135m-shape \
    --out "$O/smol512_$which" $S $extra > "$O/smol512_$which.log" 2>&1
  grep '^| smollm2' "$O/smol512_$which.log" | cut -c1-250
done
