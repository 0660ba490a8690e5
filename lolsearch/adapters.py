"""Save and restore what a trial trained: feature maps, γ and LoRA weights (safetensors).

A trial directory holds ``config.yaml`` (the resolved TrialConfig) and ``adapter.safetensors``;
:func:`load_trial_model` rebuilds teacher → surgery → LoRA and loads the tensors, so a linearized
model is reproduced exactly from the base model plus a few MB.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from lolsearch.config import TrialConfig, load_yaml, parse_trial_config
from lolsearch.errors import ConfigError

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "config.yaml"
_TRAINED = ("feature_map_q.", "feature_map_k.", "window_factors", "lora_")


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Feature-map weights, γ and LoRA tensors of ``model`` (CPU, contiguous)."""
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if any(tag in k for tag in _TRAINED)
    }


def save_adapter(model: nn.Module, path: Path) -> int:
    """Writes the adapter atomically; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(adapter_state(model), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def load_adapter(model: nn.Module, path: Path) -> None:
    """Loads an adapter into a model built with the same config; every tensor must find its place."""
    tensors = load_file(str(path))
    own = model.state_dict()
    missing = [k for k in own if any(tag in k for tag in _TRAINED) and k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{path}: adapter does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.to(own[k].dtype))


def write_config(cfg: TrialConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    os.replace(tmp, path)


def read_config(path: Path) -> TrialConfig:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError.single(str(path), "", "expected a mapping of TrialConfig fields")
    return parse_trial_config(data, str(path))


def build_student(cfg: TrialConfig, device: torch.device) -> tuple[nn.Module, object]:
    """Teacher -> surgery -> LoRA (when the config has a finetune stage), untrained."""
    from lolsearch.finetune import add_lora
    from lolsearch.models import load_model
    from lolsearch.surgery import linearize

    model, tokenizer = load_model(cfg.model, device)
    linearize(model, cfg.attention)
    if cfg.finetune.enabled:
        model = add_lora(model, cfg.finetune.lora, cotrain_attention=cfg.cotrain_feature_maps())
    return model, tokenizer


def load_trial_model(trial_dir: Path, device: torch.device) -> tuple[nn.Module, object, TrialConfig]:
    """The trained linearized model of a trial directory (config.yaml + adapter.safetensors)."""
    cfg = read_config(trial_dir / CONFIG_FILE)
    adapter = trial_dir / ADAPTER_FILE
    if not adapter.exists():
        raise FileNotFoundError(f"{adapter}: no adapter (did the trial finish?)")
    model, tokenizer = build_student(cfg, device)
    load_adapter(model, adapter)
    model.eval()
    return model, tokenizer, cfg
