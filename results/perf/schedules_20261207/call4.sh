#!/usr/bin/env bash
# The parallel schedule in the training steps (tree 5e07bd9), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/schedules_20261207/call4.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# SmolLM2 shape, graphed: 8 x 1024 (attention transfer, LoRA, the teacher's LoRA) and 2 x 8192 x 2 (LoRA, the
# teacher's LoRA), the default schedule (parallel) against the walks (LOLSEARCH_KERNELS_PARALLEL_T=0), then the GPU
# tests of the graphed trial steps.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
nvidia-smi --query-gpu=name --format=csv,noheader
S1="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 --stages attention_transfer lora teacher_lora"
for which in par walk; do
  limit=$([ $which = par ] && echo 1073741824 || echo 0)
  extra=$([ $which = par ] && echo "--check")
  LOLSEARCH_KERNELS_PARALLEL_T=$limit timeout 130 $P --out "$O/smol1k_$which" $S1 $extra > "$O/smol1k_$which.log" 2>&1
  grep '^| smollm2' "$O/smol1k_$which.log" | cut -c1-250
done
S8="train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages lora teacher_lora"
for which in walk par; do
  limit=$([ $which = par ] && echo 1073741824 || echo 0)
  LOLSEARCH_KERNELS_PARALLEL_T=$limit timeout 100 $P --out "$O/smol8k_$which" $S8 > "$O/smol8k_$which.log" 2>&1
  grep '^| smollm2' "$O/smol8k_$which.log" | cut -c1-250
done
COLUMNS=250 timeout 100 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_graphed.py tests/trial/test_step_graph.py \
  > "$O/pytest_trial.log" 2>&1
tail -3 "$O/pytest_trial.log" | cut -c1-300
