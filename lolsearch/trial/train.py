"""The one optimisation loop both stages share: AdamW, warmup + constant/cosine/plateau schedule,
gradient accumulation, clipping, periodic validation, best-state selection, NaN guard, progress."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from lolsearch.config import StageConfig

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
) -> StageResult:
    """Optimises ``params`` for ``cfg.num_steps(seq_len)`` steps of ``loss_fn`` over ``batches``.

    ``loss_fn(batch)`` returns a scalar to minimise (it is divided by ``grad_accum``). ``eval_fn``
    (validation loss, lower is better) runs every ``cfg.eval_every`` steps and at the end; with
    ``cfg.keep_best`` the parameters of the best validation are restored at the end.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (the trial is then recorded as failed).
    """
    steps = cfg.num_steps(seq_len)
    result = StageResult(trainable_params=sum(p.numel() for p in params))
    if steps == 0 or not params:
        return result
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _LrSchedule(cfg, steps)
    best_state: list[torch.Tensor] | None = None
    t0, last_log = time.perf_counter(), time.perf_counter()
    for step in range(steps):
        lr = sched.lr(step)
        for group in opt.param_groups:
            group["lr"] = lr
        total, tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"{name} loss is {loss.item()} at step {step + 1}")
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
            tokens += batch["input_ids"].numel()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        result.steps, result.tokens = step + 1, result.tokens + tokens
        elapsed = time.perf_counter() - t0
        point = {"step": step + 1, "tokens": result.tokens, "loss": total, "lr": lr, "tok_s": result.tokens / elapsed}
        result.curve.append(point)
        if report is not None:
            report({"stage": name, **point})
        if time.perf_counter() - last_log > 10 or step + 1 == steps:
            last_log = time.perf_counter()
            log.info("%s step %d/%d loss %.4g lr %.3g %.0f tok/s", name, step + 1, steps, total, lr, point["tok_s"])
        if eval_fn is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == steps):
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
