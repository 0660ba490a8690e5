#!/usr/bin/env bash
# Builds /tmp/base: this checkout (results/ left out) with change.patch (git diff 87d7264 <the change> -- kernels)
# reversed, i.e. the code before the change, so that a call times both trees side by side. Run from the repo root.
set -eu
D=results/perf/bwd_fuse_20261207
rm -rf /tmp/base && mkdir -p /tmp/base
tar --exclude=./results --exclude=./.dev -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && patch -s -R -p1 < "$OLDPWD/$D/change.patch")
echo "base tree: /tmp/base ($(grep -c '' "$D/change.patch") patch lines reversed)"
