#!/usr/bin/env bash
# SmolLM2 8 x 1024 LoRA step: the hybrid op and its frozen feature maps in one autograd node (LOLSEARCH_KERNELS_MAPPED_OP,
# fused/add/off/fused, graphed) beside the teacher's LoRA step; where the step's GPU time goes (profile, eager); the fused
# feature maps' kernels against 16-bit-operand variants; GPU tests of the maps and the mapped node.
# Ran at tree 06ffbd8 (LOLSEARCH_KERNELS_MAPPED_OP exists only there; reverted in 04a5b6f), carrying .dev/p0, after
# `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/step_parity_20261207/call1.sh \$OUT/perf" timeout 330 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
nvidia-smi --query-gpu=name --format=csv,noheader
S1="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
i=0
for on in fused add off fused; do
  i=$((i + 1))
  LOLSEARCH_KERNELS_MAPPED_OP=$on timeout 45 $P --out "$O/smol1k_${i}_$on" $S1 --stages lora \
    $([ $i = 1 ] && echo --check) > "$O/smol1k_${i}_$on.log" 2>&1
  grep '^| smollm2' "$O/smol1k_${i}_$on.log" | cut -c1-250
done
timeout 45 $P --out "$O/smol1k_teacher" $S1 --stages teacher_lora > "$O/smol1k_teacher.log" 2>&1
grep '^| smollm2' "$O/smol1k_teacher.log" | cut -c1-250
COLUMNS=250 timeout 75 python3 -m pytest -q -rf -p no:cacheprovider tests/kernels/test_mapped.py -k "not dtype1" \
  > "$O/pytest_mapped.log" 2>&1
tail -3 "$O/pytest_mapped.log" | cut -c1-300
timeout 80 $P --out "$O/smol1k_profile" train --seq 1024 --backends triton --compile off --cuda-graph off --steps 4 \
  --sync-every 2 --stages lora --profile > "$O/smol1k_profile.log" 2>&1
rm -f "$O"/smol1k_profile/*.json.gz
for f in "$O"/smol1k_profile/profile_*_off.txt; do echo "== $f"; sed -n 1,40p "$f" | cut -c1-58,100-200; done
timeout 75 python3 results/perf/step_parity_20261207/fmap_probe.py > "$O/fmap_probe.log" 2>&1
grep -v '^\s*$' "$O/fmap_probe.log" | cut -c1-160 | tail -60
