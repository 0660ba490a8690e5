#!/usr/bin/env bash
# One device call (carry .dev/p0, after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/fixed_20261206/call.sh \$OUT/perf" timeout 520 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the GPU tests of the graphed evaluation passes (graphed metrics = eager metrics, replays counted);
# 2. the fixed cost per trial of trial.yaml: two cold trials, then warm trials alternating between the default
#    (eval.cuda_graph auto: graphed evaluation forwards) and eval.cuda_graph=false, side by side in one process.
set -u
O=$1
mkdir -p "$O"
timeout 100 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_eval_graph.py tests/trial/test_eval_pass.py \
  tests/trial/test_unmasked_causal.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
timeout 370 python3 -m lolsearch.perf --out "$O/fixed" fixed --config results/perf/fixed_20261206/trial.yaml --trials 2 \
  --variant eval.cuda_graph=false > "$O/fixed.log" 2>&1
grep -v INFO "$O/fixed.log" | tail -8 | cut -c1-400
