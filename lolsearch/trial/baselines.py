"""Teacher baselines shared by every trial of a sweep: ``ppl_teacher``, ``ppl_teacher_ft`` and the teacher's
passkey accuracy.

``ppl_teacher_ft`` is the softmax teacher given the same LoRA stage as the students (same data,
tokens, rank, optimizer, LoRA on every layer): in-domain LoRA lowers the teacher's perplexity too, so
``ppl / ppl_teacher_ft`` is the fair ratio. It is also measured at each ``eval.seq_lens`` length
(``ppl_teacher_ft_<len>``). Both are computed once per key and cached on disk (JSON, atomic, under a
file lock), so concurrent trials wait for the first one instead of repeating it. The key includes a
fingerprint of the code that computes them (this module and :mod:`.evaluate`), so a change there is
never served a stale number.

``kl_teacher_ft``: the LoRA tensors of that teacher are cached beside its numbers
(``teacher_ft-<key>.safetensors``, a few MB); a trial loads a second copy of the base model with them and
measures KL(teacher_ft ‖ student) on the test tokens. That costs one model copy of memory and one more
forward pass per test batch, instead of storing the teacher's full next-token distributions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import torch

from lolsearch.config import DataConfig, TrialConfig
from lolsearch.core.errors import ConfigError
from lolsearch.core.files import atomic_file, atomic_write_text, cache_path, fingerprint, locked
from lolsearch.data import packed_batches

log = logging.getLogger(__name__)


@cache
def code_fingerprint() -> str:
    """Hash of the source of the code that computes the baselines (this module and :mod:`.evaluate`)."""
    from lolsearch.trial import evaluate

    return fingerprint(Path(__file__).read_text(encoding="utf-8"), Path(evaluate.__file__).read_text(encoding="utf-8"))


def _key(cfg: TrialConfig, device: torch.device, with_finetune: bool) -> str:
    parts = {
        "code": code_fingerprint(),
        "model": cfg.model.model_dump(mode="json"),
        "data": cfg.data.model_dump(mode="json"),
        "eval": cfg.eval.model_dump(mode="json", include={"split", "tokens", "batch_size"}),
        "device": device.type,
    }
    if with_finetune:
        # softmax_rank applies to a student's softmax layers only: the teacher's LoRA does not depend on it
        parts["finetune"] = cfg.finetune.model_dump(mode="json", exclude={"train_feature_maps": True,
                                                                          "lora": {"softmax_rank"}})
        parts["seed"] = cfg.seed
        parts["seq_lens"] = list(cfg.eval.seq_lens)
    return fingerprint(json.dumps(parts, sort_keys=True))


def _value_path(name: str, key: str) -> Path:
    """Cache file of baseline ``name`` (``ppl_teacher``, ``ppl_teacher_ft``) under ``key``."""
    return cache_path("baselines", f"{name}-{key}.json")


def _cached(name: str, key: str, compute: Callable[[], float | dict]) -> dict:
    """``{name: value}`` (or the dict ``compute`` returns: floats, or lists of floats) from the cache, computed once
    under a lock."""
    path = _value_path(name, key)
    if not path.exists():
        with locked(path):
            if not path.exists():
                value = compute()
                atomic_write_text(path, json.dumps(value if isinstance(value, dict) else {name: value}))
    return {k: [float(x) for x in v] if isinstance(v, list) else float(v) for k, v in json.loads(path.read_text()).items()}


def teacher_metrics(
    cfg: TrialConfig,
    tokenizer,
    eval_batches: Callable[[], Iterable[dict]],
    device: torch.device,
    teacher_ppl: Callable[[], float],
) -> dict[str, float]:
    """``ppl_teacher`` (computed by ``teacher_ppl`` on a cache miss) and ``ppl_teacher_ft`` when the trial has
    a LoRA stage and asks for it."""
    out = _cached("ppl_teacher", _key(cfg, device, False), teacher_ppl)
    if cfg.finetune.enabled and cfg.eval.teacher_ft:
        key = _key(cfg, device, True)
        out.update(_cached("ppl_teacher_ft", key, lambda: _teacher_ft(cfg, tokenizer, eval_batches, device)))
    return out


def passkey_budget(cfg: TrialConfig) -> int:
    """Tokens per forward pass of the passkey prompts: as many as an evaluation batch holds."""
    return cfg.eval.batch_size * cfg.data.seq_len


def _passkey_key(cfg: TrialConfig, device: torch.device) -> str:
    from lolsearch.trial import passkey

    parts = {"code": fingerprint(Path(passkey.__file__).read_text(encoding="utf-8")),
             "model": cfg.model.model_dump(mode="json"), "passkey": cfg.eval.passkey.model_dump(mode="json"),
             "seed": cfg.seed, "max_tokens": passkey_budget(cfg), "device": device.type}
    return fingerprint(json.dumps(parts, sort_keys=True))


def teacher_passkey(cfg: TrialConfig, model: torch.nn.Module, tokenizer) -> dict[str, float | list[float]]:
    """``passkey_teacher_<len>`` (and ``_by_depth``): the original teacher's passkey accuracy, the same for every
    trial of a model, seed and ``eval.passkey`` setting, so computed once. ``model`` is the teacher, or a student
    (scored in :func:`teacher_mode`: softmax attention, adapters off)."""
    from lolsearch.trial.passkey import passkey_accuracy
    from lolsearch.trial.surgery import teacher_mode

    pk = cfg.eval.passkey

    def compute() -> dict:
        with teacher_mode(model):
            return passkey_accuracy(model, tokenizer, pk.lengths, pk.depths, pk.samples, cfg.seed,
                                    prefix="passkey_teacher", max_tokens=passkey_budget(cfg))

    return _cached("passkey_teacher", _passkey_key(cfg, next(model.parameters()).device), compute)


def teacher_ft_adapter(cfg: TrialConfig, device: torch.device) -> Path:
    """The cached LoRA tensors of the trial's ``teacher_ft`` baseline (after :func:`teacher_metrics` made them)."""
    return cache_path("baselines", f"teacher_ft-{_key(cfg, device, True)}.safetensors")


def teacher_ft_model(cfg: TrialConfig, device: torch.device) -> torch.nn.Module:
    """A fresh teacher with the cached LoRA of the teacher_ft baseline (the reference of ``kl_teacher_ft``)."""
    from lolsearch.trial import cache
    from lolsearch.trial.finetune import add_lora
    from lolsearch.trial.record import load_adapter

    path = teacher_ft_adapter(cfg, device)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cached teacher_ft adapter (computed by an older version?)")
    teacher, _ = cache.teacher(cfg.model, device)  # this process's copy of the teacher: every trial needs one
    teacher = add_lora(teacher, cfg.finetune.lora, cotrain_attention=False)
    load_adapter(teacher, path)
    return teacher


def kl_teacher_ft(cfg: TrialConfig, student: torch.nn.Module, eval_batches: Callable[[], Iterable[dict]],
                  device: torch.device) -> float:
    """KL(teacher_ft ‖ student) per test token, in a pass of its own (a trial whose teacher_ft adapter was cached
    before its evaluation gets it from :func:`lolsearch.trial.eval_pass.trial_final_eval` instead)."""
    from lolsearch.trial.evaluate import kl_to_reference

    teacher = teacher_ft_model(cfg, device)
    try:
        return kl_to_reference(teacher, student, eval_batches(), cfg.eval.cuda_graph)
    finally:
        del teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()


def distinct_baselines(cfgs: Iterable[TrialConfig], device: torch.device, shared_by_all: bool = False) -> list[TrialConfig]:
    """One config per distinct teacher baseline among ``cfgs`` (what a sweep precomputes in parallel).

    ``shared_by_all``: return the one baseline every config needs, or nothing when they need more than one (a
    sampled space's plan is a guess past its first points, so only a baseline no searched key changes is sure)."""
    seen: dict[tuple, TrialConfig] = {}
    for cfg in cfgs:
        key = (_key(cfg, device, False), _key(cfg, device, True) if cfg.finetune.enabled and cfg.eval.teacher_ft else None,
               _passkey_key(cfg, device) if cfg.eval.passkey is not None else None)
        seen.setdefault(key, cfg)
    return [] if shared_by_all and len(seen) > 1 else list(seen.values())


def baselines_cached(cfg: TrialConfig, gpu: float) -> bool:
    """Whether every teacher baseline ``cfg``'s trial reads (with the teacher_ft adapter) is already in the cache,
    for a trial that Ray gives ``gpu`` of a GPU (device "auto" is CUDA exactly when that share is above 0)."""
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if gpu > 0 else "cpu"))
    files = [_value_path("ppl_teacher", _key(cfg, device, False))]
    if cfg.finetune.enabled and cfg.eval.teacher_ft:
        files += [_value_path("ppl_teacher_ft", _key(cfg, device, True)), teacher_ft_adapter(cfg, device)]
    if cfg.eval.passkey is not None:
        files.append(_value_path("passkey_teacher", _passkey_key(cfg, device)))
    return all(path.is_file() for path in files)


def eval_stream(cfg: TrialConfig, data: DataConfig, tokenizer, device: torch.device) -> Iterable[dict]:
    """One pass over ``eval.tokens`` tokens of ``data``'s ``eval.split`` in fixed order, prompts masked; the batch
    shrinks as the sequence grows so a batch holds about as many tokens as at the training length."""
    batch = max(1, cfg.eval.batch_size * cfg.data.seq_len // data.seq_len)
    return packed_batches(data, tokenizer, cfg.eval.split, batch, 0, shuffle=False, num_tokens=cfg.eval.tokens,
                          mask_prompt=True, device=device)


def ensure_baselines(cfg: TrialConfig) -> dict[str, float]:
    """Computes (or reads) the teacher baselines of ``cfg`` on its device (and the teacher's passkey accuracy);
    safe to run beside trials. Returns the perplexity baselines."""
    from lolsearch.models import load_model, resolve_device
    from lolsearch.trial.evaluate import perplexity

    device = resolve_device(cfg.device)
    teacher, tok = load_model(cfg.model, device)

    def eval_batches() -> Iterable[dict]:
        return packed_batches(cfg.data, tok, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, mask_prompt=True, device=device)

    out = teacher_metrics(cfg, tok, eval_batches, device, lambda: perplexity(teacher, eval_batches(), cfg.eval.cuda_graph))
    if cfg.eval.passkey is not None:
        teacher_passkey(cfg, teacher, tok)
    return out


def _teacher_ft(cfg: TrialConfig, tokenizer, eval_batches: Callable[[], Iterable[dict]], device: torch.device) -> dict[str, float]:
    """Perplexity of a fresh teacher after the trial's LoRA stage (all layers, softmax attention), also at each
    ``eval.seq_lens`` length; its LoRA tensors are saved for :func:`kl_teacher_ft`."""
    from safetensors.torch import save_file

    from lolsearch.models import load_model
    from lolsearch.trial.evaluate import perplexity
    from lolsearch.trial.finetune import add_lora, run_finetune
    from lolsearch.trial.record import adapter_state

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
    values = {"ppl_teacher_ft": perplexity(teacher, eval_batches(), cfg.eval.cuda_graph)}
    for n in cfg.eval.seq_lens:
        data = cfg.data.model_copy(update={"seq_len": n})
        try:
            values[f"ppl_teacher_ft_{n}"] = perplexity(teacher, eval_stream(cfg, data, tokenizer, device),
                                                       cfg.eval.cuda_graph)
        except ConfigError:  # the split is shorter than n: the trial records eval_error_<n> for it
            continue
    with atomic_file(teacher_ft_adapter(cfg, device)) as tmp:
        save_file(adapter_state(teacher), str(tmp))
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return values
