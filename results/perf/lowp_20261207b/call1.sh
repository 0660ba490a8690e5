#!/usr/bin/env bash
# The 16-bit products' own launch configs (FWD_LOWP, BWD_LOWP of dd4492d) in training steps: SmolLM2 8 x 1024 graphed
# LoRA, linearized and the teacher's in ABAB order, then attention transfer; then the maps' GPU tests that the
# eighteenth session's 90 s cut left unrun (the 16-bit test and frozen-map dx first, then the whole file).
# Carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/lowp_20261207b/call1.sh \$OUT/perf" timeout 540 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
nvidia-smi --query-gpu=name --format=csv,noheader
S1="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
timeout 90 $P --out "$O/lora_1" $S1 --stages lora --check > "$O/lora_1.log" 2>&1
grep '^| smollm2' "$O/lora_1.log" | cut -c1-250
for run in teacher_1 lora_2 teacher_2 at_1; do
  case $run in lora*) st=lora ;; teacher*) st=teacher_lora ;; at*) st=attention_transfer ;; esac
  timeout 45 $P --out "$O/$run" $S1 --stages $st > "$O/$run.log" 2>&1
  grep '^| smollm2' "$O/$run.log" | cut -c1-250
done
F=tests/kernels/test_featuremap_kernel.py
COLUMNS=250 timeout 100 python3 -m pytest -q -rf -p no:cacheprovider $F -k "16bit or frozen or tile_configs" \
  > "$O/pytest_featuremap_a.log" 2>&1
tail -3 "$O/pytest_featuremap_a.log" | cut -c1-300
COLUMNS=250 timeout 150 python3 -m pytest -q -rf -p no:cacheprovider $F -k "not (16bit or frozen or tile_configs)" \
  > "$O/pytest_featuremap_b.log" 2>&1
tail -3 "$O/pytest_featuremap_b.log" | cut -c1-300
