#!/usr/bin/env bash
# The second device call (carry .dev/p0, after `bash results/h200/lighten.sh out`), with the stages' validations
# graphed too (one graph per stage, reused by all of its validations; the losses read back once per validation):
#   PERF_CMDS="bash results/perf/fixed_20261206/call2.sh \$OUT/perf" timeout 520 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the GPU tests: graphed evaluation passes, graphed steps and validations against eager, the one-pass evaluation;
# 2. the fixed cost per trial of trial.yaml as in call.sh (two cold trials, then warm trials alternating between the
#    default and eval.cuda_graph=false).
set -u
O=$1
mkdir -p "$O"
timeout 120 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_eval_graph.py tests/trial/test_eval_pass.py \
  tests/trial/test_step_graph.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
timeout 330 python3 -m lolsearch.perf --out "$O/fixed" fixed --config results/perf/fixed_20261206/trial.yaml --trials 2 \
  --variant eval.cuda_graph=false > "$O/fixed.log" 2>&1
grep -v INFO "$O/fixed.log" | tail -8 | cut -c1-400
