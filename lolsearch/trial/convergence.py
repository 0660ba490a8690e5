"""Whether a training stage had stopped improving: its validation curve flattened over its last quarter.

Pure Python (no torch), so a report can apply the same rule to records that predate the ``converged_*`` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

THRESHOLD = 0.01  # relative improvement over the last quarter of evaluations below which a curve counts as flat
MIN_EVALS = 3


def relative_improvement(values: Sequence[float]) -> float | None:
    """``(v[-1-k] − v[-1]) / |v[-1-k]|`` with ``k = ceil(n / 4)`` evaluations (the last quarter of the curve):
    how much the validation loss still fell at the end. None with fewer than :data:`MIN_EVALS` finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if len(v) < MIN_EVALS:
        return None
    k = max(1, math.ceil(len(v) / 4))
    start = v[-1 - k]
    return (start - v[-1]) / abs(start) if start != 0 else 0.0


def converged(values: Sequence[float], threshold: float = THRESHOLD) -> bool | None:
    """True when the validation loss improved by less than ``threshold`` (relative) over the last quarter of
    the evaluations; None when the curve is too short to tell."""
    gain = relative_improvement(values)
    return None if gain is None else gain < threshold


def stage_convergence(eval_curve: Sequence[dict], threshold: float = THRESHOLD) -> dict[str, float | bool]:
    """``{"converged": bool, "final_gain": float}`` of a stage's ``[{"step", "eval_loss"}, ...]`` curve
    (empty when too short)."""
    values = [p.get("eval_loss") for p in eval_curve if isinstance(p, dict)]
    values = [v for v in values if isinstance(v, (int, float))]
    gain = relative_improvement(values)
    return {} if gain is None else {"converged": gain < threshold, "final_gain": gain}
