#!/usr/bin/env bash
# The teacher's SDPA through enable_gqa (30c4676) and the fused RMSNorms (b97b3cc) against c06c77c (the fused MSE
# already in), side by side in one call. One call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_glue_20261206/call2.sh \$OUT/perf" timeout 480 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# norms_gqa.patch = git diff c06c77c b97b3cc -- lolsearch kernels, reversed in /tmp/base.
# 1. GPU tests of the fused norms and the teacher's attention (test_norms, test_surgery);
# 2. SmolLM2-135M shape, 8 x 1024, graphed, compile off/default: the three stages, --check in this tree; both trees;
# 3. Llama-3-8B shape, attention transfer: eager, and compile default with 3 warm-up steps (the 2 of call1 left
#    compile work in the timed steps).
set -u
O=$1
mkdir -p "$O"
D=results/perf/at_glue_20261206
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/norms_gqa.patch
timeout 60 python3 -m pytest -q -rf -p no:cacheprovider tests/test_norms.py tests/trial/test_surgery.py > "$O/pytest_gpu.log" 2>&1
tail -2 "$O/pytest_gpu.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile off default --sync-every 5 --stages attention_transfer lora teacher_lora"
timeout 130 $P --out "$O/new1k" $S --steps 25 --check > "$O/new1k.log" 2>&1
tail -8 "$O/new1k.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 100 $P --out "$O/base1k" $S --steps 25) > "$O/base1k.log" 2>&1
tail -8 "$O/base1k.log"
P8="python3 -m lolsearch.perf --model llama3-8b-shape"
timeout 60 $P8 --out "$O/new8b" train --seq 1024 --backends triton --stages attention_transfer --steps 4 --warmup 1 \
  --compile off > "$O/new8b.log" 2>&1
tail -2 "$O/new8b.log"
timeout 110 $P8 --out "$O/new8b_compiled" train --seq 1024 --backends triton --stages attention_transfer --steps 4 \
  --warmup 3 --compile default > "$O/new8b_compiled.log" 2>&1
tail -2 "$O/new8b_compiled.log"
