"""Pure pandas analysis of a trials table: Pareto fronts, ranking, ablation tables, paper-style pivots.

The table is :func:`lolsearch.report.records.load_records`'s: one row per trial, ``status``, metric columns by their
flat names (``ppl_ratio``), config columns as ``config.<dotted.key>``. Only ``status == "ok"`` rows with finite
objective values are ever ranked; failed, pruned, running and NaN rows never reach a Pareto front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from lolsearch.search.schema import Objective

Mode = Literal["min", "max"]
MISSING = "-"  # level of a conditional factor that a trial did not have
NOT_OK = ("failed", "pruned", "unreadable", "unknown")  # finished (or broken) without a usable result


def numeric_column(df: pd.DataFrame, col: str) -> np.ndarray:
    """``df[col]`` as float ``[N]``; non-numbers and an absent column become NaN."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _minimisation_matrix(df: pd.DataFrame, cols: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    """Objectives as ``[N, K]`` where lower is better (max columns negated)."""
    if not cols or len(cols) != len(modes):
        raise ValueError(f"need one mode per objective column, got cols={list(cols)} modes={list(modes)}")
    bad = [m for m in modes if m not in ("min", "max")]
    if bad:
        raise ValueError(f"mode must be 'min' or 'max', got {bad}")
    return np.column_stack([numeric_column(df, c) * (1.0 if m == "min" else -1.0) for c, m in zip(cols, modes, strict=True)])


def rankable(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """``[N]`` bool: status ok (when the column exists) and every objective finite."""
    ok = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        ok &= (df["status"] == "ok").to_numpy(dtype=bool, na_value=False)
    for c in cols:
        ok &= np.isfinite(numeric_column(df, c))
    return ok


def present_metrics(df: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` with a finite value in at least one ranked row (``front > 0``; every row without ``front``)."""
    ranked = df[df["front"] > 0] if "front" in df else df
    return [m for m in metrics if m in df.columns and np.isfinite(numeric_column(ranked, m)).any()]


def _non_dominated(Y: np.ndarray) -> np.ndarray:
    """``[M]`` bool for ``Y [M, K]`` (minimisation): no other row is <= everywhere and < somewhere.

    Exact duplicates do not dominate each other, so both stay. O(M^2 K) time, O(M K) memory.
    """
    keep = np.ones(len(Y), dtype=bool)
    for i in range(len(Y)):
        dominates_i = (Y[i] >= Y).all(axis=1) & (Y[i] > Y).any(axis=1)
        keep[i] = not dominates_i.any()
    return keep


def pareto_mask(df: pd.DataFrame, cols: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    """``[N]`` bool, True for the non-dominated rows on ``cols`` (``modes``: "min"/"max" per column).

    Rows that are not ``status == "ok"`` or have a NaN/inf objective are never on the front.
    """
    X = _minimisation_matrix(df, cols, modes)
    valid = rankable(df, cols)
    mask = np.zeros(len(df), dtype=bool)
    mask[np.flatnonzero(valid)] = _non_dominated(X[valid])
    return mask


def pareto_fronts(df: pd.DataFrame, cols: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    """``[N]`` int: non-dominated sorting, 1 = Pareto front, 2 = front once 1 is removed, ...; 0 = not ranked."""
    X = _minimisation_matrix(df, cols, modes)
    remaining = rankable(df, cols)
    fronts = np.zeros(len(df), dtype=int)
    k = 1
    while remaining.any():
        idx = np.flatnonzero(remaining)
        layer = idx[_non_dominated(X[idx])]
        fronts[layer] = k
        remaining[layer] = False
        k += 1
    return fronts


def rank_trials(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """A copy of ``df`` with ``front`` (0 = not ranked) and ``rank`` (1..n by front, then objectives in order)."""
    out = df.copy()
    cols, modes = [o.metric for o in objectives], [o.mode for o in objectives]
    out["front"] = pareto_fronts(out, cols, modes) if objectives else 0
    ranked = out[out["front"] > 0].copy()
    for o in objectives:
        ranked[o.metric] = numeric_column(ranked, o.metric)
    order = ranked.sort_values(["front", *cols], ascending=[True, *[m == "min" for m in modes]], kind="stable").index
    out["rank"] = pd.Series(np.arange(1, len(order) + 1), index=order, dtype="Int64")
    return out


def _scalar(v: Any) -> Any:
    """Plain hashable level: NaN/None -> MISSING, integral floats -> int, numpy scalars -> Python."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return MISSING
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return int(v)
    return v


def level_key(v: Any) -> tuple[int, Any]:
    """Sort key for mixed levels: booleans, then numbers ascending, then strings, then MISSING last."""
    if v == MISSING and isinstance(v, str):
        return (3, "")
    if isinstance(v, bool):
        return (0, int(v))
    if isinstance(v, (int, float)):
        return (1, v)
    return (2, str(v))


def factor_values(df: pd.DataFrame, factor: str) -> pd.Series:
    """Levels of a searched dotted key (``attention.window``) per row, as plain Python values (object dtype).

    A key naming a whole sub-config (``distill.layer_weights``) combines its flattened leaf columns into
    one string level (``power power=1``). Absent conditional values become ``"-"``. Raises KeyError when the
    table has no column for the key.
    """
    col = f"config.{factor}"
    if col in df.columns:
        return pd.Series([_scalar(v) for v in df[col].tolist()], index=df.index, dtype=object, name=factor)
    leaves = [c for c in df.columns if c.startswith(col + ".")]
    if not leaves:
        raise KeyError(factor)
    parts = []
    for _, row in df[leaves].iterrows():
        bits = []
        for c in leaves:
            v = _scalar(row[c])
            if v == MISSING:
                continue
            name = c[len(col) + 1:]
            bits.append(str(v) if name in ("kind", "name") else f"{name.split('.')[-1]}={v}")
        parts.append(" ".join(bits) or MISSING)
    return pd.Series(parts, index=df.index, dtype=object, name=factor)


def has_factor(df: pd.DataFrame, factor: str) -> bool:
    col = f"config.{factor}"
    return col in df.columns or any(c.startswith(col + ".") for c in df.columns)


def _sorted_levels(levels: pd.Series) -> list[Any]:
    return sorted(pd.unique(levels), key=level_key)


def coarse_levels(levels: pd.Series, max_levels: int = 8, bins: int = 4) -> tuple[pd.Series, list[Any]]:
    """``(levels, their order)``. A numeric factor with more than ``max_levels`` distinct values (a
    continuous search such as ``loguniform``) is cut into ``bins`` quantile bins, each labelled with the
    observed range ``"lo to hi"``; ``"-"`` (absent) stays its own level, last."""
    present = levels[levels.map(lambda v: not (isinstance(v, str) and v == MISSING)).astype(bool)]
    numeric = len(present) > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if not numeric or present.nunique() <= max_levels:
        return levels, _sorted_levels(levels)
    values = present.astype(float)
    codes = pd.qcut(values, bins, labels=False, duplicates="drop")
    names = {k: f"{values[codes == k].min():.3g} to {values[codes == k].max():.3g}" for k in sorted(codes.unique())}
    out = levels.copy()
    out[present.index] = codes.map(names)
    return out, [*names.values(), *([MISSING] if len(present) < len(levels) else [])]


def _best(values: pd.Series, mode: Mode) -> float:
    return float(values.min() if mode == "min" else values.max())


def ablation_table(df: pd.DataFrame, factor: str, objective: str, mode: Mode) -> pd.DataFrame:
    """Effect of one factor on one objective, other factors marginalised.

    Rows: the factor's levels (sorted; ``"-"`` = conditional value absent; a numeric factor with many
    distinct values is binned, see :func:`coarse_levels`). Columns: ``n`` (ok trials with a
    finite objective), ``failed`` (trials with status failed), ``mean``, ``std`` (sample, NaN for n < 2),
    ``best`` (min or max per ``mode``), ``best_trial`` (its trial_id).
    """
    levels, order = coarse_levels(factor_values(df, factor))
    values = pd.Series(numeric_column(df, objective), index=df.index)
    ok = pd.Series(rankable(df, [objective]), index=df.index)
    failed = (df["status"] == "failed") if "status" in df.columns else pd.Series(False, index=df.index)
    rows = []
    for level in order:
        at = levels.map(lambda v, lv=level: v == lv and type(v) is type(lv)).astype(bool)
        vals = values[at & ok]
        best_idx = (vals.idxmin() if mode == "min" else vals.idxmax()) if len(vals) else None
        rows.append({
            factor: level,
            "n": int(len(vals)),
            "failed": int((at & failed).sum()),
            "mean": float(vals.mean()) if len(vals) else np.nan,
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else np.nan,
            "best": _best(vals, mode) if len(vals) else np.nan,
            "best_trial": df.loc[best_idx, "trial_id"] if best_idx is not None and "trial_id" in df else None,
        })
    return pd.DataFrame(rows).set_index(factor)


def metric_rows(df: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Paper-style rows (e.g. LoLCATs Table 13, window size): one row per level combination of ``factors``,
    ``n`` ok trials and the mean of each metric over them (other factors marginalised)."""
    ok = df[(df["status"] == "ok").to_numpy(dtype=bool, na_value=False)] if "status" in df else df
    if ok.empty:
        return pd.DataFrame()
    keys = pd.DataFrame({f: factor_values(ok, f) for f in factors}, index=ok.index)
    data = pd.DataFrame({m: numeric_column(ok, m) for m in metrics}, index=ok.index)
    combos = sorted({tuple(r) for r in keys.itertuples(index=False)}, key=lambda t: [level_key(v) for v in t])
    rows = []
    for combo in combos:
        at = np.ones(len(ok), dtype=bool)
        for f, v in zip(factors, combo, strict=True):
            at &= keys[f].map(lambda x, v=v: x == v and type(x) is type(v)).to_numpy(dtype=bool)
        rows.append({**dict(zip(factors, combo, strict=True)), "n": int(at.sum()), **data[at].mean().to_dict()})
    return pd.DataFrame(rows).set_index(list(factors))


def level_pivot(df: pd.DataFrame, index: str, columns: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean of ``metric`` over ok trials, ``index`` levels as rows × level combinations of ``columns``
    (e.g. LoLCATs Table 6: feature map × (layout, attention transfer))."""
    table = metric_rows(df, [index, *columns], [metric])
    if table.empty:
        return table
    wide = table[metric].unstack(list(range(1, len(columns) + 1)))
    wide = wide.reindex(sorted(wide.index, key=level_key))
    return wide.reindex(columns=sorted(wide.columns, key=lambda c: [level_key(v) for v in (c if isinstance(c, tuple) else (c,))]))


def varying_config_keys(df: pd.DataFrame) -> list[str]:
    """Dotted config keys (without ``config.``) whose value differs across ok trials (the fallback factors)."""
    ok = df[(df["status"] == "ok").to_numpy(dtype=bool, na_value=False)] if "status" in df else df
    keys = []
    for c in (c for c in df.columns if c.startswith("config.")):
        vals = {repr(_scalar(v)) for v in ok[c].tolist()}
        if len(vals) > 1:
            keys.append(c[len("config."):])
    return keys


def _infer_distribution(levels: list[Any]) -> Any:
    """An Optuna distribution covering the observed ``levels`` (None when the factor never varies)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    uniq = sorted(set(levels), key=level_key)
    if len(uniq) < 2:
        return None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniq)
    if not numeric:
        return CategoricalDistribution([v if isinstance(v, (bool, int, float, str)) else str(v) for v in uniq])
    lo, hi = min(uniq), max(uniq)
    log = lo > 0 and hi / lo >= 10
    if all(isinstance(v, int) for v in uniq):
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(float(lo), float(hi), log=log)


def study_from_records(df: pd.DataFrame, factors: Sequence[str], objectives: Sequence[Objective]) -> Any:
    """An in-memory Optuna study rebuilt from ok trials: params = searched factor levels (absent conditional
    values left out), distributions inferred from the values, one value per objective."""
    import optuna

    cols = [o.metric for o in objectives]
    ok = df[rankable(df, cols)]
    levels = {f: factor_values(ok, f) for f in factors if has_factor(ok, f)}
    dists = {f: _infer_distribution([v for v in s if v != MISSING]) for f, s in levels.items()}
    dists = {f: d for f, d in dists.items() if d is not None}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per report
    try:
        study = optuna.create_study(directions=["minimize" if o.mode == "min" else "maximize" for o in objectives])
    finally:
        optuna.logging.set_verbosity(verbosity)
    for i in ok.index:
        params = {f: levels[f][i] for f in dists if levels[f][i] != MISSING}
        study.add_trial(optuna.trial.create_trial(
            values=[float(ok.at[i, c]) for c in cols], params=params, distributions={f: dists[f] for f in params}))
    return study


def load_journal_study(path: str, name_hint: str | None) -> Any:
    """The study in an Optuna journal file (the one named ``name_hint`` when there are several)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(path))
    names = optuna.study.get_all_study_names(storage)
    if not names:
        raise ValueError("no study in the journal")
    name = name_hint if name_hint in names else names[-1]
    return optuna.load_study(study_name=name, storage=storage)


def importance_table(study: Any, objective_names: Sequence[str]) -> pd.DataFrame:
    """PED-ANOVA importances (Optuna's default evaluator): one column per objective (signs flipped for
    maximised ones, since PED-ANOVA rewards low values) plus ``pareto`` (target None) for several objectives."""
    import warnings

    import optuna

    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    columns: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        # The "importance of low target values" notice: signs are handled above.
        warnings.simplefilter("ignore")
        for i, (name, sign) in enumerate(zip(objective_names, signs, strict=True)):
            columns[name] = optuna.importance.get_param_importances(study, target=lambda t, i=i, s=sign: s * t.values[i])
        if len(signs) > 1:
            columns["pareto"] = optuna.importance.get_param_importances(study)
    table = pd.DataFrame(columns)
    table.index.name = "parameter"
    return table.sort_values(by=table.columns[0], ascending=False)
