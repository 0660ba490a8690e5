"""Stage 2, low-rank linearizing (LoLCATs §3.1, method.md §1.3): LoRA through peft, next-token loss.

Feature maps and γ stay frozen, unless co-training is asked (the paper's no-attention-transfer
baseline trains them with the LoRA weights). Every decoder layer gets LoRA, those kept as softmax too: the
teacher baseline (``ppl_teacher_ft``) gets the same, so designs that keep softmax layers compare fairly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lolsearch.config import FinetuneConfig, LoraOptions
from lolsearch.trial.surgery import attention_parameters, compile_targets
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
    return peft_model


def lm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over label tokens (labels −100 are masked)."""
    return model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss


# Largest [rows, T, vocab] block of fp32 logits one validation forward materializes (512 MiB): a whole batch of a
# 49K-vocabulary model at T 1024 is 1.5 GiB, on top of a captured training step's memory pool.
VALIDATION_LOGITS_BYTES = 512 * 2**20


@torch.no_grad()
def validation_lm_loss(model: nn.Module, batches: Iterable[dict], logits_bytes: int = VALIDATION_LOGITS_BYTES) -> float:
    """Mean over batches of each batch's mean next-token loss. A batch runs in groups of rows whose fp32 logits
    fit ``logits_bytes``; the groups' losses are weighted by their label tokens, so the batch mean is the one a
    single forward gives."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        ids, labels = batch["input_ids"], batch["labels"]
        rows, seq = ids.shape
        step = max(1, min(rows, logits_bytes // max(1, seq * _vocab_size(model) * 4)))
        loss_sum, tokens = 0.0, 0
        for start in range(0, rows, step):
            part = labels[start:start + step]
            count = int((part[:, 1:] != -100).sum())
            if count:
                loss = lm_loss(model, {"input_ids": ids[start:start + step], "labels": part})
                loss_sum, tokens = loss_sum + loss.item() * count, tokens + count
        total += loss_sum / max(tokens, 1)
        n += 1
    model.train(was_training)
    return total / max(n, 1)


def _vocab_size(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


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
    model.train()
    try:
        return run_stage(
            name, params, lambda b: lm_loss(model, b), train_batches, cfg, seq_len,
            eval_fn=lambda: validation_lm_loss(model, val_batches()), report=report,
            compile_modules=compile_targets(model) if cfg.compile != "off" else (),
        )
    finally:
        model.eval()
