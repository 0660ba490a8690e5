"""The ablation table (``ablations.csv``) as report tables, and the trials a paper-style table may average over."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lolsearch.report.blocks import in_block, space_blocks
from lolsearch.report.records import fmt


def _interval(lo: float, hi: float) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else "-"


def ablation_views(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, str]]:
    """``(key, title, table, caption)`` per block and objective: each level's mean with its 95% interval, its
    difference to the reference level with its interval, and the verdict that interval supports."""
    views = []
    for (block, metric), sub in frame.groupby(["block", "metric"], sort=False):
        view = pd.DataFrame({
            "factor": sub["factor"], "level": sub["level"].map(fmt), "n": sub["n"], "mean": sub["mean"],
            "mean 95% CI": [_interval(lo, hi) for lo, hi in zip(sub["ci_low"], sub["ci_high"], strict=True)],
            "Δ vs ref": sub["delta_vs_ref"].where(sub["verdict"] != "reference"),
            "Δ 95% CI": [_interval(lo, hi) for lo, hi in zip(sub["delta_ci_low"], sub["delta_ci_high"], strict=True)],
            "verdict": sub["verdict"].replace("reference", "reference (base value)"),
            "unconverged": sub["unconverged"],
        }).set_index(["factor", "level"])
        firsts = sub.drop_duplicates("factor")
        notes = [f"{f} reports for {t}" for f, t in firsts[["factor", "tied_with"]].itertuples(index=False) if t]
        methods = "; ".join(f"{f}: {m}" for f, m in sub[sub["ci_method"] != ""].drop_duplicates("factor")[
            ["factor", "ci_method"]].itertuples(index=False))
        mixed = sub[sub["mixed_convergence"].astype(bool)]
        warn = ([f"WARNING: {', '.join(f'{f}={fmt(v)}' for f, v in mixed[['factor', 'level']].itertuples(index=False))} "
                 "compare(s) converged with unconverged designs"] if len(mixed) else [])
        caption = ("Only this block's trials; mean = over the level's designs, its interval the noise in it (per-"
                   "sequence bootstrap or seeds; '-' with one seed and no per-sequence NLL); Δ = level − reference, "
                   "paired on the block's other factors where both were run; the verdict reads the Δ interval "
                   f"({methods or 'no interval'}); unconverged = trials whose validation curve was still falling")
        views.append((f"ablation-{block}-{metric}", f"Block {block}: effects on {metric}", view,
                      ". ".join([caption, *notes, *warn])))
    return views


def blocks_varying(df: pd.DataFrame, space: dict, factors: list[str]) -> tuple[pd.DataFrame, str]:
    """The trials of the blocks that search every one of ``factors`` and a caption note naming them (all trials
    for a one-block space): a union of blocks would mix the base value of a factor with other blocks' designs."""
    blocks = space_blocks(space)
    names = [b.name for b in blocks if all(f in b.keys for f in factors)]
    if len(blocks) <= 1 or not names:
        return df, ""
    mask = np.logical_or.reduce([in_block(df, n) for n in names])
    return df[mask], f" of block{'s' if len(names) > 1 else ''} {', '.join(names)}"
