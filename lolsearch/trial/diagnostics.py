"""Per-layer diagnostics of the hybrid attention that explain a result: the learned γ, and the share of attention
weight that falls on the window (softmax) keys rather than the linear keys.

With the joint normalizer of LoLCATs Eq. 7 (method.md §2.3) a row's weights are γ·exp(q·k/√D − c) on window keys and
φ(q)·φ(k) on linear keys. When the linear terms are orders of magnitude larger (untrained T2R features), the window
share is ~0 and the hybrid behaves as linear attention alone: the view that shows a swamped window.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lolsearch.attention.chunked import expand_kv
from lolsearch.attention.layer import LinearizedAttention
from lolsearch.attention.reference import hybrid_masks, unnormalized_weights
from lolsearch.trial.surgery import linearized_layers

MAX_QUERIES = 256  # the last queries of the first sequence: each sees every earlier key


def _window_share(layer: LinearizedAttention, hidden: torch.Tensor, position_embeddings) -> torch.Tensor:
    """Mean over heads and the last :data:`MAX_QUERIES` queries of the first sequence of Σ(window weights) / Σ(all
    weights) for the inputs ``hidden [B, T, d_model]`` of one forward pass (a 0-d float64 tensor, left on the
    device)."""
    q, k, _ = layer._qkv(hidden[:1], position_embeddings if position_embeddings is None else
                         tuple(p[:1] for p in position_embeddings))
    phi_q, phi_k = layer._features(q, k)
    t = q.shape[-2]
    start = max(0, t - MAX_QUERIES)
    soft, lin = hybrid_masks(t - start, t, layer.window, layer.layout, q_start=start, device=q.device)
    ke = expand_kv(k, layer.num_heads)
    a = unnormalized_weights(q[..., start:, :].float(), ke.float(), phi_q[..., start:, :].float(), phi_k.float(),
                             layer.gamma.float(), soft, lin)  # [1, H, Tq, T]
    total = a.sum(dim=-1)
    window = (a * soft).sum(dim=-1)
    share = window / total.clamp_min(torch.finfo(total.dtype).tiny)
    return share.mean().double()


@torch.no_grad()
def window_share_by_layer(model: nn.Module, batches: Iterable[dict], max_batches: int = 1) -> list[float]:
    """Share of attention weight on window keys per linearized layer (in layer order), averaged over the first
    ``max_batches`` batches; pure linear layers (window 0) report 0."""
    layers = sorted(linearized_layers(model), key=lambda m: m.layer_idx)
    device = next(model.parameters()).device
    sums = torch.zeros(len(layers), dtype=torch.float64, device=device)  # read from the device once, at the end
    seen = 0
    hooks = []

    def hook(i: int):
        def fn(module: LinearizedAttention, args: tuple, kwargs: dict, output: object) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if module.mode == "student" and hidden is not None and module.window > 0:
                sums[i] += _window_share(module, hidden, kwargs.get("position_embeddings"))
        return fn

    was_training = model.training
    model.eval()
    try:
        hooks = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in enumerate(layers)]
        for batch in batches:
            if seen >= max_batches:
                break
            model(input_ids=batch["input_ids"][:1].to(device), use_cache=False)
            seen += 1
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return (sums / max(seen, 1)).tolist()


def gamma_by_layer(model: nn.Module) -> list[float]:
    """γ (the window-softmax weight) per linearized layer, mean over heads."""
    layers = sorted(linearized_layers(model), key=lambda m: m.layer_idx)
    return torch.stack([m.gamma.detach().float().mean() for m in layers]).tolist() if layers else []
