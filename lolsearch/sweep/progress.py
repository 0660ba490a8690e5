"""Driver side of a sweep's finished trials (:class:`SweepCallback`): a record for every trial, grid trials
added to the Optuna study, one progress row per trial on the console."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lolsearch.core.console import text_console
from lolsearch.search.labels import legend, short_labels, short_value
from lolsearch.search.metrics import format_metric
from lolsearch.search.points import PointRef
from lolsearch.search.space import SearchSpace
from lolsearch.sweep.live import STAGES, ProgressBoard, fmt_duration
from lolsearch.sweep.study import GridRecorder
from lolsearch.sweep.trainable import TRIAL_KEY
from lolsearch.trial.record import FINAL_STATUSES, read_final, read_results, static_record, write_result

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.journal"
ROW_WIDTH = 100  # a progress row fits a 100-column terminal


def grid_recorder(space: SearchSpace, out: Path) -> GridRecorder:
    return GridRecorder(out / STUDY_FILE, space.name, [o.metric for o in space.objectives],
                        [o.mode for o in space.objectives], space.distributions())


# Keys Tune adds to every result, and ours that are not metrics.
_TUNE_KEYS = {
    "timestamp", "done", "training_iteration", "trial_id", "date", "time_this_iter_s", "time_total_s", "pid",
    "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
    "should_checkpoint", "experiment_tag", "config", TRIAL_KEY, "status", "error",
}


class SweepCallback(Callback):
    """Driver side of each finished trial: make sure it has a record, add grid trials to the Optuna
    study, print a progress row. Picklable (Tuner.restore brings it back)."""

    def __init__(self, space: SearchSpace, out: Path, planned: int) -> None:
        self.space, self.out, self.planned = space, out, planned
        self.metrics = [o.metric for o in space.objectives]
        self.keys = space.searched_keys
        self.recorder = grid_recorder(space, out) if space.is_grid else None
        self._header = False
        self._done: int | None = None
        self._started = time.time()
        self._board: ProgressBoard | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_board": None}  # a live display does not pickle

    def board(self) -> ProgressBoard:
        """The live table of running trials (created on first use, started on a terminal)."""
        if self._board is None:
            self._board = ProgressBoard(self.planned, done=len(read_results(self.out)), console=console()).start()
        return self._board

    def setup(self, **info: Any) -> None:
        self._started = time.time()
        self.board()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._board is not None:
            self._board.stop()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print_header()
        ref = _point_ref(trial)
        if ref is not None:
            trial_id, cfg, _ = ref.identity(self.space.name)
            totals = {s: getattr(cfg, s).num_steps(cfg.data.seq_len) for s in STAGES} if cfg is not None else {}
            params = ref.params
            self.board().trial_started(trial_id, totals, "/".join(short_value(params[k]) for k in self.keys if k in params))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(TRIAL_KEY) and result.get("stage"):
            self.board().trial_event(result[TRIAL_KEY], result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, _error_line(trial))

    def _finish(self, trial: Any, error: str | None) -> None:
        ref = _point_ref(trial)
        if ref is None:
            return
        trial_id, cfg, _ = ref.identity(self.space.name)
        trial_dir = self.out / "trials" / trial_id
        record = read_final(trial_dir)
        if (record is None and not error and self.space.budget.time_s
                and time.time() - self._started >= self.space.budget.time_s):
            # cut off by the time budget: no final record, so `--resume` runs it again
            console().print(f"stopped  {trial_id} by the time budget; `--resume` reruns it", highlight=False)
            self.board().running.pop(trial_id, None)
            return
        if record is None:
            record = self._fallback_record(trial, trial_id, cfg, ref, error)
            write_result(trial_dir, record)
        if self.recorder is not None:
            self.recorder.record(record, ref.params)
        self.board().trial_finished(trial_id, (record.get("timing") or {}).get("total_s"))
        self._print_row(record, ref.params)

    def _fallback_record(self, trial: Any, trial_id: str, cfg: Any, ref: PointRef, error: str | None) -> dict:
        """The record of a trial whose own result.json is not on this machine."""
        last = trial.last_result or {}
        metrics = {k: v for k, v in last.items() if k not in _TUNE_KEYS}
        if not error and last.get("status") in FINAL_STATUSES:
            # it finished on a node that does not share DIR: keep its scalar metrics here
            log.warning("trial %s finished on %s, whose DIR is not this one; its curves and adapter stay there",
                        trial_id, last.get("hostname"))
            return static_record(trial_id, self.space.name, cfg, ref.config, last["status"],
                                 last.get("error") or None, metrics)
        if error:
            why = f"trial process failed: {error}"
        elif self.space.budget.time_s and time.time() - self._started >= self.space.budget.time_s:
            why = f"stopped by the time budget ({self.space.budget.time_s:g} s)"
        else:
            why = f"stopped early by the scheduler after {last.get('training_iteration', 0)} reports"
        keep = {k: v for k, v in metrics.items() if k in self.metrics or k in ("loss", "eval_loss", "stage", "step")}
        return static_record(trial_id, self.space.name, cfg, ref.config, "failed" if error else "pruned", why, keep)

    def _columns(self) -> list[tuple[str, int]]:
        """Fixed columns, then one column per searched key (short labels) while the row fits ROW_WIDTH; else one
        ``design`` column holding the values joined by ``/`` (the header's legend gives the order)."""
        cols = [("done", 7), ("status", 7), ("trial_id", 10), *((m, max(len(m), 9)) for m in self.metrics), ("time", 6)]
        factors = [(label, max(len(label), 8)) for label in short_labels(self.keys).values()]
        if sum(w + 2 for _, w in cols + factors) - 2 <= ROW_WIDTH or not factors:
            return cols + factors
        return [*cols, ("design", max(12, ROW_WIDTH - sum(w + 2 for _, w in cols)))]

    def _collapsed(self) -> bool:
        return bool(self.keys) and self._columns()[-1][0] == "design"

    def _print_header(self) -> None:
        if self._header:
            return
        self._header = True
        if self._collapsed():
            console().print(f"design = {' / '.join(self.keys)}", style="dim", highlight=False)
        elif legend(self.keys):
            console().print(f"columns: {legend(self.keys)}", style="dim", highlight=False)
        console().print("  ".join(name.ljust(w) for name, w in self._columns()), style="bold", highlight=False)

    def _print_row(self, record: dict, params: dict) -> None:
        self._print_header()
        self._done = (self._done or 0) + 1
        done = max(self._done, len(read_results(self.out)))
        m = record.get("metrics") or {}
        vals = [format_metric(k, m.get(k)) for k in self.metrics]
        total = (record.get("timing") or {}).get("total_s")
        factors = [short_value(params[k], 10) if k in params else "-" for k in self.keys]
        row = [f"{done}/{self.planned}", record["status"], record["trial_id"], *vals,
               fmt_duration(total) if total else "-", *(["/".join(factors)] if self._collapsed() else factors)]
        line = "  ".join(_cut(cell, w).ljust(w) for cell, (_, w) in zip(row, self._columns(), strict=True))
        console().print(line, style={"ok": "green", "failed": "red"}.get(record["status"], "yellow"), highlight=False)
        if record.get("error"):
            console().print(f"    {record['error'][:300]}", style="dim", highlight=False)


def _point_ref(trial: Any) -> PointRef | None:
    """The point a Tune trial runs (None for a trial Tune made without one)."""
    data = trial.config.get("_point")
    return PointRef.from_ray(data) if isinstance(data, dict) and "config" in data else None


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - 1] + "…"


def _error_line(trial: Any) -> str:
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text() if trial.error_file else ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    return "the trial process crashed"


@functools.lru_cache(maxsize=1)
def console() -> Any:
    return text_console(soft_wrap=True)
