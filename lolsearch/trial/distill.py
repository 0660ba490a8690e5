"""Stage 1, attention transfer (LoLCATs §3.1, method.md §1.2).

Every linearized layer runs teacher-forced: it computes the teacher's softmax output and the
student's hybrid output per head (before o_proj) and passes the teacher's output on, so layers
train independently. Loss = mse_factor · Σ_l w_l·MSE_l / L + xent_factor · Σ_l w_l·XENT_l / L,
with w from the layer-weight schedule (mean 1). Only feature maps and γ train.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from lolsearch.attention.layer import DistillRecorder
from lolsearch.config import DistillConfig
from lolsearch.trial.forward_graph import GraphedForward
from lolsearch.trial.layer_weights import LAYER_WEIGHTS, layer_weights
from lolsearch.trial.step_graph import graph_unavailable
from lolsearch.trial.surgery import (
    attention_parameters,
    compile_targets,
    decoder_of,
    distill_mode,
    linearized_layers,
    recomputed_features,
    unmasked_causal,
)
from lolsearch.trial.train import StageResult, run_stage

log = logging.getLogger(__name__)


def layer_losses(model: nn.Module, batch: dict, recorder: DistillRecorder) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """Runs one teacher-forced forward; returns layer ids and their MSE (and XENT) losses."""
    recorder.clear()
    with distill_mode(model, recorder), unmasked_causal(model, batch["input_ids"].shape[1]):
        decoder_of(model)(input_ids=batch["input_ids"], use_cache=False)
    ids = sorted(recorder.mse)
    return ids, [recorder.mse[i] for i in ids], [recorder.xent_loss[i] for i in ids if i in recorder.xent_loss]


def distill_loss(mse: list[torch.Tensor], xent: list[torch.Tensor], weights: list[float], cfg: DistillConfig) -> torch.Tensor:
    """Weighted attention-transfer loss (weights have mean 1, so uniform = LoLCATs' mean over layers)."""
    n = len(mse)
    loss = cfg.mse_factor * sum(w * m for w, m in zip(weights, mse, strict=True)) / n
    if cfg.xent_factor > 0 and xent:
        loss = loss + cfg.xent_factor * sum(w * x for w, x in zip(weights, xent, strict=True)) / n
    return loss


def run_distill(
    model: nn.Module,
    cfg: DistillConfig,
    train_batches: Iterator[dict],
    val_batches: Callable[[], Iterable[dict]],
    seq_len: int,
    report: Callable[[dict], None] | None = None,
) -> tuple[StageResult, list[float]]:
    """Trains feature maps and γ to mimic the teacher's attention. Returns the stage result and layer weights.

    Raises:
        RuntimeError: if anything besides feature maps and γ would receive gradients.
    """
    params = attention_parameters(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if trainable != {id(p) for p in params}:
        raise RuntimeError("attention transfer must train only feature maps and γ; other parameters require grad")
    recorder = DistillRecorder(xent=cfg.xent_factor > 0)
    n_layers = len(list(linearized_layers(model)))
    initial = None
    if LAYER_WEIGHTS.meta(cfg.layer_weights.kind, "needs_initial_mse", False):
        initial = initial_layer_mse(model, val_batches(), recorder)
    weights = layer_weights(cfg.layer_weights.kind, cfg.layer_weights.params, n_layers, initial)
    log.info("attention transfer over %d layers, weights %s", n_layers, [round(w, 3) for w in weights])

    def loss_fn(batch: dict) -> torch.Tensor:
        _, mse, xent = layer_losses(model, batch, recorder)
        return distill_loss(mse, xent, weights, cfg)

    graph = cfg.graph_wanted(seq_len) and graph_unavailable(params, cfg.compile) is None
    val = GraphedForward("distill validation", lambda ids: loss_fn({"input_ids": ids}), next(model.parameters()).device,
                         graph)

    def eval_fn() -> float:
        return validation_loss(model, val_batches(), val)

    model.train()
    try:
        with recomputed_features(model, cfg.recompute_features):
            result = run_stage("distill", params, loss_fn, train_batches, cfg, seq_len, eval_fn=eval_fn, report=report,
                               compile_modules=compile_targets(model) if cfg.compile != "off" else ())
    finally:
        val.close()
        model.eval()
    return result, weights


@torch.no_grad()
def initial_layer_mse(model: nn.Module, batches: Iterable[dict], recorder: DistillRecorder) -> list[float]:
    """Per-layer MSE before training (for the ``inverse_initial_mse`` schedule)."""
    sums, n = None, 0
    for batch in batches:
        _, mse, _ = layer_losses(model, batch, recorder)
        vals = [m.item() for m in mse]
        sums = vals if sums is None else [a + b for a, b in zip(sums, vals, strict=True)]
        n += 1
    if sums is None:
        raise RuntimeError("no validation batches to measure the initial MSE")
    return [s / n for s in sums]


@torch.no_grad()
def validation_loss(model: nn.Module, batches: Iterable[dict], forward: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mean over ``batches`` of ``forward(input_ids)`` (the stage's loss of a batch, here without grad) in eval
    mode, read from the device once at the end."""
    was_training = model.training
    model.eval()
    total: torch.Tensor | float = 0.0
    n = 0
    for batch in batches:
        total = total + forward(batch["input_ids"]).double()
        n += 1
    model.train(was_training)
    return float(total) / max(n, 1)
