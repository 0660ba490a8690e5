"""Report sections that qualify the numbers: which trials had not converged, each design's mean and interval over
its seeds, and the figures drawn from the ablation table and the per-layer diagnostics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lolsearch.report.ablations import design_frame
from lolsearch.report.analysis import numeric_column, pareto_fronts
from lolsearch.report.effect_plots import diagnostics_plot, effect_dots
from lolsearch.trial.convergence import THRESHOLD

if TYPE_CHECKING:
    from lolsearch.report.records import Sweep

STAGES = (("distill", "attention transfer"), ("finetune", "LoRA"))
DIAGNOSTIC_METRICS = ("gamma_by_layer", "window_share_init_by_layer", "window_share_by_layer")
MAX_DIAGNOSTIC_TRIALS = 8


def _flags(df: pd.DataFrame, stage: str) -> pd.Series:
    col = f"converged_{stage}"
    if col not in df:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    return df[col].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else None)


def convergence_lines(s: Sweep) -> list[str]:
    """Markdown lines: per stage, how many ranked trials had a validation curve still falling (relative improvement
    over the last quarter of evaluations >= the threshold), and which."""
    ranked = s.df[s.df["front"] > 0]
    lines = [f"A stage counts as converged when its validation loss improved by less than {THRESHOLD:.0%} (relative) "
             "over the last quarter of its evaluations."]
    for stage, title in STAGES:
        flags = _flags(ranked, stage)
        known = flags.map(lambda v: v is not None).to_numpy(dtype=bool)
        if not known.any():
            continue
        bad = ranked[known & flags.map(lambda v: v is False).to_numpy(dtype=bool)]
        gain = numeric_column(bad, f"final_gain_{stage}")
        names = ", ".join(f"{lb} ({g:.1%})" for lb, g in zip(bad["label"], gain, strict=True))
        lines.append(f"- {title}: {len(bad)} of {int(known.sum())} trials not converged"
                     + (f" (last-quarter improvement): {names}" if len(bad) else ""))
    if len(lines) == 1:
        lines.append("- no record has a validation curve long enough to tell")
    elif any("not converged" in ln and not ln.split(": ")[1].startswith("0 of") for ln in lines[1:]):
        lines.append("- Comparisons between designs at different stages of convergence measure the budget as much "
                     "as the design: the ablation tables count unconverged trials per level and warn on mixed pairs.")
    return lines


def design_summary(s: Sweep) -> tuple[pd.DataFrame | None, str]:
    """(one row per design with its seeds' mean and 95% interval per objective, caption); None when no design has
    two seeds and no trial stored per-sequence NLL (the ranking already shows single values then)."""
    frame = design_frame(s.df[s.df["front"] > 0], s.objectives, s.seq_nll)
    if frame.empty or (frame["seeds"].max() < 2 and not s.seq_nll):
        return None, ""
    names, modes = [o.metric for o in s.objectives], [o.mode for o in s.objectives]
    frame.insert(1, "front", pareto_fronts(frame, names, modes))
    ranked = frame[frame["front"] > 0]
    frame = pd.concat([ranked.sort_values(["front", *names], ascending=[True, *[m == "min" for m in modes]],
                                          kind="stable"), frame[frame["front"] == 0]])
    out = frame.set_index("design_id")
    caption = ("Trials sharing a config but for the seed (design_id) aggregated: mean and t interval over seeds; one "
               "seed: percentile bootstrap over its per-sequence test NLL (perplexity metrics only). front: "
               "non-dominated sorting of the designs' means (front 1 is the Pareto front of designs), sorted by it")
    return out, caption


def extra_plots(s: Sweep, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Effect dot plots (one per objective) from the ablation table, and the per-layer γ / window-share plot of the
    best trials that recorded it. Returns (title, relative path) per plot written."""
    out, made = s.dir / "plots", []
    for o in s.objectives if not frame.empty else []:
        if effect_dots(frame, o, out / f"effects_{o.metric}.png"):
            made.append((f"Effects on {o.metric} within each block", f"plots/effects_{o.metric}.png"))
    by_id = {str(r.get("trial_id")): r for r in s.records}
    ranked = s.df[s.df["front"] > 0].sort_values("rank")
    series = {}
    for tid, label in zip(ranked["trial_id"], ranked["label"], strict=True):
        metrics = (by_id.get(str(tid)) or {}).get("metrics") or {}
        if any(isinstance(metrics.get(k), list) for k in DIAGNOSTIC_METRICS):
            series[f"{label} [{tid}]"] = {k: metrics[k] for k in DIAGNOSTIC_METRICS if isinstance(metrics.get(k), list)}
        if len(series) >= MAX_DIAGNOSTIC_TRIALS:
            break
    if diagnostics_plot(series, out / "window_share.png"):
        made.append(("Per-layer γ and share of attention on window keys", "plots/window_share.png"))
    return made
