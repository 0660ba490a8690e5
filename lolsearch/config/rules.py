"""Design choices given by a rule rather than by layer index: softmax layers picked by a probe
(``attention.softmax_rule``) and LoRA rank per layer (``finetune.lora.rank_by_layer``, ``softmax_rank``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from lolsearch.config.strict import CheckedModel


class SoftmaxRule(CheckedModel):
    """Keeps as softmax the ``top_mse`` layers with the largest attention-transfer MSE right after linearization.

    The MSE is measured by a probe inside the trial (teacher-forced forwards of ``probe_batches`` training
    batches of the attention-transfer stage, nothing trained) before attention transfer; the chosen layers join
    ``attention.softmax_layers`` and the trial re-linearizes with them kept as softmax.
    """

    top_mse: int = Field(ge=0, description="number of layers kept as softmax by the probe's largest initial "
                                           "attention-transfer MSE (0: the rule is off, no probe runs)")
    probe_batches: int = Field(4, ge=1, le=256, description="training batches (attention-transfer batch size) "
                                                            "the probe averages the per-layer MSE over")


def top_layers(mse_by_layer: dict[int, float], k: int) -> list[int]:
    """The ``k`` layer indices with the largest MSE (ties: lower index first), sorted ascending."""
    ranked = sorted(mse_by_layer, key=lambda i: (-mse_by_layer[i], i))
    return sorted(ranked[:k])


def check_rank_by_layer(v: dict[int, int]) -> dict[int, int]:
    """Layer indices ≥ 0 and ranks ≥ 1, in index order (so equal maps hash equal)."""
    bad = [i for i in v if i < 0]
    if bad:
        raise ValueError(f"layer indices must be >= 0, got {bad}")
    low = {i: r for i, r in v.items() if r < 1}
    if low:
        raise ValueError(f"LoRA ranks must be >= 1, got {low}")
    return dict(sorted(v.items()))


class RankRuleMixin(CheckedModel):
    """Per-layer LoRA rank on top of ``rank`` (peft ``rank_pattern``); mixed into ``LoraOptions``."""

    rank_by_layer: dict[int, int] = Field(default_factory=dict,
        description="LoRA rank by decoder-layer index, overriding rank (and softmax_rank) for those layers")
    softmax_rank: int | None = Field(None, ge=1,
        description="LoRA rank of the layers kept as softmax (explicit or by softmax_rule); None keeps rank")

    @field_validator("rank_by_layer")
    @classmethod
    def _ranks(cls, v: dict[int, int]) -> dict[int, int]:
        return check_rank_by_layer(v)

    def layer_ranks(self, softmax_layers: tuple[int, ...] | list[int]) -> dict[int, int]:
        """Rank by layer index for the layers whose rank differs from the default ``rank``."""
        out = {i: self.softmax_rank for i in softmax_layers} if self.softmax_rank is not None else {}
        out.update(self.rank_by_layer)
        return {i: r for i, r in sorted(out.items())}


class WindowSchedule(CheckedModel):
    """Softmax window linear in depth: ``first`` at layer 0, ``last`` at the last layer, rounded to ``multiple``.

    It replaces ``attention.window`` layer by layer; a per-layer ``attention.layers.<i>.window`` still wins.
    """

    first: int = Field(ge=1, le=4096, description="window of the first decoder layer (tokens)")
    last: int = Field(ge=1, le=4096, description="window of the last decoder layer (tokens)")
    multiple: int = Field(1, ge=1, le=1024, description="each layer's window is rounded to a multiple of this (>= it)")

    def windows(self, num_layers: int) -> list[int]:
        """The window of each of ``num_layers`` layers."""
        out = []
        for i in range(num_layers):
            w = self.first + (self.last - self.first) * (i / (num_layers - 1) if num_layers > 1 else 0.0)
            out.append(max(self.multiple, self.multiple * round(w / self.multiple)))
        return out
