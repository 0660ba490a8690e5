"""Per-layer weights of the attention-transfer loss.

LoLCATs averages the per-layer MSE uniformly (method.md §1.5); MSE grows with depth, so a search
over how layers are weighted is a natural ablation. Every schedule returns one weight per
linearized layer (in layer order), normalised to mean 1 so the loss scale stays comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from lolsearch.registry import Registry


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerWeights:
    """Base class: ``weights(n, initial_mse)`` -> n raw weights (normalised by :func:`layer_weights`)."""

    Params: type[BaseModel] = _Params
    needs_initial_mse = False

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def raw(self, n: int, initial_mse: Sequence[float] | None) -> list[float]:
        raise NotImplementedError


LAYER_WEIGHTS: Registry[type[LayerWeights]] = Registry("layer-weight schedule")


@LAYER_WEIGHTS.register("uniform")
class Uniform(LayerWeights):
    """Every layer weighs the same (LoLCATs)."""

    def raw(self, n, initial_mse):
        return [1.0] * n


class LinearParams(_Params):
    start: float = Field(1.0, ge=0)
    end: float = Field(2.0, ge=0)


@LAYER_WEIGHTS.register("linear")
class Linear(LayerWeights):
    """Weights go linearly from `start` (first layer) to `end` (last layer)."""

    Params = LinearParams

    def raw(self, n, initial_mse):
        p = self.params
        return [p.start + (p.end - p.start) * (i / (n - 1) if n > 1 else 0.0) for i in range(n)]


class PowerParams(_Params):
    p: float = Field(1.0, ge=-8, le=8)


@LAYER_WEIGHTS.register("power")
class Power(LayerWeights):
    """Weight of layer i (0-based, of n) is ((i + 1) / n) ** p: p > 0 favours deep layers."""

    Params = PowerParams

    def raw(self, n, initial_mse):
        return [((i + 1) / n) ** self.params.p for i in range(n)]


class ListParams(_Params):
    values: tuple[float, ...] = Field(..., min_length=1)


@LAYER_WEIGHTS.register("list")
class Explicit(LayerWeights):
    """Explicit weights, one per linearized layer."""

    Params = ListParams

    def raw(self, n, initial_mse):
        vals = list(self.params.values)
        if len(vals) != n:
            raise ValueError(f"distill.layer_weights.params.values has {len(vals)} weights for {n} linearized layers")
        if any(v < 0 for v in vals):
            raise ValueError("distill.layer_weights.params.values must be >= 0")
        return vals


@LAYER_WEIGHTS.register("inverse_initial_mse")
class InverseInitialMse(LayerWeights):
    """Each layer weighted by 1 / its attention-transfer MSE at step 0 (equalises layers' starting losses)."""

    needs_initial_mse = True

    def raw(self, n, initial_mse):
        if initial_mse is None or len(initial_mse) != n:
            raise ValueError("inverse_initial_mse needs one initial MSE per linearized layer")
        return [1.0 / max(float(m), 1e-12) for m in initial_mse]


def layer_weights(kind: str, params: dict, n: int, initial_mse: Sequence[float] | None = None) -> list[float]:
    """Weights for ``n`` linearized layers, normalised to mean 1."""
    cls = LAYER_WEIGHTS.get(kind)
    raw = cls(cls.Params.model_validate(params)).raw(n, initial_mse)
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"layer weights '{kind}' sum to {total}; need a positive sum")
    return [w * n / total for w in raw]
