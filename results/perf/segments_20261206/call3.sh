#!/usr/bin/env bash
# Segments of at least 8 chunks (hybrid._plan, MIN_SEGMENT_CHUNKS) against the fill rule alone
# (LOLSEARCH_KERNELS_MIN_SEG=1, the plan before): GPU tests under the new plan, the kernels' time per call at the
# goals' shapes (profile_kernels.py, both plans in one process), and the training steps (call2.sh, the old plan as
# the base). Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/segments_20261206/call3.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
timeout 130 python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/kernels/test_kernels_gpu.py \
  -k "forward_and_gradients or requested or llama_shape or long_segments" > "$O/pytest_gpu.log" 2>&1
tail -2 "$O/pytest_gpu.log"
timeout 140 python3 results/kernels/profile_kernels.py --cases smol1k-lora smol1k-at l8b1k-at l8b-2k-fwd l8b-2k-lora \
  l8b-8k-lora l8b-32k-fwd --variants MIN_SEG=1 "" > "$O/profile_kernels.log" 2>&1
cut -c1-200 "$O/profile_kernels.log"
BASE=LOLSEARCH_KERNELS_MIN_SEG=1 VARIANT= bash results/perf/segments_20261206/call2.sh "$O/steps" 2>&1 | tail -6
