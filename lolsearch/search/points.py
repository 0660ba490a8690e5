"""Building blocks of a search space: a searched key (:class:`Param`), a search block, a sampled point."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from lolsearch.config import TrialConfig, parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.search.expr import Expr
from lolsearch.search.schema import ParamSpec


class Param:
    """One searched key with its distribution and optional condition."""

    def __init__(self, key: str, spec: ParamSpec, yaml_key: str, when: Expr | None) -> None:
        self.key, self.spec, self.yaml_key, self.when = key, spec, yaml_key, when
        self.kind = spec.kind
        if self.kind == "choice":
            self.labels = [label_of(v) for v in spec.choice]
            self._by_label = dict(zip(self.labels, spec.choice, strict=True))

    @property
    def finite(self) -> bool:
        return self.kind == "choice" or self.kind == "int" or self.spec.step is not None

    def grid_size(self) -> int:
        """How many values :meth:`grid_values` gives, computed without building them (finite params only)."""
        s = self.spec
        if self.kind == "choice":
            return len(s.choice)
        lo, hi = s.bounds
        if self.kind == "int":
            return (int(hi) - int(lo)) // int(s.step or 1) + 1
        return int((hi - lo) / s.step + 1e-9) + 1

    def grid_values(self) -> list[Any]:
        """Every value the grid takes, in order (choice order, ascending numbers). Check :meth:`grid_size`
        against a cap first: a range is materialized here."""
        s = self.spec
        if self.kind == "choice":
            return list(s.choice)
        lo, hi = s.bounds
        if self.kind == "int":
            return list(range(int(lo), int(hi) + 1, int(s.step or 1)))
        return [lo + i * s.step for i in range(self.grid_size())]

    def draw(self, rng: random.Random) -> Any:
        """An independent random value (validation samples); a range is never materialized."""
        s = self.spec
        if self.kind == "choice":
            return rng.choice(s.choice)
        if self.finite and (self.kind != "int" or not s.log):
            i = rng.randrange(self.grid_size())
            return int(s.bounds[0]) + i * int(s.step or 1) if self.kind == "int" else s.bounds[0] + i * s.step
        lo, hi = s.bounds
        if s.log:
            x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            return min(max(int(round(x)), int(lo)), int(hi)) if self.kind == "int" else x
        return rng.uniform(lo, hi)

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial suggests (labels decoded back to YAML values)."""
        s = self.spec
        if self.kind == "choice":
            return self._by_label[trial.suggest_categorical(self.key, self.labels)]
        lo, hi = s.bounds
        if self.kind == "int":
            return trial.suggest_int(self.key, int(lo), int(hi), step=int(s.step or 1), log=s.log)
        return trial.suggest_float(self.key, float(lo), float(hi), step=s.step, log=s.log)


def label_of(value: Any) -> Any:
    """Optuna-storable form of a value: scalars as they are, lists/mappings as canonical JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass
class Block:
    """A search block: ``search`` (index 0) or one of ``extra_grids``."""

    name: str
    prefix: str  # YAML location of its params, e.g. "search" or "extra_grids.0.search"
    params: list[Param]


@dataclass
class Point:
    """One sampled point: searched values, the raw config dict, and (unless pruned) the TrialConfig."""

    block: str
    params: dict[str, Any]
    raw: dict[str, Any]
    config: TrialConfig | None = None
    pruned: str | None = None

    def ref(self, index: int | None = None) -> PointRef:
        """What of this point crosses the Ray boundary (see :class:`PointRef`)."""
        config = self.config.model_dump(mode="json") if self.config is not None else self.raw
        return PointRef(self.block, {k: label_of(v) for k, v in self.params.items()}, config, index, self.pruned)

    def to_ray(self, index: int | None = None) -> dict[str, Any]:
        return self.ref(index).to_ray()


@dataclass(frozen=True)
class PointRef:
    """One trial as it travels through Ray: plain JSON, parsed back into a TrialConfig once, in the worker.

    ``config`` is ``TrialConfig.model_dump()`` of a valid point (the raw dict of one that failed validation);
    ``params`` are the searched values in Optuna-storable form; ``index`` the point's place in the plan.
    """

    block: str
    params: dict[str, Any]
    config: dict[str, Any]
    index: int | None = None
    pruned: str | None = None

    def to_ray(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_ray(cls, data: dict[str, Any]) -> PointRef:
        return cls(data.get("block") or "main", dict(data.get("params") or {}), dict(data.get("config") or {}),
                   data.get("index"), data.get("pruned"))

    def identity(self, space: str) -> tuple[str, TrialConfig | None, str | None]:
        """(trial_id, config or None, problem or None); a point that fails validation gets a hash of its dict."""
        try:
            cfg = parse_trial_config(self.config, f"space {space}")
        except ConfigError as err:
            raw = json.dumps(self.config, sort_keys=True, separators=(",", ":"), default=str)
            return hashlib.sha1(raw.encode()).hexdigest()[:10], None, f"ConfigError: {err}".replace("\n", "; ")
        return cfg.trial_id, cfg, None


@dataclass
class GridInfo:
    """Sizes of a grid: tree points (all blocks), minus constraint-excluded, minus duplicates = size."""

    tree_points: int
    excluded: int
    duplicates: int
    size: int
    per_block: dict[str, int] = field(default_factory=dict)


def seed_replicates(point: Point, n: int) -> list[Point]:
    """``point`` followed by ``n - 1`` unvalidated copies whose ``seed`` (data order and initialization) is the
    point's + 1, + 2, ...; the copies share the point's ``design_id``."""
    seed = point.config.seed if point.config is not None else int(point.raw.get("seed", 0))
    return [point, *(Point(point.block, dict(point.params), {**copy.deepcopy(point.raw), "seed": seed + r})
                     for r in range(1, n))]
