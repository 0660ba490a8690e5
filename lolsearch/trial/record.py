"""The one owner of a trial folder's files: ``result.json`` (the record), ``config.yaml`` (the resolved
TrialConfig), ``adapter.safetensors`` (feature maps, γ and LoRA weights), ``seq_nll.json`` (per-sequence test
NLL) and ``log.txt``.

Everything else reads and writes a trial folder through these functions. Torch is imported only by the adapter
functions, so reports read records without it. :func:`load_trial_model` rebuilds teacher → surgery → LoRA and
loads the tensors, so a linearized model is reproduced exactly from the base model plus a few MB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from lolsearch.config import TrialConfig, load_yaml, parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.core.files import atomic_file, atomic_write_text, require_writable_dir

if TYPE_CHECKING:
    import torch
    from torch import nn

RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
ADAPTER_FILE = "adapter.safetensors"
LOG_FILE = "log.txt"
SEQ_NLL_FILE = "seq_nll.json"  # per test sequence: summed next-token NLL and scored tokens (paired bootstraps)
FINAL_STATUSES = ("ok", "failed", "pruned")
TRIAL_FILES = (RESULT_FILE, CONFIG_FILE, ADAPTER_FILE, LOG_FILE, SEQ_NLL_FILE)  # what one run leaves
_TRAINED = ("feature_map_q.", "feature_map_k.", "gamma_logit", "lora_")


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy scalars and arrays, torch tensors
        return x.tolist()
    return str(x)


def write_result(trial_dir: Path, record: dict[str, Any]) -> None:
    """Writes ``record`` as ``trial_dir/result.json`` atomically (NaN and inf kept as JSON extensions)."""
    atomic_write_text(Path(trial_dir) / RESULT_FILE, json.dumps(record, indent=1, default=_json_default, allow_nan=True))


def read_result(trial_dir: Path) -> dict[str, Any]:
    """The record of a trial folder, always a dict with ``trial_id`` and ``status``.

    A folder without ``result.json`` is ``running`` (its config from config.yaml when present); a file that is
    not a JSON object with a mapping of metrics is ``unreadable`` with the reason in ``error``.
    """
    trial_dir = Path(trial_dir)
    path = trial_dir / RESULT_FILE
    if not path.is_file():
        return {"trial_id": trial_dir.name, "status": "running", "config": _yaml_quietly(trial_dir / CONFIG_FILE)}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        return {"trial_id": trial_dir.name, "status": "unreadable", "error": f"{path}: {err}", "config": {}}
    problem = _shape_problem(record)
    if problem:
        return {"trial_id": trial_dir.name, "status": "unreadable", "error": f"{path}: {problem}", "config": {}}
    record.setdefault("trial_id", trial_dir.name)
    record.setdefault("status", "unknown")
    return record


def _shape_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("metrics", "config", "timing", "env", "curves"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"'{key}' is not a mapping"
    return None


def write_seq_nll(trial_dir: Path, nll_sum: list[float], tokens: list[int]) -> None:
    """Writes the per-sequence test NLL (``nll_sum[i]`` over ``tokens[i]`` scored tokens of test sequence i)."""
    if len(nll_sum) != len(tokens):
        raise ValueError(f"seq_nll: {len(nll_sum)} sums for {len(tokens)} token counts")
    text = json.dumps({"nll_sum": [float(x) for x in nll_sum], "tokens": [int(n) for n in tokens]})
    atomic_write_text(Path(trial_dir) / SEQ_NLL_FILE, text)


def read_seq_nll(trial_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(nll_sum [n_seq], tokens [n_seq])`` of a trial folder, or None when absent or malformed."""
    path = Path(trial_dir) / SEQ_NLL_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        nll, tok = np.asarray(data["nll_sum"], dtype=float), np.asarray(data["tokens"], dtype=float)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if nll.ndim != 1 or nll.shape != tok.shape or len(nll) == 0 or (tok <= 0).any() or not np.isfinite(nll).all():
        return None
    return nll, tok


def read_final(trial_dir: Path) -> dict[str, Any] | None:
    """The record when the trial has finished (ok, failed or pruned), else None."""
    record = read_result(trial_dir)
    return record if record.get("status") in FINAL_STATUSES else None


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished record under ``sweep_dir/trials/*``, sorted by trial id."""
    records = [read_final(p) for p in sorted(Path(sweep_dir).glob("trials/*")) if p.is_dir()]
    return [r for r in records if r is not None]


def static_record(trial_id: str, space: str | None, cfg: TrialConfig | None, raw: dict, status: str,
                  error: str | None, metrics: dict | None = None) -> dict[str, Any]:
    """A record for a trial that did not run to the end (pruned, invalid, crashed, stopped early)."""
    return {
        "trial_id": trial_id, "space": space, "config": cfg.model_dump(mode="json") if cfg is not None else raw,
        "status": status, "error": error, "metrics": metrics or {}, "curves": {}, "timing": {}, "env": {},
    }


def objective_values(record: dict[str, Any], metrics: list[str]) -> list[float] | None:
    """The objectives of an ok record when all are finite numbers, else None."""
    m = record.get("metrics") or {}
    values = [m.get(k) for k in metrics]
    if record.get("status") != "ok" or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _yaml_quietly(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def write_config(cfg: TrialConfig, trial_dir: Path) -> None:
    atomic_write_text(Path(trial_dir) / CONFIG_FILE, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def read_config(trial_dir: Path) -> TrialConfig:
    path = Path(trial_dir) / CONFIG_FILE
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError.single(str(path), "", "expected a mapping of TrialConfig fields")
    return parse_trial_config(data, str(path))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Feature-map weights, γ and LoRA tensors of ``model`` (CPU, contiguous)."""
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if any(tag in k for tag in _TRAINED)
    }


def save_adapter(model: nn.Module, trial_dir: Path) -> int:
    """Writes ``trial_dir/adapter.safetensors`` atomically; returns its size in bytes."""
    from safetensors.torch import save_file

    path = Path(trial_dir) / ADAPTER_FILE
    with atomic_file(path) as tmp:
        save_file(adapter_state(model), str(tmp))
    return path.stat().st_size


def load_adapter(model: nn.Module, path: Path) -> None:
    """Loads an adapter into a model built with the same config; every tensor must find its place, with its
    shape, and hold finite values. A broken file is a :class:`ConfigError` naming it (the CLI exits 2)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def bad(message: str) -> ConfigError:
        return ConfigError.single(str(path), "", message)

    try:
        loaded = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as err:
        raise bad(f"not a readable safetensors file ({str(err).splitlines()[0][:200]})") from None
    # adapters saved before γ's logit was named gamma_logit call it window_factors
    tensors = {k.replace("window_factors", "gamma_logit"): v for k, v in loaded.items()}
    own = model.state_dict()
    missing = [k for k in own if any(tag in k for tag in _TRAINED) and k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        parts = [f"{len(names)} {what}, e.g. {names[0]}" for what, names in (("missing", missing), ("unexpected", unexpected))
                 if names]
        raise bad(f"adapter does not match the model of config.yaml ({'; '.join(parts)})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise bad(f"tensor '{k}' has shape {list(v.shape)}, the model needs {list(own[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise bad(f"tensor '{k}' holds NaN or inf values (a diverged trial?)")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.to(own[k].dtype))


def claim_trial_dir(trial_dir: Path, overwrite: bool = False) -> None:
    """Readies ``trial_dir`` for a new run (``lolsearch run --out``): a file or unwritable place is refused, and
    so is a folder that already holds a trial (a second run would mix its files with the first one's) unless
    ``overwrite``, which removes that trial's files first. Raises :class:`ConfigError` naming the folder."""
    d = Path(trial_dir)
    require_writable_dir(d)
    held = [name for name in TRIAL_FILES if (d / name).exists()]
    if not held:
        return
    if not overwrite:
        tid = read_result(d).get("trial_id") if (d / RESULT_FILE).is_file() else None
        raise ConfigError.single(str(d), "", f"already holds {f'trial {tid}' if tid else 'a trial'} ({', '.join(held)}); "
                                 "pass --overwrite to replace it, or choose another --out")
    for name in held:
        (d / name).unlink()


def build_student(cfg: TrialConfig, device: torch.device) -> tuple[nn.Module, object]:
    """Teacher -> surgery -> LoRA (when the config has a finetune stage), untrained; a ``softmax_rule`` config
    must be resolved first (:func:`resolved_config`)."""
    from lolsearch.models import load_model
    from lolsearch.trial.finetune import add_lora
    from lolsearch.trial.surgery import linearize

    model, tokenizer = load_model(cfg.model, device)
    report = linearize(model, cfg.attention)
    if cfg.finetune.enabled:
        model = add_lora(model, cfg.finetune.lora, cotrain_attention=cfg.cotrain_feature_maps(),
                         softmax_layers=report.kept_softmax)
    return model, tokenizer


def resolved_config(cfg: TrialConfig, trial_dir: Path) -> TrialConfig:
    """``cfg`` with an ``attention.softmax_rule`` replaced by the layers its probe chose (the result's
    ``softmax_layers``): the config that rebuilds the trained model without a probe. Other configs unchanged."""
    rule = cfg.attention.softmax_rule
    if rule is None or rule.top_mse == 0:
        return cfg
    kept = read_result(trial_dir).get("metrics", {}).get("softmax_layers")
    if kept is None:
        raise ConfigError.single(str(trial_dir), "", "attention.softmax_rule but no softmax_layers in the result: "
                                 "only a finished trial can be rebuilt")
    attention = cfg.attention.model_copy(update={"softmax_layers": tuple(kept), "softmax_rule": None})
    return cfg.model_copy(update={"attention": attention})


def load_trial_model(trial_dir: Path, device: torch.device) -> tuple[nn.Module, object, TrialConfig]:
    """The trained linearized model of a trial directory (config.yaml + adapter.safetensors)."""
    cfg = read_config(trial_dir)
    adapter = Path(trial_dir) / ADAPTER_FILE
    if not adapter.is_file():
        status = read_result(trial_dir).get("status")
        raise ConfigError.single(str(trial_dir), "", f"no {ADAPTER_FILE} (trial status: {status}); only a finished "
                                 "trial can be loaded")
    model, tokenizer = build_student(resolved_config(cfg, trial_dir), device)
    load_adapter(model, adapter)
    model.eval()
    return model, tokenizer, cfg
