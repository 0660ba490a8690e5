#!/usr/bin/env bash
# The fused next-token loss and the fused LoRA layer, side by side with the tree before them (base.sh), carrying
# .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call3.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. GPU tests of both (the kernel against F.cross_entropy in every dtype; the layer against peft; bf16 LoRA curves);
# 2. SmolLM2 8 x 1024 graphed, LoRA and the teacher's LoRA: new (with --check), new without the loss kernel
#    (LOLSEARCH_KERNELS_FUSED_XENT=0: the LoRA layer alone), base;
# 3. Llama-3-8B shape 8 x 1024 eager LoRA: new, base, new without the loss kernel.
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/fused_loss_lora_20261207
nvidia-smi --query-gpu=name --format=csv,noheader
bash $D/base.sh || exit 3
COLUMNS=250 timeout 150 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider tests/kernels/test_xent_kernel.py \
  tests/trial/test_lora_linear.py tests/trial/test_lora_compute.py "tests/trial/test_lora_ranks.py::test_fused_loss_and_gradients_match_the_models_own_loss" \
  > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log" | cut -c1-300
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 --stages lora teacher_lora"
for which in new noxent base; do
  root=$([ $which = base ] && echo /tmp/base || echo "$PWD")
  extra=$([ $which = new ] && echo "--check")
  xent=$([ $which = noxent ] && echo 0 || echo 1)
  (cd "$root" && LOLSEARCH_KERNELS_FUSED_XENT=$xent PYTHONPATH=$root:/tmp/site timeout 100 python3 -m lolsearch.perf \
    --model smollm2-135m-shape --out "$O/smol1k_$which" $S $extra) > "$O/smol1k_$which.log" 2>&1
  grep '^| smollm2' "$O/smol1k_$which.log" | cut -c1-250
done
for which in new base noxent; do
  root=$([ $which = base ] && echo /tmp/base || echo "$PWD")
  xent=$([ $which = noxent ] && echo 0 || echo 1)
  (cd "$root" && LOLSEARCH_KERNELS_FUSED_XENT=$xent PYTHONPATH=$root:/tmp/site timeout 75 python3 -m lolsearch.perf \
    --model llama3-8b-shape --out "$O/l8b_lora_$which" train --seq 1024 --backends triton --compile off --steps 8 \
    --warmup 3 --sync-every 5 --stages lora) > "$O/l8b_lora_$which.log" 2>&1
  tail -1 "$O/l8b_lora_$which.log" | cut -c1-250
done
