#!/usr/bin/env bash
# Planned (not yet run): the first of two calls on an H200 (none was lent in the seventh session), carrying .dev/p0,
# after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/segments_20261206/next_call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the whole GPU kernel matrix and the other kernel GPU tests under the segment plan of 2026-12-06 (first configs;
#    on the H100 the run was cut after 18 cases);
# 2. issue 16's SmolLM2 rows: 8 x 1024 graphed with --check, 2 x 8192 x 2 graphed (attention transfer, LoRA, the
#    teacher's LoRA).
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 280 python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py > "$O/pytest_kernels_gpu.log" 2>&1
tail -3 "$O/pytest_kernels_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 110 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
  --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -5 "$O/rows1k.log" | cut -c1-330
timeout 100 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -5 "$O/rows8k.log" | cut -c1-330
