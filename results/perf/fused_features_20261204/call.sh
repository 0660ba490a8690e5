#!/usr/bin/env bash
# Planned H200 call for the fused Hedgehog feature map (kernels/featuremap.py) and the LoRA products in bf16
# (finetune.lora.compute_dtype: model, results/perf/lora_compute_20261205/), each on and off side by side; one call
# of at most ~9 minutes, carrying only .dev/p0:
#   bash results/h200/lighten.sh out
#   PERF_CMDS="bash results/perf/fused_features_20261204/call.sh \$OUT/perf" timeout 540 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# The parts run most needed first (the machine may be lent for less than the whole call; pack still brings back
# what finished): the SmolLM2 timings with their loss checks, the 8B shape, the GPU tests, compile, profiles.
# 1. SmolLM2-135M shape, 8 x 1024 per step, Triton backend: attention transfer and LoRA, CUDA graph on, fused
#    off/on x LoRA products float32/model, 30 steps read back every 5, the first 3 steps' losses checked against the
#    plain eager path (--check); the teacher's own LoRA step beside them.
# 2. Llama-3-8B shape, 8 x 1024: attention transfer and LoRA, fused off/on x LoRA products float32/model (issue 16's
#    35K / 18K tokens/s and memory).
# 3. GPU tests of the fused kernel (every dtype against the plain module; the layer with it on and off) and of the
#    LoRA products in bf16.
# 4. SmolLM2 as in 1 with both settings on and compile: default.
# 5. Operator profiles of the eager steps (graph off, compile off), fused off/on.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
T="train --seq 1024 --backends triton --stages attention_transfer lora teacher_lora --cuda-graph on --steps 30 --sync-every 5 --check"
timeout 140 $P --model smollm2-135m-shape --out "$O/train" $T --compile off --fused-features off on \
  --lora-compute float32 model > "$O/train.log" 2>&1
tail -3 "$O/train.log"
timeout 140 $P --model llama3-8b-shape --out "$O/l8b" train --seq 1024 --backends triton --stages attention_transfer lora \
  --fused-features off on --lora-compute float32 model --steps 3 --warmup 1 --check > "$O/l8b.log" 2>&1
tail -3 "$O/l8b.log"
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_featuremap_kernel.py tests/trial/test_lora_compute.py \
  > "$O/pytest_featuremap.log" 2>&1
tail -2 "$O/pytest_featuremap.log"
timeout 90 $P --model smollm2-135m-shape --out "$O/train_compiled" $T --compile default --fused-features on \
  --lora-compute model > "$O/train_compiled.log" 2>&1
tail -3 "$O/train_compiled.log"
timeout 50 $P --model smollm2-135m-shape --out "$O/profile" train --seq 1024 --backends triton --stages attention_transfer lora \
  --compile off --cuda-graph off --fused-features off on --steps 3 --profile > "$O/profile.log" 2>&1
tail -2 "$O/profile.log"
