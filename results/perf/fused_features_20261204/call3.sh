#!/usr/bin/env bash
# The check after the defaults flipped (fused feature maps on, LoRA products in the model's dtype): the fused-map and
# LoRA-compute GPU tests (T2R's gradient now compared away from its ReLU kink) and the trial's kernel check, the GPU
# tests of the trial paths under the new defaults, and `perf train` with no setting named (what a trial now runs). One call, carrying .dev/p0:
#   PERF_CMDS="bash results/perf/fused_features_20261204/call3.sh \$OUT/perf" timeout 540 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
PYT="python3 -m pytest -q -rf -p no:cacheprovider"
timeout 130 $PYT tests/kernels/test_featuremap_kernel.py tests/trial/test_lora_compute.py tests/trial/test_kernel_check.py \
  > "$O/pytest_featuremap.log" 2>&1
tail -2 "$O/pytest_featuremap.log"
timeout 240 $PYT -m gpu tests/trial/test_graphed.py tests/trial/test_step_graph.py tests/trial/test_checkpoint_layers.py \
  tests/trial/test_efficiency.py tests/test_models.py > "$O/pytest_trial_gpu.log" 2>&1
tail -2 "$O/pytest_trial_gpu.log"
timeout 150 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/defaults" train --seq 1024 --backends triton \
  --stages attention_transfer lora teacher_lora --cuda-graph on --compile off default --steps 30 --sync-every 5 --check \
  > "$O/defaults.log" 2>&1
tail -8 "$O/defaults.log"
