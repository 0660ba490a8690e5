#!/usr/bin/env bash
# Builds /tmp/base: this checkout (results/ left out) with change.patch (git diff 5981aa9 aeb8e0d -- kernels lolsearch)
# reversed, i.e. the code before both changes,
# so that a call times both trees side by side. Run from the repo root.
set -eu
D=results/perf/at_traffic_20261206
rm -rf /tmp/base && mkdir -p /tmp/base
tar --exclude=./results --exclude=./.dev -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && patch -s -R -p1 < "$OLDPWD/$D/change.patch")
echo "base tree: /tmp/base ($(grep -c '' "$D/change.patch") patch lines reversed)"
