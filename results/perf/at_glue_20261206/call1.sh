#!/usr/bin/env bash
# Attention transfer's fused MSE (the commit of glue.patch) against the tree before it, side by side in one call,
# and where a compiled 8B-shape step spends its time. One call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_glue_20261206/call1.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# glue.patch = git diff of that commit -- lolsearch kernels, reversed in /tmp/base.
# 1. bench_glue.py: the MSE plain / fused and the teacher's SDPA expanded / enable_gqa, per call;
# 2. SmolLM2-135M shape, 8 x 1024, attention transfer graphed, compile off/default (--check in this tree), both trees;
# 3. Llama-3-8B shape, attention transfer eager, both trees;
# 4. Llama-3-8B shape, attention transfer with compile default and --profile (timeline and operator tables).
set -u
O=$1
mkdir -p "$O"
D=results/perf/at_glue_20261206
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/glue.patch
timeout 60 python3 $D/bench_glue.py > "$O/bench_glue.log" 2>&1
cat "$O/bench_glue.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile off default --steps 30 --sync-every 5 --stages attention_transfer"
timeout 80 $P --out "$O/new1k" $S --check > "$O/new1k.log" 2>&1
tail -3 "$O/new1k.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 60 $P --out "$O/base1k" $S) > "$O/base1k.log" 2>&1
tail -3 "$O/base1k.log"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
S8="train --seq 1024 --backends triton --stages attention_transfer --steps 4 --warmup 1"
timeout 75 $P8 --out "$O/new8b" $S8 --compile off > "$O/new8b.log" 2>&1
tail -2 "$O/new8b.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 75 $P8 --out "$O/base8b" $S8 --compile off) > "$O/base8b.log" 2>&1
tail -2 "$O/base8b.log"
timeout 150 $P8 --out "$O/new8b_compiled" train --seq 1024 --backends triton --stages attention_transfer --steps 2 \
  --warmup 2 --compile default --profile > "$O/new8b_compiled.log" 2>&1
tail -2 "$O/new8b_compiled.log"
