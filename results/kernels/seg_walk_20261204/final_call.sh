#!/usr/bin/env bash
# The last GPU call of 2026-12-04 (committed kernels, autotuning on by default), run as
#   PERF_CMDS="bash results/kernels/seg_walk_20261204/final_call.sh" bash results/h200/rerun.sh perf
# on a fresh nvidia-h200 carrying .dev/p1. Writes under $OUT/perf: the GPU kernel tests as users run them
# (autotuned), the warm-up cost of autotuning (fresh processes, cold then warm Triton cache), and the bench.
set -u
P=$OUT/perf
COLUMNS=300 timeout 200 python3 kernels/_launch.py pytest -m gpu tests/kernels -q -rf -p no:cacheprovider \
  -n 14 --dist loadgroup > "$P/pytest_gpu.log" 2>&1
tail -2 "$P/pytest_gpu.log"
W=results/kernels/seg_walk_20261204/autotune_warmup.py
for a in 0 1; do
  export TRITON_CACHE_DIR=/tmp/triton_cache_autotune$a
  rm -rf "$TRITON_CACHE_DIR"
  for run in cold warm; do
    echo "== autotune $a, $run Triton cache" >> "$P/warmup.log"
    LOLSEARCH_KERNELS_AUTOTUNE=$a timeout 90 python3 $W >> "$P/warmup.log" 2>&1
  done
done
unset TRITON_CACHE_DIR
cat "$P/warmup.log"
timeout 230 python3 kernels/_launch.py bench --out "$P/bench" --budget 150 --shapes llama3-8b \
  --seq-lens 2048 8192 32768 --decode-ctx 131072 > "$P/bench.log" 2>&1
sed -n 8,22p "$P/bench/bench.md"
