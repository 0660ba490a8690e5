#!/usr/bin/env bash
# The H200 calls of issue 17 (one `run` each; repo root; results under $OUT/k17, tarred to $OUT/k17.tgz).
#
#   bash results/kernels/issue17_device.sh diag    # autotune configs under compute-sanitizer, GPU tests, forward profile
#   bash results/kernels/issue17_device.sh final   # GPU tests, autotuning on, the benchmark, the forward profile
#
# Carry .whl (ignored folder): pydantic and its dependencies, which lolsearch.attention imports and the device image
# lacks (python3 -m pip download --no-deps ... -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
# typing-inspection==0.4.5 typing_extensions==4.16.0, with the manylinux/cp312 flags of the device README).
# FLA_WHEELS=<dir> installs fla-core + einops offline first (the bench then measures fla's pair).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
D=$OUT/k17
mkdir -p "$D"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 -c "import lolsearch.attention, lolsearch.kernels.hybrid" || exit 3
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
  command -v compute-sanitizer
} > "$D/versions.txt" 2>&1
cat "$D/versions.txt"
if [ -n "${FLA_WHEELS:-}" ] && [ -d "$FLA_WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$FLA_WHEELS"/*.whl > "$D/fla_install.log" 2>&1 \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site && echo "fla installed"
fi
t0=$(date +%s)
case $1 in
diag)
  # 1) every non-first config, one kernel at a time, under memcheck (in parallel), and the GPU tests beside them
  for k in fwd_state_kernel fwd_window_kernel bwd_state_kv_kernel bwd_state_q_kernel bwd_q_kernel bwd_kv_kernel; do
    for i in 1 2; do
      timeout 240 compute-sanitizer --tool memcheck --print-limit 3 python3 results/kernels/autotune_diag.py $k $i \
        > "$D/diag_${k}_$i.log" 2>&1 &
    done
  done
  LOLSEARCH_KERNELS_AUTOTUNE=0 timeout 240 python3 kernels/_launch.py pytest -m gpu tests/kernels -q -p no:cacheprovider \
    -n 12 --dist loadgroup > "$D/pytest_gpu.log" 2>&1
  echo "pytest rc=$? after $(( $(date +%s) - t0 )) s"
  wait
  echo "diag done after $(( $(date +%s) - t0 )) s"
  grep -h -E "^(ok|FAIL|ERROR|forced)|ERROR SUMMARY|Invalid|out of bounds|^=+ +at " "$D"/diag_*.log | head -120
  # 2) real autotuning of every kernel (no sanitizer), then the forward profile on a quiet GPU
  timeout 45 python3 results/kernels/autotune_diag.py all > "$D/diag_all.log" 2>&1; echo "autotune all rc=$?"
  tail -14 "$D/diag_all.log"
  timeout 90 python3 results/kernels/profile_fwd.py > "$D/profile.log" 2>&1; echo "profile rc=$?"
  ;;
final)
  # GPU tests (first configs), then real autotuning of every kernel, the benchmark and the forward profile.
  # Files stay unpacked under $OUT/k17 (at most 8 come back), so a call cut by its limit still returns them.
  LOLSEARCH_KERNELS_AUTOTUNE=0 timeout "${TEST_TIMEOUT:-110}" python3 kernels/_launch.py pytest -m gpu tests/kernels -q \
    -p no:cacheprovider -n 14 --dist loadgroup > "$D/pytest_gpu.log" 2>&1
  echo "pytest rc=$? after $(( $(date +%s) - t0 )) s"
  grep -E "passed|failed|FAILED|^E  +Assert" "$D/pytest_gpu.log" | tail -30
  if [ "${SKIP_DIAG:-0}" != 1 ]; then
    timeout 45 python3 results/kernels/autotune_diag.py all > "$D/diag_all.log" 2>&1; echo "autotune all rc=$?"
    grep -E "^(ok|FAIL|ERROR)" "$D/diag_all.log"
  fi
  timeout $(( ${BENCH_BUDGET:-90} + 40 )) python3 kernels/_launch.py bench --out "$D" --budget "${BENCH_BUDGET:-90}" \
    --shapes llama3-8b --seq-lens 2048 8192 32768 --decode-ctx 131072 > "$D/bench.log" 2>&1
  echo "bench rc=$? after $(( $(date +%s) - t0 )) s"
  sed -n '/## Goals/,/^## llama3-8b — fwd+bwd/p' "$D/bench.md"
  if [ "${SKIP_PROFILE:-0}" != 1 ]; then
    timeout 35 python3 results/kernels/profile_fwd.py > "$D/profile.log" 2>&1; echo "profile rc=$?"
    grep -E "^T=|host|launch" "$D/profile.log"
  fi
  echo "phase $1 done in $(( $(date +%s) - t0 )) s"
  exit 0
  ;;
esac
grep -E "passed|failed|FAILED|Error" "$D/pytest_gpu.log" | tail -25
echo "phase $1 done in $(( $(date +%s) - t0 )) s"
tar czf "$OUT/k17.tgz" -C "$OUT" k17 && rm -rf "$D"
