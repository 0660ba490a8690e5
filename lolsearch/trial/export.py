"""Trained designs as loadable models: :func:`load` (a trial folder or an export folder) and
:func:`export_trial` (a self-contained folder).

An export folder holds::

    config.json                   the teacher's HF config with model_type/architectures replaced and a
                                  ``lolsearch`` section (the original config, how LoRA is stored, dtype)
    model.safetensors             the teacher's weights (LoRA merged in with ``merge_lora``), HF names
    linear_attention.safetensors  feature maps and γ of every linearized layer
    adapter_config.json           unmerged LoRA in peft's own format (absent when merged or without LoRA)
    adapter_model.safetensors
    tokenizer files, generation_config.json, trial_config.yaml (the resolved TrialConfig), README.md

``config.json`` names a model type transformers does not know, so a plain
``AutoModelForCausalLM.from_pretrained(DIR)`` refuses the folder (naming ``lolsearch.load``) instead of
silently running it as softmax attention.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import yaml
from torch import nn

from lolsearch.attention.layer import LinearizedAttention
from lolsearch.config import TrialConfig, load_yaml, parse_trial_config
from lolsearch.core.files import atomic_dir, atomic_write_text
from lolsearch.models import resolve_device, resolve_dtype
from lolsearch.trial.record import CONFIG_FILE, load_trial_model, resolved_config
from lolsearch.trial.surgery import linearize

log = logging.getLogger(__name__)

FORMAT = 1
MODEL_TYPE = "lolsearch-linearized (load it with lolsearch.load(path); plain transformers would run softmax attention)"
ATTENTION_FILE = "linear_attention.safetensors"
TRIAL_CONFIG_FILE = "trial_config.yaml"
PEFT_CONFIG_FILE = "adapter_config.json"
_TEACHER_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return resolve_dtype(str(dtype).removeprefix("torch."))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`export_trial`."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "lolsearch" in json.loads(cfg.read_text(encoding="utf-8"))
    except ValueError:
        return False


def load(path: str | Path, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None) -> tuple[nn.Module, object]:
    """The trained linearized model and its tokenizer from a trial folder or an export folder.

    The model has the linearized attention, feature maps, γ and LoRA applied, is in eval mode, and
    ``model.generate(...)`` runs with the constant-size :class:`~lolsearch.attention.cache.LinearizedCache`.
    ``device`` defaults to CUDA when available; ``dtype`` (e.g. ``"bfloat16"``) casts the whole model.

    Raises:
        ConfigError: ``path`` is neither an export folder nor a readable trial folder (names the file).
    """
    path = Path(path).expanduser()
    dev = resolve_device("auto" if device is None else device)
    if is_export(path):
        return _load_export(path, dev, _dtype(dtype))
    model, tok, _ = load_trial_model(path, dev)  # ConfigError naming the file when it is not a trial folder
    if dtype is not None:
        model.to(_dtype(dtype))
    return model, tok


def load_tokenizer(path: str | Path) -> object:
    """The tokenizer of a trial folder or an export folder (loads no weights for an export)."""
    path = Path(path).expanduser()
    if is_export(path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), config=_hf_config(path)[0], local_files_only=True)
    from lolsearch.models import load_model

    cfg = parse_trial_config(load_yaml(path / CONFIG_FILE), str(path / CONFIG_FILE))
    return load_model(cfg.model, "cpu")[1]  # the toy and GGUF sources build their tokenizer with the model


def export_trial(trial_dir: str | Path, out: str | Path, *, merge_lora: bool = False,
                 dtype: str | torch.dtype | None = None) -> Path:
    """Writes the trained model of ``trial_dir`` as a self-contained folder ``out`` (see the module docstring).

    ``merge_lora`` folds LoRA into the teacher's weights (one plain checkpoint, no peft files);
    ``dtype`` casts the whole model (feature maps included) before saving.
    """
    trial_dir, out = Path(trial_dir).expanduser(), Path(out).expanduser()
    if out.exists():
        raise FileExistsError(f"{out} already exists; export into a new folder")
    model, tok, cfg = load_trial_model(trial_dir, torch.device("cpu"))
    cfg = resolved_config(cfg, Path(trial_dir))  # the probe's choice written as softmax_layers: load() needs no probe
    cast = _dtype(dtype)
    if cast is not None:
        model.to(cast)
    peft_wrapped = hasattr(model, "get_base_model")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        if peft_wrapped and not merge_lora:
            model.save_pretrained(str(tmp))  # adapter_config.json + adapter_model.safetensors
            _scrub_peft_config(tmp)
        base = model.merge_and_unload() if peft_wrapped and merge_lora else (
            model.unload() if peft_wrapped else model)
        state = base.state_dict()
        names = attention_keys(base)
        attention = {k: v.detach().cpu().contiguous() for k, v in state.items() if k in names}
        teacher = {k: v for k, v in state.items() if k not in names}
        weight_dtype = next(iter(teacher.values())).dtype
        base.save_pretrained(str(tmp), state_dict=teacher, safe_serialization=True)  # empties `teacher`
        from safetensors.torch import save_file

        save_file(attention, str(tmp / ATTENTION_FILE))
        tok.save_pretrained(str(tmp))
        _write_config(tmp, cfg, lora="peft" if peft_wrapped and not merge_lora else (
            "merged" if peft_wrapped else "none"), dtype=weight_dtype, cast_all=cast is not None)
        atomic_write_text(tmp / TRIAL_CONFIG_FILE, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        atomic_write_text(tmp / "README.md", _readme(cfg))
    return out


def attention_keys(model: nn.Module) -> set[str]:
    """State-dict keys the linearization added (feature maps, γ): those of the linearized layers that are
    not the teacher's projections or norms."""
    prefixes = [f"{name}." for name, m in model.named_modules() if isinstance(m, LinearizedAttention)]
    return {k for k in model.state_dict() for p in prefixes
            if k.startswith(p) and k[len(p):].split(".")[0] not in _TEACHER_PARTS}


def _scrub_peft_config(folder: Path) -> None:
    """The adapter's base model is this folder (peft wrote the teacher's source, unknown to the reader)."""
    path = folder / PEFT_CONFIG_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = None
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _write_config(folder: Path, cfg: TrialConfig, *, lora: str, dtype: torch.dtype, cast_all: bool) -> None:
    path = folder / "config.json"
    base = json.loads(path.read_text(encoding="utf-8"))
    arch = (base.get("architectures") or ["CausalLM"])[0]
    data = {
        **base,
        "model_type": MODEL_TYPE,
        "architectures": [f"LolsearchLinearized{arch}"],
        "lolsearch": {
            "format": FORMAT, "trial_id": cfg.trial_id, "load_with": "lolsearch.load(path)",
            "lora": lora, "dtype": _dtype_name(dtype), "cast_all": cast_all,
            "attention_weights": ATTENTION_FILE, "trial_config": TRIAL_CONFIG_FILE, "base_config": base,
        },
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _readme(cfg: TrialConfig) -> str:
    a = cfg.attention
    return (f"# lolsearch trial {cfg.trial_id}\n\nA linearized {cfg.model.source} ({a.feature_map.kind} feature map, "
            f"layout {a.layout}, window {a.window}) exported by `lolsearch export`.\n\n"
            "```python\nimport lolsearch\nmodel, tokenizer = lolsearch.load(\"THIS_FOLDER\")\n```\n\n"
            "Plain `transformers.AutoModelForCausalLM.from_pretrained` refuses this folder on purpose: it would run "
            "the teacher's softmax attention and ignore the trained feature maps.\n")


def _hf_config(path: Path) -> tuple[object, dict]:
    """The teacher's transformers config of an export folder, and its ``lolsearch`` section."""
    from transformers import AutoConfig

    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))["lolsearch"]
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: export format {meta.get('format')} (this lolsearch reads format {FORMAT})")
    base = dict(meta["base_config"])
    return AutoConfig.for_model(base.pop("model_type"), **base), meta


def _load_export(path: Path, device: torch.device, dtype: torch.dtype | None) -> tuple[nn.Module, object]:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_config, meta = _hf_config(path)
    weight_dtype = resolve_dtype(meta["dtype"])
    place = {"device_map": str(device)} if device.type == "cuda" else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), config=hf_config, dtype=weight_dtype,
                                                 attn_implementation="sdpa", local_files_only=True, **place)
    model.to(device)
    cfg = parse_trial_config(load_yaml(path / meta["trial_config"]), str(path / meta["trial_config"]))
    linearize(model, cfg.attention)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in load_file(str(path / meta["attention_weights"])).items():
            if k not in own:
                raise ValueError(f"{path}: {k} of {meta['attention_weights']} has no place in the model")
            own[k].copy_(v.to(own[k].dtype))
    if meta["lora"] == "peft":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if meta["cast_all"]:  # the export cast everything (feature maps, and LoRA, which peft loads in fp32)
        model.to(weight_dtype)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(path), config=hf_config, local_files_only=True)
    return model, tok
