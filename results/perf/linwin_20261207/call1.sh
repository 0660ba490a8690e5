#!/usr/bin/env bash
# The walks' window linear keys moved into fwd_state (8a41b49 + linwin.diff, the working tree) against 8a41b49 itself
# (.dev/old: `git archive 8a41b49 kernels lolsearch | tar -x -C .dev/old`), carrying .dev/p0 and .dev/old, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/linwin_20261207/call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the GPU tests of the hybrid op (the float64 matrix, the op's and decode's GPU cases; autotuned);
# 2. op_ab.py: new, then old (per-cell GPU time), then the outputs of the two trees compared.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/linwin_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
[ -n "${RUNS:-}" ] || COLUMNS=250 LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 250 python3 kernels/_launch.py pytest -m gpu tests/kernels/test_kernels_gpu.py \
  tests/kernels/test_hybrid_kernel.py tests/kernels/test_decode_kernel.py tests/kernels/test_checkpointed_backward.py \
  -q -rf -p no:cacheprovider -n 9 --dist loadgroup > "$O/pytest_gpu.log" 2>&1
[ -n "${RUNS:-}" ] || tail -12 "$O/pytest_gpu.log" | cut -c1-300
for run in ${RUNS:-new_1 old_1}; do
  case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
  PYTHONPATH=$tree:/tmp/site timeout ${RUN_S:-140} python3 $D/op_ab.py $run "$O/ab" > "$O/$run.log" 2>&1
  grep -v Warn "$O/$run.log" | cut -c1-400
done
[ -n "${RUNS:-}" ] || python3 $D/op_ab.py --compare "$O/ab/new_1_check.pt" "$O/ab/old_1_check.pt"
