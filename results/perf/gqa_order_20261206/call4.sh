#!/usr/bin/env bash
# The GQA order's size rule (auto) against both fixed orders, the eager 2K forward's host path, issue 16's rows when
# the machine is an H200, and Nsight Compute on the 32K forward's kernels. Carry .dev/p0, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call4.sh \$OUT/perf" timeout 420 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "$GPU"
timeout 110 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd l8b-8k-lora l8b1k-at smol1k-lora \
  --variants GQA_ORDER=0 "" GQA_ORDER=1 > "$O/profile_kernels.log" 2>&1
cut -c1-200 "$O/profile_kernels.log"
timeout 50 python3 results/perf/gqa_order_20261206/probe.py host2k "$O/host2k.txt" > "$O/host2k.log" 2>&1
head -14 "$O/host2k.txt"
if [[ "$GPU" == *H200* ]]; then
  P="python3 -m lolsearch.perf --model smollm2-135m-shape"
  timeout 100 $P --out "$O/rows1k" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 \
    --sync-every 5 --stages attention_transfer lora teacher_lora --check > "$O/rows1k.log" 2>&1
  tail -4 "$O/rows1k.log" | cut -c1-300
  timeout 80 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_at" train --seq 1024 --backends triton \
    --stages attention_transfer --compile off --steps 8 --sync-every 2 --warmup 3 > "$O/l8b_at.log" 2>&1
  tail -1 "$O/l8b_at.log" | cut -c1-300
fi
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: ${NCU:-none}"
if [ -n "$NCU" ]; then
  LOLSEARCH_KERNELS_AUTOTUNE=0 timeout 150 "$NCU" -k regex:"fwd_window|fwd_state|seg_sums" --launch-skip 3 -c 3 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis python3 results/perf/gqa_order_20261206/probe.py fwd32k > "$O/ncu_32k.txt" 2>&1
  grep -E "^  [a-z_]+_kernel|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|ERR" "$O/ncu_32k.txt" | head -60
fi
