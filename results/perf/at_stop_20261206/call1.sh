#!/usr/bin/env bash
# Device call (2026-12-06, tenth session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/at_stop_20261206/call1.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. the kernel GPU suite autotuned, whole (the register-capped configs are offered since 45f8868; a 250 s run of
#    it in results/perf/regcaps_20261206/ was cut after 236 passes);
# 2. attention transfer with distill_mode's early stop on and off (variant.py), SmolLM2 8 x 1024 graphed with --check.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
COLUMNS=300 LOLSEARCH_KERNELS_AUTOTUNE=1 timeout 360 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider -m gpu \
  -n 14 --dist loadgroup tests/kernels > "$O/pytest_kernels_gpu_autotuned.log" 2>&1
tail -3 "$O/pytest_kernels_gpu_autotuned.log" | cut -c1-300
V="python3 results/perf/at_stop_20261206/variant.py"
for mode in on off; do
  timeout 80 $V $mode --model smollm2-135m-shape --out "$O/smol_$mode" train --seq 1024 --backends triton \
    --cuda-graph on --compile off --steps 30 --sync-every 5 --stages attention_transfer --check > "$O/smol_$mode.log" 2>&1
  tail -2 "$O/smol_$mode.log" | cut -c1-330
done
