#!/usr/bin/env bash
# Second device call, right after call1.sh on the warm machine (the packages are in /tmp/site), no carry:
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/regcaps_20261206/call2.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# 1. the kernel GPU suite autotuned (every offered config timed and used at the matrix's size classes, the capped
#    ones included); 2. the bench's 32K row with fla; 3. the Llama-3-8B rows.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
COLUMNS=300 LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 250 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu \
  -n 14 --dist loadgroup tests/kernels > "$O/pytest_kernels_gpu_autotuned.log" 2>&1
tail -3 "$O/pytest_kernels_gpu_autotuned.log"
timeout 200 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 32768 --budget 140 \
  > "$O/bench.log" 2>&1
tail -12 "$O/bench.log"
P="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 120 $P --out "$O/l8b" train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 \
  --stages attention_transfer lora > "$O/l8b.log" 2>&1
tail -3 "$O/l8b.log" | cut -c1-330
