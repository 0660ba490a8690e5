#!/usr/bin/env bash
# The fused gated MLP (FusedGatedMLP, kernels/gated.py) against the same tree with the swap off, side by side in one
# call, on one GPU, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gated_mlp_20261206/call.sh \$OUT/perf" timeout 300 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# "off" runs `python -m lolsearch.perf` with lolsearch.models.fuse_gated_mlps replaced by a no-op (the teachers keep
# transformers' MLPs); everything else is this tree. Most important first, since the session's device time is short:
# 1. GPU tests of the kernel, of FusedGatedMLP against LlamaMLP, of surgery and generation on the swapped models;
# 2. Llama-3-8B shape 8 x 1024 attention transfer, eager, on and off;
# 3. SmolLM2 shape 8 x 1024 graphed (attention transfer, LoRA, teacher's LoRA, --check) on, then LoRA off;
# 4. Llama-3-8B shape 8 x 1024 LoRA, eager, on (peak memory: the activation is no longer kept).
set -u
O=$1
mkdir -p "$O"
OFF=(python3 -c "import sys, lolsearch.models as m; m.fuse_gated_mlps = lambda model: 0; from lolsearch.perf import main; sys.exit(main(sys.argv[1:]))")
timeout 70 python3 -m pytest -q -rf -p no:cacheprovider tests/kernels/test_gated_kernel.py tests/test_norms.py \
  tests/trial/test_surgery.py > "$O/pytest_gpu.log" 2>&1
tail -2 "$O/pytest_gpu.log"
S8="train --seq 1024 --backends triton --stages attention_transfer --compile off --steps 8 --sync-every 2 --warmup 3"
timeout 60 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_at_on" $S8 > "$O/l8b_at_on.log" 2>&1
tail -1 "$O/l8b_at_on.log" | cut -c1-250
timeout 60 "${OFF[@]}" --model llama3-8b-shape --out "$O/l8b_at_off" $S8 > "$O/l8b_at_off.log" 2>&1
tail -1 "$O/l8b_at_off.log" | cut -c1-250
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
timeout 60 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$O/smol1k_on" $S \
  --stages attention_transfer lora teacher_lora --check > "$O/smol1k_on.log" 2>&1
tail -4 "$O/smol1k_on.log" | cut -c1-250
timeout 40 "${OFF[@]}" --model smollm2-135m-shape --out "$O/smol1k_off" $S --stages lora teacher_lora \
  > "$O/smol1k_off.log" 2>&1
tail -3 "$O/smol1k_off.log" | cut -c1-250
timeout 70 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_lora_on" train --seq 1024 --backends triton \
  --stages lora --compile off --steps 4 --sync-every 2 --warmup 1 > "$O/l8b_lora_on.log" 2>&1
tail -1 "$O/l8b_lora_on.log" | cut -c1-250
