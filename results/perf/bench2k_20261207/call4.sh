#!/usr/bin/env bash
# The A/B of call2.sh (4f07705, never run) with the backward's launch sites too (the working tree) against 84b5d4e (.dev/old:
# `git archive 84b5d4e kernels lolsearch | tar -x -C .dev/old`), carrying .dev/p0 and .dev/old, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bench2k_20261207/call4.sh \$OUT/perf" timeout 430 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. host_ab.py in both trees, one process each: the eager 2K forward, then its forward + backward (--bwd);
# 2. the GPU tests of test_kernels_gpu.py (the float64 matrix, the direct-launch and kept-plan tests with every site
#    checked);
# 3. the kernel bench at 2K (its goals table: the eager 2K forward timed first and again at the end);
# 4. a cProfile of the eager 2K forward + backward (working tree).
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/bench2k_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
ab() {  # host_ab.py in the working tree (new_*) or 84b5d4e's (old_*)
  for run in "$@"; do
    case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
    for mode in fwd bwd; do
      flag=; [ $mode = bwd ] && flag=--bwd
      PYTHONPATH=$tree:/tmp/site timeout 50 python3 $D/host_ab.py $flag $run > "$O/${run}_$mode.log" 2>&1
      grep round "$O/${run}_$mode.log" | cut -c1-230 || tail -3 "$O/${run}_$mode.log"
    done
  done
}
ab new_1 old_1
timeout 100 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup \
  tests/kernels/test_kernels_gpu.py > "$O/pytest_kernels_gpu.log" 2>&1
tail -4 "$O/pytest_kernels_gpu.log" | cut -c1-300
timeout 80 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 2048 --budget 40 \
  > "$O/bench.log" 2>&1
sed -n '/## Goals/,/^## llama3-8b/p' "$O/bench/bench.md" | grep "2K"
timeout 45 python3 $D/host_ab.py --profile-bwd "$O/profile_fwd_bwd.txt" > "$O/profile_fwd_bwd.log" 2>&1
head -1 "$O/profile_fwd_bwd.txt"; tail -2 "$O/profile_fwd_bwd.log"
