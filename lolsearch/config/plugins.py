"""The names a config may use, declared once: feature maps, layouts, models, datasets, layer-weight schedules.

Each entry points lazily at its implementation (``"module:attr"``), so validating a config imports no torch;
the parameter models of the entries that take ``params`` live here for the same reason.
"""

from __future__ import annotations

from pydantic import Field

from lolsearch.config.strict import CheckedModel
from lolsearch.core.registry import Registry


class _Params(CheckedModel):
    """Base of the ``params`` models: unknown keys, non-finite floats and booleans for numbers refused."""


class NoParams(_Params):
    """Takes no parameters."""


class ProjectionParams(_Params):
    """A per-head projection ``[H, D, feature_dim]``; identity init (LoLCATs' ``--lk_zero_init``)."""

    feature_dim: int = Field(64, ge=1, le=1024, description="F', columns of the per-head projection")
    init: str = Field("identity", pattern="^(identity|kaiming)$", description="identity (LoLCATs) or kaiming")


class HedgehogParams(ProjectionParams):
    halfspace: bool = Field(False, description="keep only softmax(xW) (F' features) instead of both signs")


class PerformerParams(_Params):
    feature_dim: int = Field(64, ge=1, le=4096, description="number of positive random features")
    seed: int = Field(0, description="seed of the random features (fixed, not trained)")


class LinearParams(_Params):
    start: float = Field(1.0, ge=0, description="weight of the first linearized layer")
    end: float = Field(2.0, ge=0, description="weight of the last linearized layer")


class PowerParams(_Params):
    p: float = Field(1.0, ge=-8, le=8, description="weight of layer l is (l+1)^p")


class ListParams(_Params):
    values: tuple[float, ...] = Field(..., min_length=1, description="one weight per linearized layer")


_FM = "lolsearch.attention.featuremaps"
FEATURE_MAPS: Registry = Registry("feature map")
FEATURE_MAPS.declare("hedgehog", f"{_FM}:Hedgehog", HedgehogParams)
FEATURE_MAPS.declare("exp_dim", f"{_FM}:ExpDim", HedgehogParams)
FEATURE_MAPS.declare("t2r", f"{_FM}:T2R", ProjectionParams)
FEATURE_MAPS.declare("elu", f"{_FM}:Elu", NoParams)
FEATURE_MAPS.declare("relu", f"{_FM}:Relu", NoParams)
FEATURE_MAPS.declare("taylor2", f"{_FM}:Taylor2", NoParams)
FEATURE_MAPS.declare("performer", f"{_FM}:Performer", PerformerParams)

_LO = "lolsearch.attention.layouts"
LAYOUTS: Registry = Registry("layout")
for _name in ("softmax", "linear", "sliding", "terrace"):
    LAYOUTS.declare(_name, f"{_LO}:{_name.capitalize()}Layout")

MODELS: Registry = Registry("model")
MODELS.declare("smollm2-135m", "lolsearch.models:smollm2_135m")
MODELS.declare("toy-llama", "lolsearch.models:toy_llama")
MODELS.declare("smollm2-135m-shape", "lolsearch.models:smollm2_135m_shape")
MODELS.declare("llama3-8b-shape", "lolsearch.models:llama3_8b_shape")

_DS = "lolsearch.data.sources"
DATASETS: Registry = Registry("dataset")
DATASETS.declare("shakespeare", f"{_DS}:Shakespeare", needs_path=False)
DATASETS.declare("text", f"{_DS}:TextFiles", needs_path=True)
DATASETS.declare("jsonl", f"{_DS}:AlpacaJsonl", needs_path=True)
DATASETS.declare("hf", f"{_DS}:HFDataset", needs_path=True)

_LW = "lolsearch.trial.layer_weights"
LAYER_WEIGHTS: Registry = Registry("layer-weight schedule")
LAYER_WEIGHTS.declare("uniform", f"{_LW}:Uniform", NoParams)
LAYER_WEIGHTS.declare("linear", f"{_LW}:Linear", LinearParams)
LAYER_WEIGHTS.declare("power", f"{_LW}:Power", PowerParams)
LAYER_WEIGHTS.declare("list", f"{_LW}:Explicit", ListParams)
LAYER_WEIGHTS.declare("inverse_initial_mse", f"{_LW}:InverseInitialMse", NoParams, needs_initial_mse=True)
