"""``attention.softmax_rule``: choose the layers kept as softmax by a probe right after linearization.

The probe linearizes the model as the config says (without the rule), runs a few teacher-forced forwards
(nothing trains) and measures each linearized layer's attention-transfer MSE; the original attention modules
are then put back and the model is linearized again with the ``top_mse`` worst layers kept as softmax. The
probe's own feature-map initialization runs under a forked RNG, so the final model starts from the same
random state as a trial that named those layers in ``softmax_layers``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lolsearch.attention.layer import DistillRecorder
from lolsearch.config import AttentionConfig
from lolsearch.config.rules import top_layers
from lolsearch.trial.distill import layer_losses
from lolsearch.trial.surgery import SurgeryError, SurgeryReport, decoder_layers, linearize


@torch.no_grad()
def probe_mse(model: nn.Module, batches: Iterable[dict]) -> dict[int, float]:
    """Mean attention-transfer MSE per linearized layer index over ``batches`` (``input_ids`` ``[B,T]``)."""
    recorder = DistillRecorder(xent=False)
    sums: dict[int, float] = {}
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids, mse, _ = layer_losses(model, batch, recorder)
            for i, m in zip(ids, mse, strict=True):
                sums[i] = sums.get(i, 0.0) + m.item()
            n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise RuntimeError("the softmax-layer probe got no batches")
    return {i: s / n for i, s in sorted(sums.items())}


def linearize_by_rule(
    model: nn.Module, cfg: AttentionConfig, batches: Iterable[dict],
) -> tuple[SurgeryReport, list[int], dict[int, float]]:
    """Linearizes ``model`` keeping ``cfg.softmax_layers`` plus the rule's top-MSE layers as softmax.

    Returns the final surgery report, the layers the probe chose and the probe's MSE by layer index.

    Raises:
        SurgeryError: the rule would leave no layer to linearize (or ``linearize`` refuses the model).
    """
    rule = cfg.softmax_rule
    base = cfg.model_copy(update={"softmax_rule": None})
    if rule is None or rule.top_mse == 0:
        return linearize(model, base), [], {}
    layers = decoder_layers(model)
    originals = [layer.self_attn for layer in layers]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        first = linearize(model, base)
        if rule.top_mse >= len(first.replaced):
            for layer, attn in zip(layers, originals, strict=True):
                layer.self_attn = attn
            raise SurgeryError(f"attention.softmax_rule.top_mse {rule.top_mse} would keep every one of the "
                               f"{len(first.replaced)} linearized layers as softmax")
        mse = probe_mse(model, batches)
    for layer, attn in zip(layers, originals, strict=True):
        layer.self_attn = attn
    chosen = top_layers(mse, rule.top_mse)
    final = base.model_copy(update={"softmax_layers": tuple(sorted({*cfg.softmax_layers, *chosen}))})
    return linearize(model, final), chosen, mse
