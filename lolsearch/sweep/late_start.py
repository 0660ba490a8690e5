"""Ray Tune searchers that decide when a sweep starts its next trial.

:class:`LateStart` wraps the sweep's searcher and starts no trial that the time budget would cut off: Tune's
``time_budget_s`` stops running trials at the deadline, and a trial stopped there keeps no result (``--resume`` runs
it again from the start), so its GPU time is lost. A trial is expected to take the median wall time of the sweep's
finished ok trials (those of earlier runs of a resumed sweep included); before any is known, trials start freely.
:class:`PointSearcher` hands out a grid's points in order, so grid sweeps run through the same wrapper.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from lolsearch.sweep.progress import console


class PointSearcher(Searcher):
    """A grid's points, in order, each as the ``_point`` entry of a trial's config."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        super().__init__()
        self._todo = list(points)

    def suggest(self, trial_id: str) -> dict | None:
        return {"_point": self._todo.pop(0)} if self._todo else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the grid's outcomes go to the Optuna study through GridRecorder

    # Tune saves each searcher's state with its experiment (the sweep never restores it: see driver._tuner)
    def get_state(self) -> dict:
        return {"todo": self._todo}

    def set_state(self, state: dict) -> None:
        self._todo = list(state["todo"])


class LateStart(Searcher):
    """``inner``, except that no trial starts once the expected trial time exceeds the time left to ``deadline``.

    Args:
        inner: the searcher that picks the trials.
        deadline: end of the time budget (``clock`` seconds).
        durations: wall times (s) of trials already finished ok, e.g. the records of a resumed sweep.
        clock: the time source (``time.time``; tests pass a fake one).
    """

    def __init__(self, inner: Searcher, deadline: float, durations: list[float],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.searcher, self.deadline, self.durations = inner, deadline, list(durations)
        self._clock, self._started, self.closed = clock, {}, False

    def expected_s(self) -> float | None:
        """Median wall time of the finished ok trials, None before the first."""
        return statistics.median(self.durations) if self.durations else None

    def suggest(self, trial_id: str) -> dict | None:
        if self.closed:
            return Searcher.FINISHED
        need, left = self.expected_s(), self.deadline - self._clock()
        if need is not None and need > left:
            self.closed = True
            console().print(f"starting no more trials: one takes about {need:.0f} s and the time budget has "
                            f"{max(left, 0):.0f} s left; `--resume` continues", highlight=False)
            return Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self._started[trial_id] = self._clock()
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        start = self._started.pop(trial_id, None)
        if start is not None and not error and (result or {}).get("status") == "ok":
            self.durations.append(self._clock() - start)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def get_state(self) -> dict:  # the wrapped searcher's state is saved on its own (Tune walks .searcher)
        return {"deadline": self.deadline, "durations": self.durations, "closed": self.closed}

    def set_state(self, state: dict) -> None:
        self.deadline, self.durations, self.closed = state["deadline"], list(state["durations"]), state["closed"]
