"""Plain, materialized PyTorch hybrid attention: the ground truth every faster path is tested against.

LoLCATs Eq. 7 (Zhang et al., arXiv 2410.10254): softmax over a window of keys mixed with feature-map
linear attention over the keys before it, under one joint normalizer.
"""

from __future__ import annotations

import torch

from lolsearch.attention.layouts import get_layout

EPS = 1e-12


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64 (for gradcheck-grade references)."""
    return torch.promote_types(x.dtype, torch.float32)


def hybrid_masks(t_q: int, t_k: int, window: int, layout: str, q_start: int = 0, k_start: int = 0, device=None):
    """Boolean masks ``(softmax, linear)`` of shape ``[t_q, t_k]`` for absolute query/key positions.

    Queries sit at positions ``q_start + i``, keys at ``k_start + j``.
    """
    lay = get_layout("linear" if window == 0 else layout)
    qpos = torch.arange(q_start, q_start + t_q, device=device)
    kpos = torch.arange(k_start, k_start + t_k, device=device)
    causal = kpos[None, :] <= qpos[:, None]
    start = lay.softmax_start(qpos, window)
    soft = causal & (kpos[None, :] >= start[:, None])
    return soft, causal & ~soft


def unnormalized_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    soft: torch.Tensor,
    lin: torch.Tensor,
) -> torch.Tensor:
    """A_ij = γ·exp(q_i·k_j/√D − c_i) on softmax keys, φq_i·φk_j on linear keys, 0 elsewhere ``[B, H, ..., Tq, Tk]``.

    The stabilizer c_i is the max over row i's softmax keys only; it is not applied to the linear terms
    (Eq. 7), so it changes the softmax-vs-linear balance and gradients flow through it. Computes in the
    dtype of its inputs; ``soft``/``lin`` are ``[Tq, Tk]`` masks from :func:`hybrid_masks` (or masks that
    broadcast against the extra dims, e.g. ``[N, Tq, Tk]`` for chunks ``[B, H, N, Tq, D]``).
    """
    s = torch.einsum("...id,...jd->...ij", q, k) * q.shape[-1] ** -0.5
    s = s.masked_fill(~soft, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    g = gamma.view(1, -1, *([1] * (s.dim() - 2)))
    return g * torch.exp(s - m) + torch.einsum("...if,...jf->...ij", phi_q, phi_k) * lin


def hybrid_attention_weights_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str = "sliding",
) -> torch.Tensor:
    """Normalized hybrid attention weights ``[B, H, T, T]`` (rows sum to 1), fp32.

    Args: as :func:`hybrid_attention_reference`.
    """
    t = q.shape[-2]
    f = acc_dtype(q)
    soft, lin = hybrid_masks(t, t, window, layout, device=q.device)
    a = unnormalized_weights(q.to(f), k.to(f), phi_q.to(f), phi_k.to(f), gamma.to(f), soft, lin)
    return a / (a.sum(dim=-1, keepdim=True) + EPS)


def hybrid_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str = "sliding",
) -> torch.Tensor:
    """LoLCATs hybrid attention, materialized (O(T²) memory).

    y_i = (Σ_{j∈S(i)} γ·exp(q_i·k_j/√D − c_i)·v_j + Σ_{j∈L(i)} (φq_i·φk_j)·v_j)
          / (Σ_{j∈S(i)} γ·exp(q_i·k_j/√D − c_i) + Σ_{j∈L(i)} φq_i·φk_j),
    with S(i) the softmax keys of the layout, L(i) the causal keys before them and
    c_i = max_{j∈S(i)} q_i·k_j/√D.

    Args:
        q, k, v: ``[B, H, T, D]``; k, v already expanded to H heads; RoPE applied.
        phi_q, phi_k: ``[B, H, T, F]`` non-negative features.
        gamma: ``[H]`` softmax weight per head (γ = sigmoid(w)).
        window: int >= 0; 0 = pure linear attention.
        layout: ``"sliding"`` (keys i−w < j ≤ i get softmax) or ``"terrace"`` (blocks of w: own block
            causally plus the whole previous block).

    Returns:
        ``[B, H, T, D]`` in q's dtype (computed in fp32).
    """
    if layout not in ("sliding", "terrace", "linear"):
        raise ValueError(f"layout must be 'sliding', 'terrace' or 'linear', got {layout!r}")
    a = hybrid_attention_weights_reference(q, k, phi_q, phi_k, gamma, window, layout)
    return torch.einsum("bhij,bhjd->bhid", a, v.to(a.dtype)).to(q.dtype)


def softmax_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention ``[B, H, T, D]`` (fp32 math), for identities in tests."""
    t, d = q.shape[-2], q.shape[-1]
    f = acc_dtype(q)
    s = torch.einsum("bhid,bhjd->bhij", q.to(f), k.to(f)) * d**-0.5
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~causal, float("-inf"))
    return torch.einsum("bhij,bhjd->bhid", s.softmax(-1), v.to(f)).to(q.dtype)


def linear_attention_reference(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal normalized linear attention ``[B, H, T, D]`` from features ``[B, H, T, F]``."""
    t = q_feat.shape[-2]
    f = acc_dtype(q_feat)
    a = torch.einsum("bhif,bhjf->bhij", q_feat.to(f), k_feat.to(f))
    a = a * torch.ones(t, t, dtype=torch.bool, device=q_feat.device).tril()
    a = a / (a.sum(-1, keepdim=True) + EPS)
    return torch.einsum("bhij,bhjd->bhid", a, v.to(f)).to(v.dtype)
