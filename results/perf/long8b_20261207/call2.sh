#!/usr/bin/env bash
# After the fix of the hybrid op's double read of its saved tensors (CheckpointError in call 1): the GPU tests of
# checkpointed backwards and layers, then the 8B LoRA step with finetune.checkpoint_layers at 8 x 4096.
# Carrying .dev/p0:
#   PERF_CMDS="bash results/perf/long8b_20261207/call2.sh \$OUT/perf" timeout 230 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
COLUMNS=250 timeout 100 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu \
  tests/kernels/test_checkpointed_backward.py tests/trial/test_checkpoint_layers.py > "$O/pytest_ckpt.log" 2>&1
tail -3 "$O/pytest_ckpt.log" | cut -c1-250
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
E="--backends triton --compile off --steps 3 --warmup 1 --sync-every 1 --stages lora --checkpoint-layers on"
for seq in 4096; do
  timeout 130 $P8 --out "$O/lora_$seq" train --seq $seq $E > "$O/lora_$seq.log" 2>&1
  echo "lora_$seq rc=$?"
  grep '^| llama3' "$O/lora_$seq.log" | cut -c1-260
done
