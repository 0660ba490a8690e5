#!/usr/bin/env bash
# Builds the three source trees the calls compare, in .dev/trees/ (ignored; carried to the device), from HEAD:
#   base  HEAD's kernels (with seg_sums)
#   lw    + localwalk.diff (the walks without seg_sums)
#   lw16  + localwalk_bf16state.diff on top (fwd_window reads a bf16 copy of the segment states written by the scan)
# Each holds kernels/, lolsearch/, tests/ and pyproject.toml, so the GPU tests run inside it. From the repo root:
#   bash results/perf/localwalk_20261208/prepare.sh
set -eu
D=results/perf/localwalk_20261208
rm -rf .dev/trees
for tree in base lw lw16; do
  mkdir -p .dev/trees/$tree
  git archive HEAD kernels lolsearch tests pyproject.toml | tar -x -C .dev/trees/$tree
done
(cd .dev/trees/lw && patch -s -p1 < ../../../$D/localwalk.diff)
(cd .dev/trees/lw16 && patch -s -p1 < ../../../$D/localwalk.diff && patch -s -p1 < ../../../$D/localwalk_bf16state.diff)
du -sh .dev/trees/*
