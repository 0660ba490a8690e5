#!/usr/bin/env bash
# GPU tests of the code the sixth session ran only on the CPU, then the attention kernels' GPU time per kernel at
# the goals' shapes under the two new launch settings, side by side in one process (profile_kernels.py):
# LOLSEARCH_KERNELS_WINDOW_CHUNKS (query chunks per fwd_window program) and LOLSEARCH_KERNELS_KV_BQ (bwd_kv's
# query rows per score tile). Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/segments_20261206/call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# Ran at 0f03a08 (h100_call1/). Both settings were reverted in 2380fad: at later commits the variants are unknown
# names and run the defaults.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 100 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_kernel_check.py tests/kernels/test_rope_kernel.py \
  tests/kernels/test_gated_kernel.py tests/test_norms.py > "$O/pytest_gpu.log" 2>&1
tail -3 "$O/pytest_gpu.log"
timeout 240 python3 results/kernels/profile_kernels.py --cases smol1k-lora smol1k-at l8b1k-at l8b-32k-fwd l8b-2k-fwd \
  --variants "" KV_BQ=64 KV_BQ=16 WINDOW_CHUNKS=2 WINDOW_CHUNKS=4 WINDOW_CHUNKS=8 > "$O/profile_kernels.log" 2>&1
cut -c1-420 "$O/profile_kernels.log"
# the GPU matrix (first configs) under both settings, a part of it
LOLSEARCH_KERNELS_KV_BQ=64 LOLSEARCH_KERNELS_WINDOW_CHUNKS=3 timeout 200 python3 -m pytest -q -x -rf -p no:cacheprovider \
  -m gpu tests/kernels/test_kernels_gpu.py > "$O/pytest_matrix_knobs.log" 2>&1
tail -3 "$O/pytest_matrix_knobs.log"
