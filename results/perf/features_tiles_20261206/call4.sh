#!/usr/bin/env bash
# Right after call3.sh on the warm machine, no carry:
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/features_tiles_20261206/call4.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# kernels/gpu_check.sh as committed (one xdist worker per 8 GiB of GPU memory), autotuned, whole; the bench cut to a
# 20 s budget (its rows are not kept: the 32K row is in ../at_stop_20261206/).
set -u
O=$1
mkdir -p "$O"
PYTHON=python3 KERNEL_TEST_TIMEOUT=450 BENCH_BUDGET=20 bash kernels/gpu_check.sh "$O/kernels" > "$O/kernels.log" 2>&1
grep -E "passed|failed|rc=" "$O/kernels.log" | tail -4 | cut -c1-300
