"""Constant-memory generation cache for linearized layers.

Each linearized layer keeps a recurrent state (S ``[B, H, F, D]``, z ``[B, H, F]``, fp32) and a
ring buffer of the window keys/values ``[B, Hkv, C, D]`` (C = the layout's window capacity:
w for sliding, 2w for terrace, 0 for linear) with the absolute position held by each slot.
Nothing grows with the number of generated tokens. Layers left as softmax use the ordinary
``DynamicCache`` storage this class inherits, or fixed buffers written in place (graphed decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from lolsearch.attention.chunked import LinearState


@dataclass
class LayerState:
    """Generation state of one linearized layer.

    The window holds the keys at positions ``win_start .. seen-1``, key ``p`` in ring slot
    ``p % C``. Positions are plain ints (equal across the batch), so no step needs a device sync.
    """

    state: LinearState
    k: torch.Tensor  # [B, Hkv, C, D]
    v: torch.Tensor  # [B, Hkv, C, D]
    win_start: int
    seen: int
    slot_pos_dev: torch.Tensor | None = None  # device copy of slot_positions() for the Triton decode kernel

    @property
    def capacity(self) -> int:
        return self.k.shape[-2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.state.S, self.state.z, self.k, self.v))

    def slots(self, first: int, end: int) -> slice | torch.Tensor:
        """Ring slots of positions ``first .. end-1`` (a slice when contiguous)."""
        cap = self.capacity
        if end <= first:
            return slice(0, 0)
        lo = first % cap
        if lo + (end - first) <= cap:
            return slice(lo, lo + end - first)
        return torch.arange(first, end, device=self.k.device) % cap

    def window(self, first: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Window keys/values from position ``first`` (default ``win_start``) to ``seen-1``, in order."""
        idx = self.slots(self.win_start if first is None else first, self.seen)
        return self.k[..., idx, :], self.v[..., idx, :]

    def device_slot_positions(self) -> torch.Tensor:
        """``slot_positions()`` as an int64 tensor on the cache's device (kept in step by the decode path)."""
        if self.slot_pos_dev is None:
            self.slot_pos_dev = torch.tensor(self.slot_positions(), dtype=torch.long, device=self.k.device)
        return self.slot_pos_dev

    def slot_positions(self) -> list[int]:
        """Absolute position held by each ring slot (−1 = empty)."""
        pos = [-1] * self.capacity
        for p in range(self.win_start, self.seen):
            pos[p % self.capacity] = p
        return pos

    def store_window(self, k: torch.Tensor, v: torch.Tensor, first_pos: int) -> None:
        """Makes keys ``k, v [B, Hkv, n, D]`` at positions ``first_pos ..`` the window (``seen`` must be set)."""
        n = k.shape[-2]
        if first_pos < 0:
            raise ValueError(f"window keys start at position {first_pos}: positions are >= 0")
        if n > self.capacity:
            raise RuntimeError(f"window of {n} keys exceeds the cache capacity {self.capacity}")
        idx = self.slots(first_pos, first_pos + n)
        self.k[..., idx, :] = k.to(self.k.dtype)
        self.v[..., idx, :] = v.to(self.v.dtype)
        self.win_start = first_pos
        self.slot_pos_dev = None


class LinearizedCache(DynamicCache):
    """A ``DynamicCache`` that also holds the recurrent state of linearized layers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.linear: dict[int, LayerState] = {}  # or StaticLayerState (padded batches, graphed decoding)
        self.pads: list[int] | None = None  # left pads per row (set_padding); None = no padding
        self.static_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # softmax layers' fixed KV (to_static_kv)
        self.kv_slot: torch.Tensor | None = None  # [1] int64: the index static_kv writes the next token at

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """A softmax layer's keys/values ``[B, Hkv, T, D]``: appended as in ``DynamicCache``, or, after
        :meth:`to_static_kv`, written in place at ``kv_slot`` (no allocation, no host sync: graphable)."""
        if layer_idx in self.static_kv:
            k, v = self.static_kv[layer_idx]
            k.index_copy_(2, self.kv_slot, key_states.to(k.dtype))
            v.index_copy_(2, self.kv_slot, value_states.to(v.dtype))
            return k, v
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def to_static_kv(self, capacity: int) -> int:
        """Moves every softmax layer's prefilled KV into zero-padded buffers of ``capacity`` positions; returns
        the prefill length T (``kv_slot`` starts there). Keys past ``kv_slot`` are zeros, to be masked by the caller."""
        t = 0
        for i, layer in enumerate(self.layers):
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if i in self.linear or keys is None or keys.numel() == 0:
                continue
            b, h, t, d = keys.shape
            if capacity < t:
                raise ValueError(f"static KV capacity {capacity} is below the prefill length {t}")
            k, v = keys.new_zeros(b, h, capacity, d), values.new_zeros(b, h, capacity, values.shape[-1])
            k[:, :, :t], v[:, :, :t] = keys, values
            self.static_kv[i] = (k, v)
            layer.keys, layer.values = keys.new_empty(b, h, 0, d), values.new_empty(b, h, 0, values.shape[-1])  # freed
        if self.static_kv:
            self.kv_slot = torch.tensor([t], dtype=torch.long, device=next(iter(self.static_kv.values()))[0].device)
        return t

    def set_padding(self, attention_mask: torch.Tensor | None) -> None:
        """Records the left pads of each row from a 2-D ``attention_mask [B, T]`` (1 = token, 0 = pad).

        Raises:
            ValueError: a row has a pad after a token (only left padding is supported).
        """
        if attention_mask is None or attention_mask.dim() != 2 or bool(attention_mask.all()):
            self.pads = None
            return
        mask = attention_mask.bool()
        pads = (~mask).sum(-1)
        t = mask.shape[-1]
        expected = torch.arange(t, device=mask.device)[None, :] >= pads[:, None]
        if not torch.equal(mask, expected):
            raise ValueError("linearized layers support left padding only (attention_mask must be 0...0 1...1 per row)")
        self.pads = [int(p) for p in pads.tolist()]

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        try:
            n = super().get_seq_length(layer_idx) if layer_idx is not None else super().get_seq_length()
        except (IndexError, KeyError):
            n = 0
        return max([n, *(getattr(s, "length", None) or getattr(s, "seen", 0) for s in self.linear.values())])

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Mask sizes of a layer kept as softmax (a linearized layer's own KV storage stays empty), so the
        softmax layers' padding mask spans their whole cache."""
        if layer_idx in self.linear:
            layer_idx = next((i for i in range(len(self.layers)) if i not in self.linear), layer_idx)
        return super().get_mask_sizes(query_length, layer_idx)

    def linear_nbytes(self) -> int:
        """Bytes held by the linearized layers (state + window); constant in the sequence length."""
        return sum(s.nbytes() for s in self.linear.values())


def new_cache(model: object) -> LinearizedCache:
    """An empty generation cache for a linearized model (``model.generate()`` makes one itself)."""
    config = getattr(model, "config", None)
    try:
        return LinearizedCache(config=config.get_text_config() if config is not None else None)
    except TypeError:
        return LinearizedCache()
