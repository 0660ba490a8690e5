"""Per-layer weights of the attention-transfer loss.

LoLCATs averages the per-layer MSE uniformly (method.md §1.5); MSE grows with depth, so a search
over how layers are weighted is a natural ablation. Every schedule returns one weight per
linearized layer (in layer order), normalised to mean 1 so the loss scale stays comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from lolsearch.config.plugins import LAYER_WEIGHTS


class LayerWeights:
    """Base class: ``weights(n, initial_mse)`` -> n raw weights (normalised by :func:`layer_weights`)."""

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def raw(self, n: int, initial_mse: Sequence[float] | None) -> list[float]:
        raise NotImplementedError


class Uniform(LayerWeights):
    """Every layer weighs the same (LoLCATs)."""

    def raw(self, n, initial_mse):
        return [1.0] * n


class Linear(LayerWeights):
    """Weights go linearly from `start` (first layer) to `end` (last layer)."""

    def raw(self, n, initial_mse):
        p = self.params
        return [p.start + (p.end - p.start) * (i / (n - 1) if n > 1 else 0.0) for i in range(n)]


class Power(LayerWeights):
    """Weight of layer i (0-based, of n) is ((i + 1) / n) ** p: p > 0 favours deep layers."""

    def raw(self, n, initial_mse):
        return [((i + 1) / n) ** self.params.p for i in range(n)]


class Explicit(LayerWeights):
    """Explicit weights, one per linearized layer."""

    def raw(self, n, initial_mse):
        vals = list(self.params.values)
        if len(vals) != n:
            raise ValueError(f"distill.layer_weights.params.values has {len(vals)} weights for {n} linearized layers")
        if any(v < 0 for v in vals):
            raise ValueError("distill.layer_weights.params.values must be >= 0")
        return vals


class InverseInitialMse(LayerWeights):
    """Each layer weighted by 1 / its attention-transfer MSE at step 0 (equalises layers' starting losses)."""

    def raw(self, n, initial_mse):
        if initial_mse is None or len(initial_mse) != n:
            raise ValueError("inverse_initial_mse needs one initial MSE per linearized layer")
        return [1.0 / max(float(m), 1e-12) for m in initial_mse]


def layer_weights(kind: str, params: dict, n: int, initial_mse: Sequence[float] | None = None) -> list[float]:
    """Weights for ``n`` linearized layers, normalised to mean 1."""
    cls = LAYER_WEIGHTS.get(kind)
    raw = cls(LAYER_WEIGHTS.params(kind).model_validate(params)).raw(n, initial_mse)
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"layer weights '{kind}' sum to {total}; need a positive sum")
    return [w * n / total for w in raw]
