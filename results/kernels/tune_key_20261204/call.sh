#!/usr/bin/env bash
# Device call A of 2026-12-04 evening (fresh nvidia-h200, carrying .dev/p1), run as
#   PERF_CMDS="bash results/kernels/tune_key_20261204/call.sh" bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# One Triton cache for the whole call: untuned timings; the GPU kernel matrix autotuned (fills the cache with choices
# at the tests' small sizes); the same timings autotuned in a fresh process (tunes at its own size classes, or
# reuses the tests' choices if the key failed to tell sizes apart); once more (choices read from disk); untuned again.
set -u
P=$OUT/perf
S=results/kernels/tune_key_20261204/tune_check.py
export TRITON_CACHE_DIR=/tmp/tc_tune
rm -rf "$TRITON_CACHE_DIR"
LOLSEARCH_KERNELS_AUTOTUNE=0 timeout 120 python3 $S untuned > "$P/untuned.log" 2>&1
COLUMNS=300 LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 200 python3 kernels/_launch.py pytest -m gpu tests/kernels -q -rf \
  -p no:cacheprovider -n 14 --dist loadgroup > "$P/pytest_gpu_autotune.log" 2>&1
tail -3 "$P/pytest_gpu_autotune.log"
LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 150 python3 $S tuned-after-tests > "$P/tuned1.log" 2>&1
LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 100 python3 $S tuned-from-disk > "$P/tuned2.log" 2>&1
LOLSEARCH_KERNELS_AUTOTUNE=0 timeout 100 python3 $S untuned-again > "$P/untuned2.log" 2>&1
paste -d'\n' "$P/untuned.log" "$P/tuned1.log" "$P/tuned2.log" "$P/untuned2.log" | grep -v '^$' | tail -90
