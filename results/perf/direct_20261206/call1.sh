#!/usr/bin/env bash
# One device call (2026-12-06, ninth session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/direct_20261206/call1.sh \$OUT/perf" timeout 440 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# In order of priority (the device budget allows one call; what runs past the limit is lost):
# 1. the eager 2K forward's host time with launches through the kept compiled kernels (kernels/_direct.py) and
#    without, alternating, beside SDPA (probe.py direct2k);
# 2. the kernel GPU tests on this commit (the direct launches' bit-identity test among them);
# 3. register caps at 32K: the hybrid kernels ran at 12% occupancy, register-bound (Nsight Compute,
#    gqa_order_20261206/h100_call4*/), so each is pinned to its config with maxnreg (offline spills in
#    gqa_order_20261206/compile_regs.log: fwd_window 168 -> 432 B, 200 -> 192 B; fwd_state 128 -> 112 B), side by
#    side with the defaults. Programs per SM at 4 warps: 255 registers -> 2, 200 -> 2, 168 -> 3, 128 -> 4.
#    Also seg_sums with its z part on tensor cores (hybrid.SEG_ZMMA; Nsight Compute found it shared-memory bound);
# 4. the GPU tests of the graphed trial paths and of the trials' kernel check (direct launches inside CUDA-graph
#    capture);
# 5. register caps at two training shapes (bwd_q, bwd_kv: 229 / 243 registers, caps 168 and 128);
# 6. the previous session's host helpers against Triton's cdiv / next_power_of_2, alternating (probe.py cdiv2k).
set -u
O=$1
mkdir -p "$O"
D=results/perf/gqa_order_20261206
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python3 $D/probe.py direct2k > "$O/direct2k.log" 2>&1
tail -15 "$O/direct2k.log"
timeout 110 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu -n 14 --dist loadgroup tests/kernels \
  > "$O/pytest_kernels_gpu.log" 2>&1
tail -2 "$O/pytest_kernels_gpu.log"
timeout 150 python3 results/kernels/profile_kernels.py --cases l8b-32k-fwd --variants "" fwd_window@4x1r168 \
  fwd_window@4x1r200 fwd_window@4x1r128 fwd_state@8x1r128 hybrid.SEG_ZMMA=True \
  fwd_window@4x1r168,fwd_state@8x1r128,hybrid.SEG_ZMMA=True > "$O/profile_regs_32k.log" 2>&1
cut -c1-180 "$O/profile_regs_32k.log"
timeout 100 python3 -m pytest -q -rf -p no:cacheprovider -m gpu tests/trial/test_graphed.py tests/trial/test_step_graph.py \
  tests/trial/test_kernel_check.py > "$O/pytest_trial_gpu.log" 2>&1
tail -2 "$O/pytest_trial_gpu.log"
timeout 80 python3 results/kernels/profile_kernels.py --cases smol1k-lora l8b1k-at --variants "" fwd_window@4x1r168 \
  bwd_q@4x1r168 bwd_q@4x1r128 bwd_kv@4x1r168 > "$O/profile_regs_train.log" 2>&1
cut -c1-180 "$O/profile_regs_train.log"
timeout 30 python3 $D/probe.py cdiv2k > "$O/cdiv2k.log" 2>&1
tail -10 "$O/cdiv2k.log"
