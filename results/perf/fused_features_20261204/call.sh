#!/usr/bin/env bash
# Planned H200 call for the fused Hedgehog feature map (kernels/featuremap.py), on and off side by side; one call
# of at most ~9 minutes, carrying only .dev/p0:
#   bash results/h200/lighten.sh out
#   PERF_CMDS="bash results/perf/fused_features_20261204/call.sh \$OUT/perf" bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. GPU tests of the fused kernel (every dtype against the plain module; the layer with it on and off).
# 2. SmolLM2-135M shape, 8 x 1024 per step: attention transfer and LoRA, compile off/default, CUDA graph on, fused
#    off/on, 30 steps read back every 5, the first 3 steps' losses checked against the eager path (--check); the
#    teacher's own LoRA step beside them.
# 3. Operator profiles of the eager steps (graph off, compile off), fused off/on.
# 4. Llama-3-8B shape, 8 x 1024: attention transfer and LoRA, fused off/on (issue 16's 35K / 18K tokens/s and memory).
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_featuremap_kernel.py > "$O/pytest_featuremap.log" 2>&1
tail -2 "$O/pytest_featuremap.log"
timeout 240 $P --model smollm2-135m-shape --out "$O/train" train --seq 1024 --stages attention_transfer lora teacher_lora \
  --compile off default --cuda-graph on --fused-features off on --steps 30 --sync-every 5 --check > "$O/train.log" 2>&1
tail -3 "$O/train.log"
timeout 60 $P --model smollm2-135m-shape --out "$O/profile" train --seq 1024 --stages attention_transfer lora \
  --compile off --cuda-graph off --fused-features off on --steps 3 --profile > "$O/profile.log" 2>&1
tail -2 "$O/profile.log"
timeout 120 $P --model llama3-8b-shape --out "$O/l8b" train --seq 1024 --stages attention_transfer lora \
  --fused-features off on --steps 3 --warmup 1 --check > "$O/l8b.log" 2>&1
tail -3 "$O/l8b.log"
