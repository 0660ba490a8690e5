#!/usr/bin/env bash
# One device call's A/B of two trees of .dev/trees (prepare.sh): bash trees.sh OUT NEW OLD [no-seg]
# 1. op_ab.py (results/perf/linwin_20261207/) in NEW, then OLD: GPU time by CUDA-graph replay per cell (bf16, window 64),
#    the 32K forward's kernels, and the two trees' outputs and gradients compared at 4097 tokens;
# 2. the GPU tests of the hybrid op, run inside NEW (the float64 matrix with forced 2-, 3- and 5-chunk segments,
#    autotuned);
# 3. unless no-seg: seg_sweep.py in NEW and OLD, chunks per segment of the forward at 2K, 8K and 32K.
set -u
O=$(realpath -m "$1")
NEW=$2
OLD=$3
mkdir -p "$O"
R=$PWD
A=$R/results/perf/linwin_20261207/op_ab.py
nvidia-smi --query-gpu=name --format=csv,noheader
for tree in $NEW $OLD; do
  PYTHONPATH=$R/.dev/trees/$tree:/tmp/site timeout ${RUN_S:-130} python3 $A $tree "$O/ab" > "$O/ab_$tree.log" 2>&1
  grep -v Warn "$O/ab_$tree.log" | cut -c1-400
done
python3 $A --compare "$O/ab/${NEW}_check.pt" "$O/ab/${OLD}_check.pt" 2>&1 | tee "$O/compare.txt"
(cd .dev/trees/$NEW && COLUMNS=250 LOLSEARCH_KERNELS_AUTOTUNE=1 PYTHONPATH=$PWD:/tmp/site timeout ${TEST_S:-170} \
  python3 kernels/_launch.py pytest -m gpu tests/kernels/test_kernels_gpu.py tests/kernels/test_hybrid_kernel.py \
  tests/kernels/test_checkpointed_backward.py -q -rf -p no:cacheprovider -n 14 --dist loadgroup) > "$O/pytest_gpu_$NEW.log" 2>&1
tail -12 "$O/pytest_gpu_$NEW.log" | cut -c1-300
[ "${4:-}" = no-seg ] && exit 0
for tree in $NEW $OLD; do
  PYTHONPATH=$R/.dev/trees/$tree:/tmp/site timeout 60 python3 $R/results/perf/localwalk_20261208/seg_sweep.py $tree \
    > "$O/seg_$tree.log" 2>&1
  grep '^{' "$O/seg_$tree.log" || tail -3 "$O/seg_$tree.log"
done
