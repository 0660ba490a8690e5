"""``lolsearch compare``: the difference of each design run in two sweeps (the same space on two models, two code
versions, two budgets), with a 95% interval and the verdict it supports — never the sign of two point estimates.

The interval is a paired bootstrap over the test sequences when both sweeps scored the design on the same
sequences (their stored per-sequence token counts are identical) and the metric is a perplexity; else a Welch
interval over the design's seeds when each sweep ran two or more; else there is none. ``mixed_convergence`` marks
a design converged in one sweep and not in the other: its difference measures the budget as much as the change.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lolsearch.report import stats
from lolsearch.report.ablations import PPL_METRICS, SeqNll, welch_interval

if TYPE_CHECKING:
    from lolsearch.report.records import Sweep


def design_difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, mode: str, seq_nll: SeqNll) -> dict[str, Any]:
    """``b − a`` of ``metric`` for one design: ``a``/``b`` its ok trials in two sweeps (columns trial_id, metric)."""
    va, vb = (pd.to_numeric(x[metric], errors="coerce").to_numpy(float) for x in (a, b))
    va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if not len(va) or not len(vb):
        return {}
    delta = float(vb.mean() - va.mean())
    ids_a, ids_b = [str(t) for t in a["trial_id"]], [str(t) for t in b["trial_id"]]
    arrays = [seq_nll.get(t) for t in ids_a + ids_b]
    same_sequences = all(x is not None for x in arrays) and all(
        len(x[1]) == len(arrays[0][1]) and np.array_equal(x[1], arrays[0][1]) for x in arrays)
    if metric in PPL_METRICS and same_sequences and len(va) == len(ids_a) and len(vb) == len(ids_b):
        idx = stats.sequence_indices(len(arrays[0][1]))
        draws = [v * stats.ppl_scale(*x, idx) for v, x in zip([*va, *vb], arrays, strict=True)]
        diff = np.mean(draws[len(va):], axis=0) - np.mean(draws[: len(va)], axis=0)
        lo, hi = stats.percentile_interval(diff)
        method = f"paired bootstrap over {len(arrays[0][1])} test sequences"
    elif len(va) >= 2 and len(vb) >= 2:
        lo, hi = welch_interval(vb, va, delta)
        method = "Welch t over seeds"
    else:
        lo, hi, method = math.nan, math.nan, "none: one seed and no shared per-sequence NLL"
    flags = {v for x in (a, b) if "converged" in x for v in x["converged"] if isinstance(v, (bool, np.bool_))}
    return {"delta": delta, "ci_low": lo, "ci_high": hi, "verdict": stats.verdict(lo, hi, mode), "ci_method": method,
            "mixed_convergence": len(flags) > 1}


def compare_verdicts(sweeps: list[Sweep], long: pd.DataFrame, names: dict[Any, str]) -> pd.DataFrame:
    """For each later sweep and each design it shares with the first: the first objective's difference (later −
    first) with its interval and verdict. ``long``: :func:`lolsearch.report.compare_frame`'s table."""
    if len(sweeps) < 2 or long.empty:
        return pd.DataFrame()
    q = sweeps[0].objectives[0]
    if q.metric not in long:
        return pd.DataFrame()
    seq_nll: SeqNll = {tid: x for s in sweeps for tid, x in s.seq_nll.items()}
    first = names[sweeps[0].dir]
    rows = []
    for s in sweeps[1:]:
        other = names[s.dir]
        for design, group in long[long["sweep"].isin([first, other])].groupby("design", sort=True):
            a, b = group[group["sweep"] == first], group[group["sweep"] == other]
            if a.empty or b.empty:
                continue
            diff = design_difference(a, b, q.metric, q.mode, seq_nll)
            if diff:
                rows.append({"design": design, "sweep": other, "vs": first, **diff})
    return pd.DataFrame(rows)


def pooled_designs(long: pd.DataFrame, metrics: list[str], modes: list[str]) -> pd.DataFrame:
    """One row per design (its label) run with two or more seeds over all sweeps: the sweeps it ran in, its distinct
    seeds, and per metric the mean with a 95% t interval over those seeds; sorted by the first metric, best first.
    A seed run in two sweeps counts once (the first sweep's trial): it is not an independent replicate."""
    if long.empty or "seed" not in long:
        return pd.DataFrame()
    runs = long.drop_duplicates(["design", "seed"], keep="first")
    rows = []
    for design, group in runs.groupby("design", sort=False):
        if len(group) < 2:
            continue
        row: dict[str, Any] = {"design": design, "sweeps": ", ".join(dict.fromkeys(group["sweep"])),
                               "seeds": ", ".join(str(int(v)) for v in sorted(group["seed"]))}
        for m in metrics:
            mean, low, high = stats.t_interval(pd.to_numeric(group[m], errors="coerce").tolist()) if m in group \
                else (math.nan, math.nan, math.nan)
            row.update({m: mean, f"{m} ci_low": low, f"{m} ci_high": high})
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(metrics[0], ascending=modes[0] == "min", kind="stable")
