"""Report figures (matplotlib, Agg, no pyplot state): Pareto scatter, quality vs cost, per-layer MSE heatmap,
learning curves (effect plots: :mod:`.effect_plots`). Each function writes one PNG atomically and takes plain tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from lolsearch.core.files import atomic_file
from lolsearch.report.analysis import NOT_OK, Objective, numeric_column, present_metrics
from lolsearch.search.metrics import label as metric_label

if TYPE_CHECKING:
    from lolsearch.report.records import Sweep

DPI = 130
MAX_LABELS = 12
_LABELS = {
    "ppl": "perplexity (student)",
    "ppl_ratio": "perplexity ratio, student / teacher",
    "ppl_ratio_ft": "perplexity ratio, student / LoRA-tuned teacher",
    "ppl_distill": "perplexity after attention transfer",
    "ppl_swap": "perplexity after swap (untrained)",
    "kl_teacher": "KL to teacher [nats/token]",
    "top1_agree": "top-1 agreement with teacher",
    "mse_eval": "attention-transfer MSE (held-out)",
    "state_ratio_32k": "state / teacher KV cache at 32K",
    "attn_flops_per_token_32k": "attention FLOPs per token at 32K",
    "decode_tok_s": "decode throughput [tokens/s]",
    "peak_mem_mb": "peak memory [MiB]",
}  # short axis labels; any other metric is labelled from the metric table (lolsearch.search.metrics)
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def byte_unit(metric: str, values: np.ndarray) -> tuple[float, str]:
    """(divisor, name) for showing ``values``: KiB/MiB/GiB by their median for ``*bytes*`` metrics, else (1, "")."""
    v = values[np.isfinite(values)]
    if "bytes" not in metric or not len(v):
        return 1.0, ""
    med = float(np.median(np.abs(v)))
    return next(((2.0**p, n) for p, n in ((30, "GiB"), (20, "MiB"), (10, "KiB")) if med >= 2.0**p), (1.0, "B"))


def axis_label(metric: str, mode: str | None = None, unit: str = "") -> str:
    """Readable axis label with unit (``unit``: from :func:`byte_unit`); ``mode`` adds "lower/higher is better"."""
    if "bytes" in metric:
        ctx = metric.rsplit("_", 1)[-1].upper()
        base = f"{'teacher KV cache' if 'kv' in metric else 'state + window cache'} at {ctx} [{unit or 'B'}/sequence]"
    else:
        base = _LABELS.get(metric) or metric_label(metric)
    if mode:
        base += f" ({'lower' if mode == 'min' else 'higher'} is better)"
    return base


def _wants_log(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return len(v) > 1 and bool((v > 0).all()) and v.max() / v.min() >= 20


def _save(fig: Figure, path: Path) -> None:
    """Renders ``fig`` to ``path`` atomically (temp file + rename)."""
    FigureCanvasAgg(fig)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def _label_points(ax, xs: np.ndarray, ys: np.ndarray, labels: Sequence[str], fontsize: float = 7) -> None:
    """Short labels right of the points, stacked bottom-up so no two overlap; thin leader lines when moved.

    Call after the axes scales are set (positions are computed in display space).
    """
    ax.autoscale_view()
    scale = 72 / ax.figure.dpi  # display pixels -> points
    pts = ax.transData.transform(np.column_stack([xs, ys])) * scale
    gap, last = fontsize * 1.4, -np.inf
    for i in np.argsort(pts[:, 1], kind="stable"):
        target = max(pts[i, 1], last + gap)
        last = target
        dy = target - pts[i, 1]
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=(10, dy), textcoords="offset points", fontsize=fontsize,
                    va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.45"} if dy > 1 else None,
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.8}, zorder=2.5)


def pareto_plot(df: pd.DataFrame, x: Objective, y: Objective, path: Path, n_objectives: int, n_not_ok: int) -> None:
    """Scatter of ok trials, ``y`` (quality) against ``x`` (cost); ``front == 1`` rows highlighted and joined.

    ``df`` needs ``front`` and ``label`` columns; only ``front > 0`` rows are drawn.
    """
    d = df[df["front"] > 0]
    xs, ys = numeric_column(d, x.metric), numeric_column(d, y.metric)
    (xdiv, xunit), (ydiv, yunit) = byte_unit(x.metric, xs), byte_unit(y.metric, ys)
    xs, ys = xs / xdiv, ys / ydiv
    on = (d["front"] == 1).to_numpy()
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    ax.scatter(xs[~on], ys[~on], s=28, c="#9a9a9a", alpha=0.8, label="dominated", zorder=2)
    ax.scatter(xs[on], ys[on], s=60, c="#d62728", edgecolors="black", linewidths=0.6, label="Pareto front", zorder=3)
    if n_objectives == 2 and on.sum() > 1:
        order = np.argsort(xs[on])
        ax.step(xs[on][order], ys[on][order], where="post" if x.mode == "min" else "pre", c="#d62728", lw=1, alpha=0.6)
    ax.set_xscale("log" if _wants_log(xs) else "linear")
    ax.set_yscale("log" if _wants_log(ys) else "linear")
    labels = d["label"].astype(str).tolist()
    # All points when few, else the front (best ranked first, at most MAX_LABELS).
    pick = np.ones(len(d), bool) if len(d) <= MAX_LABELS else on & (d["rank"] <= d["rank"][on].nsmallest(MAX_LABELS).max()).to_numpy()
    _label_points(ax, xs[pick], ys[pick], [lb for lb, p in zip(labels, pick, strict=True) if p])
    ax.set_xlabel(axis_label(x.metric, x.mode, xunit))
    ax.set_ylabel(axis_label(y.metric, y.mode, yunit))
    extra = {1: f"; front = best {y.metric}", 2: ""}.get(n_objectives, f"; front on all {n_objectives} objectives")
    ax.set_title(f"Quality vs efficiency: {len(d)} ok trials, {int(on.sum())} on the front"
                 f"{f', {n_not_ok} failed/pruned not shown' if n_not_ok else ''}{extra}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def quality_cost_plot(df: pd.DataFrame, quality: Objective, costs: Sequence[tuple[str, str | None]], path: Path) -> None:
    """One panel per ``(cost_metric, teacher_metric)``: quality against cost, the teacher's cost as a dashed
    line (the same for every trial, so its median). Front rows highlighted."""
    d = df[df["front"] > 0]
    ys = numeric_column(d, quality.metric)
    on = (d["front"] == 1).to_numpy()
    fig = Figure(figsize=(5.5 * len(costs), 4.8), layout="constrained")  # panels' labels do not overlap
    for k, (metric, teacher) in enumerate(costs):
        ax = fig.add_subplot(1, len(costs), k + 1)
        xs = numeric_column(d, metric)
        ref = numeric_column(d, teacher) if teacher else np.array([])
        if len(ref) and np.isfinite(ref).all() and (ref > 0).all():
            # the ratio to the teacher's cost: points spread over the axis instead of a sliver next to the teacher
            xs, xlabel = xs / ref, f"{axis_label(metric).split(' [')[0]} / the teacher's (teacher = 1)"
            ref = np.array([])  # the teacher sits at 1: the axis spans the trials, not the gap to the teacher
        else:
            div, unit = byte_unit(metric, xs)
            xs, ref, xlabel = xs / div, ref[np.isfinite(ref)] / div, axis_label(metric, unit=unit)
        ax.scatter(xs[~on], ys[~on], s=26, c="#9a9a9a", label="dominated")
        ax.scatter(xs[on], ys[on], s=50, c="#d62728", edgecolors="black", linewidths=0.6, label="Pareto front")
        if len(ref):
            ax.axvline(float(np.median(ref)), ls="--", c="black", lw=1, label="teacher (softmax)")
        ax.set_xscale("log" if _wants_log(np.concatenate([xs, ref])) else "linear")
        ax.set_yscale("log" if _wants_log(ys) else "linear")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(axis_label(quality.metric, quality.mode))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Quality per cost (ok trials)", fontsize=11)
    _save(fig, path)


def mse_heatmap(mse: dict[str, Sequence[float]], path: Path, note: str = "") -> None:
    """Layers × trials heatmap of per-layer attention-transfer MSE; ``mse`` maps a column label to its
    per-layer values (shorter lists padded with NaN)."""
    labels = list(mse)
    depth = max(len(v) for v in mse.values())
    M = np.full((depth, len(labels)), np.nan)
    for j, lb in enumerate(labels):
        vals = np.asarray(mse[lb], dtype=float)
        M[: len(vals), j] = vals
    finite = M[np.isfinite(M)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if _wants_log(finite) and finite.min() > 0 else None
    fig = Figure(figsize=(max(6.0, 0.32 * len(labels) + 3), max(3.5, 0.22 * depth + 2.2)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(M), aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    step = max(1, math.ceil(depth / 16))
    ax.set_yticks(range(0, depth, step))
    ax.set_ylabel("layer index")
    ax.set_xlabel("trial (best ranked first)")
    ax.set_title(f"Per-layer attention-transfer MSE (held-out, lower is better){note}", fontsize=10)
    fig.colorbar(im, ax=ax, label="MSE" + (" (log scale)" if norm is not None else ""))
    _save(fig, path)


def learning_curves(curves: dict[str, dict[str, list[dict]]], order: Sequence[str], failed: set[str], path: Path) -> None:
    """Loss vs tokens for stage 1 (attention transfer) and stage 2 (LoRA), one line per trial.

    ``curves`` maps a trial label to its record's ``curves``; ``order`` lists labels best first: the first 6
    get colours and a legend entry, the rest are grey; ``failed`` labels are drawn dotted red.
    """
    stages = [("distill", "Stage 1: attention transfer", "attention-transfer loss"),
              ("finetune", "Stage 2: LoRA fine-tune", "next-token loss [nats/token]")]
    fig = Figure(figsize=(12, 5.4), layout="constrained")
    colours = {lb: _PALETTE[i % len(_PALETTE)] for i, lb in enumerate(order[:6])}
    named_failed = set(sorted(failed)[:3])
    legend: dict[str, object] = {}
    for k, (stage, title, ylabel) in enumerate(stages):
        ax = fig.add_subplot(1, 2, k + 1)
        every = []
        for lb in [*reversed(order), *sorted(failed)]:
            c = curves.get(lb, {})
            pts = [p for p in c.get(stage, []) if "tokens" in p and "loss" in p]
            if not pts:
                continue
            x = np.array([p["tokens"] for p in pts], float)
            y = np.array([p["loss"] for p in pts], float)
            every.append(y)
            (line,) = ax.plot(x, y, **_curve_style(lb, colours, failed))
            if lb in colours or lb in named_failed:
                legend[lb] = line
            ev = [p for p in c.get(f"{stage}_eval", []) if "tokens" in p and "eval_loss" in p]
            if ev and lb in colours:
                ax.plot([p["tokens"] for p in ev], [p["eval_loss"] for p in ev], "o--", ms=3, lw=0.8, c=colours[lb])
        if not every:
            ax.text(0.5, 0.5, "no curve recorded", ha="center", va="center", transform=ax.transAxes)
        elif _wants_log(np.concatenate(every)):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tokens seen")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    names = [lb for lb in [*order, *sorted(named_failed)] if lb in legend]
    if names:
        texts = [f"failed: {lb}" if lb in failed else lb for lb in names]
        fig.legend([legend[lb] for lb in names], texts, loc="outside lower center", ncol=3, fontsize=8)
    rest = len(order) - min(len(order), 6)
    fig.suptitle("Learning curves (lines: train loss; circles: held-out eval loss"
                 + (f"; {rest} more trials in grey" if rest else "") + ")", fontsize=11)
    _save(fig, path)


def _curve_style(label: str, colours: dict[str, str], failed: set[str]) -> dict:
    if label in failed:
        return {"c": "#d62728", "ls": ":", "lw": 1.0}
    if label in colours:
        return {"c": colours[label], "lw": 1.6}
    return {"c": "#b0b0b0", "lw": 0.8, "alpha": 0.7}


def write_plots(s: Sweep) -> tuple[list[tuple[str, str]], list[str]]:
    """Writes ``s.dir/plots/*.png`` (stale ones removed first); returns (title, relative path) per plot and
    notes on the plots skipped for lack of data."""
    out = s.dir / "plots"
    for old in out.glob("*.png") if out.is_dir() else []:
        old.unlink()
    made, notes = [], []
    ranked = s.df[s.df["front"] > 0].sort_values("rank")
    if not ranked.empty:
        made += _ranked_plots(s, out)
    mse = _mse_by_layer(s, ranked)
    if mse:
        note = f" (best {len(mse)} of {len(ranked)})" if len(mse) < len(ranked) else ""
        mse_heatmap(mse, out / "mse_by_layer.png", note)
        made.append(("Per-layer attention-transfer MSE", "plots/mse_by_layer.png"))
    else:
        notes.append("No ranked trial has metrics.mse_by_layer: heatmap skipped.")
    curves, order, failed = _curves(s, ranked)
    if curves:
        learning_curves(curves, order, failed, out / "curves.png")
        made.append(("Learning curves", "plots/curves.png"))
    else:
        notes.append("No record has curves: learning-curve plot skipped.")
    return made, notes


def _ranked_plots(s: Sweep, out: Path) -> list[tuple[str, str]]:
    """Pareto scatter, quality per cost and factor effects (needs ranked trials)."""
    made, objs = [], s.objectives
    n_not_ok = int(s.df["status"].isin(NOT_OK).sum())
    cost = next(iter(present_metrics(s.df, ["state_bytes_32k", "attn_flops_per_token_32k"])), None)
    x = objs[1] if len(objs) > 1 else (Objective(metric=cost, mode="min") if cost else None)
    if x is not None:
        pareto_plot(s.df, x, objs[0], out / "pareto.png", len(objs), n_not_ok)
        made.append(("Pareto front", "plots/pareto.png"))
    costs = [(c, t) for c, t in (("state_bytes_32k", "kv_bytes_teacher_32k"),
                                 ("attn_flops_per_token_32k", "teacher_attn_flops_per_token_32k")) if present_metrics(s.df, [c])]
    if costs:
        quality_cost_plot(s.df, objs[0], costs, out / "quality_cost.png")
        made.append(("Quality per cost", "plots/quality_cost.png"))
    return made


def _record_by_id(s: Sweep) -> dict[str, dict[str, Any]]:
    return {str(r.get("trial_id")): r for r in s.records}


def _mse_by_layer(s: Sweep, ranked: pd.DataFrame, limit: int = 40) -> dict[str, list[float]]:
    """Per-layer MSE of the best ``limit`` ranked trials that recorded it, keyed ``label [id]``."""
    recs, out = _record_by_id(s), {}
    for tid, label in zip(ranked["trial_id"], ranked["label"], strict=True):
        vals = (recs.get(str(tid), {}).get("metrics") or {}).get("mse_by_layer")
        if isinstance(vals, list) and vals and len(out) < limit:
            out[f"{label} [{str(tid)[:4]}]"] = [float(v) if v is not None else np.nan for v in vals]
    return out


def _curves(s: Sweep, ranked: pd.DataFrame) -> tuple[dict[str, dict], list[str], set[str]]:
    """Curves of ranked trials (best first), then other ok/pruned ones, then failed ones, keyed ``label [id]``."""
    recs = _record_by_id(s)
    curves, order, failed = {}, [], set()
    bad = s.df[s.df["status"] == "failed"]
    rest = s.df[(s.df["front"] == 0) & s.df["status"].isin(["ok", "pruned"])]
    for frame, is_failed in ((ranked, False), (rest, False), (bad, True)):
        for tid, label in zip(frame["trial_id"], frame["label"], strict=True):
            c = recs.get(str(tid), {}).get("curves")
            if isinstance(c, dict) and any(c.get(k) for k in ("distill", "finetune")):
                name = f"{label} [{str(tid)[:4]}]"
                curves[name] = c
                if is_failed:
                    failed.add(name)
                else:
                    order.append(name)
    return curves, order, failed
