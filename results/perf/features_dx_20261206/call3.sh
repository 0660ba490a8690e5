#!/usr/bin/env bash
# Device-agnostic work for whichever GPU is lent (operator profiles and correctness, no goal rows), same carry and
# wrapper as call1.sh:
#   PERF_CMDS="bash results/perf/features_dx_20261206/call3.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the Llama-3-8B shape, 8 x 1024, eager, --profile: attention transfer (LoRA does not fit an H100), compile off and default (why
#    compiling the norms and MLPs made the 8B attention-transfer step slower on 2026-12-06: 18.4K vs 22.8K tokens/s);
# 2. the GPU matrix of the hybrid op at F = 64 and 256 (F = 128 ran on the H100 on 2026-12-06).
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 170 $P --model llama3-8b-shape --out "$O/l8b_profile" train --seq 1024 --backends triton --stages attention_transfer \
  --compile off default --steps 2 --warmup 1 --profile > "$O/l8b_profile.log" 2>&1
tail -3 "$O/l8b_profile.log"
timeout ${TEST_S:-170} python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py \
  -k "matrix and not F128" > "$O/pytest_matrix.log" 2>&1
tail -4 "$O/pytest_matrix.log"
