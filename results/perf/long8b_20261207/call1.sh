#!/usr/bin/env bash
# Llama-3-8B shape (random weights), eager, Triton backend: do 8 x 2048 and 8 x 4096 tokens per step fit one GPU, and at
# what rate (issue 16: "memory that leaves room for 8 x 2048"; a multi-GPU trial "if one GPU is not enough for the 8B
# recipe at 4K context")? LoRA with finetune.checkpoint_layers on, then off; attention transfer with
# recompute_features off and on. Carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/long8b_20261207/call1.sh \$OUT/perf" timeout 480 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
E="--backends triton --compile off --steps 3 --warmup 1 --sync-every 1"
run() {  # name, timeout, perf train arguments
  local name=$1 limit=$2
  shift 2
  timeout "$limit" $P8 --out "$O/$name" train $E "$@" > "$O/$name.log" 2>&1
  echo "$name rc=$?"
  grep '^| llama3' "$O/$name.log" | cut -c1-260
}
run lora_4k 130 --seq 4096 --stages lora --checkpoint-layers on
run lora_2k 130 --seq 2048 --stages lora --checkpoint-layers on off
run at_2k 90 --seq 2048 --stages attention_transfer --recompute-features off on
run at_4k 100 --seq 4096 --stages attention_transfer --recompute-features on off
