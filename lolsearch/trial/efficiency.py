"""Efficiency of a (linearized) model: analytic state/FLOP accounting and measured speed and memory.

``analytic`` is deterministic from the architecture and the layer plan; ``measure`` times prefill and
greedy decoding on the trial's device. Both return flat dicts of ints/floats (DESIGN.md "Metrics").
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from lolsearch.attention.cache import LinearizedCache
from lolsearch.attention.layouts import get_layout
from lolsearch.config import EfficiencyConfig
from lolsearch.trial.surgery import takes_logits_to_keep

log = logging.getLogger(__name__)

CPU_DEFAULT_LENGTH = 256
CUDA_DEFAULT_LENGTH = 4096
CPU_REPEATS = 3
CUDA_REPEATS = 5
MEASURE_SEED = 0


def context_suffix(length: int) -> str:
    """Metric-name suffix of a context length: multiples of 1024 as ``<n>k`` (4096 -> "4k"), else the number."""
    if length >= 1024 and length % 1024 == 0:
        return f"{length // 1024}k"
    return str(length)


def attention_shape(hf_config: Any) -> tuple[int, int, int, int]:
    """(layers, query heads, kv heads, head dim) of an HF decoder config (text config of multimodal ones)."""
    mc = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = mc.num_attention_heads
    kv_heads = getattr(mc, "num_key_value_heads", None) or heads
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // heads
    return mc.num_hidden_layers, heads, kv_heads, head_dim


def feature_projection_dim(kind: str, params: dict, head_dim: int) -> int:
    """F', the width of the per-head projection a feature map applies to q and k (0 for maps without one).

    Read off the built map (1 head): the last dim of its ``weight`` (Hedgehog, exp_dim, T2R) or ``omega``
    (Performer) tensor. Parameter-free maps (elu, relu, taylor2) have F' = 0.
    """
    from lolsearch.attention.featuremaps import build_feature_map

    fmap = build_feature_map(kind, params, 1, head_dim)
    for name in ("weight", "omega"):
        t = getattr(fmap, name, None)
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            return int(t.shape[-1])
    return 0


def analytic(
    hf_config: Any,
    plan: list[tuple[str, int]],
    feature_dim: int,
    contexts: list[int],
    *,
    kv_dtype_bytes: int = 2,
    state_dtype_bytes: int = 4,
    proj_dim: int | None = None,
) -> dict[str, int | float]:
    """Per-sequence generation memory and attention FLOPs per token at each context length L.

    Notation: H query heads, Hkv kv heads, D head dim, F = ``feature_dim`` (features per head, the
    feature map's output dim), F' = ``proj_dim`` (width of the learned/random D×F' projection of the
    feature map, applied to q and to k; Hedgehog F = 2F', T2R/Performer F = F', elu/relu/taylor2 F' = 0;
    None -> F' = F, an upper bound for maps with a projection), cap = the layout's window capacity
    (sliding w, terrace 2w, linear 0; see :func:`feature_projection_dim` and ``Layout.window_capacity``).

    Bytes at context L, summed over layers:

    - softmax layer: full KV cache ``L · Hkv · D · 2 · kv_dtype_bytes``
    - linearized layer: recurrent state per query head ``H · (F·D + F) · state_dtype_bytes`` plus the window
      cache ``min(L, cap) · Hkv · D · 2 · kv_dtype_bytes`` (window keys/values are kept at the kv heads)
    - ``kv_bytes_teacher_<L>``: every layer with a full KV cache; ``state_ratio_<L>`` = state / teacher.

    FLOPs of the token at position L (it attends to L keys, itself included), per head, counting
    matmul-like work only (one multiply-add = 2 FLOPs; exp, max, normalisation and γ mixing are left out
    for softmax and linearized layers alike):

    - softmax: ``4·L·D`` (q·k over L keys 2LD, weights·V 2LD)
    - linearized: window ``4·min(L, cap)·D`` + state readout φ(q)ᵀS and update S += φ(k)vᵀ ``4·F·D``
      (the normaliser z terms, O(F), are left out) + feature maps ``2·2·D·F'`` (q and k, D×F' each).
      For terrace layouts cap = 2w is the worst case (queries see between w+1 and 2w window keys).
    - summed over H heads and all layers; ``teacher_attn_flops_per_token_<L>`` has every layer softmax.

    Args:
        hf_config: the model's HF config (``num_hidden_layers``, heads, kv heads, head dim).
        plan: (layout, window) per layer, as ``AttentionConfig.layer_plan`` / ``SurgeryReport.plan``.
        contexts: context lengths L; metric names use :func:`context_suffix`.
    """
    num_layers, heads, kv_heads, head_dim = attention_shape(hf_config)
    if len(plan) != num_layers:
        raise ValueError(f"layer plan has {len(plan)} entries for a {num_layers}-layer model")
    f, fp, d = feature_dim, feature_dim if proj_dim is None else proj_dim, head_dim
    kv_token = kv_heads * d * 2 * kv_dtype_bytes  # bytes of one token's k and v in one layer
    out: dict[str, int | float] = {}
    for length in contexts:
        if length < 1:
            raise ValueError(f"context length must be >= 1, got {length}")
        state = flops = 0
        for layout, window in plan:
            if layout == "softmax":
                state += length * kv_token
                flops += heads * 4 * length * d
                continue
            cap = get_layout("linear" if window == 0 else layout).window_capacity(window)
            seen = min(length, cap)
            state += heads * (f * d + f) * state_dtype_bytes + seen * kv_token
            flops += heads * (4 * seen * d + 4 * f * d + 2 * 2 * d * fp)
        teacher = num_layers * length * kv_token
        s = context_suffix(length)
        out[f"state_bytes_{s}"] = state
        out[f"kv_bytes_teacher_{s}"] = teacher
        out[f"state_ratio_{s}"] = state / teacher
        out[f"attn_flops_per_token_{s}"] = flops
        out[f"teacher_attn_flops_per_token_{s}"] = num_layers * heads * 4 * length * d
    return out


def measure(
    model: nn.Module,
    cfg: EfficiencyConfig,
    device: str | torch.device,
    vocab_size: int,
    *,
    repeats: int | None = None,
) -> dict[str, int | float]:
    """Measured prefill and decode throughput, peak memory and generation-cache size on ``device``.

    - ``prefill_tok_s_<L>`` for L in ``cfg.prefill_lengths`` (None -> [256] on CPU, [4096] on CUDA):
      ``batch · L`` / seconds of one forward over random ids (no cache, logits of the last position only).
    - ``decode_tok_s``: greedy ``model.generate`` of ``cfg.decode_tokens`` new tokens after a random context
      of ``cfg.decode_context`` (None -> 256 CPU / 4096 CUDA) tokens with the model's cache (LinearizedCache
      for a linearized model, DynamicCache for the teacher); clocked from the first generated token to the
      last, so the prefill is excluded: ``batch · (decode_tokens − 1)`` / seconds.
    - ``measured_state_bytes``: bytes of the generation cache after decoding — ``LinearizedCache.linear_nbytes()``
      (recurrent state + the window ring buffer, allocated at full capacity) plus the KV tensors of softmax
      layers; ``measured_state_bytes_used`` counts only occupied window slots; ``measured_state_context`` is
      the number of tokens the cache covers (context + decode_tokens − 1). Compare with
      :func:`analytic` at that context with this model's dtype as ``kv_dtype_bytes``.
    - ``peak_mem_mb``: CUDA: ``torch.cuda.max_memory_allocated`` since a reset at the start (weights included);
      CPU: the process-wide RSS high-water mark (``resource.getrusage``), which covers everything the process
      did before, not just this measurement.

    Each timing is the median of ``repeats`` runs (None -> 5 on CUDA, 3 on CPU) after one warm-up run.
    Random ids come from a fixed generator; the model's training flag is restored afterwards.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cfg.decode_tokens < 2:
        raise ValueError("efficiency.decode_tokens must be >= 2 to time decoding (the first token comes from prefill)")
    lengths = list(cfg.prefill_lengths) if cfg.prefill_lengths else [CUDA_DEFAULT_LENGTH if cuda else CPU_DEFAULT_LENGTH]
    context = cfg.decode_context or (CUDA_DEFAULT_LENGTH if cuda else CPU_DEFAULT_LENGTH)
    n_rep = repeats or (CUDA_REPEATS if cuda else CPU_REPEATS)
    bsz = cfg.batch_size
    gen = torch.Generator().manual_seed(MEASURE_SEED)
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    was_training = model.training
    model.eval()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    out: dict[str, int | float] = {}
    try:
        with torch.no_grad():
            for length in lengths:
                ids = torch.randint(vocab_size, (bsz, length), generator=gen).to(dev)
                secs = _median_seconds(lambda ids=ids: _prefill(model, ids), n_rep, sync)
                out[f"prefill_tok_s_{context_suffix(length)}"] = bsz * length / secs
            ids = torch.randint(vocab_size, (bsz, context), generator=gen).to(dev)
            rates, cache = [], None
            _generate(model, ids, 2, sync)  # warm-up
            for _ in range(n_rep):
                rate, cache = _generate(model, ids, cfg.decode_tokens, sync)
                rates.append(rate)
            out["decode_tok_s"] = statistics.median(rates)
            out.update(cache_bytes(cache))
        out["peak_mem_mb"] = _peak_mem_mb(dev)
    finally:
        model.train(was_training)
    return out


def cache_bytes(cache: Any) -> dict[str, int]:
    """Bytes of a generation cache: linearized layers (state + window) plus softmax layers' KV tensors."""
    linear = linear_used = 0
    if isinstance(cache, LinearizedCache):
        linear = cache.linear_nbytes()
        for st in cache.linear.values():
            per_slot = (st.k[..., :1, :].numel() * st.k.element_size()) + (st.v[..., :1, :].numel() * st.v.element_size())
            state = sum(t.numel() * t.element_size() for t in (st.state.S, st.state.z))
            linear_used += state + _occupied_slots(st) * per_slot
    kv = sum(t.numel() * t.element_size() for t in _kv_tensors(cache))
    return {
        "measured_state_bytes": linear + kv,
        "measured_state_bytes_used": linear_used + kv,
        "measured_state_context": int(cache.get_seq_length()) if cache is not None else 0,
    }


def _occupied_slots(st: Any) -> int:
    """Window keys a linearized layer's ring buffer holds now (positions ``win_start .. seen-1``)."""
    if hasattr(st, "win_start"):
        return st.seen - st.win_start
    return int((st.slot_pos >= 0).sum())  # older LayerState: one position per slot, −1 = empty


def _kv_tensors(cache: Any) -> Iterable[torch.Tensor]:
    """Key/value tensors of the (Dynamic)Cache layers; linearized layers leave theirs uninitialised."""
    for layer in getattr(cache, "layers", None) or []:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                yield t


def _median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _prefill(model: nn.Module, ids: torch.Tensor) -> None:
    kwargs: dict[str, Any] = {"use_cache": False}
    if takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1
    model(input_ids=ids, **kwargs)


class _StepClock(StoppingCriteria):
    """Timestamps every generated token (after a device sync); never stops generation."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.sync()
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _generate(model: nn.Module, ids: torch.Tensor, new_tokens: int, sync: Callable[[], None]) -> tuple[float, Any]:
    """Greedy generation of exactly ``new_tokens``; returns (decode tokens/s after the first token, cache)."""
    clock = _StepClock(sync)
    result = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        stopping_criteria=StoppingCriteriaList([clock]),
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    generated = result.sequences.shape[-1] - ids.shape[-1]
    if generated != new_tokens or len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generate produced {generated} tokens ({len(clock.stamps)} steps), expected {new_tokens}")
    cache = getattr(result, "cache", None)
    if cache is None:  # transformers < 5 names it past_key_values
        cache = getattr(result, "past_key_values", None)
    elapsed = clock.stamps[-1] - clock.stamps[0]
    return ids.shape[0] * (new_tokens - 1) / elapsed, cache


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
