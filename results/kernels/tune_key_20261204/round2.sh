#!/usr/bin/env bash
# Device round 2 of 2026-12-04 evening: autotuning on by default (kernels/_common.py), three calls back to back on
# one fresh nvidia-h200, each run as
#   PERF_CMDS="bash results/kernels/tune_key_20261204/round2.sh X" bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# d (carry .dev/p1): the GPU kernel matrix autotuned, as kernels/gpu_check.sh now runs it, on an empty Triton cache
# e (carry .dev/p2): the bench at 8K / 32K (Llama-3-8B heads), autotuned by default
# f (carry .dev/p3, the data): on an empty Triton cache, one short recipe-shaped trial (its kernel check compiles
#   and tunes at the trial's shapes), the same trial again (choices and compiled kernels now on disk):
#   timing.kernel_check_s cold and warm; then training steps with autotuning off / on (graphed, SmolLM2 shape, 8 x 1024)
set -u
P=$OUT/perf
case $1 in
d)
  rm -rf ~/.triton/cache
  COLUMNS=300 timeout 420 python3 kernels/_launch.py pytest -m gpu tests/kernels -q -rf -p no:cacheprovider \
    -n 14 --dist loadgroup > "$P/pytest_gpu_autotune.log" 2>&1
  echo "pytest rc=$?"; tail -4 "$P/pytest_gpu_autotune.log"
  ;;
e)
  timeout 230 python3 kernels/_launch.py bench --out "$P/bench" --budget 150 --shapes llama3-8b --seq-lens 8192 32768 \
    --decode-ctx 131072 > "$P/bench.log" 2>&1
  sed -n 8,40p "$P/bench/bench.md"
  ;;
f)
  rm -rf ~/.triton/cache
  for run in 1 2; do
    timeout 170 python3 -m lolsearch run spaces/smollm2_series.yaml --set distill.tokens=262144 \
      --set finetune.tokens=262144 --out /tmp/kc_trial$run --yes > "$P/trial$run.log" 2>&1
    cp /tmp/kc_trial$run/result.json "$P/trial${run}_result.json"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1], r['timing'], {k: v for k, v in r['metrics'].items() if 'kernel' in k or k.startswith('ppl')})" "$P/trial${run}_result.json"
  done
  for a in 0 1; do
    LOLSEARCH_KERNELS_AUTOTUNE=$a timeout 110 python3 -m lolsearch.perf --model smollm2-135m-shape --out "$P/train_autotune$a" \
      train --seq 1024 --backends triton --stages attention_transfer lora --cuda-graph on --steps 30 --sync-every 5 \
      --warmup 2 > "$P/train_autotune$a.log" 2>&1
    tail -4 "$P/train_autotune$a.log"
  done
  ;;
esac
