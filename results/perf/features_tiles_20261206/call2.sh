#!/usr/bin/env bash
# Right after call1.sh on the warm machine, no carry (reads call1's probe.json from /tmp):
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/features_tiles_20261206/call2.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# Llama-3-8B-shaped attention transfer, 8 x 1024 eager, the probe's best configs against the old kernels, alternating.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
D=results/perf/features_tiles_20261206
V="python3 $D/variant.py"
for which in best old best old; do
  arg=$([ $which = best ] && echo /tmp/probe.json || echo old)
  timeout 110 $V "$arg" --model llama3-8b-shape --out "$O/l8b_$which" train --seq 1024 --backends triton --compile off \
    --steps 6 --warmup 3 --stages attention_transfer >> "$O/l8b_$which.log" 2>&1
  tail -1 "$O/l8b_$which.log" | cut -c1-330
done
