#!/usr/bin/env bash
# One device call (2026-12-07, twenty-first session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bench2k_20261207/call1.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# On an H200 it runs results/perf/lowp_20261207b/h200_call.sh instead (the goals set for that GPU), and the next call
# runs this script with BENCH=1. Otherwise, and with BENCH=1:
# 1. probe.py direct2k: host µs per eager 2K forward (300 back to back, one sync) beside SDPA, five rounds;
# 2. the whole kernel bench (2K, 8K, 32K, decode over 128K) with the committed code, whose last cell times the
#    eager 2K forward again (ours-sliding-repeat) to settle the eager 2K verdict.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader)
echo "$GPU"
if [[ "$GPU" == *H200* && -z "${BENCH:-}" ]]; then
  bash results/perf/lowp_20261207b/h200_call.sh "$O/h200"
  exit
fi
timeout 60 python3 results/perf/gqa_order_20261206/probe.py direct2k > "$O/direct2k.log" 2>&1
tail -15 "$O/direct2k.log"
timeout 420 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 2048 8192 32768 \
  --decode-ctx 131072 --budget 330 > "$O/bench.log" 2>&1
sed -n '/## Goals/,/^## llama3-8b/p' "$O/bench/bench.md"
grep "ours-sliding-repeat\|ours-sliding \|sdpa\[cudnn\]" "$O/bench.log" | head -20
