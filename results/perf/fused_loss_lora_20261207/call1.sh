#!/usr/bin/env bash
# First device call of 2026-12-07 (fifteenth session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call1.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. issue 16's Llama-3-8B rows with the committed code (eager 8 x 1024: attention transfer, LoRA);
# 2. where the SmolLM2 LoRA step's time goes, linearized against the teacher's own LoRA (eager, 2 profiled steps each),
#    and the 8B LoRA step's (profile_*_by_op.txt tables; traces kept);
# 3. backward-walk segments of at least 8 chunks (the default) against 4, SmolLM2 8 x 1024 graphed, side by side.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/fused_loss_lora_20261207
P="python3 -m lolsearch.perf"
nvidia-smi --query-gpu=name --format=csv,noheader
for st in attention_transfer lora; do
  timeout 75 $P --model llama3-8b-shape --out "$O/l8b_$st" train --seq 1024 --backends triton --compile off \
    --steps 8 --warmup 3 --sync-every 5 --stages $st > "$O/l8b_$st.log" 2>&1
  tail -1 "$O/l8b_$st.log" | cut -c1-300
done
timeout 100 $P --model smollm2-135m-shape --out "$O/prof_smol" train --seq 1024 --backends triton --compile off \
  --cuda-graph off --steps 3 --stages lora teacher_lora --profile > "$O/prof_smol.log" 2>&1
tail -1 "$O/prof_smol.log" | cut -c1-200
head -1 "$O"/prof_smol/profile_*_by_op.txt
for m in 8 4; do
  LOLSEARCH_KERNELS_MIN_SEG=$m timeout 100 $P --model smollm2-135m-shape --out "$O/smol1k_seg$m" train --seq 1024 \
    --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 \
    --stages attention_transfer lora teacher_lora > "$O/smol1k_seg$m.log" 2>&1
  grep '^| smollm2' "$O/smol1k_seg$m.log" | cut -c1-260
done
timeout 90 $P --model llama3-8b-shape --out "$O/prof_l8b" train --seq 1024 --backends triton --compile off \
  --steps 3 --stages lora --profile > "$O/prof_l8b.log" 2>&1
tail -1 "$O/prof_l8b.log" | cut -c1-200
head -1 "$O"/prof_l8b/profile_*_by_op.txt
