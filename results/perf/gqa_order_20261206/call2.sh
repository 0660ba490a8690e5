#!/usr/bin/env bash
# Right after call1.sh on the same warm machine (carry .dev/p0):
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call2.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# Issue 16's Llama-3-8B rows (8 x 1024, eager: attention transfer, LoRA) and issue 17's bench (Llama-3-8B heads to
# 32K, autotuned), with the defaults of this commit.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 90 $P8 --out "$O/l8b_at" train --seq 1024 --backends triton --stages attention_transfer --compile off \
  --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at.log" 2>&1
tail -1 "$O/l8b_at.log" | cut -c1-330
timeout 90 $P8 --out "$O/l8b_lora" train --seq 1024 --backends triton --stages lora --compile off --steps 4 \
  --sync-every 2 --warmup 1 > "$O/l8b_lora.log" 2>&1
tail -1 "$O/l8b_lora.log" | cut -c1-330
timeout 330 python3 -m lolsearch.kernels.bench --out "$O/bench" --shapes llama3-8b --seq-lens 2048 8192 32768 \
  --decode-ctx 32768 --budget 280 > "$O/bench.log" 2>&1
grep -E "^\| (fwd|fwd\+bwd|decode)" "$O/bench/bench.md" | cut -c1-200
