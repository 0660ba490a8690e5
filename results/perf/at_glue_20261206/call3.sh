#!/usr/bin/env bash
# After call2, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_glue_20261206/call3.sh \$OUT/perf" timeout 300 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. test_surgery and test_norms again with one cache_kwarg (4 tests of test_surgery had passed 'cache=' to the
#    device's older transformers);
# 2. Llama-3-8B shape, LoRA with the fused norms and the teacher's GQA: 4 x 1024 with 2 accumulated, and 8 x 1024.
set -u
O=$1
mkdir -p "$O"
timeout 60 python3 -m pytest -q -rf -p no:cacheprovider tests/test_norms.py tests/trial/test_surgery.py > "$O/pytest_gpu.log" 2>&1
tail -2 "$O/pytest_gpu.log"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 100 $P8 --out "$O/l8b_lora" train --seq 1024 --micro-batch 4 --accum 2 --backends triton --stages lora \
  --compile off --steps 6 --sync-every 2 --warmup 2 > "$O/l8b_lora.log" 2>&1
tail -2 "$O/l8b_lora.log"
timeout 80 $P8 --out "$O/l8b_lora8" train --seq 1024 --micro-batch 8 --backends triton --stages lora \
  --compile off --steps 4 --sync-every 2 --warmup 1 > "$O/l8b_lora8.log" 2>&1
tail -2 "$O/l8b_lora8.log"
