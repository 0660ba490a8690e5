#!/usr/bin/env bash
# Second call of 2026-12-06 (ninth session), right after results/perf/gqa_order_20261206/call5.sh on the same warm
# machine, carrying .dev/p0 (after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/direct_20261206/call2.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the GPU tests of the graphed trial paths and of the trials' kernel check: the hybrid op's launches now go
#    through the kept compiled kernels (kernels/_direct.py), also inside CUDA-graph capture;
# 2. issue 16's SmolLM2 rows (8 x 1024 graphed with --check; 2 x 8192 x 2 graphed) and the Llama-3-8B attention
#    transfer row (eager, where the host path counts) on this commit.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/trial/test_graphed.py tests/trial/test_step_graph.py \
  tests/trial/test_kernel_check.py > "$O/pytest_trial_gpu.log" 2>&1
tail -2 "$O/pytest_trial_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 110 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
  --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -5 "$O/rows1k.log" | cut -c1-330
timeout 100 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -5 "$O/rows8k.log" | cut -c1-330
timeout 90 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_at" train --seq 1024 --backends triton \
  --stages attention_transfer --compile off --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at.log" 2>&1
tail -1 "$O/l8b_at.log" | cut -c1-330
