#!/usr/bin/env bash
# A failed CUDA-graph capture left the default CUDA generator marked as capturing, so every later random op in the
# process raised (call 6: test_lora_compute's normal_ after test_step_graph's failed capture). With the fix
# (forward_graph.undo_failed_capture): the failed-capture tests now draw random numbers after the failure; the
# trial GPU tests in call 6's order; the same two tests with the generator reset deleted (expected to fail).
#   PERF_CMDS="bash results/perf/fused_loss_lora_20261207/call7.sh \$OUT/perf" timeout 575 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
T="tests/trial/test_step_graph.py tests/trial/test_checkpoint_layers.py tests/trial/test_eval_graph.py tests/trial/test_lora_compute.py tests/trial/test_lora_ranks.py tests/trial/test_graphed.py"
COLUMNS=250 timeout 240 python3 kernels/_launch.py pytest -m gpu -q -rf -p no:cacheprovider $T > "$O/pytest_gpu_trial.log" 2>&1
tail -2 "$O/pytest_gpu_trial.log" | cut -c1-300
rm -rf /tmp/nofix && mkdir -p /tmp/nofix && tar --exclude=./results --exclude=./.dev -cf - . | tar -xf - -C /tmp/nofix
sed -i '/generator.graphsafe_set_state/d' /tmp/nofix/lolsearch/trial/forward_graph.py
grep -c graphsafe_set_state /tmp/nofix/lolsearch/trial/forward_graph.py
(cd /tmp/nofix && PYTHONPATH=/tmp/nofix:/tmp/site COLUMNS=250 timeout 120 python3 kernels/_launch.py pytest -q -rf -p no:cacheprovider \
  "tests/trial/test_step_graph.py::test_a_host_sync_or_a_new_batch_shape_falls_back_to_eager_on_cuda" \
  "tests/trial/test_eval_graph.py::test_a_forward_that_cannot_be_captured_runs_eagerly_with_one_warning") > "$O/pytest_nofix.log" 2>&1
tail -3 "$O/pytest_nofix.log" | cut -c1-300
