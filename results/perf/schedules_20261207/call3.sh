#!/usr/bin/env bash
# The parallel schedule (tree at this folder's commit), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/schedules_20261207/call3.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. GPU tests of the parallel schedule and the quadratic mode (kernel cases, the matrix's cases of both);
# 2. par_bench.py: walks, parallel at 2/4/8 chunks per segment, quadratic, SDPA; SmolLM2 and Llama-3-8B heads.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/schedules_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
COLUMNS=250 timeout 250 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu \
  tests/kernels/test_kernels_gpu.py -k "quad or par2 or par4" > "$O/pytest_gpu.log" 2>&1
tail -6 "$O/pytest_gpu.log" | cut -c1-300
timeout 290 python3 $D/par_bench.py "$O/par_bench.csv" > "$O/par_bench.log" 2>&1
grep -v Warn "$O/par_bench.log" | cut -c1-300
