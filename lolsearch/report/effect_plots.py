"""Figures drawn from the ablation table and the per-layer diagnostics: the effect of each level as a dot at its
difference to the reference level with its 95% interval (one panel per block), and per-layer γ / window share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lolsearch.report.analysis import Objective
from lolsearch.report.plots import _PALETTE, _save, axis_label, byte_unit

VERDICT_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "not distinguishable": "#7f7f7f"}


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def effect_dots(frame: pd.DataFrame, objective: Objective, path: Path) -> bool:
    """One panel per block: for each factor level but the reference, ``delta_vs_ref`` (dot) with its 95% interval
    (bar; none when the design gives no interval), coloured by verdict; a line at 0. Returns False (nothing
    written) when the table has no non-reference row for ``objective``."""
    rows = frame[(frame["metric"] == objective.metric) & (frame["verdict"] != "reference")]
    if rows.empty:
        return False
    blocks = list(dict.fromkeys(rows["block"]))
    heights = [max(1.6, 0.32 * (rows["block"] == b).sum() + 0.9) for b in blocks]
    fig = Figure(figsize=(8.5, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(blocks), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    div, unit = byte_unit(objective.metric, rows["delta_vs_ref"].to_numpy(float))
    for ax, block in zip(axes, blocks, strict=True):
        sub = rows[rows["block"] == block]
        ys = np.arange(len(sub))[::-1]
        for y, (_, r) in zip(ys, sub.iterrows(), strict=True):
            colour = VERDICT_COLOURS.get(r["verdict"], _PALETTE[0])
            lo, hi = r["delta_ci_low"], r["delta_ci_high"]
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo / div, hi / div], [y, y], color=colour, lw=2, solid_capstyle="butt")
            ax.plot(r["delta_vs_ref"] / div, y, "o", color=colour, ms=6,
                    mfc=colour if math.isfinite(lo) else "white")
        labels = [f"{r['factor'].split('.')[-1]}: {_text(r['level'])} vs {_text(r['ref_level'])} (n={r['n']})"
                  for _, r in sub.iterrows()]
        ax.set_yticks(ys, labels, fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"block {block}", fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(sub) - 0.3)
    axes[-1].set_xlabel(f"difference to the reference level: {axis_label(objective.metric, unit=unit)}", fontsize=8)
    handles = [axes[0].plot([], [], "o", color=c, label=v)[0] for v, c in VERDICT_COLOURS.items()]
    handles.append(axes[0].plot([], [], "o", color="black", mfc="white", label="no interval")[0])
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=4)
    better = "lower" if objective.mode == "min" else "higher"
    fig.suptitle(f"Effects on {objective.metric} within each block ({better} is better; bars: 95% interval)",
                 fontsize=10)
    _save(fig, path)
    return True


def diagnostics_plot(series: dict[str, dict[str, Sequence[float]]], path: Path) -> bool:
    """Per layer, one line per trial: γ (left) and the share of attention weight on window keys at initialization
    (dashed) and after attention transfer (solid, right). ``series``: label -> the record's list metrics
    (``gamma_by_layer``, ``window_share_init_by_layer``, ``window_share_by_layer``). False when none has them."""
    keep = {lb: m for lb, m in series.items() if m.get("window_share_by_layer") or m.get("gamma_by_layer")}
    if not keep:
        return False
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_g, ax_s = fig.subplots(1, 2)
    for k, (label, m) in enumerate(keep.items()):
        colour = _PALETTE[k % len(_PALETTE)]
        if m.get("gamma_by_layer"):
            ax_g.plot(np.asarray(m["gamma_by_layer"], float), "o-", ms=3, color=colour, label=label)
        if m.get("window_share_init_by_layer"):
            ax_s.plot(np.asarray(m["window_share_init_by_layer"], float), "--", color=colour, lw=1)
        if m.get("window_share_by_layer"):
            ax_s.plot(np.asarray(m["window_share_by_layer"], float), "o-", ms=3, color=colour, label=label)
    ax_g.set_title("γ (softmax-window weight, mean over heads)", fontsize=10)
    ax_s.set_title("share of attention weight on window keys (dashed: at initialization)", fontsize=10)
    shares = np.concatenate([np.asarray(m.get(k) or [], float) for m in keep.values()
                             for k in ("window_share_init_by_layer", "window_share_by_layer")])
    tiny = shares[(shares > 0) & np.isfinite(shares)]
    if len(tiny) and tiny.min() < 1e-2:  # a swamped window: shares orders of magnitude below 1
        ax_s.set_yscale("log")
        ax_s.set_ylim(tiny.min() / 2, 1.5)
    else:
        ax_s.set_ylim(-0.02, 1.02)
    for ax in (ax_g, ax_s):
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles, labels = ax_s.get_legend_handles_labels()
    if not handles:
        handles, labels = ax_g.get_legend_handles_labels()
    fig.legend(handles[:8], labels[:8], fontsize=8, loc="outside lower center", ncol=4)
    _save(fig, path)
    return True
