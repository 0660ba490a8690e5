#!/usr/bin/env bash
# A device call carries the working tree (tracked files and untracked ones git does not ignore) plus its carry folder,
# 64 MiB at most. On 2026-12-03 the tree (20 MiB) plus .dev/p1 (46 MiB) went over it. `out` moves the result folders
# that no device command reads to $HOLD; `in` brings them back (git sees them as deleted in between: run `in` before
# any commit). results/h200/partial moves too unless KEEP_PARTIAL=1: keep it for a call that resumes a sweep from
# it or times a design from its trials (`perf --design results/h200/partial/...`).
#   bash results/h200/lighten.sh out     # before the carrying calls
#   bash results/h200/lighten.sh in      # after the last call
set -euo pipefail
cd "$(dirname "$0")/../.."
HOLD=${HOLD:-/tmp/lolsearch-hold}
dirs="results/smollm2-ablation results/beyond-recipe results/quickstart-cpu results/smollm2-recipe"
[ "${KEEP_PARTIAL:-0}" = 1 ] || dirs="$dirs results/h200/partial"
case ${1:-} in
out)
  [ ! -e "$HOLD" ] || { echo "$HOLD exists: run '$0 in' first" >&2; exit 2; }
  for d in $dirs; do [ -d "$d" ] && mkdir -p "$HOLD/$(dirname "$d")" && mv "$d" "$HOLD/$d"; done
  echo "tracked files left: $(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1) KiB"
  ;;
in)
  [ -d "$HOLD" ] || { echo "nothing held in $HOLD" >&2; exit 2; }
  for d in $dirs results/h200/partial; do
    [ -d "$HOLD/$d" ] || continue
    [ ! -e "$d" ] || { echo "$d exists: not overwritten ($HOLD/$d kept)" >&2; exit 2; }
    mv "$HOLD/$d" "$d"
  done
  rm -r "$HOLD" && git status --short | head
  ;;
*) echo "usage: $0 out|in" >&2; exit 2 ;;
esac
