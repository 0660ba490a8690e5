"""The projected feature maps' arithmetic on plain tensors, shared by the modules (``featuremaps``) and the fused
kernels' torch path (``lolsearch.kernels.featuremap``, for heads no kernel config fits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, D] x [H, D, F'] -> [B, H, T, F']``.

    A broadcast matmul, not ``einsum``: einsum batches over H alone, so it copies x to ``[H, B·T, D]`` and the
    weight gradient becomes H products reducing over all B·T tokens (on an H200 in fp32, about 0.3 ms per call
    at 8 × 1024 tokens, the largest device cost of an attention-transfer step of SmolLM2). Batched over (B, H),
    both directions run on x as laid out.
    """
    return torch.matmul(x, w.to(x.dtype))


def signed_softmax(xw: torch.Tensor, halfspace: bool, eps: float) -> torch.Tensor:
    """Hedgehog's features of x̃ = xW ``[..., F']``: [softmax(x̃) ⊕ softmax(−x̃)] (softmax(x̃) alone with
    ``halfspace``), clamped at ``eps`` from below."""
    if halfspace:
        return xw.softmax(dim=-1).clamp(min=eps)
    return torch.cat([xw.softmax(dim=-1), (-xw).softmax(dim=-1)], dim=-1).clamp(min=eps)


def relu_features(y: torch.Tensor, eps: float) -> torch.Tensor:
    """T2R's features of y = xW + b: ReLU(y) clamped at ``eps`` from below."""
    return F.relu(y).clamp(min=eps)
