#!/usr/bin/env bash
# The GPU tests of the trial paths the fused loss and LoRA layer run in (graphed steps against eager, checkpointed
# layers, graphed evaluations, bf16 LoRA curves), then the Llama-3-8B LoRA pair again in the other order (base first).
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call6.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
D=results/perf/fused_loss_lora_20261207
[ -d /tmp/base ] || bash $D/base.sh || exit 3
COLUMNS=250 timeout 200 python3 kernels/_launch.py pytest -m gpu -q -rf -p no:cacheprovider tests/trial/test_step_graph.py \
  tests/trial/test_checkpoint_layers.py tests/trial/test_eval_graph.py tests/trial/test_lora_compute.py \
  tests/trial/test_lora_ranks.py > "$O/pytest_gpu_trial.log" 2>&1
tail -2 "$O/pytest_gpu_trial.log" | cut -c1-300
for which in base new; do
  root=$([ $which = base ] && echo /tmp/base || echo "$PWD")
  (cd "$root" && PYTHONPATH=$root:/tmp/site timeout 75 python3 -m lolsearch.perf --model llama3-8b-shape \
    --out "$O/l8b_lora2_$which" train --seq 1024 --backends triton --compile off --steps 8 --warmup 3 --sync-every 5 \
    --stages lora) > "$O/l8b_lora2_$which.log" 2>&1
  tail -1 "$O/l8b_lora2_$which.log" | cut -c1-250
done
