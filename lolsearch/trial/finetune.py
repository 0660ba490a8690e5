"""Stage 2, low-rank linearizing (LoLCATs §3.1, method.md §1.3): LoRA through peft, next-token loss.

Feature maps and γ stay frozen, unless co-training is asked (the paper's no-attention-transfer
baseline trains them with the LoRA weights). Every decoder layer gets LoRA, those kept as softmax too: the
teacher baseline (``ppl_teacher_ft``) gets the same, so designs that keep softmax layers compare fairly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.utils.checkpoint import checkpoint

from lolsearch.config import FinetuneConfig, LoraOptions
from lolsearch.models.fused import fused_loss_applies, next_token_loss
from lolsearch.trial.forward_graph import GraphedForward
from lolsearch.trial.lora_linear import fuse
from lolsearch.trial.step_graph import graph_unavailable
from lolsearch.trial.surgery import (
    attention_parameters,
    checkpointed_layers,
    compile_targets,
    recomputed_features,
    unmasked_causal,
    unwrap_peft,
)
from lolsearch.trial.train import StageResult, run_stage

TARGET_MODULES = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
    "gate": "gate_proj", "up": "up_proj", "down": "down_proj",
}


def peft_config(lora: LoraOptions, layers: list[int] | None, softmax_layers: Sequence[int] = ()) -> LoraConfig:
    """The peft LoraConfig for ``lora`` applied to decoder ``layers`` (None = all).

    Per-layer ranks (``rank_by_layer``, ``softmax_rank`` on ``softmax_layers``) become peft's ``rank_pattern``;
    ``alpha_pattern`` scales alpha with the rank so every layer keeps the scale ``alpha / rank``.
    """
    ranks = lora.layer_ranks(softmax_layers)
    pattern = {rf"layers\.{i}\.\w+\.\w+": r for i, r in ranks.items()}
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        rank_pattern=pattern,
        alpha_pattern={key: lora.alpha * r / lora.rank for key, r in pattern.items()},
        lora_dropout=lora.dropout,
        target_modules=[TARGET_MODULES[t] for t in lora.targets],
        layers_to_transform=layers,
        layers_pattern="layers" if layers is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: nn.Module, lora: LoraOptions, *, cotrain_attention: bool, softmax_layers: Sequence[int] = ()) -> nn.Module:
    """Wraps ``model`` with LoRA on every decoder layer (linearized or kept as softmax, as the teacher baseline).

    With ``cotrain_attention`` the feature maps and γ train too; ``softmax_layers`` get ``lora.softmax_rank``.
    """
    peft_model = get_peft_model(model, peft_config(lora, None, softmax_layers))
    for p in attention_parameters(peft_model):
        p.requires_grad_(cotrain_attention)
    set_lora_compute(peft_model, lora.compute_dtype)
    return peft_model


class InputDtypeLinear(nn.Linear):
    """A LoRA factor whose product runs in its input's dtype: the weight (fp32, as the optimizer keeps it) is cast
    for each call, and its gradient flows back to the fp32 weight through the cast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def set_lora_compute(model: nn.Module, compute: str) -> int:
    """Sets where every LoRA layer of ``model`` computes its adapters (``lora.compute_dtype``).

    ``float32``: peft's way, the layer's input cast to the adapter's dtype. ``model``: peft's input cast is off and
    each factor is an :class:`InputDtypeLinear` sharing the same parameters, so names, state dicts and the
    optimizer's tensors do not change; on a GPU a plain adapted ``Linear`` runs as one autograd function
    (:class:`~lolsearch.trial.lora_linear.FusedLoraLinear`). Returns the number of factors changed."""
    in_input = compute == "model"
    want = InputDtypeLinear if in_input else nn.Linear
    changed = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        module.cast_input_dtype_enabled = not in_input
        fuse(module, in_input)
        for factors in (module.lora_A, module.lora_B):
            for name, lin in factors.items():
                if isinstance(lin, nn.Linear) and type(lin) is not want:
                    factors[name] = _factor_as(want, lin)
                    changed += 1
    return changed


def lora_compute_of(model: nn.Module) -> str | None:
    """How ``model``'s LoRA layers compute (``float32`` or ``model``, as :func:`set_lora_compute` set them); None
    without LoRA layers."""
    layer = next((m for m in model.modules() if isinstance(m, LoraLayer)), None)
    if layer is None:
        return None
    return "float32" if getattr(layer, "cast_input_dtype_enabled", True) else "model"


@contextmanager
def lora_compute(model: nn.Module, compute: str | None) -> Iterator[None]:
    """``model``'s LoRA layers compute as ``compute`` inside the block (None: unchanged), as before after it."""
    before = lora_compute_of(model)
    if compute is None or before is None:
        yield
        return
    set_lora_compute(model, compute)
    try:
        yield
    finally:
        set_lora_compute(model, before)


def _factor_as(cls: type[nn.Linear], lin: nn.Linear) -> nn.Linear:
    out = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
    out.weight, out.bias = lin.weight, lin.bias
    return out


def lm_loss(model: nn.Module, batch: dict, chunk_tokens: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over label tokens (labels −100 are masked).

    ``chunk_tokens``: the output projection and the loss run over that many positions at a time, and with grad
    each chunk's logits are recomputed in the backward pass instead of kept, so the ``[B·T, vocab]`` logits and
    their fp32 loss never exist at once (a 49K vocabulary at 8 × 1024 tokens: about 4 GiB). None: the whole batch at
    once, on a GPU by :func:`~lolsearch.models.fused.next_token_loss` (one kernel, no fp32 copy of the logits), else
    by the model's own loss. ``batch`` is unpadded (:func:`~lolsearch.trial.surgery.unmasked_causal`)."""
    causal = unwrap_peft(model)
    fused = chunk_tokens is None and _plain_lm_head(causal) and fused_loss_applies(causal.lm_head)
    with unmasked_causal(model, batch["input_ids"].shape[1]):
        if not (fused or chunk_tokens is not None and _plain_lm_head(causal)):
            return model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        hidden = causal.model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state  # [B, T, C]
    if fused:
        return next_token_loss(hidden, causal.lm_head, batch["labels"])
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = batch["labels"][:, 1:].reshape(-1)
    head = causal.lm_head
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk_tokens):
        part = (h[start:start + chunk_tokens], y[start:start + chunk_tokens], head.weight, head.bias)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, *part, use_reentrant=False, preserve_rng_state=False)
        else:
            total = total + _chunk_nll(*part)
    return total / (y != -100).sum()


def _chunk_nll(h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Summed next-token NLL of one chunk: ``h`` [N, C] hidden states, ``y`` [N] labels (−100 not scored)."""
    logits = torch.nn.functional.linear(h, weight, bias).float()
    return torch.nn.functional.cross_entropy(logits, y, ignore_index=-100, reduction="sum")


def _plain_lm_head(causal: nn.Module) -> bool:
    """Whether the logits are ``lm_head(last hidden state)`` and nothing more (Llama-family models); models that
    scale or soft-cap them keep their own loss."""
    cfg = getattr(causal, "config", None)
    return (isinstance(getattr(causal, "lm_head", None), nn.Linear) and hasattr(causal, "model")
            and getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None)


# Largest block of fp32 logits one validation pass materializes (512 MiB): a whole batch of a 49K-vocabulary model
# at 8 × 1024 tokens is 1.5 GiB, on top of a captured training step's memory pool.
VALIDATION_LOGITS_BYTES = 512 * 2**20


@torch.no_grad()
def validation_lm_loss(model: nn.Module, batches: Iterable[dict], logits_bytes: int = VALIDATION_LOGITS_BYTES,
                       forward: GraphedForward | None = None) -> float:
    """Mean over batches of each batch's mean next-token loss, the logits computed ``logits_bytes`` of fp32 at a
    time (:func:`lm_loss` with ``chunk_tokens``), read from the device once at the end. ``forward``: a stage's
    :func:`validation_forward` (replayed from a CUDA graph across the stage's validations) instead of a new one."""
    was_training = model.training
    model.eval()
    forward = forward or validation_forward(model, logits_bytes)
    total: torch.Tensor | float = 0.0
    n = 0
    for batch in batches:
        total = total + forward(batch["input_ids"], batch["labels"]).double()
        n += 1
    model.train(was_training)
    return float(total) / max(n, 1)


def validation_forward(model: nn.Module, logits_bytes: int = VALIDATION_LOGITS_BYTES,
                       graph: bool = False) -> GraphedForward:
    """``(input_ids, labels) -> loss`` of :func:`validation_lm_loss`, replayed from a CUDA graph when ``graph``."""
    chunk = max(1, logits_bytes // (4 * int(model.get_output_embeddings().weight.shape[0])))
    device = next(model.parameters()).device
    return GraphedForward("validation", lambda ids, labels: lm_loss(model, {"input_ids": ids, "labels": labels}, chunk),
                          device, graph)


def run_finetune(
    model: nn.Module,
    cfg: FinetuneConfig,
    train_batches: Iterator[dict],
    val_batches: Callable[[], Iterable[dict]],
    seq_len: int,
    report: Callable[[dict], None] | None = None,
    name: str = "finetune",
) -> StageResult:
    """Trains whatever in ``model`` requires grad (LoRA, and feature maps/γ when co-training)."""
    params = [p for p in model.parameters() if p.requires_grad]
    graph = cfg.graph_wanted(seq_len) and graph_unavailable(params, cfg.compile) is None
    val = validation_forward(model, graph=graph)  # one graph for all of the stage's validations
    model.train()
    try:
        with recomputed_features(model, cfg.recompute_features), checkpointed_layers(model, cfg.checkpoint_layers):
            return run_stage(
                name, params, lambda b: lm_loss(model, b, cfg.loss_chunk_tokens), train_batches, cfg, seq_len,
                eval_fn=lambda: validation_lm_loss(model, val_batches(), forward=val), report=report,
                compile_modules=compile_targets(model) if cfg.compile != "off" else (),
            )
    finally:
        val.close()
        model.eval()
