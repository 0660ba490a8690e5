"""Static decode state of one linearized layer: fixed shapes, positions in a device tensor (CUDA-graphable).

Unlike :class:`~lolsearch.attention.cache.LayerState` (Python-int positions shared by the batch), every row
keeps its own position in ``pos [B]`` (int64, on the state's device): the real position of the next token,
so a left-padded row counts from its first real token. Each decode step has the same shapes and launches
whatever the position: the new key goes to ring slot ``pos % C`` (a scatter), keys that leave the window are
folded into the fp32 state (S, z) under a mask, and the window softmax is masked by the positions each slot
holds (``slot_pos [B, C]``, −1 = empty or folded). Pad tokens are never stored: they contribute nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lolsearch.attention.cache import LayerState
from lolsearch.attention.chunked import expand_kv
from lolsearch.attention.layouts import get_layout
from lolsearch.attention.ops import resolve_backend
from lolsearch.attention.reference import EPS

log = logging.getLogger(__name__)
_TRITON_OK = [True]  # False once the fused kernel failed in this process (then the PyTorch step runs)


@dataclass
class StaticLayerState:
    """Fixed-shape generation state of one linearized layer (batch rows may sit at different positions).

    ``length`` counts the tokens fed so far including left pads (host int; ``get_seq_length`` reads it and
    graph replays leave it alone). With ``advance`` the step adds 1 to ``pos`` itself; a whole-model graph
    shares one ``pos`` between layers and advances it once per step instead.
    """

    S: torch.Tensor  # [B, H, F, D] fp32
    z: torch.Tensor  # [B, H, F] fp32
    k: torch.Tensor  # [B, Hkv, C, D]
    v: torch.Tensor  # [B, Hkv, C, D]
    slot_pos: torch.Tensor  # [B, C] int64 real position held by each slot, −1 = empty
    pos: torch.Tensor  # [B] int64 real position of the next token
    length: int
    advance: bool = True

    @property
    def capacity(self) -> int:
        return self.k.shape[-2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.S, self.z, self.k, self.v, self.slot_pos))

    @classmethod
    def from_rows(cls, rows: list[LayerState], pads: list[int]) -> StaticLayerState:
        """Stacks per-row states (each ``LayerState`` of batch 1 or all of one batch) whose positions are real ones.

        ``pads[b]`` left pads precede row b (only ``length`` counts them).
        """
        slot_pos = [torch.tensor(r.slot_positions(), dtype=torch.long, device=r.k.device) for r in rows]
        slot_pos = [sp.expand(r.k.shape[0], -1) for sp, r in zip(slot_pos, rows, strict=True)]
        pos = [torch.full((r.k.shape[0],), r.seen, dtype=torch.long, device=r.k.device) for r in rows]
        length = max(r.seen + p for r, p in zip(rows, pads, strict=True))
        return cls(
            S=torch.cat([r.state.S.float() for r in rows]).contiguous(),
            z=torch.cat([r.state.z.float() for r in rows]).contiguous(),
            k=torch.cat([r.k for r in rows]).contiguous(),
            v=torch.cat([r.v for r in rows]).contiguous(),
            slot_pos=torch.cat(slot_pos).contiguous(),
            pos=torch.cat(pos).contiguous(),
            length=length,
        )


def fold_keys(layer, st: StaticLayerState, phi_k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> None:
    """Adds keys to the state in place: ``phi_k [B, H, n, F]`` fp32, ``v [B, Hkv, n, D]``, ``keep [B, n]`` (0/1)."""
    b, h, n, f = phi_k.shape
    phi = phi_k * keep.to(phi_k.dtype)[:, None, :, None]
    ve = expand_kv(v, h).float()
    st.S.view(b * h, f, -1).baddbmm_(phi.transpose(-1, -2).reshape(b * h, f, n), ve.reshape(b * h, n, -1))  # in place
    st.z.add_(phi.sum(dim=2))


def static_decode_step(layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, st: StaticLayerState) -> torch.Tensor:
    """One token per row against ``st`` (updated in place); no host syncs, no Python dependence on positions.

    Keys leaving the window are absorbed into (S, z), the new key takes ring slot ``pos % C``, then one read-out
    over window and state: the fused Triton kernel (:mod:`lolsearch.kernels.decode_static`) on the triton
    backend, plain PyTorch else.

    Args:
        layer: the :class:`~lolsearch.attention.layer.LinearizedAttention` (feature maps, γ, layout, window).
        q: ``[B, H, 1, D]`` (RoPE applied); k, v: ``[B, Hkv, 1, D]``.

    Returns:
        o ``[B, H, 1, D]`` in q's dtype, as :func:`~lolsearch.kernels.decode_torch.hybrid_decode_step_torch`
        computes it with the row's own position.
    """
    b, h, _, d = q.shape
    hkv = k.shape[1]
    pos = st.pos
    layout_name = "linear" if layer.window == 0 else layer.layout
    start = get_layout(layout_name).softmax_start(pos, layer.window)  # [B]
    cap = st.capacity
    fused = layer.fused_maps(q.device)

    def phi_k(keys: torch.Tensor) -> torch.Tensor:  # [B, Hkv, n, D] -> [B, H, n, F] fp32
        return layer.phi(layer.feature_map_k, keys, torch.float32, fused)

    if cap == 0:  # pure linear attention: the new key joins the state before the read-out
        phi_abs, v_abs, keep = phi_k(k), v, torch.ones(b, 1, device=q.device)
    else:
        slot = pos % cap  # [B]
        idx = slot.view(b, 1, 1, 1).expand(b, hkv, 1, d)
        if layout_name == "sliding":
            # the only key leaving the window (pos − w) sits in the slot the new key takes
            v_abs = st.v.gather(2, idx)
            phi_abs = phi_k(st.k.gather(2, idx))
            old = st.slot_pos.gather(1, slot[:, None])  # [B, 1]
            keep = (old >= 0) & (old < start[:, None])
        else:  # any other layout: every slot whose key left the window, by mask
            keep = (st.slot_pos >= 0) & (st.slot_pos < start[:, None])  # [B, C]
            phi_abs, v_abs = phi_k(st.k), st.v.clone()
            st.slot_pos.masked_fill_(keep, -1)
        st.k.scatter_(2, idx, k.to(st.k.dtype))
        st.v.scatter_(2, idx, v.to(st.v.dtype))
        st.slot_pos.scatter_(1, slot[:, None], pos[:, None])
    phi_q = layer.phi(layer.feature_map_q, q, torch.float32, fused)[:, :, 0, :]  # [B, H, F]
    o = None
    if q.is_cuda and _TRITON_OK[0] and resolve_backend(layer.backend, q.device) == "triton":
        try:
            from lolsearch.kernels.decode_static import static_decode_step_triton

            phi_abs = phi_abs * keep.to(phi_abs.dtype)[:, None, :, None]
            o = static_decode_step_triton(q[:, :, 0], phi_q, st.k, st.v, st.slot_pos, start, pos, st.S, st.z,
                                          layer.gamma.float(), phi_abs, v_abs, soft=cap > 0)
        except Exception as err:  # noqa: BLE001 - a kernel that fails to build must not stop decoding
            if torch.cuda.is_current_stream_capturing():
                raise
            log.warning("static decode: Triton kernel failed (%s: %s); using the PyTorch step", type(err).__name__, err)
            _TRITON_OK[0] = False
    if o is None:
        fold_keys(layer, st, phi_abs, v_abs, keep)
        o = _read_out(layer, q, phi_q, st, start)
    if st.advance:
        st.pos.add_(1)
    st.length += 1
    return o.unsqueeze(-2)


def _read_out(layer, q: torch.Tensor, phi_q: torch.Tensor, st: StaticLayerState, start: torch.Tensor) -> torch.Tensor:
    """``[B, H, D]``: (Σ_window γ·e^{s−m} v + φq·S) / (Σ_window γ·e^{s−m} + φq·z) per row."""
    b, h, _, d = q.shape
    hkv, cap = st.k.shape[1], st.capacity
    num = torch.einsum("bhf,bhfd->bhd", phi_q, st.S)
    den = torch.einsum("bhf,bhf->bh", phi_q, st.z)
    if cap > 0:
        g = h // hkv
        # [B, C]; a layout's start is >= 0, so an empty slot (−1) is never valid
        invalid = (st.slot_pos < start[:, None]) | (st.slot_pos > st.pos[:, None])
        qg = q.float().view(b, hkv, g, d)
        s = torch.einsum("bkgd,bkcd->bkgc", qg, st.k.float()) * d**-0.5
        s = s.masked_fill(invalid.view(b, 1, 1, cap), float("-inf"))
        m = s.amax(dim=-1, keepdim=True).nan_to_num(neginf=0.0)  # an empty window: m = 0, every weight 0
        a = layer.gamma.float().view(1, hkv, g, 1) * torch.exp(s - m)
        num = num + torch.einsum("bkgc,bkcd->bkgd", a, st.v.float()).reshape(b, h, d)
        den = den + a.sum(dim=-1).reshape(b, h)
    return (num / (den + EPS).unsqueeze(-1)).to(q.dtype)


__all__ = ["StaticLayerState", "fold_keys", "static_decode_step"]
