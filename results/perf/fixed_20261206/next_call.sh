#!/usr/bin/env bash
# Planned (not yet run): call2.sh again, shorter, on any one GPU (carry .dev/p0, after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/fixed_20261206/next_call.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# One cold trial (it computes the sweep's baselines and compiles), then three warm trials of the default, each
# followed by one with eval.cuda_graph=false: the fixed cost and the training loops with the graphed validations of
# b2e5474, to set beside call 1 (h100_call1/). That comparison spans calls: the stage's cuda_graph governs both its
# step and its validations, so no setting turns the validation graphs off alone.
# First the GPU tests of GraphedForward (test_eval_graph.py; its capture-failure test has not run on a GPU yet).
set -u
O=$1
mkdir -p "$O"
timeout 60 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_eval_graph.py > "$O/pytest_gpu.log" 2>&1
tail -2 "$O/pytest_gpu.log"
timeout 290 python3 -m lolsearch.perf --out "$O/fixed" fixed --config results/perf/fixed_20261206/trial.yaml --cold 1 \
  --trials 3 --variant eval.cuda_graph=false > "$O/fixed.log" 2>&1
grep -v INFO "$O/fixed.log" | tail -8 | cut -c1-400
