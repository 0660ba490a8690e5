#!/usr/bin/env bash
# Issue 16's rows on an H200 with everything of 2026-12-06 (fused RoPE, split bwd_kv, fused gated MLP), the GPU
# tests of the code the sixth session ran only on the CPU, and the attention kernels' GPU time per kernel.
# Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/h200_20261206/call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 100 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_kernel_check.py tests/kernels/test_rope_kernel.py \
  tests/kernels/test_gated_kernel.py tests/test_norms.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 110 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
  --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -6 "$O/rows1k.log" | cut -c1-330
timeout 100 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -5 "$O/rows8k.log" | cut -c1-330
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 75 $P8 --out "$O/l8b_lora" train --seq 1024 --backends triton --stages lora --compile off --steps 4 \
  --sync-every 2 --warmup 1 > "$O/l8b_lora.log" 2>&1
tail -2 "$O/l8b_lora.log" | cut -c1-330
timeout 75 $P8 --out "$O/l8b_at" train --seq 1024 --backends triton --stages attention_transfer --compile off \
  --steps 6 --sync-every 2 --warmup 2 > "$O/l8b_at.log" 2>&1
tail -2 "$O/l8b_at.log" | cut -c1-330
timeout 60 python3 results/kernels/profile_kernels.py > "$O/profile_kernels.log" 2>&1
cut -c1-400 "$O/profile_kernels.log"
