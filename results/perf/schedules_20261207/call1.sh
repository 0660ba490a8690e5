#!/usr/bin/env bash
# The hybrid op's quadratic mode (short sequences), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/schedules_20261207/call1.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. GPU tests of the mode: the kernel cases and the matrix's quadratic cases against the fp32 / float64 references;
# 2. op_bench.py: quadratic against chunked and SDPA per layer, SmolLM2 and Llama-3-8B heads, 8,192 tokens per call.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/schedules_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
COLUMNS=250 timeout 220 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu \
  tests/kernels/test_kernels_gpu.py -k "quad" > "$O/pytest_gpu.log" 2>&1
tail -4 "$O/pytest_gpu.log" | cut -c1-300
timeout 320 python3 $D/op_bench.py "$O/op_bench.csv" > "$O/op_bench.log" 2>&1
tail -40 "$O/op_bench.log" | cut -c1-250
