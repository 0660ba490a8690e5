#!/usr/bin/env bash
# Right after call1.sh on the warm machine, no carry:
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/at_stop_20261206/call2.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# Llama-3-8B-shaped attention transfer, 8 x 1024 eager, with distill_mode's early stop on and off, twice each.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
V="python3 results/perf/at_stop_20261206/variant.py"
for mode in on off on off; do
  timeout 110 $V $mode --model llama3-8b-shape --out "$O/l8b_$mode" train --seq 1024 --backends triton --compile off \
    --steps 6 --warmup 3 --stages attention_transfer >> "$O/l8b_$mode.log" 2>&1
  tail -1 "$O/l8b_$mode.log" | cut -c1-330
done
