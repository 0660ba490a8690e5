"""What a sweep or run will cost before it starts: tokens per stage, estimated time per trial and for the sweep
(:mod:`lolsearch.trial.estimate`), trials over the time threshold, stages on the default budget. No Ray.

Trials are calibrated in groups that share the model, data shape, batch sizes and device (one miniature run per
group, cached); designs inside a group (feature map, layout, LoRA rank) are assumed to cost about the same.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lolsearch.config import TrialConfig
from lolsearch.core.errors import ConfigError, Problem
from lolsearch.search.labels import legend, short_labels, short_value
from lolsearch.search.space import SearchSpace
from lolsearch.sweep.live import fmt_duration
from lolsearch.trial import estimate as est


def group_key(cfg: TrialConfig) -> str:
    """Trials that share one calibration: same model, data, batch sizes, eval and device."""
    import json

    parts = {"model": cfg.model.model_dump(mode="json"), "seq": cfg.data.seq_len, "device": cfg.device,
             "batch": [getattr(cfg, s).batch_size for s in est.STAGES], "eval": cfg.eval.batch_size,
             "efficiency": cfg.efficiency.model_dump(mode="json")}
    return json.dumps(parts, sort_keys=True)


@dataclass
class CostPlan:
    """Estimates for a list of trial configs (None where no calibration was available)."""

    estimates: list[est.Estimate | None]
    calibrations: dict[str, est.Calibration] = field(default_factory=dict)
    device: str = "cpu"

    def over_threshold(self, configs: list[TrialConfig], with_baselines: bool) -> list[tuple[TrialConfig, float]]:
        limit = est.threshold_s(self.device)
        out = []
        for cfg, guess in zip(configs, self.estimates, strict=True):
            seconds = None if guess is None else (guess.total_s if with_baselines else guess.trial_s)
            if seconds is not None and seconds > limit:
                out.append((cfg, seconds))
        return out


def cost_plan(configs: list[TrialConfig], *, run_calibration: bool,
              on_calibrate: Callable[[TrialConfig], None] | None = None) -> CostPlan:
    """Estimates for ``configs``: cached calibrations, and with ``run_calibration`` a new one per missing group."""
    from lolsearch.models import resolve_device

    groups: dict[str, est.Calibration | None] = {}
    estimates: list[est.Estimate | None] = []
    device = "cpu"
    for cfg in configs:
        key = group_key(cfg)
        device = resolve_device(cfg.device).type
        if key not in groups:
            cal = est.cached_calibration(cfg)
            if cal is None and run_calibration and _device_present(device):
                if on_calibrate is not None:
                    on_calibrate(cfg)
                cal = est.calibrate(cfg)
            groups[key] = cal
        cal = groups[key]
        estimates.append(est.estimate(cfg, cal) if cal is not None else None)
    return CostPlan(estimates, {k: v for k, v in groups.items() if v is not None}, device)


def _device_present(device: str) -> bool:
    """Whether a calibration can run here: a CUDA config on a machine without CUDA gets no estimate."""
    if device != "cuda":
        return True
    import torch

    return torch.cuda.is_available()


def concurrency(space: SearchSpace) -> int:
    """Trials at a time on this machine for the space's per-trial resources."""
    res, limits = space.resources, []
    if res.cpu:
        limits.append(int((os.cpu_count() or 1) // res.cpu))
    if res.gpu:
        import torch

        limits.append(int(torch.cuda.device_count() // res.gpu) if torch.cuda.is_available() else 0)
    if space.budget.max_concurrent:
        limits.append(space.budget.max_concurrent)
    return max(1, min(limits, default=1))


def sweep_seconds(space: SearchSpace, plan: CostPlan) -> float | None:
    """Wall time of the sweep: trials in waves of :func:`concurrency`, plus the longest teacher baseline."""
    known = [e for e in plan.estimates if e is not None]
    if not known or len(known) != len(plan.estimates):
        return None
    waves = math.ceil(len(known) / concurrency(space))
    mean = sum(e.trial_s for e in known) / len(known)
    return waves * mean + max(e.baseline_s for e in known)


def fmt_tokens(n: int | None) -> str:
    if not n:
        return "-"
    for power, name in ((9, "G"), (6, "M"), (3, "k")):
        if n >= 10**power:
            return f"{n / 10**power:.3g}{name}"
    return str(n)


def plan_table(space: SearchSpace, plan: CostPlan | None, max_rows: int | None = None) -> Any:
    """``lolsearch plan``: one row per trial with short factor labels (:func:`plan_notes` has the legend), tokens
    per stage and the estimated time. Fits 100 columns for up to six searched keys."""
    from rich.table import Table

    points = space.plan_points()
    keys = space.searched_keys
    labels = short_labels(keys, width=12)
    table = Table(show_header=True, header_style="bold", pad_edge=False, box=None)
    numbers = ("#", "tok distill", "tok finetune", "est.")
    for col in ("#", "trial_id", *labels.values(), *numbers[1:]):
        fixed = col in (*numbers, "trial_id")
        table.add_column(col, no_wrap=True, max_width=12, min_width=len(col) if fixed else None,
                         justify="right" if col in numbers else "left")
    configs = [p.config for p in points if p.config is not None]
    ests = dict(zip([id(c) for c in configs], plan.estimates, strict=True)) if plan is not None else {}
    table.columns[1].min_width = 10
    table.columns[0].min_width = len(str(len(points)))
    for i, pt in enumerate(points[:max_rows] if max_rows else points, 1):
        cells = [short_value(pt.params[k]) if k in pt.params else "-" for k in keys]
        if pt.config is None:
            table.add_row(str(i), "pruned", *cells, "-", "-", "-")
            continue
        guess = ests.get(id(pt.config))
        seq = pt.config.data.seq_len
        toks = [getattr(pt.config, s).num_steps(seq) * getattr(pt.config, s).batch_size
                * getattr(pt.config, s).grad_accum * seq for s in est.STAGES]
        table.add_row(str(i), pt.config.trial_id, *cells, *(fmt_tokens(t) for t in toks),
                      fmt_duration(guess.trial_s) if guess is not None else "-")
    return table


def plan_notes(space: SearchSpace, plan: CostPlan | None) -> list[str]:
    """The lines under the plan table: sizes, the legend of the short labels, the sweep's estimate."""
    keys = space.searched_keys
    lines = [_size_line(space, space.plan_points())]
    if legend(keys, 12):
        lines.append(f"columns: {legend(keys, 12)}")
    lines.append("tok distill/finetune: training tokens per stage; est.: time per trial on this device")
    if plan is not None and any(e is not None for e in plan.estimates):
        total = sweep_seconds(space, plan)
        base = max((e.baseline_s for e in plan.estimates if e is not None), default=0.0)
        lines.append(f"sweep: about {fmt_duration(total)} on {plan.device} with {concurrency(space)} trial(s) at a "
                     f"time (incl. the teacher baselines, {fmt_duration(base)})")
    r = space.resources
    lines.append(f"per trial: cpu {r.cpu:g}, gpu {r.gpu:g}; objectives: "
                 + ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives))
    return lines


def _size_line(space: SearchSpace, points: list) -> str:
    if space.is_grid:
        info = space.grid()[1]
        blocks = ", ".join(f"{b} {n}" for b, n in info.per_block.items())
        seeds = space.spec.replicates
        return (f"{space.name}: grid: {info.size} trials ({blocks}); {info.excluded} excluded by constraints, "
                f"{info.duplicates} duplicates removed"
                + (f"; {info.size // seeds} designs x {seeds} seeds (replicates)" if seeds > 1 else ""))
    pruned = sum(p.config is None for p in points)
    return (f"{space.name}: {space.sampler.kind}, {space.sampler.num_trials} trials (seed {space.sampler.seed}); "
            f"the first {len(points)} suggestions shown, {pruned} violate a constraint")


def budget_notes(configs: list[TrialConfig]) -> list[str]:
    """One line per distinct default-budget notice."""
    return list(dict.fromkeys(n for cfg in configs for n in est.default_budgets(cfg)))


def cost_check(printer: Any, configs: list[TrialConfig], *, calibrate: bool, with_baselines: bool, refuse: bool,
               where: str) -> CostPlan:
    """Notes for stages on the default budget; trials estimated over the time threshold (1 h on CPU): a warning,
    or with ``refuse`` a :class:`ConfigError` (``--yes`` skips the check). Calibrates on this device when asked
    (cached). ``printer``: a rich console for the notes."""
    for note in budget_notes(configs):
        printer.print(f"note: {note}", highlight=False)

    def announce(cfg: TrialConfig) -> None:
        printer.print(f"calibrating: {est.CAL_STEPS} steps per stage of trial {cfg.trial_id} on this device (cached)",
                      highlight=False)

    cost = cost_plan(configs, run_calibration=calibrate, on_calibrate=announce)
    over = cost.over_threshold(configs, with_baselines)
    limit = fmt_duration(est.threshold_s(cost.device))
    problems = [Problem(where, "", f"trial {cfg.trial_id} would take about {fmt_duration(s)} on {cost.device}, over "
                        f"the {limit} threshold: lower distill/finetune tokens or steps"
                        + ("; --yes runs it anyway" if refuse else "")) for cfg, s in over[:5]]
    if problems and refuse:
        raise ConfigError(problems)
    for p in problems:
        printer.print(f"warning: {p}", highlight=False)
    known = [e for e in cost.estimates if e is not None]
    if refuse and known:  # run/sweep: say what is coming (plan prints its own table)
        seconds = [e.total_s if with_baselines else e.trial_s for e in known]
        span = fmt_duration(min(seconds)) if len(set(map(round, seconds))) == 1 else \
            f"{fmt_duration(min(seconds))}-{fmt_duration(max(seconds))}"
        printer.print(f"estimate: about {span} per trial on {cost.device} (`lolsearch plan` for the details)",
                      highlight=False)
    return cost
