#!/usr/bin/env bash
# Right after call1.sh on the warm machine, no carry (/tmp/base and /tmp/site are still there):
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; bash results/perf/at_traffic_20261206/call2.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# SmolLM2 8 x 1024 graphed (attention transfer, LoRA, the teacher's LoRA; --check on this tree), then the
# Llama-3-8B-shaped LoRA step, this tree and the base tree.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
[ -d /tmp/base ] || bash results/perf/at_traffic_20261206/base.sh || exit 3
nvidia-smi --query-gpu=name --format=csv,noheader
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  chk=$([ $which = new ] && echo --check)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 110 python3 -m lolsearch.perf --model smollm2-135m-shape \
    --out "$O/smol1k_$which" $S --stages attention_transfer lora teacher_lora $chk) > "$O/smol1k_$which.log" 2>&1
  tail -4 "$O/smol1k_$which.log" | cut -c1-300
done
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 100 python3 -m lolsearch.perf --model llama3-8b-shape \
    --out "$O/l8b_lora_$which" train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 \
    --stages lora) > "$O/l8b_lora_$which.log" 2>&1
  tail -1 "$O/l8b_lora_$which.log" | cut -c1-300
done
# operator profile of this tree's SmolLM2 LoRA step (eager, 3 steps), for what is left in it
(PYTHONPATH=$PWD:/tmp/site timeout 80 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol1k_profile" \
  train --seq 1024 --backends triton --stages lora teacher_lora --compile off --cuda-graph off --steps 3 --profile) \
  > "$O/smol1k_profile.log" 2>&1
tail -2 "$O/smol1k_profile.log" | cut -c1-300
