"""Cheap checks of a trial config against the machine, its files and its model, before any compute.

``lolsearch validate`` runs them, and so do ``lolsearch run`` and ``lolsearch sweep`` before a model is loaded or
Ray starts: a CUDA device that is not there, a cache folder that cannot be written, data files that are missing,
binary, broken or too short, a model source that does not resolve or whose architecture surgery does not support
(read from config.json or the GGUF header, never the weights), layer indices beyond the model's depth, a sequence
longer than the model's context, a LoRA rank larger than a projection, batches that could never be allocated.
What the config schema checks on its own (names, ranges, finite numbers) is not repeated here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

import torch

from lolsearch.config import DataConfig, TrialConfig
from lolsearch.core.errors import ConfigError, Problem
from lolsearch.core.files import cache_root_path, writable_dir_problem
from lolsearch.data import SPLITS, load_documents, resolve_files
from lolsearch.models import ModelShape, model_shape
from lolsearch.trial.surgery import SUPPORTED

CONFIG = "<config>"  # the file of a problem about a config key; callers put the real file (or space key) in
_SNIFF_BYTES = 1 << 16
MAX_TOY_PARAMS = 1e9
MAX_BATCH_TOKENS = 1 << 22  # tokens of one micro-batch: far beyond what a GPU holds, short of a host's memory


def preflight(cfg: TrialConfig, memo: dict | None = None) -> list[Problem]:
    """Every problem found (empty when the trial can start). Problems about a config key have file
    :data:`CONFIG`; a problem inside a data file names that file (and line). ``memo`` keeps the machine, data and
    model checks of one call of :func:`preflight_all` (many configs share a machine, a model and a corpus)."""
    memo = {} if memo is None else memo
    machine, data, model = ("machine",), ("data", cfg.data.model_dump_json()), ("model", cfg.model.model_dump_json())
    if machine not in memo:
        memo[machine] = _machine_problems()
    if data not in memo:
        memo[data] = _data_problems(cfg.data)
    if model not in memo:
        try:
            memo[model] = model_shape(cfg.model)
        except ValueError as err:
            memo[model] = str(err)
    out = [*memo[machine], *_budget_problems(cfg), *memo[data]]
    if cfg.device == "cuda" and not torch.cuda.is_available():
        out.append(Problem(CONFIG, "device", f"'cuda' but no CUDA device is visible (torch {torch.__version__}); "
                                             "use device: auto or cpu"))
    if cfg.eval.lm_eval_tasks and importlib.util.find_spec("lm_eval") is None:
        out.append(Problem(CONFIG, "eval.lm_eval_tasks", "lm-eval is not installed: pip install 'lolsearch[eval]' "
                                                         "(or drop eval.lm_eval_tasks)"))
    shape = memo[model]
    if isinstance(shape, str):
        return [*out, Problem(CONFIG, "model.source", shape)]
    if shape is not None:
        out += [Problem(CONFIG, key, msg) for key, msg in _shape_problems(cfg, shape)]
    return out


def _machine_problems() -> list[Problem]:
    cache = cache_root_path()
    problem = writable_dir_problem(cache)
    return [Problem("$LOLSEARCH_CACHE", "", f"{cache}: {problem} (the model and data cache)")] if problem else []


def _budget_problems(cfg: TrialConfig) -> list[Problem]:
    """Batches that could never be allocated: training/eval micro-batches and timed efficiency batches."""
    out = []
    for key, batch in (("distill.batch_size", cfg.distill.batch_size), ("finetune.batch_size", cfg.finetune.batch_size),
                       ("eval.batch_size", cfg.eval.batch_size)):
        if batch * cfg.data.seq_len > MAX_BATCH_TOKENS:
            out.append(Problem(CONFIG, key, f"{batch} sequences of data.seq_len={cfg.data.seq_len} are "
                                            f"{batch * cfg.data.seq_len} tokens per step, over {MAX_BATCH_TOKENS}; "
                                            "use grad_accum for larger batches"))
    e = cfg.efficiency
    if e.measure:
        timed = [("efficiency.prefill_lengths", n) for n in e.prefill_lengths or ()]
        timed += [("efficiency.decode_context", (e.decode_context or 0) + e.decode_tokens)]
        out += [Problem(CONFIG, key if e.batch_size == 1 else "efficiency.batch_size", f"{e.batch_size} x {n} tokens "
                        f"per timed batch (efficiency.batch_size x {key}), over {MAX_BATCH_TOKENS}")
                for key, n in timed if e.batch_size * n > MAX_BATCH_TOKENS]
    return out


def check_all(configs: Iterable[tuple[TrialConfig, Any]], attribute: Callable[[Problem, Any], Problem]) -> None:
    """Raises :class:`ConfigError` with the problems of :func:`preflight_all`, if any."""
    problems = preflight_all(configs, attribute)
    if problems:
        raise ConfigError(problems)


def preflight_all(configs: Iterable[tuple[TrialConfig, Any]], attribute: Callable[[Problem, Any], Problem]) -> list[Problem]:
    """Problems of several configs, each config-key problem passed through ``attribute(problem, tag)`` (the
    caller names the file and key, e.g. a space's searched key); only the first problem of each key is kept."""
    seen, out, memo = set(), [], {}
    for cfg, tag in configs:
        for p in preflight(cfg, memo):
            line = attribute(p, tag) if p.file == CONFIG else p
            if (line.file, line.key) not in seen:
                seen.add((line.file, line.key))
                out.append(line)
    return out


def _shape_problems(cfg: TrialConfig, shape: ModelShape) -> list[tuple[str, str]]:
    if shape.model_type not in SUPPORTED:
        return [("model.source", f"architecture '{shape.model_type}' is not supported (supported: {', '.join(SUPPORTED)})")]
    a, n = cfg.attention, shape.layers
    out = []
    bad = [i for i in a.softmax_layers if i >= n]
    if bad:
        out.append(("attention.softmax_layers", f"layer indices {bad} out of range for a {n}-layer model (0..{n - 1})"))
    out += [(f"attention.layers.{i}", f"layer index {i} out of range for a {n}-layer model (0..{n - 1})")
            for i in a.layers if i >= n]
    if not bad and len(set(a.softmax_layers)) >= n:
        out.append(("attention.softmax_layers", f"keeps all {n} layers as softmax: nothing to linearize"))
    elif not bad and a.softmax_rule is not None and len(set(a.softmax_layers)) + a.softmax_rule.top_mse >= n:
        out.append(("attention.softmax_rule.top_mse", f"{a.softmax_rule.top_mse} more softmax layers besides "
                    f"{len(set(a.softmax_layers))} leave none of the {n} layers to linearize"))
    params = shape.layers * (4 * shape.hidden**2 + 3 * shape.hidden * shape.intermediate)
    if cfg.model.source == "toy-llama" and params > MAX_TOY_PARAMS:
        out.append(("model.toy", f"about {params:.2g} parameters; a toy model stays under {MAX_TOY_PARAMS:.0g}"))
    if shape.max_positions and cfg.data.seq_len > shape.max_positions:
        out.append(("data.seq_len", f"{cfg.data.seq_len} is longer than the {shape.max_positions} positions "
                                    f"{cfg.model.source} was trained for"))
    if cfg.finetune.enabled:
        q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        dims = {"q": (shape.hidden, q), "k": (shape.hidden, kv), "v": (shape.hidden, kv), "o": (q, shape.hidden),
                "gate": (shape.hidden, shape.intermediate), "up": (shape.hidden, shape.intermediate),
                "down": (shape.intermediate, shape.hidden)}
        rank = cfg.finetune.lora.rank
        for t in cfg.finetune.lora.targets:
            d_in, d_out = dims[t]
            if 0 < min(d_in, d_out) < rank:
                out.append(("finetune.lora.rank", f"rank {rank} exceeds the '{t}' projection ({d_in} x {d_out}) of "
                                                  f"{cfg.model.source}; a rank above {min(d_in, d_out)} adds nothing"))
                break
    return out


def _data_problems(cfg: DataConfig) -> tuple[Problem, ...]:
    """Problems of a local data source (text, jsonl): files exist, are text, parse, and fill the splits."""
    if cfg.source not in ("text", "jsonl"):
        return ()  # registered corpora are known good; hub datasets cannot be checked without loading them
    try:
        files = resolve_files(cfg.path)
    except ConfigError as err:
        return tuple(err.problems)
    for f in files:
        try:
            with open(f, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except OSError as err:
            return (Problem(CONFIG, "data.path", f"cannot read {f}: {err.strerror or err}"),)
        if b"\0" in head:
            return (Problem(str(f), "data.path", "holds NUL bytes: a binary file, not text"),)
    try:
        docs = load_documents(cfg)
    except ConfigError as err:  # broken JSONL lines, too few files/examples to split
        return tuple(err.problems)
    out = []
    for split in SPLITS:
        # No tokenizer makes more tokens than UTF-8 bytes, plus one end-of-document token per document.
        bound = sum(len(d.prompt.encode()) + len(d.text.encode()) + 1 for d in docs[split])
        need = cfg.seq_len * (2 if split == "train" else 1)
        if bound < need:
            out.append(Problem(CONFIG, "data.path", f"the {split} split holds at most {bound} tokens, fewer than "
                                                    f"{need // cfg.seq_len} sequence(s) of data.seq_len={cfg.seq_len}; "
                                                    "add text or lower data.seq_len"))
    return tuple(out)
