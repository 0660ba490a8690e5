"""Report content for :func:`lolsearch.report.records.write_report`: the tables (ranking, quality per cost, ablations,
paper-style pivots, parameter importance, failures, provenance), their markdown and LaTeX, and the plots."""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from lolsearch.report import plots
from lolsearch.report.ablation_views import ablation_views, blocks_varying
from lolsearch.report.ablations import ablation_frame, block_importance
from lolsearch.report.analysis import (
    importance_table,
    level_pivot,
    load_journal_study,
    metric_rows,
    numeric_column,
    present_metrics,
    rankable,
    study_from_records,
)
from lolsearch.report.blocks import space_blocks
from lolsearch.report.comparison import compare_verdicts
from lolsearch.report.diagnostics import convergence_lines, design_summary, extra_plots
from lolsearch.report.records import Sweep, fmt, sweep_names
from lolsearch.report.units import with_units

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 4
MIN_TRIALS_PER_BLOCK = 20  # PED-ANOVA contrasts the best 10% with the rest: at least 2 trials in that top set
TOP_N = 25
MAX_PROBLEM_ROWS = 60
EXTRA_METRICS = ("ppl", "ppl_ratio", "ppl_ratio_ft", "kl_teacher", "top1_agree", "state_ratio_32k")
PAPER_METRICS = ("ppl_swap", "ppl_distill", "ppl", "ppl_ratio", "ppl_ratio_ft", "kl_teacher", "top1_agree", "mse_eval")
COST_METRICS = ("state_bytes_32k", "state_ratio_32k", "attn_flops_per_token_32k", "decode_tok_s", "peak_mem_mb")
COMPONENTS = ("attention.feature_map.kind", "attention.layout", "distill.enabled")
ROW_SPECS = (  # key, title, context factors (used when searched), main factor candidates
    ("window", "Window size (cf. LoLCATs Table 13)", ("attention.layout",), ("attention.window",)),
    ("lora_rank", "LoRA rank (cf. LoLCATs Table 11)", (), ("finetune.lora.rank",)),
    ("lora_targets", "LoRA targets (cf. LoLCATs Table 12)", (), ("finetune.lora.targets",)),
    ("layer_weights", "Layer weights of the attention-transfer loss", (), ("distill.layer_weights", "distill.layer_weights.kind")),
    ("distill_budget", "Attention-transfer budget (cf. LoLCATs Table 16)", (), ("distill.tokens", "distill.steps")),
)


@dataclass
class Table:
    """A titled table; ``key`` names its LaTeX label (``tab:<key>``)."""

    key: str
    title: str
    frame: pd.DataFrame
    caption: str = ""


def _columns_text(frame: pd.DataFrame) -> list[str]:
    cols = []
    for c in frame.columns:
        parts = c if isinstance(c, tuple) else (c,)
        names = frame.columns.names if isinstance(frame.columns, pd.MultiIndex) else [frame.columns.name]
        cols.append(", ".join(f"{n}={fmt(v)}" if n else fmt(v) for n, v in zip(names, parts, strict=True)))
    return cols


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as formatted text (index kept)."""
    return frame.map(fmt) if not frame.empty else frame


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub markdown; the index becomes the first column(s), MultiIndex columns are flattened."""
    if frame.empty:
        return "_(empty)_"
    frame = with_units(frame)
    flat = frame.reset_index() if _has_index(frame) else frame.reset_index(drop=True)
    headers = [*([fmt(n) for n in frame.index.names] if _has_index(frame) else []), *_columns_text(frame)]
    align = ["right" if _is_numeric(flat.iloc[:, j]) else "left" for j in range(flat.shape[1])]
    cells = _display(flat).map(lambda s: s.replace("|", "\\|").replace("\n", " "))
    return cells.to_markdown(index=False, headers=headers, colalign=align, disable_numparse=True)


def _has_index(frame: pd.DataFrame) -> bool:
    return any(n is not None for n in frame.index.names)


def latex_table(t: Table) -> str:
    """booktabs tabular inside a table float, every text escaped for LaTeX; headers read as words
    (``ppl_ratio_ft`` -> ``ppl ratio ft``), byte columns in KiB/MiB/GiB."""
    multi = isinstance(t.frame.columns, pd.MultiIndex)
    frame = t.frame if multi else with_units(t.frame.reset_index(drop=not _has_index(t.frame)))
    if not multi:
        frame = frame.rename(columns=lambda c: str(c).replace("_", " "))
    shown = _display(frame)
    shown.index = pd.MultiIndex.from_tuples([tuple(fmt(v) for v in ix) for ix in frame.index], names=frame.index.names) \
        if isinstance(frame.index, pd.MultiIndex) else pd.Index([fmt(v) for v in frame.index], name=frame.index.name)
    if isinstance(frame.columns, pd.MultiIndex):
        shown.columns = pd.MultiIndex.from_tuples([tuple(fmt(v) for v in c) for c in frame.columns], names=frame.columns.names)
    nidx = frame.index.nlevels if multi and _has_index(frame) else 0
    spec = "l" * nidx + "".join("r" if _is_numeric(frame[c]) else "l" for c in frame.columns)
    caption = _latex_escape(t.title + (f". {t.caption}" if t.caption else ""))
    label = "tab:" + re.sub(r"[^A-Za-z0-9:-]+", "-", t.key)
    return shown.to_latex(index=bool(nidx), escape=True, column_format=spec, caption=caption,
                          label=label, position="htbp", multicolumn=True, multicolumn_format="c")


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in text)


def _ranked_columns(s: Sweep) -> list[str]:
    objs = [o.metric for o in s.objectives]
    extras = [m for m in present_metrics(s.df, EXTRA_METRICS) if m not in objs][:3]
    converged = ["converged"] if "converged" in s.df and s.df["converged"].notna().any() else []
    return ["rank", "front", "trial_id", "label", *objs, *extras, *converged]


def ranking_tables(s: Sweep) -> list[Table]:
    """Pareto front, top of the non-dominated sorting and quality per cost."""
    ranked = s.df[s.df["front"] > 0].sort_values("rank")
    if ranked.empty:
        return []
    cols = _ranked_columns(s)
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in s.objectives)
    tables = [
        Table("pareto", "Pareto front", ranked[ranked["front"] == 1][cols].set_index("rank"),
              f"Non-dominated ok trials on {objectives}"),
        Table("ranking", f"Ranking (top {min(TOP_N, len(ranked))} of {len(ranked)})", ranked[cols].head(TOP_N).set_index("rank"),
              "Non-dominated sorting: front 1 is the Pareto front, front k + 1 the front once fronts 1..k are removed"),
    ]
    cost = present_metrics(s.df, COST_METRICS)
    if cost:
        q = s.objectives[0].metric
        view = ranked[["trial_id", "label", q, *[c for c in cost if c != q]]].copy()
        teacher = numeric_column(ranked, "teacher_attn_flops_per_token_32k")
        if "attn_flops_per_token_32k" in cost and np.isfinite(teacher).any():
            view["attn_flops_vs_teacher_32k"] = numeric_column(ranked, "attn_flops_per_token_32k") / teacher
        keys = list(dict.fromkeys([cost[0], q]))
        view = view.sort_values(keys, ascending=[True, s.objectives[0].mode == "min"][: len(keys)], kind="stable")
        tables.append(Table("cost", "Quality per cost", view.set_index("trial_id"),
                            f"Ok trials, cheapest first by {cost[0]} (per sequence); quality is {q}"))
    return tables


def ablation_tables(s: Sweep, frame: pd.DataFrame) -> list[Table]:
    """One table per block and objective from the ablation table (:mod:`.ablation_views`)."""
    return [Table(*view) for view in ablation_views(frame)]


def pivot_tables(s: Sweep) -> list[Table]:
    """Paper-style views for the factors that were searched (LoLCATs Tables 6, 11, 12, 13, 16)."""
    if not (s.df["front"] > 0).any():
        return []
    q = s.objectives[0].metric
    metrics = list(dict.fromkeys([*(o.metric for o in s.objectives), *present_metrics(s.df, PAPER_METRICS)]))
    tables = []
    comps = [f for f in COMPONENTS if f in s.factors]
    if len(comps) >= 2:
        df, where = blocks_varying(s.df, s.space, comps)
        tables.append(Table("components", f"Components: {' x '.join(comps)} (cf. LoLCATs Table 6)",
                            level_pivot(df, comps[0], comps[1:], q), f"Mean {q} over ok trials{where}"))
    for key, title, context, candidates in ROW_SPECS:
        main = next((f for f in candidates if f in s.factors), None)
        if main:
            keys = [*(c for c in context if c in s.factors), main]
            df, where = blocks_varying(s.df, s.space, [main])
            tables.append(Table(key, title, metric_rows(df, keys, metrics), f"Mean over ok trials{where} at each level"))
    return [t for t in tables if not t.frame.empty]


def importance(s: Sweep) -> tuple[Table | None, str]:
    """PED-ANOVA importances. A space of several blocks: inside each block that supports it (the others named with
    the reason), never on their union. One block: from ``optuna.journal`` if present, else from the records."""
    if len(space_blocks(s.space)) > 1:
        frame, notes = block_importance(s.df, s.space, s.objectives, MIN_TRIALS_PER_BLOCK)
        reason = "Left out: " + "; ".join(notes) + "." if notes else ""
        if frame.empty:
            return None, "Parameter importance skipped in every block. " + reason
        table = Table("importance", "Parameter importance per block (Optuna PED-ANOVA)", frame.set_index(["block", "parameter"]),
                      "Computed inside each block from its ok records (a union of blocks confounds their factors). Per "
                      "objective: importance for reaching its best 10%; pareto: for reaching the Pareto front. Noisy "
                      "with few trials" + (". " + reason if reason else ""))
        return table, ""
    n_ok = int(rankable(s.df, [o.metric for o in s.objectives]).sum())
    if n_ok < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"Parameter importance skipped: {n_ok} ok trial(s) with every objective, need {MIN_TRIALS_FOR_IMPORTANCE}."
    names = [o.metric for o in s.objectives]
    journal = s.dir / "optuna.journal"
    problems = []
    if journal.is_file():
        try:
            study = load_journal_study(str(journal), s.name)
            done = [t for t in study.trials if t.state.name == "COMPLETE"]
            if len(done) >= MIN_TRIALS_FOR_IMPORTANCE:
                labels = study.metric_names or (names if len(names) == len(study.directions) else
                                                [f"objective {i}" for i in range(len(study.directions))])
                return _importance_table(importance_table(study, labels), f"optuna.journal study '{study.study_name}', "
                                         f"{len(done)} complete trials"), ""
            problems.append(f"optuna.journal has {len(done)} complete trials")
        except Exception as err:  # any failure here must not stop the report
            problems.append(f"optuna.journal unusable ({type(err).__name__}: {err})")
    try:
        study = study_from_records(s.df, s.factors, s.objectives)
        src = f"study rebuilt from {n_ok} ok records" + (f" ({'; '.join(problems)})" if problems else "")
        return _importance_table(importance_table(study, names), src), ""
    except Exception as err:
        return None, f"Parameter importance skipped: {type(err).__name__}: {err}"


def _importance_table(frame: pd.DataFrame, source: str) -> Table:
    return Table("importance", "Parameter importance (Optuna PED-ANOVA)", frame,
                 f"Source: {source}. Per objective: importance for reaching its best 10%; pareto: for reaching the "
                 "Pareto front. Noisy with few trials")


def problem_trials(s: Sweep) -> Table | None:
    bad = s.df[~s.df["status"].isin(["ok"])]
    if bad.empty:
        return None
    order = {"failed": 0, "unreadable": 1, "running": 2}
    bad = bad.sort_values("status", key=lambda st: st.map(lambda v: order.get(v, 3)), kind="stable")
    frame = bad[["trial_id", "status", "label", "error"]].head(MAX_PROBLEM_ROWS).copy()
    frame["error"] = frame["error"].map(lambda e: e[:400] + " ..." if isinstance(e, str) and len(e) > 400 else e)
    more = f"; {len(bad) - MAX_PROBLEM_ROWS} more in trials.csv" if len(bad) > MAX_PROBLEM_ROWS else ""
    return Table("not-ok", "Trials that are not ok", frame.set_index("trial_id"),
                 f"running = no result.json yet (still running, or interrupted); logs in trials/<id>/log.txt{more}")


def compute_hours(s: Sweep) -> list[str]:
    """GPU-hours (trial total_s x the space's GPU fraction) and CPU trial-hours, from the records."""
    total = numeric_column(s.df, "timing.total_s")
    devices = s.df["device"].tolist() if "device" in s.df else [None] * len(s.df)
    on_gpu = np.array([isinstance(d, str) and d.lower() != "cpu" for d in devices], dtype=bool)
    on_cpu = np.array([isinstance(d, str) and d.lower() == "cpu" for d in devices], dtype=bool)
    timed = np.isfinite(total)
    lines = []
    if (on_gpu & timed).any():
        resources = s.space.get("resources") or s.meta.get("resources")
        frac = resources.get("gpu") if isinstance(resources, dict) else None
        assumed = "" if isinstance(frac, (int, float)) and frac > 0 else " (no resources.gpu given: 1 GPU per trial)"
        frac = frac if not assumed else 1.0
        hours = float(total[on_gpu & timed].sum()) * frac / 3600
        lines.append(f"GPU-hours: {fmt(hours)} = sum of total_s over {int((on_gpu & timed).sum())} GPU trials x {fmt(frac)} GPU{assumed}")
    if (on_cpu & timed).any():
        seconds = float(total[on_cpu & timed].sum())
        lines.append(f"CPU trial-hours: {fmt(seconds / 3600)} ({fmt(seconds)} s) over {int((on_cpu & timed).sum())} trials on CPU")
    untimed = int((~timed).sum())
    if untimed:
        lines.append(f"{untimed} trial(s) without timing.total_s not counted")
    return lines


def _unique(df: pd.DataFrame, col: str) -> list[str]:
    return [str(v) for v in pd.unique(df[col].dropna())] if col in df else []


def provenance(s: Sweep) -> list[str]:
    """Bullet lines: space file, command, sampler, times, git sha, versions, devices, compute."""
    m, lines = s.meta, []
    lines.append(f"space file: `{m.get('space_file') or (s.dir / 'space.yaml')}`")
    for key in ("command", "sampler", "started_at", "finished_at", "num_trials_planned"):
        if m.get(key) is not None:
            text = m[key] if isinstance(m[key], str) else json.dumps(m[key])
            lines.append(f"{key.replace('_', ' ')}: `{text}`" if key in ("command", "sampler") else f"{key.replace('_', ' ')}: {text}")
    shas = _unique(s.df, "env.git_sha")
    lines.append(f"git sha: {m.get('git_sha') or '-'}" + (f"; trials ran at {', '.join(shas)}" if shas else ""))
    versions = m.get("versions") or {k[4:]: ", ".join(_unique(s.df, k)) for k in
                                      ("env.lolsearch", "env.torch", "env.transformers", "env.peft", "env.python") if k in s.df}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    counts = s.df["device"].value_counts().to_dict() if "device" in s.df else {}
    devices = m.get("devices")
    devices = ", ".join(map(str, devices)) if isinstance(devices, list) else (devices or "-")
    per = "; ".join(f"{k}: {v}" for k, v in counts.items())
    lines.append(f"devices: {devices}" + (f" (trials per device: {per})" if per else ""))
    return lines + compute_hours(s)


def _rerun(s: Sweep, trial_id: str) -> str:
    trial_dir = s.trial_paths.get(trial_id, s.dir / "trials" / trial_id)
    return f"lolsearch run {shlex.quote(str(trial_dir / 'config.yaml'))} --out {shlex.quote(str(s.dir / 'reruns' / trial_id))}"


def best_configs(s: Sweep, limit: int = 10) -> list[str]:
    """Markdown bullets: the Pareto trials (best of each objective marked) with the command that re-runs each."""
    front = s.df[s.df["front"] == 1].sort_values("rank")
    best = {}
    for o in s.objectives:
        vals = numeric_column(front, o.metric)
        target = np.nanmin(vals) if o.mode == "min" else np.nanmax(vals)
        for tid in front["trial_id"][vals == target]:
            best.setdefault(tid, []).append(f"best {o.metric}")
    lines = []
    for _, row in front.head(limit).iterrows():
        vals = ", ".join(f"{o.metric} = {fmt(row[o.metric])}" for o in s.objectives)
        tag = f" (**{', '.join(best[row['trial_id']])}**)" if row["trial_id"] in best else ""
        lines.append(f"- `{row['trial_id']}` {row['label']}{tag}: {vals}\n  `{_rerun(s, row['trial_id'])}`")
    if len(front) > limit:
        lines.append(f"- ... {len(front) - limit} more in pareto.csv")
    return lines


def build_report(s: Sweep, frame: pd.DataFrame | None = None) -> tuple[str, str]:
    """(report.md text, report.tex text). Writes the plots as a side effect. ``frame``: the ablation table
    (:func:`lolsearch.report.ablations.ablation_frame`), computed here when not given."""
    counts = s.df["status"].value_counts().to_dict()
    n_ranked = int((s.df["front"] > 0).sum())
    tables = ranking_tables(s)
    frame = ablation_frame(s.df, s.space, s.objectives, s.seq_nll, s.factors) if frame is None else frame
    ablations, pivots = ablation_tables(s, frame), pivot_tables(s)
    designs_frame, designs_caption = design_summary(s)
    designs = Table("designs", "Designs over seeds", designs_frame, designs_caption) if designs_frame is not None else None
    imp, imp_note = importance(s)
    made, plot_notes = plots.write_plots(s)
    made += extra_plots(s, frame)
    md = [f"# Sweep report: {s.name}", "",
          f"Folder `{s.dir}`; {len(s.df)} trial folders: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none")
          + f"; {n_ranked} ok with every objective recorded (ranked).",
          f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the stored records.", "",
          "Objectives (" + s.objectives_source + "): " + ", ".join(f"`{o.metric}` ({o.mode})" for o in s.objectives) + ".",
          "Factors (" + s.factors_source + "): " + (", ".join(f"`{f}`" for f in s.factors) or "none") + ".", ""]
    md += [f"> Note: {n}" for n in s.notes] + ([""] if s.notes else [])
    md += _findings(s)
    if n_ranked == 0:
        md += ["**No trial finished ok with every objective recorded: nothing to rank.**", ""]
    else:
        md += _section("Pareto front and ranking", tables[:2])
        md += ["## Best configs and how to re-run them", "", *best_configs(s), ""]
        md += _section("Quality per cost", tables[2:])
        md += ["## Convergence", "", *convergence_lines(s), ""]
        md += _section("Ablations", ablations)
        md += _section("Designs over seeds", [designs] if designs else [])
        md += _section("Paper-style tables", pivots)
        md += ["## Parameter importance", ""] + ([markdown_table(imp.frame), "", f"_{imp.caption}._", ""] if imp else [imp_note, ""])
    md += ["## Plots", ""] + [f"### {t}\n\n![{t}]({p})\n" for t, p in made] + [f"- {n}" for n in plot_notes] + [""]
    bad = problem_trials(s)
    md += _section("Trials that are not ok", [bad] if bad else [])
    md += ["## Provenance", "", *[f"- {line}" for line in provenance(s)], ""]
    latex_tables = [*tables, *ablations, *([designs] if designs else []), *pivots, *([imp] if imp else [])]
    return "\n".join(md), _latex_document(s, latex_tables)


FINDINGS_FILE = "FINDINGS.md"


def _findings(s: Sweep) -> list[str]:
    """The researcher's own reading of the sweep (``FINDINGS.md`` beside the trials), included verbatim with its
    title dropped and headings moved one level down, so report.md carries the analysis next to the tables it cites."""
    path = Path(s.dir) / FINDINGS_FILE
    if not path.is_file():
        return []
    lines = path.read_text().strip().splitlines()
    if lines and lines[0].startswith("#"):  # its own title: the report's heading replaces it
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    body = [("#" + line if line.startswith("#") else line) for line in lines]
    return ["## Findings", "", f"_From `{FINDINGS_FILE}` in the sweep folder (written by hand from trials.csv)._", "",
            *body, ""]


def _section(title: str, tables: list[Table]) -> list[str]:
    if not tables:
        return []
    lines = [f"## {title}", ""]
    for t in tables:
        lines += ([] if t.title == title else [f"### {t.title}", ""]) + [markdown_table(t.frame), ""] + ([f"_{t.caption}._", ""] if t.caption else [])
    return lines


def _latex_document(s: Sweep, tables: list[Table]) -> str:
    head = [f"% lolsearch report tables for {s.name} ({s.dir}); generated from the stored records.",
            "% Needs \\usepackage{booktabs}. Paste the tables you need."]
    if not tables:
        head.append("% No trial finished ok with every objective recorded: no tables.")
    return "\n".join(head) + "\n\n" + "\n".join(latex_table(t) for t in tables)


def compare_markdown(sweeps: list[Sweep], long: pd.DataFrame, pooled: pd.DataFrame | None = None) -> str:
    """compare.md: a summary row per sweep, the first objective per design (rows) and sweep (columns), the designs
    pooled over the seeds of all sweeps (``pooled``), then the verdicts."""
    rows, names = [], sweep_names(sweeps)
    for s in sweeps:
        ranked = s.df[s.df["front"] > 0].sort_values("rank")
        q = s.objectives[0]
        best = ranked.iloc[0] if len(ranked) else None
        rows.append({"sweep": names[s.dir], "space": s.name, "folder": str(s.dir), "model": ", ".join(_unique(s.df, "config.model.source")) or "-",
                     "trials": len(s.df), "ok": int((s.df["status"] == "ok").sum()),
                     "failed": int((s.df["status"] == "failed").sum()), "pareto": int((s.df["front"] == 1).sum()),
                     "objective": f"{q.metric} ({q.mode})", "best": best[q.metric] if best is not None else np.nan,
                     "best trial": f"{best['trial_id']} {best['label']}" if best is not None else "-"})
    md = ["# Sweep comparison", "", markdown_table(pd.DataFrame(rows).set_index("sweep")), ""]
    q = sweeps[0].objectives[0].metric
    if not long.empty and q in long:
        pivot = long.pivot_table(index="design", columns="sweep", values=q, aggfunc="mean")
        shared = pivot.dropna(thresh=2)
        md += [f"## Mean `{q}` per design and sweep", "",
               markdown_table(shared if not shared.empty else pivot), "",
               "_Designs run in at least two sweeps._" if not shared.empty else "_No design was run in two sweeps: all designs shown._", ""]
    if pooled is not None and not pooled.empty:
        md += ["## Designs over seeds, all sweeps pooled", "", markdown_table(pooled.set_index("design")), "",
               "_Mean and 95% t interval over each design's distinct seeds, wherever they ran (designs.csv); a seed run "
               "in two sweeps counts once._", ""]
    verdicts = compare_verdicts(sweeps, long, names)
    if not verdicts.empty:
        md += [f"## `{q}`: differences to `{names[sweeps[0].dir]}`", "", markdown_table(verdicts.set_index(["design", "sweep"])),
               "", "_Verdicts read the 95% interval of the difference (later sweep − first), not the sign of two point "
               "estimates._", ""]
    md += ["Every ok trial of every sweep is in compare.csv.", ""]
    return "\n".join(md)
