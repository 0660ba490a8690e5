"""``TrialConfig`` = model, data, attention, distill, finetune, eval, efficiency, seed, device: the validated, frozen
configuration of one trial, and its ``trial_id``."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from lolsearch.config.sections import (
    EVAL_SPEED_ONLY,
    SPEED_ONLY,
    AttentionConfig,
    DataConfig,
    DistillConfig,
    EfficiencyConfig,
    EvalConfig,
    FinetuneConfig,
    ModelConfig,
    StrictModel,
)


def canonical(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a :class:`TrialConfig`'s ``model_dump``, or the ``config`` of a trial's record, however old)
    without the speed-only stage and eval settings (:data:`SPEED_ONLY`, :data:`EVAL_SPEED_ONLY`), which are not part
    of a trial's identity. ``config`` is not changed."""
    out = copy.deepcopy(config)
    for top, paths in (("distill", SPEED_ONLY), ("finetune", SPEED_ONLY), ("eval", EVAL_SPEED_ONLY)):
        for path in paths:
            *parents, name = path.split(".")
            section: Any = out.get(top)
            for key in parents:
                section = section.get(key) if isinstance(section, dict) else None
            if isinstance(section, dict):
                section.pop(name, None)
    return out


class TrialConfig(StrictModel):
    """Everything one trial needs. ``trial_id`` is a hash of the canonical resolved config."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="the teacher model")
    data: DataConfig = Field(default_factory=DataConfig, description="training and evaluation text")
    attention: AttentionConfig = Field(default_factory=AttentionConfig, description="the linearized attention design")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="stage 1: attention transfer")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="stage 2: LoRA finetuning")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="quality evaluation")
    efficiency: EfficiencyConfig = Field(default_factory=EfficiencyConfig,
        description="efficiency accounting and measurement")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of initialization and data order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA when available), cpu or cuda")

    @model_validator(mode="after")
    def _windows_fit_the_sequence(self) -> TrialConfig:
        a, seq_len = self.attention, self.data.seq_len
        windows = [("attention.window", a.layout, a.window)]
        if a.window_schedule is not None:
            windows = [("attention.window_schedule", a.layout, max(a.window_schedule.first, a.window_schedule.last))]
        windows += [(f"attention.layers.{i}.window", o.layout, a.window if o.window is None else o.window)
                    for i, o in a.layers.items()]
        for key, layout, window in windows:
            if layout in ("sliding", "terrace") and window > seq_len:
                raise ValueError(f"{key}: window {window} is longer than data.seq_len {seq_len} (the softmax part would "
                                 "cover every training sequence); lower the window or raise data.seq_len")
        return self

    @property
    def trial_id(self) -> str:
        return hashlib.sha1(self.canonical_json().encode()).hexdigest()[:10]

    def canonical_json(self) -> str:
        """The resolved config as sorted compact JSON, in its :func:`canonical` form."""
        return json.dumps(canonical(self.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))

    def data_seed(self, stage: Literal["distill", "finetune"]) -> int:
        """Seed of a training stage's data order: its own stream per stage, shared by the teacher baseline."""
        return self.seed * 1000 + {"distill": 1, "finetune": 2}[stage]

    def cotrain_feature_maps(self) -> bool:
        """Whether stage 2 also trains feature maps and γ."""
        if self.finetune.train_feature_maps is not None:
            return self.finetune.train_feature_maps
        return not self.distill.enabled
