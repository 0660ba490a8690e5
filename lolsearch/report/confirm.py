"""A confirmation space from a finished sweep: its best designs, each as one grid block with every searched key
fixed at the design's value, re-run with replicates and new settings (e.g. larger token budgets).

This is the second phase of a search run at a small budget: the search orders designs cheaply, the confirmation
measures the few best at the budget that matters, with seeds, so the report gives them means and intervals.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from lolsearch.core.errors import ConfigError
from lolsearch.report.records import Sweep, load_sweep
from lolsearch.search.schema import lookup_path, set_path


def searched_keys(space: dict[str, Any]) -> list[str]:
    """Every key the space searches, main block first, in file order."""
    keys = list(space.get("search") or {})
    for grid in space.get("extra_grids") or []:
        keys += [k for k in grid.get("search") or {} if k not in keys]
    return keys


def _conditions(space: dict[str, Any]) -> dict[str, str]:
    """key -> its ``when`` condition, for the searched keys that have one."""
    specs = [space.get("search") or {}] + [g.get("search") or {} for g in space.get("extra_grids") or []]
    return {k: v["when"] for spec in specs for k, v in spec.items() if isinstance(v, dict) and v.get("when")}


def best_designs(sweep: Sweep, top: int) -> list[dict[str, Any]]:
    """The records of the ``top`` best-ranked ok trials of distinct designs (front, then rank)."""
    df = sweep.df
    if "rank" not in df.columns or df["rank"].isna().all():
        raise ConfigError.single(str(sweep.dir), "", "no ranked ok trial to confirm (run `lolsearch report` to see why)")
    df = df[df["rank"].notna()].sort_values("rank")
    by_id = {r["trial_id"]: r for r in sweep.records}
    chosen, designs = [], set()
    for trial_id, design in zip(df["trial_id"], df.get("design_id", df["trial_id"]), strict=True):
        if design in designs:
            continue
        designs.add(design)
        chosen.append(by_id[trial_id])
        if len(chosen) == top:
            break
    return chosen


def confirm_space(sweep_dir: Path, top: int = 3, replicates: int = 3,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The confirmation space (a dict ready for YAML) of the sweep in ``sweep_dir``.

    Args:
        top: how many designs (distinct ``design_id``, best rank first).
        replicates: seeds per design.
        overrides: dotted base keys set for every design, e.g. ``{"distill.tokens": 6_600_000}``; a searched key
            may not be overridden (the designs differ in it).
    """
    sweep = load_sweep(sweep_dir)
    space = sweep.space
    if not space:
        raise ConfigError.single(str(Path(sweep_dir) / "space.yaml"), "", "missing: the designs' keys are unknown")
    keys, when = searched_keys(space), _conditions(space)
    overrides = dict(overrides or {})
    clash = sorted(set(keys) & set(overrides))
    if clash:
        raise ConfigError.single(str(sweep_dir), clash[0], "is searched: the designs differ in it, so it cannot be set")
    base = copy.deepcopy(space.get("base") or {})
    for key, value in overrides.items():
        set_path(base, key, value)
    blocks = []
    for record in best_designs(sweep, top):
        cfg = record["config"]
        fixed = {}
        for key in keys:
            # floats exactly as sampled (YAML keeps their repr): the replicates share the design_id of the trial
            # they confirm, so the report and `lolsearch compare` pool their seeds with it
            value = lookup_path(cfg, key)
            fixed[key] = {"choice": [value]} | ({"when": when[key]} if key in when else {})
        blocks.append((record["trial_id"], fixed))
    name = f"{space.get('name') or Path(sweep_dir).name}_confirm"
    out: dict[str, Any] = {
        "name": name,
        "description": f"the {len(blocks)} best designs of {Path(sweep_dir).name}, {replicates} seeds each",
        "base": base,
        "search": blocks[0][1],
        "extra_grids": [{"name": f"design_{tid}", "search": fixed} for tid, fixed in blocks[1:]],
        "constraints": list(space.get("constraints") or []),
        "objectives": space.get("objectives") or [o.model_dump() for o in sweep.objectives],
        "sampler": {"kind": "grid"},
        "replicates": replicates,
    }
    for section in ("resources", "budget"):
        if section in space:
            out[section] = space[section]
    return out


def write_confirm_space(sweep_dir: Path, path: Path, top: int = 3, replicates: int = 3,
                        overrides: dict[str, Any] | None = None) -> Path:
    """Writes :func:`confirm_space` to ``path`` with a header naming its source; returns ``path``."""
    from lolsearch.search.space import load_space

    space = confirm_space(sweep_dir, top, replicates, overrides)
    sets = ", ".join(f"{k}={v}" for k, v in (overrides or {}).items()) or "none"
    header = (f"# yaml-language-server: $schema=./schema.json\n"
              f"# Confirmation of {Path(sweep_dir).as_posix()}: its {top} best designs (the main block is the best, each\n"
              f"# extra grid one more, named by the trial it comes from), {replicates} seeds each. Overrides: {sets}.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(space, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:  # the file must load as a space, or nothing is written
        load_space(tmp).grid()
    except ConfigError as err:
        tmp.unlink()
        first = str(err).splitlines()[0].replace(str(tmp), str(path))
        raise ConfigError.single("--set", "", f"the confirmation space does not validate: {first}") from None
    tmp.replace(path)
    return path


__all__ = ["best_designs", "confirm_space", "searched_keys", "write_confirm_space"]
