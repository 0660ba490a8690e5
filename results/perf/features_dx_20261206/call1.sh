#!/usr/bin/env bash
# The frozen maps' dx-only backward (features_dx_kernel, every row tile in parallel, a kv head's query heads summed
# in-kernel) against the kernels of fa7de3d, side by side in one call, then issue 16's goal rows with this tree.
# One call, carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/features_dx_20261206/call1.sh \$OUT/perf" timeout 570 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. bench_features.py in both trees (kernels.patch = git diff fa7de3d -- kernels, reversed in /tmp/base);
# 2. SmolLM2-135M shape, 8 x 1024, graphed: attention transfer, LoRA, the teacher's LoRA, compile off/default,
#    --check (this tree); LoRA, compile off/default (base);
# 3. the same three stages eager with --profile (this tree);
# 4. the GPU tests of the fused maps, then the hybrid op's matrix at F = 64 and 256 (F = 128 ran on the H100 on
#    2026-12-06) until the call's time runs out.
set -u
O=$1
mkdir -p "$O"
D=results/perf/features_dx_20261206
rm -rf /tmp/base && mkdir /tmp/base && cp -r lolsearch kernels pyproject.toml /tmp/base/ && patch -s -d /tmp/base -R -p1 < $D/kernels.patch
timeout 60 python3 $D/bench_features.py new > "$O/bench_features.log" 2>&1
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 60 python3 $OLDPWD/$D/bench_features.py base) >> "$O/bench_features.log" 2>&1
cat "$O/bench_features.log"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
S="train --seq 1024 --backends triton --cuda-graph on --compile off default --steps 30 --sync-every 5"
timeout 150 $P --out "$O/new" $S --stages attention_transfer lora teacher_lora --check > "$O/new.log" 2>&1
tail -8 "$O/new.log"
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 90 $P --out "$O/base" $S --stages lora) > "$O/base.log" 2>&1
tail -4 "$O/base.log"
timeout 90 $P --out "$O/smol1k_profile" train --seq 1024 --backends triton --cuda-graph off --compile off \
  --stages attention_transfer lora teacher_lora --steps 3 --profile > "$O/smol1k_profile.log" 2>&1
tail -2 "$O/smol1k_profile.log"
timeout 60 python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_featuremap_kernel.py > "$O/pytest_featuremap.log" 2>&1
tail -2 "$O/pytest_featuremap.log"
timeout ${TEST_S:-100} python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py \
  -k "matrix and not F128" > "$O/pytest_matrix.log" 2>&1
tail -3 "$O/pytest_matrix.log"
