"""LateStart starts no trial that the time budget would cut off; PointSearcher hands out a grid in order."""

from ray.tune.search import Searcher

from lolsearch.sweep.late_start import LateStart, PointSearcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _guard(durations: list[float], deadline: float = 1000.0) -> tuple[LateStart, Clock]:
    clock = Clock()
    return LateStart(PointSearcher([{"i": i} for i in range(10)]), deadline, durations, clock=clock), clock


def test_trials_start_freely_until_one_has_finished():
    guard, clock = _guard([])
    clock.now = 999.0
    assert guard.suggest("a") == {"_point": {"i": 0}} and not guard.closed


def test_no_trial_starts_once_the_median_trial_exceeds_the_time_left():
    guard, clock = _guard([])
    assert guard.suggest("a") == {"_point": {"i": 0}}
    clock.now = 300.0
    guard.on_trial_complete("a", {"status": "ok"})  # took 300 s
    clock.now = 650.0  # 350 s left: one more fits
    assert guard.suggest("b") == {"_point": {"i": 1}}
    clock.now = 710.0  # 290 s left
    assert guard.suggest("c") is Searcher.FINISHED and guard.closed
    clock.now = 0.0
    assert guard.suggest("d") is Searcher.FINISHED  # closed for good: the sweep ends when the running ones do


def test_failed_and_pruned_trials_do_not_set_the_expected_time():
    guard, clock = _guard([])
    for trial, result, error in (("a", {"status": "failed"}, False), ("b", {"status": "pruned"}, False),
                                 ("c", None, True)):
        guard.suggest(trial)
        clock.now += 20.0
        guard.on_trial_complete(trial, result, error)
    assert guard.expected_s() is None


def test_a_resumed_sweep_uses_the_recorded_wall_times():
    guard, clock = _guard([100.0, 400.0, 500.0])  # median 400
    clock.now = 550.0
    assert guard.suggest("a") == {"_point": {"i": 0}}
    clock.now = 650.0
    assert guard.suggest("b") is Searcher.FINISHED


def test_the_grid_searcher_hands_out_every_point_once_then_finishes():
    points = PointSearcher([{"i": 0}, {"i": 1}])
    assert [points.suggest(t) for t in "abc"] == [{"_point": {"i": 0}}, {"_point": {"i": 1}}, Searcher.FINISHED]
