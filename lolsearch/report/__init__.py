"""``lolsearch report DIR`` / ``lolsearch compare``: a sweep folder -> trials.csv, pareto.csv, report.md,
report.tex and plots/*.png, from the stored records alone (no torch, no Ray; works on a sweep still running or
partly failed). Records: :mod:`.records`; analysis: :mod:`.analysis`; tables and text: :mod:`.render`; figures:
:mod:`.plots`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lolsearch.core.files import atomic_write_text
from lolsearch.report.ablations import ablation_frame
from lolsearch.report.analysis import has_factor
from lolsearch.report.comparison import pooled_designs
from lolsearch.report.records import Sweep, load_records, load_sweep, sweep_names, trial_labels
from lolsearch.report.render import build_report, compare_markdown

__all__ = ["Sweep", "compare", "compare_frame", "load_records", "load_sweep", "write_report"]


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def compare(dirs: list[Path], out: Path) -> Path:
    """One table across sweeps (e.g. the same space on two models): writes ``out/compare.md``, ``out/compare.csv``
    (every ok trial of every sweep, with its sweep, model, seed, label, front and objectives) and ``out/designs.csv``
    (the designs run with two or more seeds over all sweeps, pooled: mean and t interval)."""
    sweeps = [load_sweep(Path(d)) for d in dirs]
    long = compare_frame(sweeps)
    objectives = sweeps[0].objectives
    pooled = pooled_designs(long, [o.metric for o in objectives], [o.mode for o in objectives])
    out = Path(out)
    _write_csv(out / "compare.csv", long)
    _write_csv(out / "designs.csv", pooled)
    path = out / "compare.md"
    atomic_write_text(path, compare_markdown(sweeps, long, pooled))
    return path


def compare_frame(sweeps: list[Sweep]) -> pd.DataFrame:
    """Ok trials of all sweeps, labelled by the union of their searched factors."""
    factors = list(dict.fromkeys(f for s in sweeps for f in s.factors))
    metrics = list(dict.fromkeys(o.metric for s in sweeps for o in s.objectives))
    parts = []
    for s in sweeps:
        ok = s.df[s.df["front"] > 0].copy()
        ok["design"] = trial_labels(ok, [f for f in factors if has_factor(ok, f)])
        ok.insert(0, "sweep", sweep_names(sweeps)[s.dir])
        keep = ["sweep", "config.model.source", "config.seed", "trial_id", "design", "front", "converged", *metrics]
        parts.append(ok.reindex(columns=keep))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True).rename(columns={"config.model.source": "model", "config.seed": "seed"})


def write_report(sweep_dir: Path) -> Path:
    """Writes trials.csv, pareto.csv, ablations.csv, report.md, report.tex and plots/*.png into ``sweep_dir``;
    returns report.md."""
    sweep = load_sweep(Path(sweep_dir))
    _write_csv(sweep.dir / "trials.csv", sweep.df)
    front = sweep.df[sweep.df["front"] == 1].sort_values("rank")
    _write_csv(sweep.dir / "pareto.csv", front)
    ablations = ablation_frame(sweep.df, sweep.space, sweep.objectives, sweep.seq_nll, sweep.factors)
    _write_csv(sweep.dir / "ablations.csv", ablations)
    markdown, latex = build_report(sweep, ablations)
    atomic_write_text(sweep.dir / "report.tex", latex)
    path = sweep.dir / "report.md"
    atomic_write_text(path, markdown)
    return path
