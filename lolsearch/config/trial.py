"""``TrialConfig`` = model, data, attention, distill, finetune, eval, efficiency, seed, device: the validated, frozen
configuration of one trial, and its ``trial_id``."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from lolsearch.config.sections import (
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


# Fields added after trial ids were first recorded, each with the value that computes what a config without it
# computed. At that value a field stays out of the id, so sweeps recorded before it resume, skip and compare under
# their own ids; any other value is part of the id. A new field that changes what a trial computes goes here.
ADDED_FIELDS: dict[tuple[str, ...], object] = {
    ("finetune", "lora", "compute_dtype"): "float32",
}


def canonical(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a :class:`TrialConfig`'s ``model_dump``, or the ``config`` of a trial's record, however old)
    without what is not part of a trial's identity: the speed-only stage settings (:data:`SPEED_ONLY`) and the
    :data:`ADDED_FIELDS` that hold their earlier value. ``config`` is not changed."""
    out = copy.deepcopy(config)
    for stage in ("distill", "finetune"):
        if isinstance(out.get(stage), dict):
            for key in SPEED_ONLY:
                out[stage].pop(key, None)
    for path, earlier in ADDED_FIELDS.items():
        *parents, name = path
        section: Any = out
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and name in section and section[name] == earlier:
            del section[name]
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
