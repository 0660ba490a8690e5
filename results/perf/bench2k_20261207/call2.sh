#!/usr/bin/env bash
# The forward's host setup kept per call signature (hybrid._forward_plan, _direct's launch sites; the working tree)
# against the committed tree (.dev/old: `git archive HEAD kernels lolsearch | tar -x -C .dev/old`), carrying .dev/p0
# and .dev/old, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bench2k_20261207/call2.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. host_ab.py in both trees, one process each (eager 2K forward, host µs per call, beside SDPA);
# 2. the kernel GPU tests (the float64 matrix, the direct-launch and kept-plan tests with every site checked);
# 3. the kernel bench at 2K (its goals table: the eager 2K forward timed first and again at the end);
# 4. host_ab.py in both trees again; then a cProfile of the eager 2K forward + backward (the bench's fwd+bwd cell is 4.5x SDPA there, about its 8K time).
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/bench2k_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
ab() {  # host_ab.py in the working tree (new_*) or the committed one (old_*)
  for run in "$@"; do
    case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
    PYTHONPATH=$tree:/tmp/site timeout 80 python3 $D/host_ab.py $run > "$O/$run.log" 2>&1
    grep round "$O/$run.log" | cut -c1-220 || tail -3 "$O/$run.log"
  done
}
ab new_1 old_1
timeout 130 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup tests/kernels \
  > "$O/pytest_kernels_gpu.log" 2>&1
tail -4 "$O/pytest_kernels_gpu.log" | cut -c1-300
timeout 100 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 2048 --budget 60 \
  > "$O/bench.log" 2>&1
sed -n '/## Goals/,/^## llama3-8b/p' "$O/bench/bench.md" | grep "2K"
ab new_2 old_2
timeout 60 python3 $D/host_ab.py --profile-bwd "$O/profile_fwd_bwd.txt" > "$O/profile_fwd_bwd.log" 2>&1
head -1 "$O/profile_fwd_bwd.txt"; tail -2 "$O/profile_fwd_bwd.log"
