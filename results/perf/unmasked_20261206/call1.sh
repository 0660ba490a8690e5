#!/usr/bin/env bash
# Training forwards without transformers' attention mask (unmasked_causal, 90e7262) against the tree before it,
# side by side in one call. One call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/unmasked_20261206/call1.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# unmasked.patch = git diff 90e7262~1 90e7262 -- lolsearch, reversed in /tmp/base.
# 1. SmolLM2-135M shape, 8 x 1024, graphed, compile off/default: attention transfer, LoRA, the teacher's LoRA with
#    --check (this tree); LoRA and the teacher's LoRA (base). A captured step used to build a [B,1,T,T] mask, so the
#    teacher's SDPA ran masked there.
# 2. 2 x 8192 (2 accumulated), compile off: the teacher's LoRA eager and graphed (both trees), the linearized
#    stages graphed (this tree): the auto rule for softmax-only models was set from the masked graphed step.
# 3. Llama-3-8B shape, attention transfer eager with --profile (its timeline shows the GPU's idle time; the eager
#    step synced with the host on every forward before).
set -u
O=$1
mkdir -p "$O"
D=results/perf/unmasked_20261206
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/unmasked.patch
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile off default --steps 30 --sync-every 5"
timeout 150 $P --out "$O/new1k" $S --stages attention_transfer lora teacher_lora --check > "$O/new1k.log" 2>&1
tail -8 "$O/new1k.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 100 $P --out "$O/base1k" $S --stages lora teacher_lora) > "$O/base1k.log" 2>&1
tail -5 "$O/base1k.log"
S8="train --seq 8192 --micro-batch 2 --accum 2 --backends triton --compile off --steps 10 --sync-every 2 --warmup 2"
timeout 80 $P --out "$O/new8k_teacher" $S8 --stages teacher_lora --cuda-graph off on > "$O/new8k_teacher.log" 2>&1
tail -3 "$O/new8k_teacher.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 50 $P --out "$O/base8k_teacher" $S8 --stages teacher_lora --cuda-graph on) > "$O/base8k_teacher.log" 2>&1
tail -2 "$O/base8k_teacher.log"
timeout 70 $P --out "$O/new8k" $S8 --stages attention_transfer lora --cuda-graph on > "$O/new8k.log" 2>&1
tail -3 "$O/new8k.log"
timeout 110 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_trace" train --seq 1024 --backends triton \
  --stages attention_transfer --compile off --steps 2 --warmup 1 --profile > "$O/l8b_trace.log" 2>&1
tail -3 "$O/l8b_trace.log"
