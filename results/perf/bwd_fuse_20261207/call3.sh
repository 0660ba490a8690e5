#!/usr/bin/env bash
# Follow-up on the warm machine of call2 (/tmp/base and the packages still there):
#   export PYTHONPATH=$PWD:/tmp/site LOLSEARCH_CACHE=/tmp/lolcache; timeout 470 bash results/perf/bwd_fuse_20261207/call3.sh $OUT/perf; cd $OUT && tar czf perf.tgz perf && rm -rf perf
# SmolLM2 2 x 8192 x 2 graphed (LoRA on both trees; the teacher's LoRA and attention transfer on this tree); the
# Llama-3-8B shape LoRA, both trees; a second SmolLM2 1K pair in the other order.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=$PWD/results/perf/bwd_fuse_20261207
[ -d /tmp/base ] || bash $D/base.sh || exit 3
S8="train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off --cuda-graph on --steps 10 --sync-every 2 --warmup 2"
for which in new base; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  extra=$([ $which = new ] && echo "attention_transfer teacher_lora")
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout $([ $which = new ] && echo 100 || echo 60) python3 -m lolsearch.perf \
    --model smollm2-135m-shape --out "$O/smol8k_$which" $S8 --stages lora $extra) > "$O/smol8k_$which.log" 2>&1
  tail -3 "$O/smol8k_$which.log" | cut -c1-300
done
for which in base new; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 80 python3 -m lolsearch.perf --model llama3-8b-shape \
    --out "$O/l8b_lora_$which" train --seq 1024 --backends triton --compile off --steps 6 --warmup 3 \
    --stages lora) > "$O/l8b_lora_$which.log" 2>&1
  tail -1 "$O/l8b_lora_$which.log" | cut -c1-300
done
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
for which in base new; do
  root=$([ $which = new ] && echo "$PWD" || echo /tmp/base)
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 60 python3 -m lolsearch.perf --model smollm2-135m-shape \
    --out "$O/smol1k2_$which" $S --stages attention_transfer lora) > "$O/smol1k2_$which.log" 2>&1
  tail -2 "$O/smol1k2_$which.log" | cut -c1-300
done
