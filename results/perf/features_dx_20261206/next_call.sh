#!/usr/bin/env bash
# Planned (not yet run): the next call, on an H200 if one is lent, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/features_dx_20261206/next_call.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. issue 16's rows at 8 x 1024 (graphed, compile off/default, --check);
# 2. the 8K step with cuda_graph auto (2 x 8192: now graphed for the linearized stages, eager for the teacher's);
# 3. the Llama-3-8B shape: attention transfer eager with --profile, whose timeline (_trace.json.gz) shows where the
#    GPU idles in the 334 ms step whose kernels sum to about 231 ms (H100); LoRA as 4 x 1024, 2 accumulated.
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf"
timeout 170 $P --model smollm2-135m-shape --out "$O/rows" train --seq 1024 --backends triton --cuda-graph on \
  --compile off default --stages attention_transfer lora teacher_lora --steps 30 --sync-every 5 --check > "$O/rows.log" 2>&1
tail -8 "$O/rows.log"
timeout 120 $P --model smollm2-135m-shape --out "$O/smol8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton \
  --stages attention_transfer lora teacher_lora --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2 > "$O/smol8k.log" 2>&1
tail -5 "$O/smol8k.log"
timeout 120 $P --model llama3-8b-shape --out "$O/l8b_trace" train --seq 1024 --backends triton --stages attention_transfer \
  --compile off --steps 2 --warmup 1 --profile > "$O/l8b_trace.log" 2>&1
tail -3 "$O/l8b_trace.log"
timeout 120 $P --model llama3-8b-shape --out "$O/l8b_lora" train --seq 1024 --micro-batch 4 --accum 2 --backends triton \
  --stages lora --compile off --steps 6 --sync-every 2 --warmup 2 > "$O/l8b_lora.log" 2>&1
tail -3 "$O/l8b_lora.log"
