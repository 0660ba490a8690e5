"""Block-aware ablations (``ablations.csv``): the effect of each searched key, measured only inside a grid block
that varies it, as a difference to its base (reference) level with a 95% interval and a verdict.

Why per block: a union of blocks confounds factors. In a space whose ``main`` block varies attention transfer and
whose ``lora_series`` varies the LoRA rank at the base value of everything else, averaging all trials at rank 8
mixes every no-attention-transfer trial into rank 8 alone.

``delta_vs_ref`` of a level L is paired where the design allows: the mean over the block's *contexts* (the levels
of its other factors) holding both L and the reference of (metric at L − metric at ref), replicates (seeds) of a
design averaged first. Without a shared context it is the difference of the two level means (``n_pairs`` 0).
Its interval (``delta_ci_low``/``delta_ci_high``), in order of preference:

- perplexity metrics (``ppl``, ``ppl_ratio``, ``ppl_ratio_ft``) of trials that stored per-sequence test NLL: a
  paired bootstrap over the test sequences (every design rescored on the same resampled sequences; the teacher
  baseline held fixed), with replicates resampled within each design too;
- a Student-t interval over the paired context differences (two or more);
- a Welch interval between the two levels (two or more trials each, unpaired);
- none: "not distinguishable".

A metric computed from the design (``state_bytes_32k``, FLOPs; ``exact`` in the metric table) that is constant
within each cell has the exact difference as its interval (``ci_method`` "exact: computed from the design").

``verdict`` reads the interval only: "better" / "worse" when it excludes 0, else "not distinguishable".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lolsearch.report import stats
from lolsearch.report.analysis import Objective, coarse_levels, factor_values, has_factor, numeric_column, rankable
from lolsearch.report.blocks import BlockSpec, Tie, base_values, in_block, same_level, space_blocks, ties
from lolsearch.search.metrics import is_exact

COLUMNS = ("block", "factor", "level", "n", "metric", "mean", "ci_low", "ci_high", "ref_level", "delta_vs_ref",
           "delta_ci_low", "delta_ci_high", "verdict", "n_pairs", "ci_method", "tied_with", "unconverged",
           "mixed_convergence")
PPL_METRICS = ("ppl", "ppl_ratio", "ppl_ratio_ft")
SeqNll = dict[str, tuple[np.ndarray, np.ndarray]]  # trial_id -> (nll_sum [n_seq], tokens [n_seq])


def block_factors(df: pd.DataFrame, keys: Sequence[str], constraints: Sequence[str]) -> tuple[list[str], list[Tie]]:
    """The keys that vary in ``df`` (a block's trials) with ties removed, and the ties."""
    tied = ties(df, [k for k in keys if has_factor(df, k)], list(constraints))
    away = {t.key for t in tied}
    varying = [k for k in keys if has_factor(df, k) and k not in away and factor_values(df, k).nunique() > 1]
    return varying, tied


def ablation_frame(df: pd.DataFrame, space: dict[str, Any], objectives: Sequence[Objective],
                   seq_nll: SeqNll | None = None, factors: Sequence[str] = ()) -> pd.DataFrame:
    """The ablation table (columns :data:`COLUMNS`) of a ranked trials frame with a ``block`` column. ``factors``:
    the keys of one ``main`` block when space.yaml searches none (a folder of loose records)."""
    rows: list[dict[str, Any]] = []
    blocks = space_blocks(space)
    if not any(b.keys for b in blocks) and factors:
        blocks = [BlockSpec("main", list(factors), dict.fromkeys(factors))]
    if not blocks or not any(b.keys for b in blocks):
        return pd.DataFrame(columns=list(COLUMNS))
    base = base_values(space, list(dict.fromkeys(k for b in blocks for k in b.keys)))
    constraints = [c for c in space.get("constraints") or [] if isinstance(c, str)]
    for block in blocks:
        members = in_block(df, block.name)
        for o in objectives:
            sub = df[members & rankable(df, [o.metric])]
            if len(sub) < 2:
                continue
            varying, tied = block_factors(sub, block.keys, constraints)
            for f in varying:
                tie = "; ".join(f"{t.key} ({t.reason})" for t in tied if t.with_key == f)
                rows += _factor_rows(sub, block.name, f, [g for g in varying if g != f], o, base.get(f), tie, seq_nll or {})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _factor_rows(sub: pd.DataFrame, block: str, factor: str, others: list[str], o: Objective, base: Any, tie: str,
                 seq_nll: SeqNll) -> list[dict[str, Any]]:
    levels, order = coarse_levels(factor_values(sub, factor))
    ref = next((lv for lv in order if base is not None and same_level(lv, base)), order[0])
    context = _contexts(sub, others)
    values = pd.Series(numeric_column(sub, o.metric), index=sub.index)
    ids = sub["trial_id"].astype(str) if "trial_id" in sub else pd.Series(sub.index.astype(str), index=sub.index)
    design = sub["design_id"].astype(str) if "design_id" in sub else ids
    unconverged, converged = _unconverged(sub), _converged(sub)
    at = {lv: levels.map(lambda v, lv=lv: same_level(v, lv)).to_numpy(dtype=bool) for lv in order}
    out = []
    for lv in order:
        idx = sub.index[at[lv]]
        mean, lo, hi = _level_interval(values[idx], ids[idx], design[idx], o.metric, seq_nll)
        row = {"block": block, "factor": factor, "level": lv, "n": len(idx), "metric": o.metric, "mean": mean,
               "ci_low": lo, "ci_high": hi, "ref_level": ref, "tied_with": tie,
               "unconverged": int(unconverged[idx].sum())}
        if same_level(lv, ref):
            row.update(mixed_convergence=False, delta_vs_ref=0.0, delta_ci_low=math.nan, delta_ci_high=math.nan, verdict="reference",
                       n_pairs=0, ci_method="")
        else:
            row.update(_delta(sub.index[at[lv]], sub.index[at[ref]], context, values, ids, design, o, seq_nll))
            both = at[lv] | at[ref]
            row["mixed_convergence"] = bool(unconverged[both].any() and converged[both].any())
        out.append(row)
    return out


def _contexts(sub: pd.DataFrame, others: list[str]) -> pd.Series:
    """The levels of the block's other factors per row, as one hashable key."""
    if not others:
        return pd.Series([""] * len(sub), index=sub.index, dtype=object)
    cols = [coarse_levels(factor_values(sub, g))[0].map(repr) for g in others]
    return pd.Series(["|".join(t) for t in zip(*cols, strict=True)], index=sub.index, dtype=object)


def _unconverged(sub: pd.DataFrame) -> pd.Series:
    """Rows with a stage whose validation curve had not flattened (``converged_<stage>`` recorded false)."""
    flags = np.zeros(len(sub), dtype=bool)
    for col in ("converged_distill", "converged_finetune"):
        if col in sub:
            flags |= sub[col].map(lambda v: isinstance(v, (bool, np.bool_)) and not v).to_numpy(dtype=bool)
    return pd.Series(flags, index=sub.index)


def _converged(sub: pd.DataFrame) -> pd.Series:
    """Rows whose every recorded stage flag says converged (at least one flag recorded)."""
    known = np.zeros(len(sub), dtype=bool)
    for col in ("converged_distill", "converged_finetune"):
        if col in sub:
            known |= sub[col].map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return pd.Series(known & ~_unconverged(sub).to_numpy(), index=sub.index)


def _level_interval(vals: pd.Series, ids: pd.Series, designs: pd.Series, metric: str,
                    seq_nll: SeqNll) -> tuple[float, float, float]:
    """Mean over a level's designs (each the mean of its seeds) with a 95% interval for the noise in it: a bootstrap
    over the stored per-sequence test NLL (seeds resampled within each design) for perplexity metrics, else a t
    interval from the seeds' pooled variance; none with one seed per design and no per-sequence NLL (the spread
    across a level's designs is the other factors' effect, not noise)."""
    groups = [vals[(designs == d).to_numpy()].to_numpy(float) for d in pd.unique(designs)]
    mean = float(np.mean([g.mean() for g in groups])) if groups else math.nan
    n_seq = {len(seq_nll[i][0]) for i in ids if i in seq_nll}
    if metric in PPL_METRICS and len(n_seq) == 1 and all(i in seq_nll for i in ids):
        idx, rng = stats.sequence_indices(n_seq.pop()), np.random.default_rng(2)
        per_design = []
        for d in pd.unique(designs):
            at = (designs == d).to_numpy()
            reps = np.stack([v * stats.ppl_scale(*seq_nll[i], idx) for v, i in zip(vals[at], ids[at], strict=True)])
            pick = rng.integers(0, len(reps), size=reps.shape) if len(reps) > 1 else np.zeros(reps.shape, dtype=int)
            per_design.append(np.take_along_axis(reps, pick, axis=0).mean(axis=0))
        return (mean, *stats.percentile_interval(np.mean(per_design, axis=0)))
    dof = sum(len(g) - 1 for g in groups)
    if dof < 1:
        return mean, math.nan, math.nan
    pooled = sum(((g - g.mean()) ** 2).sum() for g in groups) / dof
    half = stats.t_quantile(dof) * math.sqrt(pooled * sum(1 / len(g) for g in groups)) / len(groups)
    return mean, mean - half, mean + half


def _delta(at: pd.Index, ref: pd.Index, context: pd.Series, values: pd.Series, ids: pd.Series, design: pd.Series,
           o: Objective, seq_nll: SeqNll) -> dict[str, Any]:
    shared = [c for c in pd.unique(context[at]) if (context[ref] == c).any()]
    if shared:
        pairs = [(at[(context[at] == c).to_numpy()], ref[(context[ref] == c).to_numpy()]) for c in shared]
    else:
        pairs = [(at, ref)]
    diffs = np.array([values[a].mean() - values[b].mean() for a, b in pairs])
    delta = float(diffs.mean())
    trials = [i for a, b in pairs for i in (*a, *b)]
    n_seq = {len(seq_nll[ids[i]][0]) for i in trials if ids[i] in seq_nll}
    if is_exact(o.metric) and all(values[c].nunique() <= 1 for pair in pairs for c in pair):
        lo = hi = delta  # a computed cost (state bytes, FLOPs): the same in every seed, no interval to draw
        method = "exact: computed from the design"
    elif o.metric in PPL_METRICS and len(n_seq) == 1 and all(ids[i] in seq_nll for i in trials):
        lo, hi = _bootstrap_delta(pairs, values, ids, design, seq_nll, n_seq.pop())
        method = f"paired bootstrap over {len(seq_nll[ids[trials[0]]][0])} test sequences"
        if any(design[a].nunique() < len(a) or design[b].nunique() < len(b) for a, b in pairs):
            method += " and seeds"
    elif shared and len(pairs) >= 2:
        _, lo, hi = stats.t_interval(diffs.tolist())
        method = f"t over {len(pairs)} paired contexts"
    elif not shared and len(at) >= 2 and len(ref) >= 2:
        lo, hi = welch_interval(values[at].to_numpy(), values[ref].to_numpy(), delta)
        method = "Welch t (unpaired)"
    else:
        lo, hi, method = math.nan, math.nan, "none: one pair and no per-sequence NLL"
    return {"delta_vs_ref": delta, "delta_ci_low": lo, "delta_ci_high": hi, "verdict": stats.verdict(lo, hi, o.mode),
            "n_pairs": len(shared), "ci_method": method}


def _bootstrap_delta(pairs: list[tuple[pd.Index, pd.Index]], values: pd.Series, ids: pd.Series, design: pd.Series,
                     seq_nll: SeqNll, n_seq: int) -> tuple[float, float]:
    """Percentile interval of the paired delta: sequences resampled jointly for every trial, and the trials
    (seeds) of one design resampled within it."""
    idx = stats.sequence_indices(n_seq)
    rng = np.random.default_rng(1)
    draws: dict[Any, np.ndarray] = {}

    def trial_draws(i: Any) -> np.ndarray:
        if i not in draws:
            draws[i] = float(values[i]) * stats.ppl_scale(*seq_nll[ids[i]], idx)
        return draws[i]

    def cell(members: pd.Index) -> np.ndarray:
        """[n_boot] mean over the cell's designs of each design's (seed-resampled) mean."""
        per_design = []
        for d in pd.unique(design[members]):
            reps = np.stack([trial_draws(i) for i in members[(design[members] == d).to_numpy()]])  # [k, n_boot]
            pick = rng.integers(0, len(reps), size=reps.shape) if len(reps) > 1 else np.zeros(reps.shape, dtype=int)
            per_design.append(np.take_along_axis(reps, pick, axis=0).mean(axis=0))
        return np.mean(per_design, axis=0)

    total = np.mean([cell(a) - cell(b) for a, b in pairs], axis=0)
    return stats.percentile_interval(total)


def welch_interval(a: np.ndarray, b: np.ndarray, delta: float) -> tuple[float, float]:
    """95% Welch interval around ``delta`` = mean(a) − mean(b) (two or more values each; unequal variances)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return delta, delta
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t_quantile(max(1, int(dof)), stats.LEVEL) * se
    return delta - half, delta + half


def largest_effects(frame: pd.DataFrame, block: str, metric: str) -> pd.Series:
    """Per factor of ``block``: the largest |delta_vs_ref| over its levels, largest first."""
    sub = frame[(frame["block"] == block) & (frame["metric"] == metric)]
    return sub.assign(size=sub["delta_vs_ref"].abs()).groupby("factor")["size"].max().sort_values(ascending=False)


def design_frame(df: pd.DataFrame, objectives: Sequence[Objective], seq_nll: SeqNll | None = None) -> pd.DataFrame:
    """One row per design (``design_id``: the config without its seed): label, seeds, then mean and 95% interval
    of each objective over its ok trials (one seed: a bootstrap over its test sequences when stored)."""
    ok = df[rankable(df, [])]
    if ok.empty or "design_id" not in ok:
        return pd.DataFrame()
    rows = []
    for design, group in ok.groupby("design_id", sort=False):
        row: dict[str, Any] = {"design_id": design, "label": group["label"].iloc[0] if "label" in group else "",
                               "seeds": len(group)}
        for o in objectives:
            vals = pd.Series(numeric_column(group, o.metric), index=group.index)
            tids = group["trial_id"].astype(str)
            mean, lo, hi = _level_interval(vals, tids, pd.Series(design, index=group.index), o.metric, seq_nll or {})
            row.update({o.metric: mean, f"{o.metric} ci_low": lo, f"{o.metric} ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def block_importance(df: pd.DataFrame, space: dict[str, Any], objectives: Sequence[Objective],
                     min_trials: int = 4) -> tuple[pd.DataFrame, list[str]]:
    """PED-ANOVA importances computed inside each block (never on a union of blocks, whose factors are confounded):
    ``(table with block, parameter and one column per objective, notes on the blocks left out and why)``.

    A block qualifies with ``min_trials`` ok trials and two or more varying factors once ties are merged (one
    factor needs no ranking: its ablation rows say everything)."""
    from lolsearch.report.analysis import importance_table, study_from_records

    constraints = [c for c in space.get("constraints") or [] if isinstance(c, str)]
    names = [o.metric for o in objectives]
    parts, notes = [], []
    for block in space_blocks(space) or []:
        sub = df[in_block(df, block.name) & rankable(df, names)]
        factors, _ = block_factors(sub, block.keys, constraints)
        if len(sub) < min_trials:
            notes.append(f"block `{block.name}`: {len(sub)} ok trials with every objective, need {min_trials} (PED-ANOVA "
                         "contrasts the best 10% with the rest); its ablation rows give the effects with intervals")
            continue
        if len(factors) < 2:
            notes.append(f"block `{block.name}`: {len(factors)} varying factor(s) once ties are merged; "
                         "its ablation rows are the whole story")
            continue
        try:
            table = importance_table(study_from_records(sub, factors, objectives), names)
        except Exception as err:  # an importance failure must not stop the report
            notes.append(f"block `{block.name}`: importance failed ({type(err).__name__}: {err})")
            continue
        parts.append(table.reset_index().assign(block=block.name, trials=len(sub)))
    if not parts:
        return pd.DataFrame(), notes
    out = pd.concat(parts, ignore_index=True)
    return out[["block", "trials", "parameter", *[c for c in out.columns if c not in ("block", "trials", "parameter")]]], notes
