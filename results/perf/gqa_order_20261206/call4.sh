#!/usr/bin/env bash
# The GQA order's size rule (auto) against both fixed orders, Nsight Compute on the 32K forward's kernels, and the
# eager 2K forward's host path. Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call4.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 150 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd l8b-8k-lora l8b1k-at smol1k-lora \
  --variants GQA_ORDER=0 "" GQA_ORDER=1 > "$O/profile_kernels.log" 2>&1
cut -c1-200 "$O/profile_kernels.log"
timeout 60 python3 results/perf/gqa_order_20261206/probe.py host2k "$O/host2k.txt" > "$O/host2k.log" 2>&1
head -12 "$O/host2k.txt"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: ${NCU:-none}"
if [ -n "$NCU" ]; then
  LOLSEARCH_KERNELS_AUTOTUNE=0 timeout 240 "$NCU" -k regex:"fwd_window|fwd_state|seg_sums" --launch-skip 3 -c 3 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis python3 results/perf/gqa_order_20261206/probe.py fwd32k > "$O/ncu_32k.txt" 2>&1
  grep -E "^  [a-z_]+_kernel|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|ERR" "$O/ncu_32k.txt" | head -60
fi
