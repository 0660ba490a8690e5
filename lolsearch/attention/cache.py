"""Constant-memory generation cache for linearized layers.

Each linearized layer keeps a recurrent state (S ``[B, H, F, D]``, z ``[B, H, F]``, fp32) and a
ring buffer of the window keys/values ``[B, Hkv, C, D]`` (C = the layout's window capacity:
w for sliding, 2w for terrace, 0 for linear) with the absolute position held by each slot.
Nothing grows with the number of generated tokens. Layers left as softmax use the ordinary
``DynamicCache`` storage this class inherits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from lolsearch.attention.chunked import LinearState, expand_kv
from lolsearch.attention.reference import EPS, acc_dtype


@dataclass
class LayerState:
    """Generation state of one linearized layer."""

    state: LinearState
    k: torch.Tensor  # [B, Hkv, C, D]
    v: torch.Tensor  # [B, Hkv, C, D]
    slot_pos: torch.Tensor  # [C] long, -1 = empty
    seen: int

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.state.S, self.state.z, self.k, self.v))

    def window_in_order(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Occupied window keys/values sorted by position, and the position of the first one."""
        occupied = (self.slot_pos >= 0).nonzero().flatten()
        if occupied.numel() == 0:
            return self.k[..., :0, :], self.v[..., :0, :], self.seen
        order = occupied[self.slot_pos[occupied].argsort()]
        return self.k[..., order, :], self.v[..., order, :], int(self.slot_pos[order[0]])

    def store_window(self, k: torch.Tensor, v: torch.Tensor, first_pos: int) -> None:
        """Replaces the window by keys ``k, v [B, Hkv, n, D]`` at positions ``first_pos ..``."""
        cap = self.k.shape[-2]
        n = k.shape[-2]
        if n > cap:
            raise RuntimeError(f"window of {n} keys exceeds the cache capacity {cap}")
        self.slot_pos.fill_(-1)
        if n:
            pos = torch.arange(first_pos, first_pos + n, device=self.slot_pos.device)
            slots = pos % cap
            self.k[..., slots, :] = k.to(self.k.dtype)
            self.v[..., slots, :] = v.to(self.v.dtype)
            self.slot_pos[slots] = pos


class LinearizedCache(DynamicCache):
    """A ``DynamicCache`` that also holds the recurrent state of linearized layers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.linear: dict[int, LayerState] = {}

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        try:
            n = super().get_seq_length(layer_idx) if layer_idx is not None else super().get_seq_length()
        except (IndexError, KeyError):
            n = 0
        return max([n, *(s.seen for s in self.linear.values())])

    def linear_nbytes(self) -> int:
        """Bytes held by the linearized layers (state + window); constant in the sequence length."""
        return sum(s.nbytes() for s in self.linear.values())


def decode_readout(
    q: torch.Tensor, phi_q: torch.Tensor, st: LayerState, gamma: torch.Tensor, window_start: int
) -> torch.Tensor:
    """One query over the window (softmax) and the state (linear), plain PyTorch.

    Args:
        q: ``[B, H, D]``; phi_q: ``[B, H, F]``; window_start: first position that gets softmax.

    Returns:
        ``[B, H, D]`` in fp32.
    """
    h, d = q.shape[1], q.shape[-1]
    f = acc_dtype(q)
    qf, fq = q.to(f), phi_q.to(f)
    num = torch.einsum("bhf,bhfd->bhd", fq, st.state.S)
    den = torch.einsum("bhf,bhf->bh", fq, st.state.z)
    valid = st.slot_pos >= window_start
    if bool(valid.any()):
        k, v = expand_kv(st.k, h).to(f), expand_kv(st.v, h).to(f)
        s = torch.einsum("bhd,bhcd->bhc", qf, k) * d**-0.5
        s = s.masked_fill(~valid, float("-inf"))
        a = gamma.to(f).view(1, h, 1) * torch.exp(s - s.amax(dim=-1, keepdim=True))
        num = num + torch.einsum("bhc,bhcd->bhd", a, v)
        den = den + a.sum(dim=-1)
    return num / (den.unsqueeze(-1) + EPS)
