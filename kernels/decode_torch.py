"""Plain-PyTorch decode step of the hybrid attention (the CPU path and the reference of the decode kernel).

One new query per sequence attends with (γ-weighted) softmax to the window keys held in a ring-buffer
cache and linearly to everything older through the fp32 state (S, z) (LoLCATs Eq. 7, arXiv 2410.10254).
"""

from __future__ import annotations

import torch

from lolsearch.attention.layouts import get_layout
from lolsearch.attention.reference import EPS


def check_decode_args(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, phi_k_absorb, v_absorb) -> int:
    """Validates shapes; returns the number of keys to absorb."""
    if q.dim() != 3:
        raise ValueError(f"q must be [B, H, D], got {tuple(q.shape)}")
    b, h, d = q.shape
    f = phi_q.shape[-1]
    if phi_q.shape != (b, h, f):
        raise ValueError(f"phi_q must be [B, H, F] = [{b}, {h}, F], got {tuple(phi_q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape[0] != b or k_cache.shape[-1] != d or v_cache.shape != k_cache.shape:
        raise ValueError(f"k_cache, v_cache must be [B, Hkv, C, D] = [{b}, Hkv, C, {d}], got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    hkv, c = k_cache.shape[1], k_cache.shape[2]
    if hkv == 0 or h % hkv:
        raise ValueError(f"{h} query heads are not a multiple of {hkv} kv heads")
    if slot_pos.shape != (c,) or slot_pos.dtype.is_floating_point:
        raise ValueError(f"slot_pos must be an integer tensor [C] = [{c}], got {slot_pos.dtype} {tuple(slot_pos.shape)}")
    if S.shape != (b, h, f, d) or z.shape != (b, h, f) or S.dtype != torch.float32 or z.dtype != torch.float32:
        raise ValueError(f"S, z must be fp32 [B, H, F, D] = [{b}, {h}, {f}, {d}] and [B, H, F], got "
                         f"{S.dtype} {tuple(S.shape)}, {z.dtype} {tuple(z.shape)}")
    if gamma.shape != (h,):
        raise ValueError(f"gamma must be [H] = [{h}], got {tuple(gamma.shape)}")
    if (phi_k_absorb is None) != (v_absorb is None):
        raise ValueError("phi_k_absorb and v_absorb must be given together")
    if phi_k_absorb is None:
        return 0
    n = phi_k_absorb.shape[2] if phi_k_absorb.dim() == 4 else -1
    if phi_k_absorb.shape != (b, h, n, f) or v_absorb.shape != (b, hkv, n, d):
        raise ValueError(f"phi_k_absorb must be [B, H, n, F] = [{b}, {h}, n, {f}] and v_absorb [B, Hkv, n, D] = "
                         f"[{b}, {hkv}, n, {d}], got {tuple(phi_k_absorb.shape)}, {tuple(v_absorb.shape)}")
    return n


def window_start(layout: str, window: int, pos: int) -> int:
    """First position the query at ``pos`` gives softmax to (pos + 1 for pure linear attention)."""
    return int(get_layout("linear" if window == 0 else layout).softmax_start(int(pos), window))


def hybrid_decode_step_torch(
    q: torch.Tensor,
    phi_q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_pos: torch.Tensor,
    S: torch.Tensor,
    z: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str,
    pos: int,
    phi_k_absorb: torch.Tensor | None = None,
    v_absorb: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step; updates S and z in place.

    Args:
        q: ``[B, H, D]`` the new query (RoPE applied); phi_q: ``[B, H, F]`` its features.
        k_cache, v_cache: ``[B, Hkv, C, D]`` ring buffer of window keys/values, already holding the new token.
        slot_pos: int ``[C]`` absolute position held by each slot, −1 for an empty slot.
        S, z: fp32 ``[B, H, F, D]`` / ``[B, H, F]`` state of the keys before the window; first the keys
            ``phi_k_absorb [B, H, n, F]`` / ``v_absorb [B, Hkv, n, D]`` (just left the window) are added in place.
        gamma: ``[H]``; window, layout: as in the reference; pos: absolute position of the query.

    Returns:
        o ``[B, H, D]`` in q's dtype: (Σ_valid γ·e^{s−m} v + φq·S) / (Σ_valid γ·e^{s−m} + φq·z), where valid
        slots hold positions in [softmax_start(pos), pos] and m is their max score.
    """
    n = check_decode_args(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, phi_k_absorb, v_absorb)
    b, h, d = q.shape
    hkv, c = k_cache.shape[1], k_cache.shape[2]
    g = h // hkv
    if n > 0:
        fk = phi_k_absorb.float()
        va = v_absorb.float().repeat_interleave(g, dim=1)
        S += torch.einsum("bhnf,bhnd->bhfd", fk, va)
        z += fk.sum(dim=2)
    fq = phi_q.float()
    num = torch.einsum("bhf,bhfd->bhd", fq, S)
    den = torch.einsum("bhf,bhf->bh", fq, z)
    start = window_start(layout, window, pos)
    if c > 0 and window > 0 and layout != "linear":
        valid = (slot_pos >= 0) & (slot_pos >= start) & (slot_pos <= int(pos))
        qg = q.float().view(b, hkv, g, d)
        s = torch.einsum("bkgd,bkcd->bkgc", qg, k_cache.float()) * d**-0.5
        s = s.masked_fill(~valid.view(1, 1, 1, c), float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        a = gamma.float().view(1, hkv, g, 1) * torch.exp(s - m)
        num = num + torch.einsum("bkgc,bkcd->bkgd", a, v_cache.float()).reshape(b, h, d)
        den = den + a.sum(dim=-1).reshape(b, h)
    return (num / (den + EPS).unsqueeze(-1)).to(q.dtype)


__all__ = ["check_decode_args", "hybrid_decode_step_torch", "window_start"]
