#!/usr/bin/env bash
# Device call (2026-12-06, eleventh session), carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/features_tiles_20261206/call1.sh \$OUT/perf" timeout 560 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# 1. probe.py: the feature-map kernels' row tiles and launch configs at the SmolLM2 and 8B shapes, the
#    parameter-gradient kernel with W[h] loaded once against the old one that reloads it per tile;
# 2. SmolLM2 8 x 1024 graphed, the probe's best configs against the old kernels and configs (variant.py): LoRA (with the
#    teacher's LoRA in the first run) and attention transfer, alternating, with --check.
set -u
O=$1
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader
D=results/perf/features_tiles_20261206
timeout 170 python3 $D/probe.py "$O/probe.json" > "$O/probe.log" 2>&1
grep -E "best|Error" "$O/probe.log"
[ -f "$O/probe.json" ] || exit 1
cp "$O/probe.json" /tmp/probe.json  # for call2.sh on this machine
V="python3 $D/variant.py"
run() {  # run NAME WHICH STAGES...
  local name=$1 which=$2; shift 2
  timeout 75 $V "$which" --model smollm2-135m-shape --out "$O/$name" train --seq 1024 --backends triton \
    --cuda-graph on --compile off --steps 30 --sync-every 5 --stages "$@" --check >> "$O/$name.log" 2>&1
  grep -E "configs|Error" "$O/$name.log" | tail -1 | cut -c1-250; tail -1 "$O/$name.log" | cut -c1-330
}
run smol_lora_best "$O/probe.json" lora teacher_lora
run smol_lora_old old lora
run smol_at_old old attention_transfer
run smol_at_best "$O/probe.json" attention_transfer
run smol_lora_best2 "$O/probe.json" lora
