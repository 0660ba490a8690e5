"""Trial configuration: the validated sections (:mod:`.sections`), the names they may use (:mod:`.plugins`) and
reading user input into them (:mod:`.io`). No torch is imported here."""

from lolsearch.config.design import design_hash, design_id
from lolsearch.config.io import load_yaml, parse_overrides, parse_trial_config, set_dotted, validation_problems
from lolsearch.config.sections import (
    LORA_TARGETS,
    AttentionConfig,
    DataConfig,
    DistillConfig,
    EfficiencyConfig,
    EvalConfig,
    FeatureMapConfig,
    FinetuneConfig,
    LayerOverride,
    LayerWeightsConfig,
    LoraOptions,
    ModelConfig,
    StageConfig,
    StrictModel,
    ToyModelOptions,
)
from lolsearch.config.trial import TrialConfig

__all__ = [
    "LORA_TARGETS", "AttentionConfig", "DataConfig", "DistillConfig", "EfficiencyConfig", "EvalConfig",
    "FeatureMapConfig", "FinetuneConfig", "LayerOverride", "LayerWeightsConfig", "LoraOptions", "ModelConfig",
    "StageConfig", "StrictModel", "ToyModelOptions", "TrialConfig", "design_hash", "design_id", "load_yaml", "parse_overrides",
    "parse_trial_config", "set_dotted", "validation_problems",
]
