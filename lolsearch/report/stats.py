"""Intervals for the report: Student-t intervals of a mean, percentile bootstrap intervals, and the verdict
("better", "worse", "not distinguishable") that a difference's interval supports.

Per-sequence test NLL (``seq_nll.json`` beside a trial's result.json, see :mod:`lolsearch.trial.record`) lets two
designs be compared by a paired bootstrap over the same test sequences even with one seed: resampling the
sequences and recomputing each design's perplexity from the resampled token-weighted mean NLL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (beyond 30 the expansion below is exact to 1e-3).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile ``t_{(1+level)/2, df}``: a table at 95% for df <= 30, else the
    Cornish-Fisher expansion around the normal quantile (error < 1e-3 for df >= 5)."""
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    if abs(level - 0.95) < 1e-12 and df <= len(_T975):
        return _T975[df - 1]
    z = NormalDist().inv_cdf((1 + level) / 2)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the mean of ``values`` (finite ones); low/high NaN with fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(x) - 1, level) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap ``draws [N_BOOT]`` (NaN draws ignored)."""
    d = draws[np.isfinite(draws)]
    if len(d) == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def bootstrap_mean(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)``: percentile bootstrap of the mean of ``values``."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return (float(x.mean()), *percentile_interval(x[idx].mean(axis=1), level))


def sequence_indices(n_seq: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_seq]`` resampled test-sequence indices, shared by every design of one comparison (paired)."""
    return np.random.default_rng(seed).integers(0, n_seq, size=(n_boot, n_seq))


def ppl_scale(nll_sum: np.ndarray, tokens: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``[n_boot]`` factor by which a perplexity-proportional metric moves when the test set is resampled:
    exp(resampled token-weighted mean NLL − full-set mean NLL). ``nll_sum``/``tokens``: ``[n_seq]`` per sequence."""
    full = nll_sum.sum() / tokens.sum()
    return np.exp(nll_sum[idx].sum(axis=1) / tokens[idx].sum(axis=1) - full)


def paired_ppl_bootstrap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int = N_BOOT,
                         seed: int = 0, level: float = LEVEL, divisors: tuple[float, float] = (1.0, 1.0),
                         ) -> tuple[float, float, float]:
    """``(ppl_a / d_a − ppl_b / d_b, low, high)``: paired bootstrap over the test sequences both designs were
    scored on; ``divisors`` ``(d_a, d_b)``, e.g. each design's own teacher perplexity for a ratio difference.

    ``a``, ``b``: ``(nll_sum [n_seq], tokens [n_seq])`` of the same sequences. Raises ValueError when the two
    were not scored on the same number of sequences."""
    if len(a[0]) != len(b[0]):
        raise ValueError(f"not the same test sequences ({len(a[0])} vs {len(b[0])})")
    idx = sequence_indices(len(a[0]), n_boot, seed)
    ppl = [math.exp(x[0].sum() / x[1].sum()) / d for x, d in zip((a, b), divisors, strict=True)]
    draws = ppl[0] * ppl_scale(*a, idx) - ppl[1] * ppl_scale(*b, idx)
    return (ppl[0] - ppl[1], *percentile_interval(draws, level))


def verdict(low: float, high: float, mode: str = "min") -> str:
    """What a difference (this − reference) supports: "better" when the whole interval is on the good side
    of 0 (below for ``mode == "min"``), "worse" when it is on the bad side, else "not distinguishable"."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not distinguishable"
    if high < 0:
        return "better" if mode == "min" else "worse"
    if low > 0:
        return "worse" if mode == "min" else "better"
    return "not distinguishable"
