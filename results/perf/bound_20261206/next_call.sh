#!/usr/bin/env bash
# Planned (not yet run): the measured bound behind issue 16's two ratio goals, on one GPU (an H200 if lent; carry
# .dev/p0, after `bash results/h200/lighten.sh out`):
#   PERF_CMDS="bash results/perf/bound_20261206/next_call.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# `attention_free_lora` is the teacher's LoRA step with an attention core that costs nothing (each position gets its
# own values; q and k stay in the graph), so its tokens/s over the teacher's bounds the linearized/teacher ratio of
# any attention. Side by side with the linearized and the teacher's LoRA steps, at 8 x 1024 and 2 x 8192 (2 accumulated).
set -u
O=$1
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
timeout 150 $P --out "$O/bound1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
  --sync-every 5 --stages teacher_lora attention_free_lora lora > "$O/bound1k.log" 2>&1
tail -6 "$O/bound1k.log"
timeout 150 $P --out "$O/bound8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --cuda-graph on \
  --compile off --steps 10 --sync-every 2 --warmup 2 --stages teacher_lora attention_free_lora lora > "$O/bound8k.log" 2>&1
tail -6 "$O/bound8k.log"
