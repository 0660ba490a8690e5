#!/usr/bin/env bash
# The fused feature maps with 16-bit products (LOLSEARCH_KERNELS_FEATURES_16BIT=1, the new default) against one TF32
# pass on fp32 operands (=0, the old path): SmolLM2 8 x 1024 graphed LoRA and attention-transfer steps, alternating,
# beside the teacher's LoRA step; bwd_kv's query blocks of 16 rows against 32 (bq_bench.py); the maps' GPU tests
# (every dtype). probe.py (the maps' kernels over launch configs) ran in a call of its own (h100_call3/).
# Carrying .dev/p0, after `bash results/h200/lighten.sh out`:
#   PERF_CMDS="bash results/perf/fmap16_20261207/call1.sh \$OUT/perf" timeout 330 bash results/h200/rerun.sh perf; bash results/h200/rerun.sh pack
# (run so at ab9975f: the 330 s cut it during bq_bench.py, after the AT pair)
set -u
O=$(realpath -m "$1")
mkdir -p "$O"
P="python3 -m lolsearch.perf --model smollm2-135m-shape"
nvidia-smi --query-gpu=name --format=csv,noheader
S1="train --seq 1024 --backends triton --cuda-graph on --compile off --steps 30 --sync-every 5"
i=0
for on in 1 0; do
  i=$((i + 1))
  LOLSEARCH_KERNELS_FEATURES_16BIT=$on timeout $([ $i = 1 ] && echo 80 || echo 45) $P --out "$O/lora_${i}_$on" $S1 \
    --stages lora $([ $i = 1 ] && echo --check) > "$O/lora_${i}_$on.log" 2>&1
  grep '^| smollm2' "$O/lora_${i}_$on.log" | cut -c1-250
done
timeout 45 $P --out "$O/lora_teacher" $S1 --stages teacher_lora > "$O/lora_teacher.log" 2>&1
grep '^| smollm2' "$O/lora_teacher.log" | cut -c1-250
COLUMNS=250 timeout 90 python3 -m pytest -q -rf -p no:cacheprovider tests/kernels/test_featuremap_kernel.py \
  > "$O/pytest_featuremap.log" 2>&1
tail -4 "$O/pytest_featuremap.log" | cut -c1-300
for on in 0 1; do
  LOLSEARCH_KERNELS_FEATURES_16BIT=$on timeout 45 $P --out "$O/at_$on" $S1 --stages attention_transfer \
    > "$O/at_$on.log" 2>&1
  grep '^| smollm2' "$O/at_$on.log" | cut -c1-250
done
timeout 100 python3 results/perf/fmap16_20261207/bq_bench.py "$O/bq_bench.csv" > "$O/bq_bench.log" 2>&1
cut -c1-200 "$O/bq_bench.log"
