#!/usr/bin/env bash
# The walks without seg_sums (localwalk.diff applied to f6d6ebd: fwd_state starts each segment from zero and writes the
# segment's sums for the scan, fwd_window adds the state the segment starts from) against f6d6ebd itself. From a
# checkout of f6d6ebd (or a later commit with the same kernels):
#   rm -rf .dev/old && mkdir -p .dev/old && git archive HEAD kernels lolsearch | tar -x -C .dev/old
#   git apply results/perf/localwalk_20261208/localwalk.diff
# then, carrying .dev/p0 and .dev/old, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/localwalk_20261208/call1.sh \$OUT/perf" timeout 580 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. op_ab.py (results/perf/linwin_20261207/) in both trees: GPU time by CUDA-graph replay per cell, the 32K
#    forward's kernels, and the two trees' outputs and gradients compared at 4097 tokens;
# 2. the GPU tests of the hybrid op (the float64 matrix with forced 2-, 3- and 5-chunk segments, autotuned);
# 3. seg_sweep.py in both trees: chunks per segment of the forward at 2K, 8K and 32K.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
A=results/perf/linwin_20261207/op_ab.py
nvidia-smi --query-gpu=name --format=csv,noheader
for run in ${RUNS:-new_1 old_1}; do
  case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
  PYTHONPATH=$tree:/tmp/site timeout ${RUN_S:-130} python3 $A $run "$O/ab" > "$O/$run.log" 2>&1
  grep -v Warn "$O/$run.log" | cut -c1-400
done
python3 $A --compare "$O/ab/new_1_check.pt" "$O/ab/old_1_check.pt" 2>&1 | tee "$O/compare.txt"
[ -n "${NO_TESTS:-}" ] || COLUMNS=250 LOLSEARCH_KERNELS_AUTOTUNE=1 timeout ${TEST_S:-170} python3 kernels/_launch.py pytest -m gpu \
  tests/kernels/test_kernels_gpu.py tests/kernels/test_hybrid_kernel.py tests/kernels/test_checkpointed_backward.py \
  -q -rf -p no:cacheprovider -n 14 --dist loadgroup > "$O/pytest_gpu.log" 2>&1
[ -n "${NO_TESTS:-}" ] || tail -12 "$O/pytest_gpu.log" | cut -c1-300
for run in new old; do
  case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
  PYTHONPATH=$tree:/tmp/site timeout 60 python3 results/perf/localwalk_20261208/seg_sweep.py $run > "$O/seg_$run.log" 2>&1
  grep '^{' "$O/seg_$run.log" || tail -3 "$O/seg_$run.log"
done
