#!/usr/bin/env bash
# The walk schedule's GPU tests after the kernels took the parallel schedule's parameters (tree 5e07bd9), carrying
# .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/schedules_20261207/call5.sh \$OUT/perf" timeout 330 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
COLUMNS=250 timeout 230 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py \
  -k "walk or llama_shape or requested or token_major or long_segments or direct_launch or (matrix and L3)" \
  > "$O/pytest_gpu.log" 2>&1
tail -4 "$O/pytest_gpu.log" | cut -c1-300
