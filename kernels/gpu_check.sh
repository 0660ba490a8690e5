#!/usr/bin/env bash
# One-call GPU check of lolsearch.kernels: the GPU kernel tests, then the benchmark.
#
#   bash kernels/gpu_check.sh [OUT_DIR]      # from the repo root; OUT_DIR defaults to $OUT, else results/kernels
#
# Works with or without `pip install -e .` (kernels/_launch.py registers kernels/ as lolsearch.kernels when
# needed). Optional: FLA_WHEELS=<dir with fla_core-*.whl einops-*.whl> installs fla (--no-deps, offline) so
# that the bench measures fla's chunk_linear_attn + parallel_attn too. Stays under 10 minutes on an H200:
# tests <= 360 s, bench budget 150 s (cells that would start later are recorded as skipped).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-results/kernels}}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
start=$(date +%s)

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
} > "$OUT_DIR/versions.txt" 2>&1
cat "$OUT_DIR/versions.txt"

if [ -n "${FLA_WHEELS:-}" ] && [ -d "${FLA_WHEELS}" ]; then
  "$PY" -m pip install --no-deps --no-index "${FLA_WHEELS}"/*.whl > "$OUT_DIR/fla_install.log" 2>&1 \
    && echo "fla installed from ${FLA_WHEELS}" || echo "fla install failed (see fla_install.log); bench skips fla"
fi

# 1) kernel tests on the GPU, autotuned as users run them (every offered config is compiled and timed at each size
# class the matrix reaches: 246 tests took over 200 s on an H200 on 2026-12-04); KERNEL_TEST_AUTOTUNE=0 runs the
# first config of each kernel only (134 s)
# (PYTEST_ARGS: the device image has pytest-xdist; -rf names every failure in the summary)
# (KERNEL_TEST_ENV: settings for the tests only, e.g. LOLSEARCH_KERNELS_SEG_TILE=128x128 to run the matrix on a knob)
# (COLUMNS: wide enough that each -rf line keeps its assertion message, e.g. the relative error of a failed case)
# xdist workers: one per 8 GiB of GPU memory, at most 14 (autotuned, 14 workers ran out of memory in the fp32 F = 256
# cases on an H100 80GB, ~5.5 GiB each; results/perf/at_stop_20261206/)
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
workers=$(( ${mem_mib:-0} / 8192 )); [ "$workers" -gt 14 ] && workers=14; [ "$workers" -lt 1 ] && workers=1
env ${KERNEL_TEST_ENV:-} COLUMNS="${COLUMNS:-300}" LOLSEARCH_KERNELS_AUTOTUNE="${KERNEL_TEST_AUTOTUNE:-1}" timeout "${KERNEL_TEST_TIMEOUT:-360}" "$PY" kernels/_launch.py pytest -m gpu tests/kernels -q -rf \
  -p no:cacheprovider ${PYTEST_ARGS:--n $workers --dist loadgroup} 2>&1 | tee "$OUT_DIR/pytest_gpu.log"
test_rc=${PIPESTATUS[0]}

# 2) benchmark, autotuned as users run it (BENCH_AUTOTUNE=0: the first config of each kernel; BENCH_ARGS: more bench
# flags, e.g. --shapes llama3-8b). Autotuned, the first call of each cell also times every config: on 2026-12-04 a
# 150-160 s budget covered one length only (results/kernels/tune_key_20261204/); BENCH_AUTOTUNE=0 covers 2K-32K
LOLSEARCH_KERNELS_AUTOTUNE="${BENCH_AUTOTUNE:-1}" timeout $(( ${BENCH_BUDGET:-150} + 80 )) "$PY" kernels/_launch.py bench --out "$OUT_DIR" --budget "${BENCH_BUDGET:-150}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT_DIR/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu tests rc=$test_rc, bench rc=$bench_rc, $(( $(date +%s) - start )) s" | tee "$OUT_DIR/summary.txt"
[ -f "$OUT_DIR/bench.md" ] && sed -n '1,20p' "$OUT_DIR/bench.md"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
