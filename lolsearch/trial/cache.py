"""Per-process caches that take the fixed cost out of trials run one after another in one worker (a sweep's
Ray actors are reused): the teacher's weights and the efficiency measurement of a design's shape.

- :func:`teacher`: the first call loads the teacher; later calls with the same model config and device get a
  copy of a pristine instance kept on the device (a device-to-device copy instead of a load). Only teachers up
  to :data:`TEACHER_CACHE_BYTES` are kept, since the pristine copy costs their size in device memory.
- :func:`efficiency`: the measured prefill/decode speed, peak memory and cache size depend on the model's
  architecture (module tree, shapes, dtype, device), not on its trained values; one measurement per shape. It is
  kept in memory and in the cache folder (``<cache>/efficiency/<key>.json``, the key also covering the measuring
  code), so the sweep's other workers, and a resumed sweep, reuse it: replicates of a design run on whichever
  worker is free, rarely on the one that measured it.

:func:`clear` empties both, the efficiency files included (tests, and measuring the cost without them).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lolsearch.config import EfficiencyConfig, ModelConfig
from lolsearch.core.files import atomic_write_text, cache_path, cache_root_path, fingerprint, locked
from lolsearch.models import ModelAndTokenizer, load_model, resolve_device

log = logging.getLogger(__name__)

TEACHER_CACHE_BYTES = 4 * 2**30
_TEACHERS: dict[tuple[str, str], ModelAndTokenizer] = {}
_EFFICIENCY: dict[str, dict] = {}


def clear() -> None:
    """Forgets the cached teachers and efficiency measurements (in memory and the efficiency files)."""
    _TEACHERS.clear()
    _EFFICIENCY.clear()
    shutil.rmtree(cache_root_path() / "efficiency", ignore_errors=True)


def teacher(cfg: ModelConfig, device: str | torch.device) -> ModelAndTokenizer:
    """``load_model(cfg, device)``, from a pristine copy kept by this process when one exists.

    The returned model is the caller's own (trials modify it in place: surgery, LoRA); the tokenizer is shared.
    """
    dev = resolve_device(device)
    key = (cfg.model_dump_json(), str(dev))
    if key in _TEACHERS:
        pristine, tok = _TEACHERS[key]
        return copy.deepcopy(pristine), tok
    model, tok = load_model(cfg, dev)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size <= TEACHER_CACHE_BYTES:
        _TEACHERS.clear()  # one teacher per process: a sweep has one, and each copy costs device memory
        _TEACHERS[key] = (copy.deepcopy(model), tok)
    return model, tok


def shape_key(model: nn.Module, cfg: EfficiencyConfig, device: str | torch.device, vocab_size: int) -> str:
    """What the measured speed depends on: every module's type and plain settings (window, layout, backend,
    chunk size, ...), every parameter's name, shape and dtype, the measurement's settings, the device and the
    torch version. Not the parameters' values."""
    dev = torch.device(device)
    parts = [cfg.model_dump_json(), torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
             str(vocab_size), torch.__version__]
    for name, m in model.named_modules():
        plain = {k: v for k, v in vars(m).items() if isinstance(v, (int, float, str, bool)) and k != "training"}
        parts.append(f"{name}:{type(m).__name__}:{sorted(plain.items())}")
    parts += [f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in model.named_parameters()]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def efficiency(model: nn.Module, cfg: EfficiencyConfig, device: str | torch.device, vocab_size: int,
               measure: Callable[..., dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """``measure(model, cfg, device, vocab_size)``, once per :func:`shape_key` and measuring code, in memory and
    in the cache folder; returns (metrics, from cache). Workers wanting the same key wait for the one measuring."""
    key = fingerprint(shape_key(model, cfg, device, vocab_size), _source(measure), length=40)
    if key in _EFFICIENCY:
        return dict(_EFFICIENCY[key]), True
    path = cache_path("efficiency", f"{key}.json")
    with locked(path):
        if path.exists():
            _EFFICIENCY[key] = json.loads(path.read_text())
            return dict(_EFFICIENCY[key]), True
        out = measure(model, cfg, device, vocab_size)
        try:
            atomic_write_text(path, json.dumps(out))
        except TypeError:  # a value JSON cannot hold: this process keeps it in memory only
            log.warning("efficiency measurement not written to %s: not JSON", path)
    _EFFICIENCY[key] = dict(out)
    return out, False


def _source(fn: Callable[..., Any]) -> str:
    """The text of the file defining ``fn`` (a measurement changes when its code does), else its name."""
    try:
        return Path(inspect.getsourcefile(fn) or "").read_text(encoding="utf-8")
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", repr(fn))
