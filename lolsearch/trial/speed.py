"""Speed of the training stages exactly as trials run them (through :func:`run_stage`), and the check that
the fast settings (deferred loss read-back, compiled modules, the CUDA-graph step) reproduce the eager losses.

``python -m lolsearch.perf train`` reports these; tests run the same check on the CPU.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from transformers import AttentionInterface

from lolsearch.config import StageConfig, TrialConfig
from lolsearch.trial.surgery import decoder_of
from lolsearch.trial.train import compiled, run_stage, sync_interval

LossFn = Callable[[dict], torch.Tensor]
Batches = Callable[[], Iterator[dict]]


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on CPU), so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_mem(device: torch.device) -> None:
    """Frees cached blocks and restarts the peak-memory count before a measurement."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """Peak GiB allocated since the last reset (NaN on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is the device running out of memory (measurements record it as a row, not a crash)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _budget(cfg: StageConfig, steps: int, **update) -> StageConfig:
    return cfg.model_copy(update={"steps": steps, "tokens": None, "keep_best": False, **update})


def time_stage(name: str, params: list[nn.Parameter], loss_fn: LossFn, batches: Iterator[dict], cfg: StageConfig,
               seq_len: int, device: torch.device, *, steps: int, warmup: int,
               compile_modules: Sequence[nn.Module] = ()) -> dict:
    """Tokens/s, seconds per step and peak GiB of ``steps`` optimizer steps after ``warmup`` steps (which
    absorb compilation and autotuning). ``cfg`` gives batch, accumulation, ``sync_every``, ``compile`` and
    ``cuda_graph`` (each timed run captures its own graph: its first step is eager and the second is captured, so
    ``tok_s`` includes that one-off cost; ``steady_tok_s`` counts only the steps after the first loss read-back at
    step 2 or later, NaN when no read-back falls between it and the last step). ``warmup_s`` is the warmup's wall
    time: in a fresh process it holds the one-off costs (compilation, autotuning, the first graph capture).
    ``compile_modules`` are wrapped once for both runs, as a trial's stage wraps them once: the timed steps do not
    pay for wrapping them again (about 3 ms a module in torch 2.11, 0.48 s for the Llama-3-8B shape's 160)."""
    with compiled(compile_modules, cfg.compile):
        sync(device)
        t_warm = time.perf_counter()
        run_stage(name, params, loss_fn, batches, _budget(cfg, warmup), seq_len)
        sync(device)
        warmup_s = time.perf_counter() - t_warm
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = run_stage(name, params, loss_fn, batches, _budget(cfg, steps), seq_len)
        sync(device)
        wall = time.perf_counter() - t0
    peak = peak_gib(device)
    return {"tok_s": result.tokens / wall, "steady_tok_s": _steady(result.curve, sync_interval(cfg, params)),
            "step_s": wall / steps, "peak_gib": peak, "warmup_s": warmup_s}


# An attention core that does no attention (``perf train --stages attention_free_lora``), under a name transformers'
# mask registry does not know (so no mask is built for it either).
ATTENTION_FREE = "lolsearch_attention_free"


def _values_only(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """Each query head's output is its kv head's values: ``query [B, H, T, D]``, ``key``/``value [B, Hkv, T, D]`` ->
    ``[B, T, H, D]``. Query and key enter times zero, so their projections and adapters still run forward and
    backward as they do around a real attention core."""
    out = (value + 0 * key).repeat_interleave(query.shape[1] // key.shape[1], dim=1) + 0 * query
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_FREE, _values_only)


@contextmanager
def attention_free(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model's transformers attention layers run :func:`_values_only` instead of attention:
    the step of the same model with an attention core that costs nothing, a bound on what any attention, softmax or
    linear, can reach. Linearized layers (our own modules) are not changed: time it on the teacher."""
    config = decoder_of(model).config
    before, config._attn_implementation = config._attn_implementation, ATTENTION_FREE
    try:
        yield model
    finally:
        config._attn_implementation = before


def has_steady_window(steps: int, every: int) -> bool:
    """Whether ``steps`` timed steps with a loss read-back every ``every`` steps give :func:`_steady` its window: a
    read-back at step 2 or later before the last step (else ``steady_tok_s`` is NaN)."""
    return any(s % every == 0 for s in range(2, steps))


def _steady(curve: list[dict], every: int) -> float:
    """Tokens/s between the first read-back at step >= 2 and the last step (both read-backs, where a point's
    ``tok_s`` is exact: ``run_stage`` interpolates times only between read-backs)."""
    first = next((p for p in curve[:-1] if p["step"] >= 2 and p["step"] % every == 0), None)
    if first is None:
        return math.nan
    last = curve[-1]
    elapsed = last["tokens"] / last["tok_s"] - first["tokens"] / first["tok_s"]
    return (last["tokens"] - first["tokens"]) / elapsed if elapsed > 0 else math.nan


def check_fast_path(name: str, params: list[nn.Parameter], loss_fn: LossFn, batches: Batches, cfg: StageConfig,
                    seq_len: int, *, steps: int = 3, compile_modules: Sequence[nn.Module] = (),
                    fast_setting: Callable[[], AbstractContextManager] = nullcontext) -> dict:
    """Losses of the first ``steps`` steps eagerly (read back every step, nothing compiled, no CUDA graph) and
    with ``cfg``'s speed settings inside ``fast_setting()`` (e.g. fused kernels on), from the same parameters and
    batches; the parameters are restored afterwards. With ``cuda_graph`` the first step is eager and the later ones
    are graph replays.

    Returns ``{"eager": [...], "fast": [...], "max_rel_diff": float}``.
    """
    start = [p.detach().clone() for p in params]

    def losses(stage_cfg: StageConfig) -> list[float]:
        result = run_stage(name, params, loss_fn, batches(), stage_cfg, seq_len, compile_modules=compile_modules)
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
        return [point["loss"] for point in result.curve]

    eager = losses(_budget(cfg, steps, sync_every=1, compile="off", cuda_graph=False))
    with fast_setting():
        fast = losses(_budget(cfg, steps))
    diff = max((abs(a - b) / max(abs(a), 1e-12) for a, b in zip(eager, fast, strict=True)), default=math.nan)
    return {"eager": eager, "fast": fast, "max_rel_diff": diff}


def profile_stage(name: str, params: list[nn.Parameter], loss_fn: LossFn, batches: Iterator[dict], cfg: StageConfig,
                  seq_len: int, path: Path, *, steps: int = 2, compile_modules: Sequence[nn.Module] = ()) -> None:
    """Operator table (device and host time) of ``steps`` steps after one warm-up step, written to ``path``; the same
    steps' timeline beside it as ``<stem>_trace.json.gz`` (Chrome trace for Perfetto: where the GPU idles between
    kernels, e.g. while the host waits on a read-back); and the Python functions' host time over ``steps`` more steps
    (cProfile: where a host-bound step spends its time, e.g. launching kernels and allocating their buffers), written
    as ``<stem>_host.txt``. On a GPU also ``<stem>_by_op.txt``: :func:`kernels_by_op` of the profiled steps."""
    import cProfile
    import gzip
    import io
    import json
    import pstats
    import shutil
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    def run(n: int) -> None:
        run_stage(name, params, loss_fn, batches, _budget(cfg, n), seq_len)

    cuda = any(p.is_cuda for p in params)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    host = cProfile.Profile()
    with compiled(compile_modules, cfg.compile):  # wrapped once, before the profiled steps
        run(1)
        with profile(activities=acts) as prof:
            run(steps)
        host.runcall(run, steps)
    table = prof.key_averages()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"{name}: {steps} steps, compile={cfg.compile}, cuda_graph={cfg.cuda_graph}\n\n"
    path.write_text(head + table.table(sort_by=sort, row_limit=30)
                    + "\n\nby self CPU time\n" + table.table(sort_by="self_cpu_time_total", row_limit=20))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        if cuda:
            events = json.loads(raw.read_text())["traceEvents"]
            path.with_name(f"{path.stem}_by_op.txt").write_text(kernels_by_op(events, steps))
        with raw.open("rb") as src, gzip.open(path.with_name(f"{path.stem}_trace.json.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(host, stream=text).sort_stats(order).print_stats(40)
        head += f"Python functions by {order} (cProfile; its own overhead inflates many small calls)\n{text.getvalue()}\n"
    path.with_name(f"{path.stem}_host{path.suffix}").write_text(head)


def kernels_by_op(events: list[dict], steps: int, rows: int = 40) -> str:
    """GPU time per step of a torch.profiler Chrome trace's ``events`` over ``steps`` steps, by kernel and the two
    innermost operators that launched it (matrix products pooled as ``GEMM``), largest first: a first line with all
    kernels' time and the span from the first kernel's start to the last one's end, then ``rows`` lines of
    ``ms per step, launches per step, operators :: kernel``."""
    launch = {e["args"].get("correlation"): e for e in events
              if e.get("cat") in ("cuda_runtime", "cuda_driver") and "args" in e}
    host_ops: dict = {}
    for e in events:
        if e.get("cat") == "cpu_op":
            host_ops.setdefault(e["tid"], []).append(e)
    kernels = [e for e in events if e.get("cat") == "kernel"]
    if not kernels:
        return "no GPU kernels in the trace\n"
    time_of: dict[str, float] = {}
    count: dict[str, int] = {}
    for k in kernels:
        name = k["name"]
        if name.startswith("nvjet") or "gemm" in name.lower() or "cutlass" in name.lower():
            key = "GEMM"
        else:
            r = launch.get(k["args"].get("correlation"))
            inside = [o for o in host_ops.get(r["tid"], []) if o["ts"] <= r["ts"] <= o["ts"] + o["dur"]] if r else []
            key = " > ".join(o["name"][:35] for o in inside[-2:]) + " :: " + name[:45]
        time_of[key] = time_of.get(key, 0.0) + k["dur"]
        count[key] = count.get(key, 0) + 1
    start = min(k["ts"] for k in kernels)
    end = max(k["ts"] + k["dur"] for k in kernels)
    lines = [f"kernels {sum(time_of.values()) / steps / 1e3:.1f} ms/step; span {(end - start) / steps / 1e3:.1f} "
             f"ms/step ({steps} steps)"]
    for key in sorted(time_of, key=time_of.get, reverse=True)[:rows]:
        lines.append(f"{time_of[key] / steps / 1e3:8.3f} {count[key] / steps:7.1f} {key}")
    return "\n".join(lines) + "\n"


def fixed_costs(cfg: TrialConfig, trials: int, *, cold: bool) -> list[dict]:
    """Runs ``trials`` trials of ``cfg`` one after another in this process, as a reused sweep
    worker does, and splits each one's wall time into training (both stages) and the fixed rest (load, swap and
    final evaluations, teacher baselines, efficiency; every ``*_s`` part of the trial's timing is a column).
    ``cold`` empties the per-process caches before each trial (the cost without them). Teacher baselines are cached
    on disk either way (once per sweep)."""
    from lolsearch.trial import cache
    from lolsearch.trial.run import run_trial

    rows = []
    for i in range(trials):
        if cold:
            cache.clear()
        result = run_trial(cfg)  # the same config: a sweep's baselines are shared, so only trial 0 computes them
        if result.status != "ok":
            raise RuntimeError(f"trial {i} failed: {result.error}")
        t, m = result.timing, result.metrics
        train = t.get("distill_s", 0.0) + t.get("finetune_s", 0.0)
        rows.append({"trial": i, "cold": cold, "total_s": t["total_s"], "train_s": train, "fixed_s": t["total_s"] - train,
                     **{k: v for k, v in t.items() if k.endswith("_s") and k != "total_s"},
                     "efficiency_cached": m.get("efficiency_cached"),
                     "train_tokens": m.get("tokens_distill", 0) + m.get("tokens_finetune", 0)})
    return rows


def eval_costs(cfg: TrialConfig, repeats: int) -> list[dict]:
    """Wall time of a trial's final evaluation done as separate passes (``sequence_nll``, ``teacher_agreement``,
    ``kl_to_reference`` against the teacher_ft stand-in) and as :func:`lolsearch.trial.eval_pass.final_eval`, on
    the trial's model after the swap and LoRA (no training: the cost does not depend on the weights), alternating
    ``repeats`` times; the eval batches are rebuilt per pass, as trials do. ``max_rel_diff``: the largest relative
    difference between the two ways' metrics (a row per way and repeat)."""
    from lolsearch.data import packed_batches
    from lolsearch.models import resolve_device
    from lolsearch.trial import cache, evaluate
    from lolsearch.trial.eval_pass import final_eval
    from lolsearch.trial.finetune import add_lora
    from lolsearch.trial.surgery import linearize

    device = resolve_device(cfg.device)
    model, tok = cache.teacher(cfg.model, device)
    linearize(model, cfg.attention)
    model = add_lora(model, cfg.finetune.lora, cotrain_attention=False)
    reference = add_lora(cache.teacher(cfg.model, device)[0], cfg.finetune.lora, cotrain_attention=False)

    def batches() -> Iterator[dict]:
        return packed_batches(cfg.data, tok, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, mask_prompt=True, device=device)

    def separate() -> list[float]:
        nll, _ = evaluate.sequence_nll(model, batches())
        agree = evaluate.teacher_agreement(model, batches())
        return [*nll, agree["kl_teacher"], agree["top1_agree"], evaluate.kl_to_reference(reference, model, batches())]

    def batched() -> list[float]:
        ev = final_eval(model, batches(), reference)
        return [*ev.nll_sum, ev.kl_teacher, ev.top1_agree, ev.kl_reference]

    rows = []
    for i in range(repeats):
        values = {}
        for way, fn in (("separate", separate), ("one_pass", batched)):
            sync(device)
            t0 = time.perf_counter()
            values[way] = fn()
            sync(device)
            rows.append({"repeat": i, "way": way, "eval_s": time.perf_counter() - t0, "tokens": cfg.eval.tokens})
        diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(values["separate"], values["one_pass"], strict=True))
        rows[-1]["max_rel_diff"] = rows[-2]["max_rel_diff"] = diff
    return rows
