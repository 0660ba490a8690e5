"""The Optuna side of a sweep: the study in ``DIR/optuna.journal`` (optuna-dashboard opens it).

Samplers run through :class:`TrialSearcher` (OptunaSearch that tells Optuna each trial's true outcome:
ok -> COMPLETE, pruned/early-stopped -> PRUNED, failed -> FAIL). Grid sweeps bypass Optuna's samplers;
:class:`GridRecorder` adds each finished trial to the study with its params and distributions.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from lolsearch.sweep.trainable import TRIAL_KEY
from lolsearch.trial.record import objective_values

log = logging.getLogger(__name__)


def study_storage(path: Path) -> Any:
    """Optuna JournalStorage on a file (append-only, multi-process safe)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def outcome(result: dict | None, metrics: list[str], error: bool) -> tuple[Any, list[float] | None]:
    """(Optuna TrialState, values) of a finished Tune trial from its last result."""
    from optuna.trial import TrialState

    status = (result or {}).get("status")
    if error or status == "failed" or not result:
        return TrialState.FAIL, None
    if status == "ok":
        values = objective_values({"status": "ok", "metrics": result}, metrics)
        if values is None:
            log.warning("trial %s is ok but lacks a finite value for %s", result.get(TRIAL_KEY), metrics)
            return TrialState.FAIL, None
        return TrialState.COMPLETE, values
    return TrialState.PRUNED, None  # constraint-violating, or stopped early (no final status)


def _name_metrics(study: Any, metrics: list[str]) -> None:
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is experimental
            study.set_metric_names(metrics)


class TrialSearcher(OptunaSearch):
    """OptunaSearch that skips intermediate results lacking the objective and records true outcomes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        metrics = self._metric if isinstance(self._metric, list) else [self._metric]
        _name_metrics(self._ot_study, metrics)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric in result:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        state, values = outcome(result, metrics, error)
        if result and TRIAL_KEY in result:
            ot_trial.set_user_attr("trial_id", result[TRIAL_KEY])
            ot_trial.set_user_attr("status", result.get("status") or "pruned")
            if result.get("error"):
                ot_trial.set_user_attr("error", str(result["error"])[:500])
        try:
            self._ot_study.tell(ot_trial, values if values is None or len(values) > 1 else values[0], state=state)
        except Exception as exc:  # e.g. already told before a resume
            log.warning("optuna tell for %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


class GridRecorder:
    """Adds finished grid trials to the study (once per trial id). Picklable: the study opens lazily."""

    def __init__(self, path: Path, study_name: str, metrics: list[str], modes: list[str], distributions: dict) -> None:
        self.path, self.study_name, self.metrics, self.modes = path, study_name, metrics, modes
        self.distributions = distributions
        self._study: Any = None
        self._seen: set[str] = set()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_study": None, "_seen": set()}

    def study(self) -> Any:
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            directions = ["minimize" if m == "min" else "maximize" for m in self.modes]
            self._study = optuna.create_study(storage=study_storage(self.path), study_name=self.study_name,
                                              directions=directions, load_if_exists=True)
            _name_metrics(self._study, self.metrics)
            self._seen = {t.user_attrs.get("trial_id") for t in self._study.get_trials(deepcopy=False)}
        return self._study

    def record(self, record: dict, params: dict[str, Any]) -> None:
        """One finished trial (its record and the point's searched params, as labels)."""
        import optuna
        from optuna.trial import TrialState

        study = self.study()
        if record["trial_id"] in self._seen:
            return
        values = objective_values(record, self.metrics)
        state = {"ok": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(record.get("status"), TrialState.FAIL)
        if state == TrialState.COMPLETE and values is None:
            state = TrialState.FAIL
        attrs = {"trial_id": record["trial_id"], "status": record.get("status")}
        if record.get("error"):
            attrs["error"] = str(record["error"])[:500]
        trial = optuna.trial.create_trial(
            state=state, values=values if state == TrialState.COMPLETE else None, params=params,
            distributions={k: self.distributions[k] for k in params}, user_attrs=attrs,
        )
        study.add_trial(trial)
        self._seen.add(record["trial_id"])
