"""Which schedule a ``hybrid_attention`` call runs, and the parallel schedule's segments (see kernels/NOTES.md)."""

from __future__ import annotations

import functools

from lolsearch.kernels._common import BT, cdiv

from lolsearch.attention.layouts import get_layout
from lolsearch.core import kernel_env

# The schedules (kernels/NOTES.md): "walk" (segment states carried through each segment's chunks by a serial walk;
# every chunk scores only its window tiles), "parallel" (short segments; every chunk scores the key tiles from its
# segment's start on and reads the state the segment starts from: no walk) and "quadratic" (one segment and no state:
# every key tile scored, as FlashAttention does). Their work grows as T, T and T^2; at short T the walks' serial
# chunks and the state traffic cost more. The rules below follow the H100 measurements of
# results/perf/schedules_20261207/ (bf16, training passes): quadratic up to 512 tokens (1.2-1.7x the walks),
# parallel at head size <= 64 beyond (1.1-1.25x the walks at SmolLM2's heads, 1K-8K; at 128 it was 0.95-0.97x
# with all six gradients). Env LOLSEARCH_KERNELS_QUADRATIC_T / _PARALLEL_T change the lengths (0 = never), tests
# set the *_MAX_T values (None = the env's or the default).
QUADRATIC_MAX_T: int | None = None
QUADRATIC_T_DEFAULT = 512
PARALLEL_MAX_T: int | None = None
PARALLEL_T_DEFAULT = 1 << 30
PARALLEL_MAX_D = 64


def _limit(override: int | None, env: str, default: int) -> int:
    if override is not None:
        return override
    value = kernel_env.read(env)
    return default if value is None else value


def schedule(t: int, d: int, state_io: bool) -> str:
    """The schedule of a call of length ``t`` and head size ``d``: "quadratic" up to its limit, else "parallel" up to
    its limit where d <= PARALLEL_MAX_D, else "walk". A call that takes or returns a state (``state_io``) walks."""
    if state_io:
        return "walk"
    if t <= _limit(QUADRATIC_MAX_T, "LOLSEARCH_KERNELS_QUADRATIC_T", QUADRATIC_T_DEFAULT):
        return "quadratic"
    if d <= PARALLEL_MAX_D and t <= _limit(PARALLEL_MAX_T, "LOLSEARCH_KERNELS_PARALLEL_T", PARALLEL_T_DEFAULT):
        return "parallel"
    return "walk"


def parallel_plan(t: int, grad: bool) -> tuple[int, int]:
    """(chunks per segment L, segments NS) of the parallel schedule: 2 for training calls up to 32 chunks, 4 beyond
    and without autograd (the faster of 2/4/8 in results/perf/schedules_20261207/; env LOLSEARCH_KERNELS_PARALLEL_SEG
    sets it)."""
    nt = cdiv(t, BT)
    seg = kernel_env.read("LOLSEARCH_KERNELS_PARALLEL_SEG") or (2 if grad and nt <= 32 else 4)
    seg = max(1, min(nt, seg))
    return seg, cdiv(nt, seg)


@functools.lru_cache(maxsize=64)
def small_window(lay: int, w: int) -> bool:
    """True when tile_lo(n) = n - 1 for every chunk n >= 1 (softmax keys of chunk n within tiles n-1, n):
    sliding 2 <= w <= 65, terrace w <= 32 or w = 64. The walks then absorb exactly one tile per chunk."""
    if lay == 1:
        return 2 <= w <= BT + 1
    if lay == 2:
        return 1 <= w <= BT // 2 or w == BT
    return False


@functools.lru_cache(maxsize=64)
def linear_in_diagonal_tile(lay: int, w: int) -> bool:
    """Whether some query of chunk n has linear keys inside key tile n (start(i) > 64 n) for this layout."""
    lay_name = {0: "linear", 1: "sliding", 2: "terrace"}[lay]
    layout = get_layout(lay_name)
    # the pattern repeats every lcm(w, 64) / 64 <= w chunks
    return any(int(layout.softmax_start(n * BT + r, w)) > n * BT for n in range(1, w + 3) for r in range(BT))


def seg_tile(bf: int, bdk: int) -> tuple[int, int, int]:
    """(BF, BD, warps) of ``seg_sums``: [64, 64] tiles at 4 warps, so φk is read once per value tile and v once
    per feature tile. Env LOLSEARCH_KERNELS_SEG_TILE=BFxBD (e.g. 128x128: φk and v read once, 8 warps) is a
    benchmark knob, not checked by the GPU test matrix."""
    want = kernel_env.read("LOLSEARCH_KERNELS_SEG_TILE") or (64, 64)
    bf1, bd1 = min(bf, want[0]), min(bdk, want[1])
    return bf1, bd1, 8 if bf1 * bd1 > 64 * 64 else 4


__all__ = ["linear_in_diagonal_tile", "parallel_plan", "schedule", "seg_tile", "small_window"]
