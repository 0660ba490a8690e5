#!/usr/bin/env bash
# The split bwd_kv (split.patch = its commit's diff of kernels/) against the tree before it, side by side in one call,
# on one GPU, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bwd_kv_split_20261206/call.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. every GPU kernel test (the matrix: dtype, D, F, layout, window, T, GQA, forward and the six gradients against
#    float64; the fused maps, MSE and RoPE), first launch configs, and the graphed steps;
# 2. SmolLM2 shape 8 x 1024 graphed: attention transfer, LoRA, teacher's LoRA (--check) in this tree, attention
#    transfer and LoRA in the base tree; 2 x 8192 (2 accumulated) in this tree;
# 3. Llama-3-8B shape 8 x 1024 attention transfer, eager, both trees.
set -u
O=$1
mkdir -p "$O"
D=results/perf/bwd_kv_split_20261206
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/split.patch
timeout 200 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup tests/kernels \
  tests/trial/test_step_graph.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
timeout 90 $P --out "$O/new1k" $S --stages attention_transfer lora teacher_lora --check > "$O/new1k.log" 2>&1
tail -4 "$O/new1k.log" | cut -c1-250
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 60 $P --out "$O/base1k" $S --stages attention_transfer lora) \
  > "$O/base1k.log" 2>&1
tail -3 "$O/base1k.log" | cut -c1-250
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
S8="train --seq 1024 --backends triton --stages attention_transfer --compile off --steps 8 --sync-every 2 --warmup 3"
timeout 65 $P8 --out "$O/new8b" $S8 > "$O/new8b.log" 2>&1
tail -1 "$O/new8b.log" | cut -c1-250
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 65 $P8 --out "$O/base8b" $S8) > "$O/base8b.log" 2>&1
tail -1 "$O/base8b.log" | cut -c1-250
timeout 70 $P --out "$O/new8k" train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off \
  --cuda-graph on --steps 10 --sync-every 2 --warmup 2 --stages attention_transfer lora teacher_lora > "$O/new8k.log" 2>&1
tail -4 "$O/new8k.log" | cut -c1-250
