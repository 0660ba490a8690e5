#!/usr/bin/env bash
# Right after call1.sh on the same warm machine (carry .dev/p0):
#   PERF_CMDS="bash results/perf/gqa_order_20261206/call2.sh \$OUT/perf" timeout 590 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# Issue 16's Llama-3-8B rows (8 x 1024, eager: attention transfer, LoRA) and issue 17's bench (Llama-3-8B heads to
# 32K, autotuned): the commands of ../segments_20261206/next_call2.sh (this file held a copy of them when it ran).
set -u
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
bash results/perf/segments_20261206/next_call2.sh "$1"
