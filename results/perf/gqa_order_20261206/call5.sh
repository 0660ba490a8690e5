#!/usr/bin/env bash
# 1. the launch paths' host integer helpers (kernels/_common.py: cdiv, next_pow2) against Triton's constexpr cdiv
#    and next_power_of_2, alternating in one process (probe.py cdiv2k);
# 2. register caps: the hybrid kernels ran at 12% occupancy, register-bound (Nsight Compute, h100_call4*/), so each is
#    pinned to its config with maxnreg (compile_regs.log's spills: fwd_window 168 -> 432 B, 200 -> 192 B;
#    fwd_state 128 -> 112 B; bwd_q 168 -> 176 B; bwd_kv 168 -> 464 B; 128 is untried offline), side by side with the
#    defaults. Occupancy at 4 warps: 255 registers -> 2 programs per SM, 200 -> 2, 168 -> 3, 128 -> 4;
# 3. seg_sums with the z part on tensor cores (hybrid.SEG_ZMMA; Nsight Compute found it shared-memory bound, 89%);
# 4. the eager 2K forward's host time with launches through the kept compiled kernels (kernels/_direct.py) and
#    without, beside SDPA (probe.py direct2k);
# 5. the kernel GPU tests on this commit.
# Carry .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call5.sh \$OUT/perf" timeout 400 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 40 python3 results/perf/gqa_order_20261206/probe.py cdiv2k > "$O/cdiv2k.log" 2>&1
tail -10 "$O/cdiv2k.log"
timeout 60 python3 results/perf/gqa_order_20261206/probe.py direct2k > "$O/direct2k.log" 2>&1
tail -15 "$O/direct2k.log"
timeout 150 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd --variants "" fwd_window@4x1r168 \
  fwd_window@4x1r200 fwd_window@4x1r128 fwd_state@8x1r128 hybrid.SEG_ZMMA=True \
  fwd_window@4x1r168,fwd_state@8x1r128,hybrid.SEG_ZMMA=True > "$O/profile_regs_32k.log" 2>&1
cut -c1-180 "$O/profile_regs_32k.log"
timeout 120 python3 results/kernels/profile_kernels.py --cases smol1k-lora l8b1k-at --variants "" fwd_window@4x1r168 \
  bwd_q@4x1r168 bwd_q@4x1r128 bwd_kv@4x1r168 > "$O/profile_regs_train.log" 2>&1
cut -c1-180 "$O/profile_regs_train.log"
timeout 110 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup tests/kernels \
  > "$O/pytest_kernels_gpu.log" 2>&1
tail -2 "$O/pytest_kernels_gpu.log"
