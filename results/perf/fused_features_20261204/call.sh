#!/usr/bin/env bash
# H200 call of 2026-12-04 (night): the fused Hedgehog feature map (kernels/featuremap.py) on and off, side by side.
#   PERF_CMDS="bash results/perf/fused_features_20261204/call.sh \$OUT/perf" bash results/h200/rerun.sh perf   # carry .dev/p0
# 1. GPU tests of the fused kernel (every dtype against the plain module) and of the layer with it on/off.
# 2. SmolLM2-135M-shaped model, 8 x 1024 per step: attention transfer and LoRA, compile off/default, CUDA graph on,
#    fused off/on, 30 steps read back every 5, losses of the first 3 steps checked against the eager path (--check);
#    the teacher's own LoRA step beside them.
# 3. Operator profiles of the eager steps (graph off, compile off), fused off/on.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_featuremap_kernel.py > "$O/pytest_featuremap.log" 2>&1
tail -2 "$O/pytest_featuremap.log"
timeout 300 $P --out "$O/train" train --seq 1024 --stages attention_transfer lora teacher_lora --compile off default \
  --cuda-graph on --fused-features off on --steps 30 --sync-every 5 --check > "$O/train.log" 2>&1
tail -3 "$O/train.log"
timeout 120 $P --out "$O/profile" train --seq 1024 --stages attention_transfer lora --compile off --cuda-graph off \
  --fused-features off on --steps 3 --profile > "$O/profile.log" 2>&1
tail -2 "$O/profile.log"
