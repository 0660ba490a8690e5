"""Time estimates from a calibration on this device: within a factor of 2 of the measured toy trial; default
budgets are made visible; the plan table fits 100 columns."""

import time

import pytest
from trial_testlib import toy_config

from lolsearch.config import parse_trial_config
from lolsearch.trial.estimate import calibrate, default_budgets, estimate, miniature
from lolsearch.trial.run import run_trial

TOY = toy_config(
    device="cpu",
    distill={"steps": 40, "batch_size": 4, "eval_every": 20, "eval_batches": 2},
    finetune={"steps": 40, "batch_size": 4, "eval_every": 20, "eval_batches": 2},
    eval={"tokens": 4096, "batch_size": 8},
    efficiency={"measure": False},
)


@pytest.mark.serial  # compares two wall-clock times: alone, not beside another test worker
def test_estimate_is_within_a_factor_of_two_of_the_measured_toy_trial(one_thread):
    cfg = parse_trial_config(TOY, "test")
    run_trial(miniature(cfg))  # warm the data and model caches, as a sweep's earlier trials do
    cal = calibrate(cfg, use_cache=False)
    guess = estimate(cfg, cal)
    assert guess.tokens == {"distill": 40 * 4 * 64, "finetune": 40 * 4 * 64}
    assert guess.stage_s["distill"] > 20 * cal.step_s["distill"]  # extrapolated to 40 steps, not the miniature's 4
    start = time.perf_counter()
    result = run_trial(cfg)
    measured = time.perf_counter() - start
    assert result.status == "ok", result.error
    assert measured / 2 <= guess.total_s <= measured * 2, (guess, measured, result.timing)


def test_calibration_is_cached_per_cost_key(one_thread, monkeypatch):
    cfg = parse_trial_config({**TOY, "distill": {**TOY["distill"], "steps": 2}, "finetune": {**TOY["finetune"], "steps": 2}}, "t")
    first = calibrate(cfg)
    import lolsearch.trial.run as run_mod

    monkeypatch.setattr(run_mod, "run_trial", lambda *a, **k: pytest.fail("recalibrated"))
    bigger = parse_trial_config({**TOY, "distill": {**TOY["distill"], "steps": 500}}, "t")  # only the budget differs
    assert calibrate(bigger) == first


def test_default_budgets_are_named():
    cfg = parse_trial_config({"model": {"source": "toy-llama"}, "finetune": {"steps": 3}}, "t")
    notes = default_budgets(cfg)
    assert notes == ["distill uses the default budget of 20,000,000 tokens (set distill.tokens or distill.steps)"]
