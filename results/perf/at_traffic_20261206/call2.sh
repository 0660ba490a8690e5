#!/usr/bin/env bash
# Right after call1.sh on the warm machine, no carry (/tmp/base and /tmp/site are still there):
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/at_traffic_20261206/call2.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# The Llama-3-8B-shaped LoRA step on the base tree, the rest of the kernel GPU tests, and an operator profile of this
# tree's SmolLM2 LoRA step (eager, 3 steps), for what is left in it.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
[ -d /tmp/base ] || bash results/perf/at_traffic_20261206/base.sh || exit 3
nvidia-smi --query-gpu=name --format=csv,noheader
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 75 python3 -m lolsearch.perf --model llama3-8b-shape \
  --out "$O/l8b_lora_base" train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 --stages lora) \
  > "$O/l8b_lora_base.log" 2>&1
tail -1 "$O/l8b_lora_base.log" | cut -c1-300
(PYTHONPATH=$PWD:/tmp/site timeout 80 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol1k_profile" \
  train --seq 1024 --backends triton --stages lora teacher_lora --compile off --cuda-graph off --steps 3 --profile) \
  > "$O/smol1k_profile.log" 2>&1
tail -2 "$O/smol1k_profile.log" | cut -c1-300
LOLSEARCH_KERNELS_AUTOTUNE=0 COLUMNS=250 timeout 200 python3 kernels/_launch.py pytest -m gpu -q -rf -p no:cacheprovider \
  -n 12 tests/kernels > "$O/pytest_gpu_all.log" 2>&1
tail -3 "$O/pytest_gpu_all.log" | cut -c1-300
