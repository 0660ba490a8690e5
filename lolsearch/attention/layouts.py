"""Window layouts: which keys of a query get softmax and which go through the linear state.

A layout is a rule ``softmax_start(pos, window)``: for the query at position ``i`` the keys
``softmax_start(i) <= j <= i`` get (γ-weighted) softmax, the keys ``j < softmax_start(i)`` linear
attention. ``softmax_start`` is non-decreasing in ``i``, so a key once linear stays linear: that is
what lets a recurrent state absorb keys for good (prefill, decode, chunking all rely on it). It is never
below 0, even where the window reaches before the first key: the state cover and the decode caches read it
as a position.
"""

from __future__ import annotations

import torch

from lolsearch.config.plugins import LAYOUTS


class Layout:
    """Base class; ``softmax_start`` works on ints and on integer tensors."""

    name: str = ""
    replaces_softmax: bool = True

    def softmax_start(self, pos: torch.Tensor | int, window: int) -> torch.Tensor | int:
        raise NotImplementedError

    def window_capacity(self, window: int) -> int:
        """Most keys a query can give softmax to (the decode window cache size)."""
        raise NotImplementedError


class SoftmaxLayout(Layout):
    """Layer left as the teacher's softmax attention (not replaced)."""

    name = "softmax"
    replaces_softmax = False

    def softmax_start(self, pos, window):
        return pos * 0

    def window_capacity(self, window: int) -> int:
        raise ValueError("a softmax layer keeps a full KV cache")


class LinearLayout(Layout):
    """Pure linear attention over all past keys (window 0)."""

    name = "linear"

    def softmax_start(self, pos, window):
        return pos + 1

    def window_capacity(self, window: int) -> int:
        return 0


class SlidingLayout(Layout):
    """Softmax over the last w keys (i-w < j <= i), linear before (LoLCATs 'sw')."""

    name = "sliding"

    def softmax_start(self, pos, window):
        if window <= 0:
            return pos + 1
        start = pos - window + 1
        return start.clamp_min(0) if isinstance(start, torch.Tensor) else max(start, 0)

    def window_capacity(self, window: int) -> int:
        return window


class TerraceLayout(Layout):
    """Blocks of w: own block causally plus the whole previous block (LoLCATs 'tk')."""

    name = "terrace"

    def softmax_start(self, pos, window):
        if window <= 0:
            return pos + 1
        start = (pos // window - 1) * window
        return start.clamp_min(0) if isinstance(start, torch.Tensor) else max(start, 0)

    def window_capacity(self, window: int) -> int:
        return 2 * window


def get_layout(name: str) -> Layout:
    return LAYOUTS.get(name)()
