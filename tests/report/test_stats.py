"""Interval coverage on synthetic data with a known truth, the paired bootstrap, verdicts, and the convergence flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lolsearch.report import stats
from lolsearch.trial.convergence import converged, relative_improvement, stage_convergence


def test_t_quantile_matches_table_and_expansion():
    assert stats.t_quantile(1) == pytest.approx(12.706)
    assert stats.t_quantile(30) == pytest.approx(2.042)
    assert stats.t_quantile(60) == pytest.approx(2.000, abs=2e-3)
    assert stats.t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)


@pytest.mark.parametrize("interval", ["t", "bootstrap"])
def test_interval_coverage_on_synthetic_data(interval):
    """About 95% of 200 intervals contain the true mean (binomial sd ~1.5%: bounds are 4 sd wide)."""
    rng = np.random.default_rng(123)
    truth, hits = 3.0, 0
    for i in range(200):
        x = truth + rng.exponential(1.0, size=40) - 1.0  # skewed, mean truth
        if interval == "t":
            _, lo, hi = stats.t_interval(x.tolist())
        else:
            _, lo, hi = stats.bootstrap_mean(x, n_boot=1000, seed=i)
        hits += lo <= truth <= hi
    assert 0.88 <= hits / 200 <= 0.995


def test_paired_bootstrap_separates_a_real_difference_from_none():
    rng = np.random.default_rng(7)
    tokens = np.full(64, 100.0)
    base = rng.normal(3.0, 0.5, 64)  # per-sequence mean NLL; sequences differ a lot in difficulty
    worse = base + 0.05 + rng.normal(0, 0.01, 64)  # slightly but consistently worse on every sequence
    same = base + rng.normal(0, 0.01, 64)
    d, lo, hi = stats.paired_ppl_bootstrap((worse * 100, tokens), (base * 100, tokens))
    assert d > 0 and lo > 0 and stats.verdict(lo, hi, "min") == "worse"
    d, lo, hi = stats.paired_ppl_bootstrap((same * 100, tokens), (base * 100, tokens))
    assert lo < 0 < hi and stats.verdict(lo, hi) == "not distinguishable"
    with pytest.raises(ValueError, match="not the same test sequences"):
        stats.paired_ppl_bootstrap((base[:10], tokens[:10]), (base, tokens))


def test_paired_bootstrap_of_ratios_divides_each_side_by_its_own_baseline():
    """Same per-sequence NLL, teachers 10 and 20: the ratios differ by exactly ppl/10 − ppl/20 in every draw."""
    rng = np.random.default_rng(3)
    tokens = np.full(32, 50.0)
    nll = rng.normal(3.0, 0.4, 32) * 50
    ppl = float(np.exp(nll.sum() / tokens.sum()))
    d, lo, hi = stats.paired_ppl_bootstrap((nll, tokens), (nll, tokens), divisors=(10.0, 20.0))
    assert d == pytest.approx(ppl / 20) and lo > 0 and hi > lo
    assert stats.paired_ppl_bootstrap((nll, tokens), (nll, tokens))[1:] == (0.0, 0.0)


def test_verdict_reads_the_interval_not_the_sign():
    assert stats.verdict(-0.3, -0.1) == "better" and stats.verdict(0.1, 0.3) == "worse"
    assert stats.verdict(-0.3, 0.01) == "not distinguishable"
    assert stats.verdict(-0.3, -0.1, "max") == "worse"
    assert stats.verdict(math.nan, math.nan) == "not distinguishable"


def test_convergence_flag():
    assert converged([5.0, 3.0, 2.5, 2.49, 2.488]) is True  # last quarter: 2.49 -> 2.488 (0.08%)
    assert converged([5.0, 4.0, 3.0, 2.0]) is False  # still falling 33% in the last quarter
    assert converged([5.0, 4.0]) is None  # too short to tell
    assert relative_improvement([4.0, 3.0, 2.0, 1.9, 1.8, 1.7, 1.7, 1.7]) == pytest.approx((1.7 - 1.7) / 1.7)
    curve = [{"step": s, "eval_loss": 1.0 / s} for s in range(1, 9)]
    out = stage_convergence(curve)
    assert out["converged"] is False and out["final_gain"] == pytest.approx((1 / 6 - 1 / 8) / (1 / 6))
    assert stage_convergence(curve[:2]) == {}
