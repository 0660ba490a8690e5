"""Teacher baselines shared by every trial of a sweep: ``ppl_teacher`` and ``ppl_teacher_ft``.

``ppl_teacher_ft`` is the softmax teacher given the same LoRA stage as the students (same data,
tokens, rank, optimizer): in-domain LoRA lowers the teacher's perplexity too, so
``ppl / ppl_teacher_ft`` is the fair ratio. Both are computed once per key and cached on disk
(JSON, atomic, under a file lock), so concurrent trials wait for the first one instead of
repeating it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

import torch

from lolsearch.config import TrialConfig
from lolsearch.core.files import atomic_write_text, cache_path, fingerprint, locked

log = logging.getLogger(__name__)


def _key(cfg: TrialConfig, device: torch.device, with_finetune: bool) -> str:
    parts = {
        "model": cfg.model.model_dump(mode="json"),
        "data": cfg.data.model_dump(mode="json"),
        "eval": cfg.eval.model_dump(mode="json", include={"split", "tokens", "batch_size"}),
        "device": device.type,
    }
    if with_finetune:
        parts["finetune"] = cfg.finetune.model_dump(mode="json", exclude={"train_feature_maps"})
        parts["seed"] = cfg.seed
    return fingerprint(json.dumps(parts, sort_keys=True))


def _cached(name: str, key: str, compute: Callable[[], float]) -> float:
    path = cache_path("baselines", f"{name}-{key}.json")
    if not path.exists():
        with locked(path):
            if not path.exists():
                value = compute()
                atomic_write_text(path, json.dumps({name: value}))
    return float(json.loads(path.read_text())[name])


def teacher_metrics(
    cfg: TrialConfig,
    tokenizer,
    eval_batches: Callable[[], Iterable[dict]],
    device: torch.device,
    teacher_ppl: Callable[[], float],
) -> dict[str, float]:
    """``ppl_teacher`` (computed by ``teacher_ppl`` on a cache miss) and ``ppl_teacher_ft`` when the trial has
    a LoRA stage and asks for it."""
    out = {"ppl_teacher": _cached("ppl_teacher", _key(cfg, device, False), teacher_ppl)}
    if cfg.finetune.enabled and cfg.eval.teacher_ft:
        out["ppl_teacher_ft"] = _cached(
            "ppl_teacher_ft", _key(cfg, device, True), lambda: _teacher_ft(cfg, tokenizer, eval_batches, device)
        )
    return out


def distinct_baselines(cfgs: Iterable[TrialConfig], device: torch.device) -> list[TrialConfig]:
    """One config per distinct teacher baseline among ``cfgs`` (what a sweep precomputes in parallel)."""
    seen, out = set(), []
    for cfg in cfgs:
        key = (_key(cfg, device, False), _key(cfg, device, True) if cfg.finetune.enabled and cfg.eval.teacher_ft else None)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def ensure_baselines(cfg: TrialConfig) -> dict[str, float]:
    """Computes (or reads) the teacher baselines of ``cfg`` on its device; safe to run beside trials."""
    from lolsearch.data import packed_batches
    from lolsearch.models import load_model, resolve_device
    from lolsearch.trial.evaluate import perplexity

    device = resolve_device(cfg.device)
    teacher, tok = load_model(cfg.model, device)

    def eval_batches() -> Iterable[dict]:
        return packed_batches(cfg.data, tok, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, device=device)

    return teacher_metrics(cfg, tok, eval_batches, device, lambda: perplexity(teacher, eval_batches()))


def _teacher_ft(cfg: TrialConfig, tokenizer, eval_batches: Callable[[], Iterable[dict]], device: torch.device) -> float:
    """Perplexity of a fresh teacher after the trial's LoRA stage (all layers, softmax attention)."""
    from lolsearch.data import packed_batches
    from lolsearch.models import load_model
    from lolsearch.trial.evaluate import perplexity
    from lolsearch.trial.finetune import add_lora, run_finetune

    log.info("computing ppl_teacher_ft (LoRA stage on the softmax teacher, shared by the sweep)")
    teacher, _ = load_model(cfg.model, device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher = add_lora(teacher, cfg.finetune.lora, cotrain_attention=False)
    ft = cfg.finetune
    train = packed_batches(cfg.data, tokenizer, "train", ft.batch_size, cfg.data_seed("finetune"), mask_prompt=True,
                           device=device)
    val_tokens = ft.eval_batches * ft.batch_size * cfg.data.seq_len
    run_finetune(
        teacher, ft, train,
        lambda: packed_batches(cfg.data, tokenizer, "val", ft.batch_size, 0, shuffle=False, num_tokens=val_tokens,
                               mask_prompt=True, device=device),
        cfg.data.seq_len, name="teacher_finetune",
    )
    value = perplexity(teacher, eval_batches())
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return value
