#!/usr/bin/env bash
# call2.sh cut to what the session's last 331 s of device time allow (about 240 s after a machine's start), carrying
# .dev/p0 and .dev/old, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bench2k_20261207/call3.sh \$OUT/perf" timeout 225 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. host_ab.py in both trees, one process each; 2. the GPU tests of test_kernels_gpu.py (the float64 matrix, the
# direct-launch and kept-plan tests with every site checked); 3. the kernel bench at 2K, if time is left.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/bench2k_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
for run in new_1 old_1; do
  case $run in new*) tree=$PWD ;; old*) tree=$PWD/.dev/old ;; esac
  PYTHONPATH=$tree:/tmp/site timeout 50 python3 $D/host_ab.py $run > "$O/$run.log" 2>&1
  grep round "$O/$run.log" | cut -c1-220 || tail -3 "$O/$run.log"
done
timeout 100 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup \
  tests/kernels/test_kernels_gpu.py > "$O/pytest_kernels_gpu.log" 2>&1
tail -4 "$O/pytest_kernels_gpu.log" | cut -c1-300
timeout 60 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 2048 --budget 35 \
  > "$O/bench.log" 2>&1
sed -n '/## Goals/,/^## llama3-8b/p' "$O/bench/bench.md" | grep "2K"
