"""The one optimisation loop both stages share: AdamW, warmup + constant/cosine/plateau schedule,
gradient accumulation, clipping, periodic validation, best-state selection, NaN guard, progress."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lolsearch.config import StageConfig
from lolsearch.config.sections import GPU_SYNC_EVERY
from lolsearch.trial.step_graph import GraphedStep, eager_step, graph_unavailable, set_lr

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite."""


@dataclass
class StageResult:
    """What one stage did, for the trial record."""

    steps: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    best_eval: float | None = None
    best_step: int | None = None
    trainable_params: int = 0
    curve: list[dict] = field(default_factory=list)
    eval_curve: list[dict] = field(default_factory=list)


class _LrSchedule:
    """Learning rate per step: linear warmup, then constant / cosine to min_lr / reduce-on-plateau."""

    def __init__(self, cfg: StageConfig, total_steps: int) -> None:
        self.cfg, self.total = cfg, total_steps
        self.base = cfg.lr
        self.best = math.inf
        self.bad_evals = 0

    def lr(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "cosine":
            span = max(1, self.total - cfg.warmup_steps)
            frac = min(1.0, max(0, step - cfg.warmup_steps) / span)
            return warm * (cfg.min_lr + (self.base - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * frac)))
        return warm * self.base

    def on_eval(self, value: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if value < self.best:
            self.best, self.bad_evals = value, 0
            return
        self.bad_evals += 1
        if self.bad_evals > self.cfg.plateau_patience:
            self.base = max(self.cfg.min_lr, self.base * self.cfg.plateau_factor)
            self.bad_evals = 0
            log.info("plateau: lr -> %.3g", self.base)


def make_optimizer(params: list[nn.Parameter], cfg: StageConfig, *, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel when every parameter is on a GPU (one launch per step, no host sync).

    ``capturable`` (CUDA parameters only): the learning rate is a device tensor, so a CUDA graph of the step
    reads the value :func:`~lolsearch.trial.step_graph.set_lr` fills in before each replay.
    """
    fused = bool(params) and all(p.is_cuda for p in params)
    if capturable and fused:
        lr = torch.tensor(cfg.lr, dtype=torch.float32, device=params[0].device)
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True, capturable=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def read_back_interval(sync_every: int | None, on_gpu: bool) -> int:
    """Steps between loss read-backs: ``sync_every``, else 1 on CPU (free there) and GPU_SYNC_EVERY on a GPU."""
    if sync_every is not None:
        return sync_every
    return GPU_SYNC_EVERY if on_gpu else 1


def sync_interval(cfg: StageConfig, params: list[nn.Parameter]) -> int:
    """:func:`read_back_interval` of a stage over ``params``."""
    return read_back_interval(cfg.sync_every, any(p.is_cuda for p in params))


class _PendingLosses:
    """Step points whose loss is still a device tensor; :meth:`flush` reads them back with one sync.

    Between two flushes the host only queues work, so per-step wall times are not observable: a flushed
    point's ``tok_s`` uses a time interpolated linearly between the last flush and this one (exact at the
    flushed steps, and for every step when the throughput is steady).
    """

    def __init__(self, name: str, t0: float) -> None:
        self.name, self.t0, self.last_t = name, t0, t0
        self.points: list[dict] = []
        self.losses: list[torch.Tensor] = []

    def add(self, point: dict, loss: torch.Tensor) -> None:
        self.points.append(point)
        self.losses.append(loss)

    def flush(self) -> tuple[list[dict], str | None]:
        """The pending points with ``loss`` and ``tok_s``, up to the first non-finite loss, and that loss's error."""
        if not self.points:
            return [], None
        values = torch.stack(self.losses).float().tolist()
        now = time.perf_counter()
        n, done, error = len(self.points), [], None
        for i, (point, value) in enumerate(zip(self.points, values, strict=True)):
            if not math.isfinite(value):
                error = f"{self.name} loss is {value} at step {point['step']}"
                break
            elapsed = (self.last_t - self.t0) + (now - self.last_t) * (i + 1) / n
            done.append({"step": point["step"], "tokens": point["tokens"], "loss": value, "lr": point["lr"],
                         "tok_s": point["tokens"] / elapsed if elapsed > 0 else float("nan")})
        self.points, self.losses, self.last_t = [], [], now
        return done, error


@contextlib.contextmanager
def compiled(modules: Sequence[nn.Module], mode: str) -> Iterator[None]:
    """Runs each of ``modules`` through ``torch.compile(mode)`` until the block exits; ``"off"`` does nothing.

    Modules of one class and shape share one compiled graph (their parameters are graph inputs). On exit
    the modules run eagerly again, so evaluation and generation after a stage are unaffected.
    """
    if mode == "off" or not modules:
        yield
        return
    import torch._dynamo

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 64)  # eval batches bring new shapes
    for m in modules:
        m.compile(mode=None if mode == "default" else mode)
    try:
        yield
    finally:
        for m in modules:
            m._compiled_call_impl = None  # what nn.Module.compile sets; None = the eager forward
        torch._dynamo.config.recompile_limit = limit


def run_stage(
    name: str,
    params: list[nn.Parameter],
    loss_fn: Callable[[dict], torch.Tensor],
    batches: Iterator[dict],
    cfg: StageConfig,
    seq_len: int,
    *,
    eval_fn: Callable[[], float] | None = None,
    report: Callable[[dict], None] | None = None,
    compile_modules: Sequence[nn.Module] = (),
) -> StageResult:
    """Optimises ``params`` for ``cfg.num_steps(seq_len)`` steps of ``loss_fn`` over ``batches``.

    ``loss_fn(batch)`` returns a scalar to minimise (it is divided by ``grad_accum``). ``eval_fn``
    (validation loss, lower is better) runs every ``cfg.eval_every`` steps and at the end; with
    ``cfg.keep_best`` the parameters of the best validation are restored at the end.

    Losses stay on the device and are read back every :func:`sync_interval` steps, before each
    evaluation and at the end; ``report`` then gets each step's point (``stage``, ``step``, ``tokens``,
    ``loss``, ``lr``, ``tok_s``) in order, followed by the evaluation's point (``eval_loss``).
    With ``cfg.compile`` other than ``"off"``, ``compile_modules`` run compiled for the stage (:func:`compiled`).
    With ``cfg.cuda_graph`` (``auto``: micro-batches up to ``AUTO_GRAPH_TOKENS`` tokens) the step after the first is
    captured as a CUDA graph and replayed (:class:`~lolsearch.trial.step_graph.GraphedStep`); where it cannot be, the
    stage logs why and runs eagerly.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (the trial is then recorded as failed). On a GPU it is
            noticed at the next read-back, up to ``sync_interval - 1`` steps later.
    """
    steps = cfg.num_steps(seq_len)
    result = StageResult(trainable_params=sum(p.numel() for p in params))
    if steps == 0 or not params:
        return result
    wanted = cfg.graph_wanted(seq_len)
    no_graph = graph_unavailable(params, cfg.compile) if wanted else "off"
    if cfg.cuda_graph is True and no_graph is not None:  # said once when asked for explicitly; auto stays quiet
        log.info("%s: cuda_graph off (%s); running eager steps", name, no_graph)
    opt = make_optimizer(params, cfg, capturable=no_graph is None)
    graph = GraphedStep(name, params, loss_fn, opt, cfg.grad_clip) if no_graph is None else None
    sched = _LrSchedule(cfg, steps)
    every = sync_interval(cfg, params)
    best_state: list[torch.Tensor] | None = None
    t0 = last_log = time.perf_counter()
    pending = _PendingLosses(name, t0)

    def flush() -> None:
        nonlocal last_log
        points, error = pending.flush()
        for point in points:
            result.curve.append(point)
            if report is not None:
                report({"stage": name, **point})
        if error is not None:
            raise NonFiniteLossError(error)
        if result.curve and (time.perf_counter() - last_log > 10 or result.curve[-1]["step"] == steps):
            last_log, p = time.perf_counter(), result.curve[-1]
            log.info("%s step %d/%d loss %.4g lr %.3g %.0f tok/s", name, p["step"], steps, p["loss"], p["lr"], p["tok_s"])

    with compiled(compile_modules, cfg.compile), contextlib.ExitStack() as stack:
        if graph is not None:
            stack.callback(graph.close)  # frees the graph's pool (and the gradients in it) however the stage ends
        for step in range(steps):
            lr = sched.lr(step)
            set_lr(opt, lr)
            micro = [next(batches) for _ in range(cfg.grad_accum)]
            tokens = sum(batch["input_ids"].numel() for batch in micro)
            total = graph.step(micro) if graph is not None else None
            if total is None:
                total = eager_step(params, loss_fn, micro, opt, cfg.grad_clip)
            result.steps, result.tokens = step + 1, result.tokens + tokens
            pending.add({"step": step + 1, "tokens": result.tokens, "lr": lr}, total)
            evaluate = eval_fn is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == steps)
            if (step + 1) % every == 0 or evaluate or step + 1 == steps:
                flush()
            if evaluate:
                value = eval_fn()
                result.eval_curve.append({"step": step + 1, "tokens": result.tokens, "eval_loss": value})
                if report is not None:
                    report({"stage": name, "step": step + 1, "tokens": result.tokens, "eval_loss": value})
                sched.on_eval(value)
                if math.isfinite(value) and (result.best_eval is None or value < result.best_eval):
                    result.best_eval, result.best_step = value, step + 1
                    if cfg.keep_best:
                        best_state = [p.detach().clone() for p in params]
    if best_state is not None:
        with torch.no_grad():
            for p, b in zip(params, best_state, strict=True):
                p.copy_(b)
    result.wall_s = time.perf_counter() - t0
    return result
