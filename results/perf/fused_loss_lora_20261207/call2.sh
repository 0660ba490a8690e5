#!/usr/bin/env bash
# Second call (same warm machine as call 1): segments of at least 4 chunks against 8 again, in the other order
# (4 first), SmolLM2 8 x 1024 graphed attention transfer and LoRA; then the Llama-3-8B shape's attention transfer
# (eager 8 x 1024), 4 then 8.
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call2.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf"
for m in 4 8; do
  LOLSEARCH_KERNELS_MIN_SEG=$m timeout 100 $P --model smollm2-135m-shape --out "$O/smol1k_seg$m" train --seq 1024 \
    --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 \
    --stages attention_transfer lora > "$O/smol1k_seg$m.log" 2>&1
  grep '^| smollm2' "$O/smol1k_seg$m.log" | cut -c1-230
done
for m in 4 8; do
  LOLSEARCH_KERNELS_MIN_SEG=$m timeout 75 $P --model llama3-8b-shape --out "$O/l8b_at_seg$m" train --seq 1024 \
    --backends triton --compile off --steps 8 --warmup 3 --sync-every 5 --stages attention_transfer > "$O/l8b_at_seg$m.log" 2>&1
  tail -1 "$O/l8b_at_seg$m.log" | cut -c1-230
done
