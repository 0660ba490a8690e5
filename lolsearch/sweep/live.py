"""Live progress of running trials, fed by the events ``run_trial`` reports (``{"stage", "step", "loss",
"tokens", "tok_s", ...}``, see :func:`lolsearch.trial.train.run_stage`).

:class:`ProgressBoard` renders a table of the running trials (stage, step/total, loss, tokens/s, elapsed,
ETA) plus the sweep's ETA: a ``rich.live.Live`` on a terminal, and otherwise (CI, pipes, ``| tee``) one log
line per trial every ``every_s`` seconds or every 10% of a stage. :class:`RunProgress` is ``lolsearch run``'s
view: one bar per training stage on a terminal, the same periodic lines elsewhere. No Ray, no torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lolsearch.core.console import text_console

STAGES = ("distill", "finetune")


def fmt_duration(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``; None -> ``-``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_rate(tok_s: float | None) -> str:
    if tok_s is None or not math.isfinite(tok_s):
        return "-"
    return f"{tok_s / 1000:.1f}k" if tok_s >= 1000 else f"{tok_s:.0f}"


@dataclass
class TrialState:
    """What is known of one running trial. ``totals``: planned optimizer steps per training stage."""

    trial_id: str
    totals: dict[str, int]
    started: float
    label: str = ""
    stage: str = "load"
    step: int = 0
    loss: float | None = None
    tok_s: float | None = None
    stage_s: float = 0.0  # seconds spent in the current stage's steps
    last_line: float = -math.inf
    last_decile: int = -1

    @property
    def total(self) -> int:
        return self.totals.get(self.stage, 0)

    def update(self, event: dict[str, Any]) -> None:
        stage, before = event.get("stage"), self.stage
        if stage in STAGES:
            if stage != self.stage:
                self.step, self.stage_s = 0, 0.0
            self.stage = stage
            if "loss" in event:
                self.step = int(event.get("step", self.step))
                self.loss = float(event["loss"])
                self.tok_s = event.get("tok_s", self.tok_s)
                if self.tok_s and event.get("tokens"):
                    self.stage_s = event["tokens"] / self.tok_s  # the stage's own clock, not our arrival times
        elif stage == "swap":  # the swapped model is evaluated: training starts
            self.stage, self.step = self._next(None), 0
        elif stage == "distill_done":
            self.stage, self.step = self._next("distill"), 0
        elif stage == "eval":
            self.stage = "eval"
        if self.stage != before:
            self.last_decile = -1
            if "loss" not in event:
                self.loss = self.tok_s = None

    def _next(self, after: str | None) -> str:
        order = STAGES[STAGES.index(after) + 1:] if after else STAGES
        return next((s for s in order if self.totals.get(s)), "eval")

    def eta(self) -> float | None:
        """Seconds left in the training stages at the current stage's pace (evaluation not included)."""
        if self.stage not in STAGES or not self.step or not self.stage_s:
            return 0.0 if self.stage == "eval" else None
        per_step = self.stage_s / self.step
        later = sum(self.totals.get(s, 0) for s in STAGES[STAGES.index(self.stage) + 1:])
        return per_step * (max(0, self.total - self.step) + later)

    def progress(self) -> str:
        if self.stage in STAGES and self.total:
            return f"{self.step}/{self.total}"
        return "-"


class ProgressBoard:
    """Running trials of a sweep (or one run) and the sweep's ETA; see the module docstring.

    ``interactive`` None = a ``rich.live.Live`` when the console is a terminal. ``emit`` receives the periodic
    lines in non-interactive mode (default: print on the console). ``clock`` is injectable for tests.
    """

    def __init__(self, planned: int, *, done: int = 0, interactive: bool | None = None, console: Any = None,
                 every_s: float = 30.0, emit: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, sweep: bool = True) -> None:
        self.console = console or text_console(soft_wrap=True)
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self.planned, self.done, self.every_s, self.clock = planned, done, every_s, clock
        self.emit = emit or (lambda line: self.console.print(line, highlight=False, markup=False, soft_wrap=True))
        self.sweep = sweep
        self.running: dict[str, TrialState] = {}
        self.durations: list[float] = []
        self.started = clock()
        self._live: Any = None

    def start(self) -> ProgressBoard:
        if self.interactive and self._live is None:
            from rich.live import Live

            self._live = Live(get_renderable=self.table, console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> ProgressBoard:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def trial_started(self, trial_id: str, totals: dict[str, int], label: str = "") -> None:
        if trial_id not in self.running:
            self.running[trial_id] = TrialState(trial_id, dict(totals), self.clock(), label)
            if not self.interactive:
                self.emit(f"start   {trial_id}  {label}".rstrip())

    def trial_event(self, trial_id: str, event: dict[str, Any]) -> None:
        state = self.running.get(trial_id)
        if state is None:
            return
        state.update(event)
        if self.interactive:
            return
        now = self.clock()
        decile = int(10 * state.step / state.total) if state.stage in STAGES and state.total else -1
        if decile > state.last_decile or now - state.last_line >= self.every_s:
            state.last_decile = max(decile, state.last_decile)
            state.last_line = now
            self.emit(self.line(state))

    def trial_finished(self, trial_id: str, wall_s: float | None = None) -> None:
        state = self.running.pop(trial_id, None)
        self.done += 1
        if wall_s is None and state is not None:
            wall_s = self.clock() - state.started
        if wall_s:
            self.durations.append(wall_s)

    def sweep_eta(self) -> float | None:
        """Seconds until every planned trial is done: the running trials' ETAs, then the pending ones in
        waves of the current concurrency at the mean trial time (finished trials, else running estimates)."""
        now = self.clock()
        pending = max(0, self.planned - self.done - len(self.running))
        etas = [s.eta() for s in self.running.values()]
        totals = [now - s.started + e for s, e in zip(self.running.values(), etas, strict=True) if e is not None]
        mean = sum(self.durations) / len(self.durations) if self.durations else (
            sum(totals) / len(totals) if totals else None)
        if mean is None or (self.running and any(e is None for e in etas)):
            return None
        waves = math.ceil(pending / max(1, len(self.running)))
        return max([e for e in etas if e is not None], default=0.0) + waves * mean

    def line(self, s: TrialState) -> str:
        now = self.clock()
        loss = f"{s.loss:.4g}" if s.loss is not None and s.stage in STAGES else "-"
        pct = f" ({100 * s.step // s.total}%)" if s.stage in STAGES and s.total else ""
        line = (f"trial   {s.trial_id}  {s.stage} {s.progress()}{pct}  loss {loss}  {fmt_rate(s.tok_s)} tok/s  "
                f"elapsed {fmt_duration(now - s.started)}  eta {fmt_duration(s.eta())}")
        if self.sweep:
            line += f"  | sweep {self.done}/{self.planned} done, eta {fmt_duration(self.sweep_eta())}"
        return line

    def table(self) -> Any:
        from rich.table import Table

        now = self.clock()
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col, justify in (("trial", "left"), ("design", "left"), ("stage", "left"), ("step", "right"),
                             ("loss", "right"), ("tok/s", "right"), ("elapsed", "right"), ("eta", "right")):
            table.add_column(col, justify=justify, no_wrap=True, max_width=28 if col == "design" else None)
        for s in self.running.values():
            table.add_row(s.trial_id, s.label, s.stage, s.progress(),
                          f"{s.loss:.4g}" if s.loss is not None and s.stage in STAGES else "-",
                          fmt_rate(s.tok_s), fmt_duration(now - s.started), fmt_duration(s.eta()))
        table.caption = (f"{self.done}/{self.planned} trials done, {len(self.running)} running; "
                         f"sweep eta {fmt_duration(self.sweep_eta())}")
        table.caption_justify = "left"
        return table


class RunProgress:
    """``lolsearch run``: a bar per training stage on a terminal, periodic lines elsewhere. Use as the
    ``report`` callback of ``run_trial`` inside a ``with`` block."""

    def __init__(self, trial_id: str, totals: dict[str, int], *, interactive: bool | None = None,
                 console: Any = None, every_s: float = 30.0, emit: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.board = ProgressBoard(1, interactive=False, console=console, every_s=every_s, emit=emit, clock=clock,
                                   sweep=False)
        self.interactive = self.board.console.is_terminal if interactive is None else interactive
        self.trial_id, self.totals = trial_id, {k: v for k, v in totals.items() if v}
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        if self.interactive:
            from rich import progress as rp

            self._bars = rp.Progress(rp.TextColumn("{task.description:<9}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                                     rp.TextColumn("loss {task.fields[loss]}  {task.fields[rate]} tok/s"),
                                     rp.TimeElapsedColumn(), rp.TimeRemainingColumn(), console=self.board.console)
            for stage, total in self.totals.items():
                self._tasks[stage] = self._bars.add_task(stage, total=total, loss="-", rate="-", start=False)
            self._bars.start()
        else:
            self.board.trial_started(self.trial_id, self.totals)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bars is not None:
            self._bars.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if self._bars is None:
            self.board.trial_event(self.trial_id, event)
            return
        task = self._tasks.get(event.get("stage"))
        if task is not None and "loss" in event:
            self._bars.start_task(task)
            self._bars.update(task, completed=event.get("step", 0), loss=f"{event['loss']:.4g}",
                              rate=fmt_rate(event.get("tok_s")))
