"""``lolsearch report DIR`` / ``lolsearch compare``: a sweep folder -> trials.csv, pareto.csv, report.md,
report.tex and plots/*.png, from the stored records alone (no Ray; works on a sweep still running or partly failed).

Reads ``DIR/trials/<id>/result.json`` (a trial dir without one is listed as running), ``DIR/space.yaml``
(``objectives`` and ``search`` keys), ``DIR/sweep.json`` (provenance) and ``DIR/optuna.journal`` (importance).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from lolsearch.config import design_hash, load_yaml
from lolsearch.core.errors import ConfigError, Problem, did_you_mean
from lolsearch.report.analysis import (
    MISSING,
    Objective,
    factor_values,
    has_factor,
    numeric_column,
    rank_trials,
    rankable,
    varying_config_keys,
)
from lolsearch.report.blocks import infer_blocks
from lolsearch.trial.convergence import stage_convergence
from lolsearch.trial.record import RESULT_FILE, read_result, read_seq_nll

log = logging.getLogger(__name__)

DEFAULT_QUALITY = ("ppl_ratio_ft", "ppl_ratio")
DEFAULT_COST = "state_bytes_32k"
_FIRST_COLUMNS = ("trial_id", "space", "status")
_DESIGN_COLUMNS = ("block", "blocks", "design_id", "converged")
_ABBREV = {"window": "w", "rank": "r"}
_BOOL_NAMES = {"distill.enabled": "AT", "finetune.enabled": "LoRA"}


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts -> ``{"prefix.a.b": value}``; lists become ``"[x, y]"`` strings (hashable levels)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(node, (list, tuple)):
        return {prefix: "[" + ", ".join(str(x) for x in node) + "]"}
    return {prefix: node}


def trial_dirs(sweep_dir: Path) -> list[Path]:
    """``DIR/trials/*`` (sorted); ``[DIR]`` for a single ``lolsearch run --out DIR`` folder."""
    trials = sweep_dir / "trials"
    if trials.is_dir():
        return sorted(p for p in trials.iterdir() if p.is_dir())
    if (sweep_dir / RESULT_FILE).is_file():
        return [sweep_dir]
    if any((sweep_dir / f).is_file() for f in ("space.yaml", "sweep.json")):
        return []
    raise ConfigError.single(str(sweep_dir), "", "not a sweep folder (no trials/, space.yaml, sweep.json or result.json)")


def read_trial_records(sweep_dir: Path) -> list[dict[str, Any]]:
    return [read_result(d) for d in trial_dirs(Path(sweep_dir))]


def _record_row(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One flat row and the names of its scalar metrics (list-valued metrics are left out). ``converged_<stage>``
    of records that predate it is computed from the stored validation curve (:mod:`lolsearch.trial.convergence`)."""
    row = {"trial_id": record.get("trial_id"), "space": record.get("space"), "status": record.get("status") or "unknown",
           "block": record.get("block"), "design_id": record.get("design_id") or _design_id(record.get("config"))}
    metrics = {k: v for k, v in (record.get("metrics") or {}).items() if _is_scalar(v)}
    for stage in ("distill", "finetune"):
        curve = (record.get("curves") or {}).get(f"{stage}_eval")
        if f"converged_{stage}" not in metrics and isinstance(curve, list):
            metrics.update({f"{k}_{stage}": v for k, v in stage_convergence(curve).items()})
    flags = [metrics[f"converged_{st}"] for st in ("distill", "finetune") if isinstance(metrics.get(f"converged_{st}"), bool)]
    row["converged"] = all(flags) if flags else None  # every stage's validation curve had flattened
    row.update(metrics)
    row.update(_flatten(record.get("timing") or {}, "timing"))
    env = _flatten(record.get("env") or {}, "env")
    row["device"] = env.pop("env.device", None)
    row.update(env)
    row["error"] = record.get("error")
    row.update(_flatten(record.get("config") or {}, "config"))
    return row, list(metrics)


def _design_id(config: Any) -> str | None:
    return design_hash(config) if isinstance(config, dict) and config else None


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: trial_id, space, status, metrics (flat names), timing.*, device, env.*, error, config.*."""
    rows, metric_names = [], {}
    for record in records:
        row, names = _record_row(record)
        rows.append(row)
        metric_names.update(dict.fromkeys(names))
    df = pd.DataFrame(rows, columns=None if rows else list(_FIRST_COLUMNS))
    groups = [list(_FIRST_COLUMNS), list(_DESIGN_COLUMNS), list(metric_names), sorted(c for c in df if c.startswith("timing.")), ["device"],
              sorted(c for c in df if c.startswith("env.")), ["error"], [c for c in df if c.startswith("config.")]]
    ordered = list(dict.fromkeys(c for g in groups for c in g if c in df.columns))
    df = df[ordered]
    if "env.started_at" in df.columns:
        df = df.sort_values(["env.started_at", "trial_id"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def load_records(sweep_dir: Path) -> pd.DataFrame:
    """The sweep's trials as a DataFrame (see :func:`records_frame`); running trials included."""
    return records_frame(read_trial_records(Path(sweep_dir)))


def _parse_objectives(space: dict[str, Any], file: str) -> list[Objective] | None:
    raw = space.get("objectives")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ConfigError.single(file, "objectives", "expected a non-empty list of {metric, mode}")
    out, problems = [], []
    for i, item in enumerate(raw):
        try:
            out.append(Objective.model_validate(item))
        except ValidationError as err:
            problems += [Problem(file, ".".join(["objectives", str(i), *map(str, e["loc"])]),
                                 e["msg"].removeprefix("Value error, ")) for e in err.errors()]
    if problems:
        raise ConfigError(problems)
    return out


def default_objectives(df: pd.DataFrame) -> list[Objective]:
    """ppl_ratio_ft (min), else ppl_ratio: whichever more ok trials have; plus state_bytes_32k (min)."""
    ok = df[rankable(df, [])]
    counts = [int(np.isfinite(numeric_column(ok, m)).sum()) for m in DEFAULT_QUALITY]
    quality = DEFAULT_QUALITY[int(np.argmax(counts))]
    return [Objective(metric=quality, mode="min"), Objective(metric=DEFAULT_COST, mode="min")]


@dataclass
class Sweep:
    """A loaded sweep folder: records, the ranked table (``front``, ``rank``, ``label``) and its context."""

    dir: Path
    records: list[dict[str, Any]]
    df: pd.DataFrame
    space: dict[str, Any]
    meta: dict[str, Any]
    objectives: list[Objective]
    objectives_source: str
    factors: list[str]
    factors_source: str
    trial_paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seq_nll: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # trial_id -> (nll_sum, tokens)

    @property
    def name(self) -> str:
        return str(self.meta.get("space") or self.space.get("name") or self.dir.name)


def load_sweep(sweep_dir: Path) -> Sweep:
    """Reads a sweep folder and ranks its trials; raises :class:`ConfigError` on a bad space.yaml."""
    sweep_dir = Path(sweep_dir)
    dirs = trial_dirs(sweep_dir)
    records = [read_result(d) for d in dirs]
    df = records_frame(records)
    space_file = sweep_dir / "space.yaml"
    space = (load_yaml(space_file) if space_file.is_file() else None) or {}
    if not isinstance(space, dict):
        raise ConfigError.single(str(space_file), "", "expected a mapping")
    block, blocks = infer_blocks(df, space, {str(r.get("trial_id")): r.get("config") for r in records})
    df["block"] = block
    df.insert(df.columns.get_loc("block") + 1, "blocks", blocks)
    meta = _read_json_quietly(sweep_dir / "sweep.json")
    objectives, source = _parse_objectives(space, str(space_file)), "space.yaml"
    if objectives is None and meta.get("objectives"):
        objectives, source = _parse_objectives(meta, str(sweep_dir / "sweep.json")), "sweep.json"
    if objectives is None:
        objectives, source = default_objectives(df), "default: space.yaml has no objectives"
    searched = _searched_keys(space)
    if searched:
        factors, factors_source = searched, "space.yaml search"
    else:
        factors, factors_source = varying_config_keys(df), "config keys that vary across ok trials"
    notes = [f"searched key `{f}` is not in any record's config" for f in factors if not has_factor(df, f)]
    metrics = [c for c in df.columns if c not in (*_FIRST_COLUMNS, *_DESIGN_COLUMNS, "device", "error") and "." not in c]
    notes += [f"objective `{o.metric}` is in no record{did_you_mean(o.metric, metrics)}" for o in objectives
              if o.metric not in df.columns]
    factors = [f for f in factors if has_factor(df, f)]
    df = rank_trials(df, objectives)
    df.insert(3, "label", trial_labels(df, factors))
    df = df[[*df.columns[:4], "front", "rank", *[c for c in df.columns[4:] if c not in ("front", "rank")]]]
    paths = {str(r.get("trial_id")): d for r, d in zip(records, dirs, strict=True)}
    seq_nll = {tid: arrays for tid, d in paths.items() if (arrays := read_seq_nll(d)) is not None}
    return Sweep(sweep_dir, records, df, space, meta, objectives, source, factors, factors_source, paths, notes, seq_nll)


def _searched_keys(space: dict[str, Any]) -> list[str]:
    """Keys of ``search:`` then of each ``extra_grids[*].search:``, first occurrence order."""
    blocks = [space.get("search")] + [g.get("search") for g in space.get("extra_grids") or [] if isinstance(g, dict)]
    return list(dict.fromkeys(str(k) for b in blocks if isinstance(b, dict) for k in b))


def _read_json_quietly(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("%s: unreadable, provenance from the trial records only", path)
        return {}
    return data if isinstance(data, dict) else {}


def level_text(factor: str, value: Any) -> str:
    """Short text of one factor level: ``w64``, ``r8``, ``hedgehog``, ``no-AT``, ``targets=q+v``."""
    parts = factor.split(".")
    last = parts[-1]
    if isinstance(value, bool):
        name = _BOOL_NAMES.get(factor) or (parts[-2] if last == "enabled" and len(parts) > 1 else last)
        return name if value else f"no-{name}"
    if isinstance(value, str) and value == MISSING:
        return ""
    if isinstance(value, (int, float)):
        return f"{_ABBREV[last]}{fmt(value)}" if last in _ABBREV else f"{last}={fmt(value)}"
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        return f"{last}={text[1:-1].replace(', ', '+')}"
    return text


def trial_labels(df: pd.DataFrame, factors: list[str]) -> pd.Series:
    """A short config description per row from its searched factors (the trial_id when there are none)."""
    if not factors or df.empty:
        return df["trial_id"].astype(object) if "trial_id" in df else pd.Series(dtype=object)
    levels = {f: factor_values(df, f) for f in factors}
    labels = [" ".join(t for t in (level_text(f, levels[f][i]) for f in factors) if t) for i in df.index]
    return pd.Series([lb or tid for lb, tid in zip(labels, df["trial_id"], strict=True)], index=df.index, dtype=object)


def fmt(v: Any) -> str:
    """A table cell: ``-`` for missing, grouped integers, 5 significant digits for other numbers."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if abs(v) >= 1e15:
            return f"{v:.5g}"
        if v.is_integer():
            return f"{int(v):,}"
        if abs(v) >= 1e3:
            return f"{v:,.0f}"
        return f"{v:.5g}" if abs(v) >= 1e-3 else f"{v:.3e}"
    return str(v)


def sweep_names(sweeps: list[Sweep]) -> dict[Path, str]:
    """Distinct display names: the space name, or the folder name when two sweeps share a space."""
    names = [s.name for s in sweeps]
    return {s.dir: (s.name if names.count(s.name) == 1 else s.dir.name) for s in sweeps}
