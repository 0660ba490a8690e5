"""Decode speed of a linearized model vs its softmax teacher (``python -m lolsearch.perf generate``).

The caches are built at the target context directly (random keys/values and states), which costs what a
prefilled cache costs in memory and per-step time, without paying for the prefill. The teacher decodes through
HF (SDPA + DynamicCache); the linearized model through HF's forward (``graph`` off: the per-layer decode path)
or through the whole-model static step replayed as one CUDA graph (``graph`` on, :mod:`lolsearch.trial.graphed`).
Every (context, batch) point is a row; an OOM or any other failure is recorded in ``status``, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lolsearch.trial.speed import is_oom, peak_gib, reset_mem, sync
from lolsearch.trial.surgery import cache_kwarg

log = logging.getLogger(__name__)


def _timed(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def teacher_cache_at(model, batch: int, context: int):
    """A DynamicCache holding ``context`` random keys/values per layer (what a prefill leaves)."""
    from transformers import DynamicCache

    cfg = model.config
    kv, d = cfg.num_key_value_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    p = next(model.parameters())
    try:
        cache = DynamicCache(config=cfg)
    except TypeError:
        cache = DynamicCache()
    for i in range(cfg.num_hidden_layers):
        k = torch.randn(batch, kv, context, d, device=p.device, dtype=p.dtype)
        cache.update(k, torch.randn_like(k), i)
    return cache


def linear_cache_at(model, batch: int, context: int):
    """A LinearizedCache at ``context``: random positive states, a full window of random keys; layers kept as
    softmax get ``context`` random keys/values."""
    from lolsearch.trial.surgery import linearized_layers, new_cache

    cache = new_cache(model)
    p = next(model.parameters())
    linear = list(linearized_layers(model))
    cfg = model.config
    kv, d = cfg.num_key_value_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for i in sorted(set(range(cfg.num_hidden_layers)) - {layer.layer_idx for layer in linear}):
        k = torch.randn(batch, kv, context, d, device=p.device, dtype=p.dtype)
        cache.update(k, torch.randn_like(k), i)
    for layer in linear:
        st = layer._empty_state(torch.empty(batch, 1, 1, 1, device=p.device, dtype=p.dtype))
        st.state.S.uniform_(0, 1e-2)
        st.state.z.uniform_(0.5, 1.0)
        st.k.normal_()
        st.v.normal_()
        st.seen = context
        st.win_start = max(layer._softmax_start(context), context - st.capacity)
        cache.linear[layer.layer_idx] = st
    return cache


def decode_rate(model, cache, batch: int, vocab: int, steps: int, warmup: int = 2) -> float:
    """Decoded tokens/s (batch × steps / time) continuing from ``cache`` through the model's forward."""
    device = next(model.parameters()).device
    kwarg = cache_kwarg(model)
    ids = torch.randint(0, vocab, (batch, 1), device=device)

    def step() -> None:
        nonlocal ids
        logits = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kwarg: cache}).logits
        ids = logits[:, -1].argmax(-1, keepdim=True)

    with torch.no_grad():
        sec = _timed(step, steps, warmup, device)
    return batch / sec


def graph_decode_rate(model, cache, batch: int, vocab: int, steps: int, warmup: int = 2) -> float:
    """Decoded tokens/s of the whole-model static step replayed as a CUDA graph (capture not timed)."""
    from lolsearch.trial.graphed import GraphedStep, StaticDecoder

    device = next(model.parameters()).device
    # softmax layers' fixed KV buffers: room for the capture's warm-up and every timed step
    decoder = StaticDecoder(model, cache, torch.randint(0, vocab, (batch,), device=device), new_tokens=steps + warmup + 4)
    step = GraphedStep(decoder)
    return batch / _timed(step, steps, warmup, device)


def profile_decode(model, cache, batch: int, vocab: int, path: Path, steps: int = 4) -> None:
    """Operator table (self CPU and device time) of a few decode steps, to see what bounds the step."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    decode_rate(model, cache, batch, vocab, steps=1, warmup=1)
    with profile(activities=acts) as prof:
        decode_rate(model, cache, batch, vocab, steps=steps, warmup=0)
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} decode steps at batch {batch}\n\n" + prof.key_averages().table(sort_by=sort, row_limit=25)
                    + "\n\nby self CPU time\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def max_batch(make: Callable[[int], object], model, vocab: int, start: int, limit: int) -> int:
    """Largest batch (doubling from ``start``) whose cache fits and decodes 2 steps; 0 if none."""
    best, b = 0, start
    while b <= limit:
        try:
            cache = make(b)
            decode_rate(model, cache, b, vocab, steps=1, warmup=1)
            best = b
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            break
        finally:
            cache = None
            reset_mem(next(model.parameters()).device)
        b *= 2
    return best


def sweep_points(contexts: list[int], batch: int, batches: list[int], batch_context: int) -> list[tuple[int, int]]:
    """(context, batch) points: each context at ``batch``, then each of ``batches`` at ``batch_context``."""
    points = [(c, batch) for c in contexts] + [(batch_context, b) for b in batches]
    return list(dict.fromkeys(points))


def generate_rows(teacher, student, vocab: int, device: torch.device, points: list[tuple[int, int]], *, steps: int,
                  graph_modes: tuple[str, ...] = ("off",), budget_s: float | None = None, max_batch_limit: int = 0,
                  max_batch_point: tuple[int, int] | None = None, profile_dir: Path | None = None,
                  device_name: str = "") -> list[dict]:
    """One row per (point, model, graph mode): ``decode_tok_s``, ``peak_gib``, ``status`` (ok, oom, error: ...,
    skipped: budget) and ``speedup_vs_teacher``. Points run in order; once ``budget_s`` seconds have passed the
    rest are recorded as skipped. ``max_batch`` (doubling from the point's batch up to ``max_batch_limit``, eager
    path) is searched at ``max_batch_point`` when the limit is > 0."""
    t0 = time.perf_counter()
    runs = [("teacher_sdpa", teacher, "off", decode_rate, teacher_cache_at)]
    for mode in graph_modes:
        runs.append(("linearized", student, mode, graph_decode_rate if mode == "on" else decode_rate, linear_cache_at))
    rows: list[dict] = []
    for ctx, batch in points:
        teacher_rate = float("nan")
        for name, model, mode, rate, make in runs:
            row = {"model": name, "context": ctx, "batch": batch, "graph": mode, "device": device_name}
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                rows.append({**row, "decode_tok_s": float("nan"), "peak_gib": float("nan"), "status": "skipped: budget"})
                continue
            reset_mem(device)
            cache = None
            try:
                cache = make(model, batch, ctx)
                row["decode_tok_s"] = rate(model, cache, batch, vocab, steps)
                row["peak_gib"] = peak_gib(device)
                row["status"] = "ok"
            except Exception as err:  # noqa: BLE001 - an OOM or a failure is a row, not the end of the run
                status = "oom" if is_oom(err) else f"error: {type(err).__name__}: {err}".splitlines()[0][:300]
                if status != "oom":
                    log.exception("%s graph=%s context %d batch %d", name, mode, ctx, batch)
                row.update(decode_tok_s=float("nan"), peak_gib=float("nan"), status=status)
            cache = None
            reset_mem(device)
            if name == "teacher_sdpa":
                teacher_rate = row["decode_tok_s"]
            row["speedup_vs_teacher"] = row["decode_tok_s"] / teacher_rate
            late = budget_s is not None and time.perf_counter() - t0 > budget_s
            if profile_dir is not None and row["status"] == "ok" and mode == "off" and not late:
                profile_decode(model, make(model, batch, ctx), batch, vocab, profile_dir / f"profile_{name}.txt")
            if max_batch_limit > 0 and (ctx, batch) == max_batch_point and mode == "off" and not late:
                row["max_batch"] = max_batch(lambda b, c=ctx, mk=make, m=model: mk(m, b, c), model, vocab, batch,
                                             max_batch_limit)
                row["max_batch_limit"] = max_batch_limit
            rows.append(row)
            log.info("%s", row)
    return rows


__all__ = ["decode_rate", "generate_rows", "graph_decode_rate", "linear_cache_at", "max_batch", "profile_decode",
           "sweep_points", "teacher_cache_at"]
