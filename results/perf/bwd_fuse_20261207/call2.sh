#!/usr/bin/env bash
# First device call with the fused state walks, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bwd_fuse_20261207/call2.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. every GPU test of the hybrid op (the issue-17 matrix: dtype x D x F x layouts x windows x T with GQA, forward
#    and the six gradients against float64; only-requested gradients; token-major o), first configs;
# 2. side by side with the tree before the change (base.sh): SmolLM2 8 x 1024 graphed (attention transfer, LoRA;
#    the teacher's LoRA and --check on this tree), the Llama-3-8B shape 8 x 1024 eager attention transfer;
# 3. SmolLM2 2 x 8192 x 2 graphed LoRA and the teacher's LoRA on this tree; probe.py on this tree (as time allows).
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/bwd_fuse_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
bash $D/base.sh || exit 3
LOLSEARCH_KERNELS_AUTOTUNE=0 COLUMNS=250 timeout 170 python3 kernels/_launch.py pytest -m gpu -q -rf -p no:cacheprovider \
  -n 12 tests/kernels/test_kernels_gpu.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log" | cut -c1-300
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  extra=$([ $which = new ] && echo "teacher_lora --check")
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 90 python3 -m lolsearch.perf --model smollm2-135m-shape \
    --out "$O/smol1k_$which" $S --stages attention_transfer lora $extra) > "$O/smol1k_$which.log" 2>&1
  tail -3 "$O/smol1k_$which.log" | cut -c1-300
done
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 70 python3 -m lolsearch.perf --model llama3-8b-shape \
    --out "$O/l8b_$which" train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 \
    --stages attention_transfer) > "$O/l8b_$which.log" 2>&1
  tail -1 "$O/l8b_$which.log" | cut -c1-300
done
timeout 80 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol8k_new" train --seq 8192 --micro-batch 2 \
  --accum 2 --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2 \
  --stages lora teacher_lora > "$O/smol8k_new.log" 2>&1
tail -2 "$O/smol8k_new.log" | cut -c1-300
timeout 75 python3 $D/probe.py "$O/probe_new.json" > "$O/probe_new.log" 2>&1
tail -3 "$O/probe_new.log" | cut -c1-900
