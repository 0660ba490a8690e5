"""The design of a sweep as the report needs it: its grid blocks (``search`` = ``main``, then each of
``extra_grids``), which block each trial belongs to, each searched key's base (reference) value, and searched keys
tied to another one by a constraint (``finetune.lora.alpha == 2 * finetune.lora.rank``: one effect, not two).

Trials record their block (``block`` in result.json). Older records do not: their block is inferred from
space.yaml as the first block whose searched values contain the trial's values and whose unsearched keys (those
other blocks search) hold their base value, which is how the grid assigns a point that two blocks share.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lolsearch.config import parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.report.analysis import factor_values, has_factor
from lolsearch.search.schema import lookup_path, set_path

log = logging.getLogger(__name__)

MAIN = "main"
UNMATCHED = "unmatched"


@dataclass
class BlockSpec:
    """One search block of a space file: its name, searched keys (YAML order) and their grid values
    (``None`` for a continuous range)."""

    name: str
    keys: list[str]
    values: dict[str, list[Any] | None] = field(default_factory=dict)


def space_blocks(space: dict[str, Any]) -> list[BlockSpec]:
    """``main`` (the ``search`` keys) then each ``extra_grids`` entry, named as the sweep names them."""
    raw = [(MAIN, space.get("search"))]
    raw += [(g.get("name") or f"grid{i + 1}", g.get("search")) for i, g in enumerate(space.get("extra_grids") or [])
            if isinstance(g, dict)]
    out = []
    for name, search in raw:
        search = search if isinstance(search, dict) else {}
        values = {str(k): (list(v["choice"]) if isinstance(v, dict) and isinstance(v.get("choice"), list) else None)
                  for k, v in search.items()}
        out.append(BlockSpec(name, list(values), values))
    return out


def level_of(value: Any) -> Any:
    """A YAML value in the form :func:`lolsearch.report.analysis.factor_values` gives a table cell."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(x) for x in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def same_level(a: Any, b: Any) -> bool:
    """Equal levels, with booleans never equal to numbers (True == 1 in Python)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def base_values(space: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Each key's value in ``base`` (else the TrialConfig default); keys naming a sub-config are left out."""
    base = space.get("base") if isinstance(space.get("base"), dict) else {}
    out = {}
    for k in keys:
        try:
            v = lookup_path(base, k)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if v is not None and not isinstance(v, dict):
            out[k] = level_of(v)
    return out


def _levels(df: pd.DataFrame, keys: list[str]) -> dict[str, pd.Series]:
    return {k: factor_values(df, k) for k in keys if has_factor(df, k)}


def infer_blocks(df: pd.DataFrame, space: dict[str, Any],
                 configs: dict[str, dict[str, Any]]) -> tuple[pd.Series, pd.Series]:
    """``(block, blocks)`` per row. ``block``: the recorded one when present, else inferred from space.yaml (see the
    module docstring) using ``configs`` (trial_id -> the record's resolved config), ``"unmatched"`` when no block
    fits. ``blocks``: every block whose grid holds the trial's config, comma-separated (a point two blocks share is
    run once, for the first, but belongs to both designs). A space with one block puts every row in it."""
    blocks = space_blocks(space)
    recorded = df["block"] if "block" in df.columns else pd.Series([None] * len(df), index=df.index)
    if len(blocks) <= 1:
        one = pd.Series([r if isinstance(r, str) and r else MAIN for r in recorded], index=df.index, dtype=object)
        return one, one.copy()
    base = space.get("base") if isinstance(space.get("base"), dict) else {}
    all_keys = list(dict.fromkeys(k for b in blocks for k in b.keys))
    primary, members = [], []
    for i in df.index:
        config = configs.get(str(df.at[i, "trial_id"])) if "trial_id" in df.columns else None
        fits = [b.name for b in blocks if isinstance(config, dict) and _fits(b, config, base, all_keys)]
        own = recorded[i] if isinstance(recorded[i], str) and recorded[i] else (fits[0] if fits else UNMATCHED)
        primary.append(own)
        members.append(", ".join(dict.fromkeys([own, *fits])))
    return pd.Series(primary, index=df.index, dtype=object), pd.Series(members, index=df.index, dtype=object)


def in_block(df: pd.DataFrame, name: str) -> np.ndarray:
    """``[N]`` bool: rows whose ``blocks`` (else ``block``) include ``name``; every row when neither column exists."""
    if "blocks" in df.columns:
        return df["blocks"].map(lambda v: isinstance(v, str) and name in v.split(", ")).to_numpy(dtype=bool)
    if "block" in df.columns:
        return (df["block"] == name).to_numpy(dtype=bool)
    return np.ones(len(df), dtype=bool)


def _fits(block: BlockSpec, config: dict[str, Any], base: dict[str, Any], keys: list[str]) -> bool:
    """Whether ``config`` is base + this block's searched values at values the block offers."""
    raw = copy.deepcopy(base)
    try:
        for k in block.keys:
            v = lookup_path(config, k)
            choices = block.values[k]
            if choices is not None and not any(same_level(level_of(v), level_of(c)) for c in choices):
                return False
            set_path(raw, k, copy.deepcopy(v))
        resolved = parse_trial_config(raw, "space.yaml").model_dump(mode="json")
        return all(same_level(level_of(lookup_path(config, k)), level_of(lookup_path(resolved, k)))
                   for k in keys if k not in block.values)
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError):
        return False


@dataclass
class Tie:
    """``key`` moves in lockstep with ``with_key`` in a block's trials (one level of each per level of the other)."""

    key: str
    with_key: str
    reason: str


def ties(df: pd.DataFrame, keys: list[str], constraints: list[str]) -> list[Tie]:
    """Keys of ``keys`` (varying in ``df``) whose levels map one-to-one onto an earlier varying key's levels.

    The reason names the constraint that mentions both keys when there is one."""
    levels = {k: s for k, s in _levels(df, keys).items() if s.nunique() > 1}
    out: list[Tie] = []
    tied = set()
    names = list(levels)
    for j, k in enumerate(names):
        for first in names[:j]:
            if first in tied:
                continue
            pair = pd.DataFrame({"a": levels[first].map(repr), "b": levels[k].map(repr)})
            if pair.groupby("a")["b"].nunique().max() == 1 and pair.groupby("b")["a"].nunique().max() == 1:
                why = next((c for c in constraints if isinstance(c, str) and k in c and first in c), None)
                out.append(Tie(k, first, f"constraint '{why}'" if why else "same trials at every level"))
                tied.add(k)
                break
    return out
