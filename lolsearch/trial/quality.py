"""Quality evaluations beyond the test perplexity at the training length (that and the per-sequence test NLL come
from :mod:`lolsearch.trial.eval_pass`): perplexity at other context lengths (``eval.seq_lens``) and on other
datasets (``eval.datasets``), passkey retrieval (``eval.passkey``), and the per-layer diagnostics (``eval.diagnostics``).

Every test stream is scored with prompt tokens masked, as the LoRA stage trains (labels −100 on the prompt of
prompt/response data; plain text has no prompt, so nothing changes there). Teacher numbers come from the same model
under :func:`lolsearch.trial.surgery.teacher_mode` (softmax attention, adapters off), so no second copy is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lolsearch.config import TrialConfig
from lolsearch.core.errors import ConfigError
from lolsearch.trial import baselines, diagnostics, evaluate, passkey
from lolsearch.trial.surgery import teacher_mode


def _student_and_teacher(model: nn.Module, batches, suffix: str, graph: evaluate.Graph) -> dict[str, float | str]:
    """``ppl_<suffix>``, ``ppl_teacher_<suffix>``, ``ppl_ratio_<suffix>``; a stream that cannot be built (a split
    shorter than the length) is recorded as ``eval_error_<suffix>`` and the trial goes on."""
    try:
        out: dict[str, float | str] = {f"ppl_{suffix}": evaluate.perplexity(model, batches(), graph)}
        with teacher_mode(model):
            out[f"ppl_teacher_{suffix}"] = evaluate.perplexity(model, batches(), graph)
    except ConfigError as err:
        return {f"eval_error_{suffix}": str(err).splitlines()[0][:300]}
    out[f"ppl_ratio_{suffix}"] = out[f"ppl_{suffix}"] / out[f"ppl_teacher_{suffix}"]
    return out


def other_lengths(cfg: TrialConfig, model: nn.Module, tokenizer, device: torch.device) -> dict[str, float | str]:
    """``ppl_<len>``, ``ppl_teacher_<len>`` and ``ppl_ratio_<len>`` at each of ``eval.seq_lens``."""
    out: dict[str, float | str] = {}
    for n in cfg.eval.seq_lens:
        data = cfg.data.model_copy(update={"seq_len": n})
        out.update(_student_and_teacher(model, lambda d=data: baselines.eval_stream(cfg, d, tokenizer, device), str(n),
                                        cfg.eval.cuda_graph))
    return out


def other_datasets(cfg: TrialConfig, model: nn.Module, tokenizer, device: torch.device) -> dict[str, float | str]:
    """``ppl_<name>``, ``ppl_teacher_<name>`` and ``ppl_ratio_<name>`` for each of ``eval.datasets``."""
    out: dict[str, float | str] = {}
    for name, data in cfg.eval.datasets.items():
        out.update(_student_and_teacher(model, lambda d=data: baselines.eval_stream(cfg, d, tokenizer, device), name,
                                        cfg.eval.cuda_graph))
    return out


def passkey_metrics(cfg: TrialConfig, model: nn.Module, tokenizer) -> dict[str, float | list[float]]:
    """Passkey accuracy per length for the student (``passkey_<len>``) and the teacher (``passkey_teacher_<len>``,
    computed once per model and setting: :func:`baselines.teacher_passkey`), on the same prompts, in batches of the
    evaluation's tokens per batch; empty when ``eval.passkey`` is off."""
    pk = cfg.eval.passkey
    if pk is None:
        return {}
    out = passkey.passkey_accuracy(model, tokenizer, pk.lengths, pk.depths, pk.samples, cfg.seed,
                                   max_tokens=baselines.passkey_budget(cfg))
    out.update(baselines.teacher_passkey(cfg, model, tokenizer))
    return out


def window_shares(cfg: TrialConfig, model: nn.Module, batches: Iterable[dict],
                  when: str) -> dict[str, float | list[float]]:
    """``window_share_<when>by_layer`` and its mean over layers ``window_share[_init]`` (``when``: ``"init_"`` after
    the swap, ``""`` after attention transfer) and then ``gamma_by_layer``; empty when ``eval.diagnostics`` is off
    or nothing is linearized."""
    if not cfg.eval.diagnostics:
        return {}
    shares = diagnostics.window_share_by_layer(model, batches)
    if not shares:
        return {}
    out: dict[str, float | list[float]] = {f"window_share_{when}by_layer": shares,
                                           f"window_share{'_init' if when else ''}": sum(shares) / len(shares)}
    if not when:
        out["gamma_by_layer"] = diagnostics.gamma_by_layer(model)
    return out
