#!/usr/bin/env bash
# Builds /tmp/base: this checkout (results/ left out) with change.patch (git diff 8f94bc8 33d5c7d -- kernels lolsearch
# tests: the fused cross-entropy and the fused LoRA layer) reversed, so that a call times both trees side by side.
set -eu
D=results/perf/fused_loss_lora_20261207
rm -rf /tmp/base && mkdir -p /tmp/base
tar --exclude=./results --exclude=./.dev -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && patch -s -R -p1 < "$OLDPWD/$D/change.patch")
echo "base tree: /tmp/base ($(grep -c '' "$D/change.patch") patch lines reversed)"
