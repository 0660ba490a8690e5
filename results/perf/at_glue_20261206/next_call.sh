#!/usr/bin/env bash
# Planned (not yet run): the next call, on an H200 if one is lent, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_glue_20261206/next_call.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the tests this session could not rerun on the device: generate() with the cache under generate's own name
#    (d9ae7f1), the teacher's sliding window (a034e1e, b71d61d);
# 2. issue 16's rows with everything of 2026-12-06: SmolLM2 shape 8 x 1024 graphed, compile off/default, --check;
#    2 x 8192 graphed; the Llama-3-8B shape's LoRA (8 x 1024) eager, and its attention transfer eager and compiled
#    with a steady window (the timeouts add up to 580 s).
set -u
O=$1
mkdir -p "$O"
timeout 90 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_surgery.py tests/trial/test_graphed.py \
  tests/trial/test_unmasked_causal.py tests/test_norms.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 150 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off default --steps 30 \
  --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
tail -8 "$O/rows1k.log"
timeout 100 $P --out "$O/rows8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/rows8k.log" 2>&1
tail -5 "$O/rows8k.log"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 90 $P8 --out "$O/l8b_lora" train --seq 1024 --backends triton --stages lora --compile off --steps 4 \
  --sync-every 2 --warmup 1 > "$O/l8b_lora.log" 2>&1
tail -2 "$O/l8b_lora.log"
# the compiled 8B step with a steady window (the compile entry of the timed run_stage falls before it)
timeout 150 $P8 --out "$O/l8b_at_compiled" train --seq 1024 --backends triton --stages attention_transfer --compile off default \
  --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at_compiled.log" 2>&1
tail -3 "$O/l8b_at_compiled.log"
