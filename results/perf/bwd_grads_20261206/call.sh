#!/usr/bin/env bash
# The backward that computes dq, dk, dv only where autograd asks and the fused maps that skip dx where x needs none (commits 155e098, 3e11476) against the kernels before it, side
# by side on one GPU, then its GPU tests. One call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/bwd_grads_20261206/call.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. this tree: SmolLM2-135M shape, 8 x 1024, graphed, attention transfer, LoRA, the teacher's LoRA, compile off/default,
#    with --check (first losses against the eager path);
# 2. the same tree with kernels.patch reversed (the kernels of 89aa9e2, kernels.patch = git diff 89aa9e2 3e11476 -- kernels) in /tmp/base: attention transfer and LoRA;
# (COMPILES=default and TEST_S=120 shorten it where little device time is left.)
# 3. the GPU tests of the hybrid op (requested subsets, the fixed cases, long segments, the matrix at F = 128) and of
#    the fused maps.
set -u
O=$1
mkdir -p "$O"
D=results/perf/bwd_grads_20261206
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile ${COMPILES:-off default} --steps 30 --sync-every 5"
timeout 160 $P --out "$O/new" $S --stages attention_transfer lora teacher_lora --check > "$O/new.log" 2>&1
tail -8 "$O/new.log"
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/kernels.patch
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 140 $P --out "$O/base" $S --stages attention_transfer lora) > "$O/base.log" 2>&1
tail -6 "$O/base.log"
timeout ${TEST_S:-200} python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py \
  tests/kernels/test_featuremap_kernel.py -k "requested or forward_and_gradients or long_segments or (matrix and F128) or featuremap" > "$O/pytest_kernels.log" 2>&1
tail -4 "$O/pytest_kernels.log"
