#!/usr/bin/env bash
# Offline sm_90 compile (Triton 3.9 of .venv, no GPU) of fwd_state and fwd_window, every dtype, small and general
# windows; run from the repo root once as is (compile_f6d6ebd.txt) and once after `git apply localwalk.diff`
# (compile_localwalk.txt): bash results/perf/localwalk_20261208/compile.sh > OUT.txt
for dt in bf16 fp32 fp16; do
  for g in "" --general; do
    .venv/bin/python -m lolsearch.kernels.compile_check --dtype $dt $g --dims 128x128 64x64 128x256 64x256 --only fwd_state fwd_window 2>&1 | grep -v -i warn | sed "s/^/$g /"
  done
done
