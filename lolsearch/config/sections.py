"""The sections of a trial configuration (:mod:`.trial` joins them). Defaults live here and only here (LoLCATs
defaults, DESIGN.md).

Every model rejects unknown keys; names (feature maps, layouts, models, datasets, layer-weight
schedules) are checked against their registries with a did-you-mean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lolsearch.config.plugins import DATASETS, FEATURE_MAPS, LAYER_WEIGHTS, LAYOUTS, MODELS
from lolsearch.config.rules import RankRuleMixin, SoftmaxRule, WindowSchedule
from lolsearch.config.strict import CheckedModel, validated_params
from lolsearch.core.errors import did_you_mean

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


class StrictModel(CheckedModel):
    """Base: frozen, unknown keys rejected, numbers finite and never booleans."""


class ToyModelOptions(StrictModel):
    """Shape of the randomly initialised ``toy-llama`` (ignored for other sources)."""

    layers: int = Field(2, ge=1, le=8, description="decoder layers of the toy model")
    hidden_size: int = Field(64, ge=8, description="hidden size (a multiple of heads)")
    heads: int = Field(4, ge=1, description="query heads")
    kv_heads: int = Field(2, ge=1, description="key/value heads (heads must be a multiple)")
    intermediate_size: int = Field(128, ge=8, description="MLP inner size")

    @model_validator(mode="after")
    def _check_heads(self) -> ToyModelOptions:
        if self.heads % self.kv_heads:
            raise ValueError("heads must be a multiple of kv_heads")
        if self.hidden_size % self.heads:
            raise ValueError("hidden_size must be a multiple of heads")
        return self


class ModelConfig(StrictModel):
    """The teacher: a registered name (``lolsearch ls models``), an HF id, a local dir or a ``.gguf`` file."""

    source: str = Field("smollm2-135m",
        description="the teacher: a registered name (lolsearch ls models), an HF id, a local directory or a .gguf file")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto",
        description="weights dtype; auto = bfloat16 on CUDA, float32 on CPU")
    revision: str | None = Field(None, description="HF hub revision (branch, tag or commit) of an HF id")
    trust_remote_code: bool = Field(False,
        description="allow the model's own Python code from the hub (off unless you trust it)")
    toy: ToyModelOptions = Field(default_factory=ToyModelOptions,
        description="shape of the random toy-llama (ignored for other sources)")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v in MODELS or "/" in v or v.endswith(".gguf") or Path(v).exists():
            return v
        raise ValueError(MODELS.unknown_message(v) + "; or give an HF id, a local directory or a .gguf file")


class DataConfig(StrictModel):
    """Training/evaluation text. ``source``: a registered dataset (``lolsearch ls datasets``)."""

    source: str = Field("shakespeare", description="a registered dataset (lolsearch ls datasets)")
    path: str | None = Field(None, description="file or directory for sources that need one (text, jsonl, HF datasets)")
    seq_len: int = Field(1024, ge=8, description="tokens per packed training sequence")
    text_field: str = Field("text", description="field holding the text in JSONL / HF records")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="share of the documents held out for validation")
    test_fraction: float = Field(0.05, gt=0, lt=0.5,
        description="share of the documents held out for the final evaluation")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(DATASETS.unknown_message(v))
        return v

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if DATASETS.meta(self.source, "needs_path") and not self.path:
            raise ValueError(f"data source '{self.source}' needs data.path")
        return self


def _resolve_kind_params(section: Any, registry: Any) -> Any:
    """Checks ``section.kind`` against ``registry`` and replaces ``section.params`` by its validated, defaulted form."""
    if section.kind not in registry:
        raise ValueError(registry.unknown_message(section.kind))
    object.__setattr__(section, "params", validated_params(registry.params(section.kind), section.params))
    return section


class FeatureMapConfig(StrictModel):
    """``kind`` from ``lolsearch ls feature-maps``; ``params`` validated by that map's own model."""

    kind: str = Field("hedgehog", description="feature map (lolsearch ls feature-maps), e.g. hedgehog, t2r")
    params: dict[str, Any] = Field(default_factory=dict,
        description="the feature map's own parameters, e.g. {feature_dim: 64}; checked against its model")

    @model_validator(mode="after")
    def _resolve_params(self) -> FeatureMapConfig:
        return _resolve_kind_params(self, FEATURE_MAPS)


class LayerOverride(StrictModel):
    """Per-layer layout (and window) overriding the attention-wide one."""

    layout: str = Field(description="this layer's layout (lolsearch ls layouts)")
    window: int | None = Field(None, ge=0, description="this layer's window; None keeps attention.window")


class AttentionConfig(StrictModel):
    """How each softmax attention is replaced (DESIGN.md, method.md §2)."""

    feature_map: FeatureMapConfig = Field(default_factory=FeatureMapConfig,
        description="feature map of the linear part (applied after RoPE, per query head)")
    layout: str = Field("terrace",
        description="keys under softmax: linear (none), sliding (last window keys), terrace (LoLCATs blocks)")
    window: int = Field(64, ge=0, le=4096, description="softmax window in tokens for sliding/terrace (0 for linear)")
    window_schedule: WindowSchedule | None = Field(None, description="window linear in depth (first → last layer), "
                                                   "replacing window per layer; None: window everywhere")
    softmax_layers: tuple[int, ...] = Field((), description="layer indices kept as softmax attention")
    softmax_rule: SoftmaxRule | None = Field(None, description="more softmax layers chosen in the trial by a probe "
                                             "(top_mse: the k layers with the largest initial MSE); None: index only")
    layers: dict[int, LayerOverride] = Field(default_factory=dict,
        description="per-layer layout/window overrides, by layer index")
    gamma_init: float = Field(0.1, gt=0, lt=1, description="initial softmax weight γ per head (in (0, 1))")
    train_gamma: bool = Field(True, description="train γ in attention transfer (else fixed at gamma_init)")
    backend: Literal["auto", "torch", "triton", "reference"] = Field("auto",
        description="kernel: auto (Triton on CUDA for feature maps of at most 256 features, else "
                    "torch), torch (chunked), triton, reference")
    chunk_size: int = Field(64, ge=1, le=1024, description="chunk length of the chunked linear-attention path")

    @model_validator(mode="before")
    @classmethod
    def _canonical_window(cls, data: Any) -> Any:
        # A linear layout has no window: store 0 so equal designs hash equal.
        if isinstance(data, dict) and data.get("layout") == "linear":
            data = {**data, "window": 0}
        return data

    @model_validator(mode="after")
    def _check_layouts(self) -> AttentionConfig:
        checks = [("layout", self.layout, self.window)]
        checks += [(f"layers.{i}.layout", o.layout, o.window) for i, o in self.layers.items()]
        for key, name, window in checks:
            if name not in LAYOUTS:
                raise ValueError(f"{key}: {LAYOUTS.unknown_message(name)}")
            if name in ("sliding", "terrace") and window is not None and window < 1:
                raise ValueError(f"{key}: layout '{name}' needs window >= 1 (window 0 is the 'linear' layout)")
        bad = [i for i in (*self.softmax_layers, *self.layers) if i < 0]
        if bad:
            raise ValueError(f"layer indices must be >= 0, got {bad}")
        return self

    def layer_plan(self, num_layers: int) -> list[tuple[str, int]]:
        """(layout, window) for each of ``num_layers`` layers; raises on out-of-range indices."""
        out_of_range = [i for i in (*self.softmax_layers, *self.layers) if i >= num_layers]
        if out_of_range:
            raise ValueError(f"attention layer indices {out_of_range} out of range for a {num_layers}-layer model")
        plan = []
        scheduled = self.window_schedule.windows(num_layers) if self.window_schedule else [self.window] * num_layers
        for i in range(num_layers):
            layout, window = self.layout, scheduled[i]
            if i in self.layers:
                layout = self.layers[i].layout
                window = self.layers[i].window if self.layers[i].window is not None else window
            if i in self.softmax_layers:
                layout = "softmax"
            plan.append((layout, 0 if layout == "linear" else window))
        return plan


class LayerWeightsConfig(StrictModel):
    """Per-layer weights of the attention-transfer loss (``lolsearch ls layer-weights``)."""

    kind: str = Field("uniform", description="schedule of per-layer loss weights (lolsearch ls layer-weights)")
    params: dict[str, Any] = Field(default_factory=dict, description="the schedule's own parameters")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _resolve_params(self) -> LayerWeightsConfig:
        return _resolve_kind_params(self, LAYER_WEIGHTS)


# cuda_graph auto: largest micro-batch (tokens) whose step is graphed (results/perf/features_dx_20261206/ and, for the
# teacher's own LoRA stage, results/perf/unmasked_20261206/)
AUTO_GRAPH_TOKENS = 16384
GPU_SYNC_EVERY = 25  # sync_every None: steps between loss read-backs on a GPU (every step on CPU)
# stage fields (dotted paths within a stage) that change how fast a stage runs or how much memory it takes, and the
# rounding of what it computes at most; `perf train --check` compares a stage's first losses with and without them
SPEED_ONLY = ("sync_every", "compile", "cuda_graph", "loss_chunk_tokens", "recompute_features", "checkpoint_layers",
              "lora.compute_dtype")
EVAL_SPEED_ONLY = ("cuda_graph",)  # eval fields of the same kind (out of trial ids too)


class StageConfig(StrictModel):
    """Budget and optimizer of one training stage. Budget: exactly one of ``tokens`` or ``steps``."""

    enabled: bool = Field(True, description="run this stage")
    tokens: int | None = Field(None, gt=0, description="training tokens (exactly one of tokens or steps)")
    steps: int | None = Field(None, gt=0, description="optimizer steps (exactly one of tokens or steps)")
    batch_size: int = Field(8, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    schedule: Literal["constant", "cosine", "plateau"] = Field("plateau",
        description="lr after warmup: constant, cosine (to min_lr) or plateau (× plateau_factor on a stall)")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="plateau schedule: factor applied to the lr on a stall")
    plateau_patience: int = Field(10, ge=0,
        description="plateau schedule: validations without improvement before the lr drops")
    min_lr: float = Field(1e-5, ge=0, description="lowest learning rate of the cosine/plateau schedules")
    grad_clip: float | None = Field(None, gt=0, description="gradient-norm clip (None: off)")
    eval_every: int = Field(100, ge=1, description="steps between validations")
    eval_batches: int = Field(8, ge=1, description="validation batches per validation")
    keep_best: bool = Field(True, description="restore the parameters of the best validation at the end")
    sync_every: int | None = Field(
        None, ge=1, description="steps between reading losses back to the host (curve, progress, NaN check); "
        f"None: every step on CPU, every {GPU_SYNC_EVERY} on a GPU. Speed only: not part of the trial id")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "off", description="torch.compile mode for the stage's norms, MLPs and feature maps (off: eager). Speed "
        "only, the same losses up to rounding: not part of the trial id")
    cuda_graph: bool | Literal["auto"] = Field(
        "auto", description="capture the training step (forward and backward of every micro-batch, clipping, fused "
        "AdamW) as a CUDA graph after one eager step and replay it, and the stage's validation forwards as a graph of "
        "their own; auto: on a GPU when a micro-batch holds at most "
        f"{AUTO_GRAPH_TOKENS} tokens, where "
        "launch overhead bounds the step; no-op on CPU, and any step that cannot "
        "be captured falls back to eager with a log line. Speed only, the same losses up to rounding: not part of "
        "the trial id")
    recompute_features: bool = Field(False, description="recompute φ(q), φ(k) in the backward pass instead of keeping "
        "the feature maps' fp32 intermediates (less memory, a little more compute); not part of the trial id")

    def graph_wanted(self, seq_len: int) -> bool:
        """Whether the stage asks for the CUDA-graph step at this sequence length (``auto`` resolved)."""
        if self.cuda_graph == "auto":
            return self.batch_size * seq_len <= AUTO_GRAPH_TOKENS
        return bool(self.cuda_graph)

    @model_validator(mode="before")
    @classmethod
    def _steps_replace_default_tokens(cls, data: Any) -> Any:
        # Giving `steps` alone means a step budget, not steps on top of the default token budget.
        if isinstance(data, dict) and data.get("steps") is not None and "tokens" not in data:
            data = {**data, "tokens": None}
        return data

    @model_validator(mode="after")
    def _one_budget(self) -> StageConfig:
        if self.enabled and (self.tokens is None) == (self.steps is None):
            raise ValueError("give exactly one of tokens or steps")
        return self

    def num_steps(self, seq_len: int) -> int:
        """Optimizer steps this stage runs (0 when disabled)."""
        if not self.enabled:
            return 0
        if self.steps is not None:
            return self.steps
        per_step = self.batch_size * self.grad_accum * seq_len
        return max(1, math.ceil(self.tokens / per_step))


class DistillConfig(StageConfig):
    """Stage 1, attention transfer (method.md §1.2): MSE on per-head outputs × mse_factor (+ xent)."""

    tokens: int | None = Field(20_000_000, gt=0,
        description="training tokens (default 20M; exactly one of tokens or steps)")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate of the feature maps and γ")
    mse_factor: float = Field(1000.0, ge=0,
        description="weight of the MSE between student and teacher attention outputs")
    xent_factor: float = Field(0.0, ge=0, description="weight of the cross-entropy between attention weights (0: off)")
    layer_weights: LayerWeightsConfig = Field(default_factory=LayerWeightsConfig,
        description="per-layer weights of the attention-transfer loss")

    @model_validator(mode="after")
    def _some_loss(self) -> DistillConfig:
        if self.enabled and self.mse_factor == 0 and self.xent_factor == 0:
            raise ValueError("mse_factor and xent_factor are both 0: nothing to train")
        return self


class LoraOptions(RankRuleMixin, StrictModel):
    """LoRA of stage 2 (method.md §1.3). ``targets`` from q, k, v, o, gate, up, down."""

    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    targets: tuple[str, ...] = Field(("q", "k", "v", "o"),
        description="projections that get LoRA: q, k, v, o, gate, up, down")
    compute_dtype: Literal["float32", "model"] = Field("model",
        description="dtype of the LoRA products (speed-only: not part of a trial's id). model: the adapter weights "
        "(kept in fp32 for the optimizer) cast to the model's dtype for each product, so no fp32 copy of the "
        "activations is made or kept for the backward pass, and on a GPU each adapted Linear runs as one autograd "
        "function (the adapter's product added in the base product's epilogue); float32: peft's way, each adapted "
        "layer's input copied to fp32 for its adapter. The same numbers on an fp32 model")

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if t not in LORA_TARGETS:
                raise ValueError(f"unknown LoRA target '{t}'{did_you_mean(t, LORA_TARGETS)} (allowed: {', '.join(LORA_TARGETS)})")
        if not v:
            raise ValueError("at least one LoRA target")
        return tuple(t for t in LORA_TARGETS if t in v)  # canonical order, no duplicates


class FinetuneConfig(StageConfig):
    """Stage 2, low-rank linearizing: next-token loss through LoRA."""

    tokens: int | None = Field(40_000_000, gt=0,
        description="training tokens (default 40M; exactly one of tokens or steps)")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the LoRA weights")
    lora: LoraOptions = Field(default_factory=LoraOptions, description="LoRA settings")
    train_feature_maps: bool | None = Field(None,
        description="also train feature maps and γ; None: only when attention transfer is off (the paper's no "
        "attention transfer baseline)")
    loss_chunk_tokens: int | None = Field(None, ge=1, description="next-token loss over this many positions at a "
        "time, each chunk's logits recomputed in the backward pass (less memory); None: the whole batch at once")
    checkpoint_layers: bool = Field(False, description="activation checkpointing: keep only each decoder layer's "
        "input and recompute the layer in the backward pass (least memory, one more forward); not part of the trial id")


class PasskeyConfig(StrictModel):
    """Synthetic passkey retrieval (lolsearch.trial.passkey): a 5-digit number hidden in filler text."""

    lengths: tuple[int, ...] = Field((1024, 4096), min_length=1, description="context lengths in tokens; one "
                                     "accuracy each (passkey_<len> for the student, passkey_teacher_<len>)")
    depths: tuple[float, ...] = Field((0.0, 0.25, 0.5, 0.75, 1.0), min_length=1, description="where the number "
                                      "sits in the filler: 0 = start, 1 = end (just before the question)")
    samples: int = Field(5, ge=1, description="prompts (different numbers) per length and depth")

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 128 for n in v):
            raise ValueError(f"each length must be >= 128 tokens (room for the needle and question), got {list(v)}")
        return v

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= d <= 1.0 for d in v):
            raise ValueError(f"each depth must be in [0, 1], got {list(v)}")
        return v


class EvalConfig(StrictModel):
    """Quality evaluation on the held-out split."""

    split: Literal["val", "test"] = Field("test", description="held-out split for the final metrics")
    tokens: int = Field(65_536, gt=0, description="evaluation tokens per perplexity")
    batch_size: int = Field(8, ge=1, description="evaluation sequences per batch")
    teacher_ft: bool = Field(True,
        description="also give the teacher the LoRA stage (ppl_teacher_ft, the fair ratio ppl_ratio_ft)")
    mc_tasks: tuple[str, ...] = Field((), description="local multiple-choice JSONL tasks (mc_<task>_acc)")
    lm_eval_tasks: tuple[str, ...] = Field((),
        description="lm-evaluation-harness tasks (needs the eval extra: pip install 'lolsearch[eval]')")
    lm_eval_limit: int | None = Field(None, gt=0, description="examples per lm-eval task (None: all)")
    seq_lens: tuple[int, ...] = Field((), description="extra evaluation lengths in tokens (e.g. [1024, 4096]): "
                                      "ppl_<len>, ppl_teacher_<len> and, with teacher_ft, ppl_ratio_ft_<len> at each, "
                                      "for designs trained at a shorter data.seq_len")
    passkey: PasskeyConfig | None = Field(None, description="passkey retrieval accuracy per context length for the "
                                          "student and the teacher; off when absent")
    datasets: dict[str, DataConfig] = Field(default_factory=dict, description="extra evaluation datasets by name, "
                                            "each a data section; reported as ppl_<name>, ppl_teacher_<name> and "
                                            "ppl_ratio_<name> on its eval.split")
    diagnostics: bool = Field(True, description="per-layer γ and share of attention weight on window keys at "
                              "initialization and after attention transfer (gamma_by_layer, window_share_*_by_layer)")
    cuda_graph: bool | Literal["auto"] = Field(
        "auto", description="replay each evaluation pass's forwards (student, teacher, reference, the attention MSE's "
        "decoder) from a CUDA graph captured on its second batch; auto: on a GPU; no-op on CPU, and a forward that "
        "cannot be captured runs eagerly with a log line. Speed only, the same metrics up to rounding: not part of "
        "the trial id")

    @field_validator("seq_lens")
    @classmethod
    def _seq_lens(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 2 for n in v):
            raise ValueError(f"each length must be >= 2 tokens, got {list(v)}")
        return tuple(dict.fromkeys(v))

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, v: dict[str, DataConfig]) -> dict[str, DataConfig]:
        bad = [n for n in v if not n.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"dataset names become metric names: letters, digits and _ only, got {bad}")
        return v


class EfficiencyConfig(StrictModel):
    """Analytic state/FLOP accounting at ``contexts``; measured speed at ``prefill_lengths``.

    ``None`` lengths pick a device default (small on CPU).
    """

    contexts: tuple[int, ...] = Field((4096, 32768, 131072),
        description="context lengths for the analytic state/FLOP metrics (state_bytes_<N>k, ...)")
    measure: bool = Field(True, description="measure prefill/decode speed and memory on the trial's device")
    prefill_lengths: tuple[int, ...] | None = Field(None,
        description="prefill lengths to time (None: a device default, small on CPU)")
    decode_context: int | None = Field(None, gt=0,
        description="context before the timed decode (None: a device default)")
    decode_tokens: int = Field(32, ge=2, description="tokens decoded for the decode timing")
    batch_size: int = Field(1, ge=1, description="sequences per timed batch")
