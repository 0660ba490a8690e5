#!/usr/bin/env bash
# Call 3's base rows again (there LOLSEARCH_KERNELS_FUSED_XENT, unknown to the base tree, stopped them) and its
# failed GPU test (the toy model on the CPU), on the same warm machine:
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call4.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/fused_loss_lora_20261207
[ -d /tmp/base ] || bash $D/base.sh || exit 3
COLUMNS=250 timeout 60 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider \
  "tests/trial/test_lora_ranks.py::test_fused_loss_and_gradients_match_the_models_own_loss" > "$O/pytest_gpu.log" 2>&1
tail -1 "$O/pytest_gpu.log" | cut -c1-300
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 100 python3 -m lolsearch.perf --model smollm2-135m-shape \
  --out "$O/smol1k_base" train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5 \
  --stages lora teacher_lora) > "$O/smol1k_base.log" 2>&1
grep '^| smollm2' "$O/smol1k_base.log" | cut -c1-250
(cd /tmp/base && PYTHONPATH=/tmp/base:/tmp/site timeout 75 python3 -m lolsearch.perf --model llama3-8b-shape \
  --out "$O/l8b_lora_base" train --seq 1024 --backends triton --compile off --steps 8 --warmup 3 --sync-every 5 \
  --stages lora) > "$O/l8b_lora_base.log" 2>&1
tail -1 "$O/l8b_lora_base.log" | cut -c1-250
timeout 75 python3 -m lolsearch.perf --model llama3-8b-shape --out "$O/l8b_lora_new2" train --seq 1024 --backends triton \
  --compile off --steps 8 --warmup 3 --sync-every 5 --stages lora > "$O/l8b_lora_new2.log" 2>&1
tail -1 "$O/l8b_lora_new2.log" | cut -c1-250
