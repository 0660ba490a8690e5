#!/usr/bin/env bash
# First device call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_traffic_20261206/call1.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# The GPU tests of the changed kernels (first configs), then side by side with the tree before the changes (base.sh):
# the Llama-3-8B-shaped attention transfer, 8 x 1024 eager, alternating; SmolLM2 8 x 1024 graphed (attention transfer,
# LoRA, the teacher's LoRA; --check on this tree); the Llama-3-8B-shaped LoRA step on this tree.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/at_traffic_20261206
nvidia-smi --query-gpu=name --format=csv,noheader
bash $D/base.sh || exit 3
LOLSEARCH_KERNELS_AUTOTUNE=0 COLUMNS=250 timeout 120 python3 kernels/_launch.py pytest -m gpu -q -rf -p no:cacheprovider \
  -n 12 tests/kernels/test_mse_kernel.py tests/kernels/test_kernels_gpu.py -k "mse or token_major or requested or \
  forward_and_gradients or llama_shape or direct_launch" > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log" | cut -c1-300
A="--model llama3-8b-shape --out"
T="train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 --stages attention_transfer"
for which in new base new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 80 python3 -m lolsearch.perf $A "$O/l8b_$which" $T) \
    >> "$O/l8b_$which.log" 2>&1
  tail -1 "$O/l8b_$which.log" | cut -c1-300
done
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  chk=$([ $which = new ] && echo --check)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 95 python3 -m lolsearch.perf --model smollm2-135m-shape \
    --out "$O/smol1k_$which" $S --stages attention_transfer lora teacher_lora $chk) > "$O/smol1k_$which.log" 2>&1
  tail -4 "$O/smol1k_$which.log" | cut -c1-300
done
(PYTHONPATH=$PWD:/tmp/site timeout 75 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_lora_new" \
  train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 --stages lora) > "$O/l8b_lora_new.log" 2>&1
tail -1 "$O/l8b_lora_new.log" | cut -c1-300
