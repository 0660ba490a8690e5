"""Schema of space files (pydantic, unknown keys rejected) and dotted-path helpers over ``TrialConfig``.

The grammar itself is documented in :mod:`lolsearch.search.space`.
"""

from __future__ import annotations

import difflib
import math
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lolsearch.config import FeatureMapConfig, LayerWeightsConfig, TrialConfig
from lolsearch.config.io import located, shape_hint
from lolsearch.config.strict import CheckedModel
from lolsearch.core.errors import Problem, did_you_mean
from lolsearch.search.metrics import TRAINING_METRICS, lookup, plain_names

GRID_CAP = 100_000
SAMPLERS = ("grid", "random", "tpe", "nsga2")
SCHEDULERS = ("asha",)
# Metric names a trial reports: the plain names of lolsearch.search.metrics (its families match by pattern).
KNOWN_METRICS = plain_names()


class _Strict(CheckedModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, allow_inf_nan=False)


def _check_name(value: str, options: tuple[str, ...], what: str) -> str:
    if value not in options:
        raise ValueError(f"unknown {what} '{value}'{did_you_mean(value, options)} (available: {', '.join(options)})")
    return value


def check_metric(name: str, extra: tuple[str, ...] = ()) -> str:
    """``name`` if it is a metric a trial reports, else ValueError with a did-you-mean."""
    entry = lookup(name)
    # a family named by any word (ppl_<task>) must not swallow a typo of a plain name (ppl_ratoi_ft)
    typo = entry is not None and "<task>" in entry.name and difflib.get_close_matches(name, KNOWN_METRICS, 1, 0.8)
    if name in extra or (entry is not None and not typo):
        return name
    options = (*KNOWN_METRICS, *extra)
    raise ValueError(f"unknown metric '{name}'{did_you_mean(name, options)} (e.g. {', '.join(options[:8])}, "
                     "state_bytes_<N>k, mc_<task>_acc)")


class ParamSpec(_Strict):
    """One searched key: exactly one of choice / int / float / loguniform (+ step, log, when)."""

    choice: list[Any] | None = Field(None, min_length=1,
        description="the values to try (any YAML values: numbers, strings, lists, mappings)")
    int_: tuple[float, float] | None = Field(None, alias="int", description="integer range [low, high], both included")
    float_: tuple[float, float] | None = Field(None, alias="float", description="float range [low, high]")
    loguniform: tuple[float, float] | None = Field(None,
        description="float range [low, high] sampled on a log scale (same as float with log: true)")
    step: float | None = Field(None, gt=0,
        description="spacing of an int/float range (a grid enumerates low, low + step, ... high)")
    log: bool = Field(False, description="sample an int/float range on a log scale")
    when: str | None = Field(None,
        description="condition on other keys (e.g. \"attention.layout != 'linear'\"); the key is left out where it is false")

    @property
    def kind(self) -> str:
        if self.choice is not None:
            return "choice"
        return "int" if self.int_ is not None else "float"

    @property
    def bounds(self) -> tuple[float, float]:
        return self.int_ or self.float_ or self.loguniform  # type: ignore[return-value]

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [k for k, v in (("choice", self.choice), ("int", self.int_), ("float", self.float_),
                                ("loguniform", self.loguniform)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, int, float, loguniform (got {', '.join(given) or 'none'})")
        if self.loguniform is not None:
            object.__setattr__(self, "log", True)
        if self.choice is not None:
            if self.step is not None or self.log:
                raise ValueError("step and log apply to int/float ranges, not to choice")
            return self
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (self.kind == "float" and lo == hi):
            raise ValueError(f"bounds must be [low, high] with low < high, got [{lo}, {hi}]")
        if self.kind == "int":
            if lo != int(lo) or hi != int(hi) or (self.step is not None and self.step != int(self.step)):
                raise ValueError("int bounds and step must be whole numbers")
            if self.log and (lo < 1 or (self.step or 1) != 1):
                raise ValueError("a log int range needs low >= 1 and no step")
        elif self.log and (lo <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self


class ExtraGrid(_Strict):
    name: str | None = Field(None, description="block name in reports (default: extra_<i>)")
    search: dict[str, ParamSpec] = Field(min_length=1,
        description="keys searched in this block (the base and the main search's first values fix the others)")


class Objective(_Strict):
    metric: str = Field(description="a metric from the metric table (spaces/README.md)")
    mode: Literal["min", "max"] = Field("min", description="min or max")

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_metric(v)


class Sampler(_Strict):
    kind: str = Field(description="grid (every point), random, tpe (Optuna TPE) or nsga2 (multi-objective)")
    seed: int = Field(0, ge=0, lt=2**32, description="sampler seed")
    num_trials: int | None = Field(None, ge=1, le=GRID_CAP, description="trials to run (non-grid samplers)")
    population_size: int | None = Field(None, ge=2, description="nsga2 population size")
    n_startup_trials: int | None = Field(None, ge=0, description="tpe: random trials before the model-based ones")

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, SAMPLERS, "sampler")

    @model_validator(mode="after")
    def _options(self) -> Sampler:
        if self.population_size is not None and self.kind != "nsga2":
            raise ValueError("population_size is an nsga2 option")
        if self.n_startup_trials is not None and self.kind != "tpe":
            raise ValueError("n_startup_trials is a tpe option")
        return self


class Resources(_Strict):
    """Per trial. ``gpu`` < 1 shares one GPU between trials (memory capped to the fraction)."""

    cpu: float = Field(1.0, ge=0.1, description="CPUs per trial (also its torch threads); at least 0.1: each trial "
                       "is a process with torch loaded, and a tiny share would start hundreds of them at once")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; below 1 shares a GPU (memory capped to the fraction)")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("gpu above 1 must be a whole number")
        return v


class Scheduler(_Strict):
    """ASHA early stopping on a metric reported during training (single-objective spaces only)."""

    kind: str = Field(description="asha (early stopping)")
    metric: str = Field("eval_loss", description="a metric reported during training: loss or eval_loss")
    mode: Literal["min", "max"] = Field("min", description="min or max")
    time_attr: str = Field("training_iteration", description="Ray Tune's clock for ASHA (training_iteration = reports)")
    max_t: int = Field(100, ge=1, description="longest a trial may run, in time_attr units")
    grace_period: int = Field(1, ge=1, description="shortest a trial runs before it may be stopped")
    reduction_factor: float = Field(4.0, gt=1, description="ASHA's halving rate")

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, SCHEDULERS, "scheduler")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        return check_metric(v, TRAINING_METRICS)


class Budget(_Strict):
    time_s: float | None = Field(None, gt=0, description="wall-clock cap of the sweep in seconds (--resume continues)")
    max_concurrent: int | None = Field(None, ge=1, description="trials at a time at most")
    retries: int = Field(1, ge=0, description="re-runs of a trial whose process crashed")


class SpaceFile(_Strict):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="space name: the default output folder results/<name>")
    description: str = Field("", description="one line shown by lolsearch ls spaces")
    base: dict[str, Any] = Field(default_factory=dict,
        description="fixed TrialConfig fields shared by every trial (see lolsearch schema --trial)")
    search: dict[str, ParamSpec] = Field(default_factory=dict,
        description="searched keys: dotted TrialConfig paths -> a parameter (choice, int, float, loguniform)")
    extra_grids: list[ExtraGrid] = Field(default_factory=list,
        description="further blocks, each searching its own keys around the base (one-factor series)")
    constraints: list[str] = Field(default_factory=list,
        description="expressions every trial must satisfy (others are pruned), e.g. \"finetune.lora.alpha == 2 * finetune.lora.rank\"")
    objectives: list[Objective] = Field(min_length=1,
        description="metrics the sampler optimizes and the report ranks by")
    sampler: Sampler = Field(description="how points are chosen")
    resources: Resources = Field(Resources(), description="per-trial CPUs/GPUs for Ray")
    scheduler: Scheduler | None = Field(None,
        description="early stopping of unpromising trials (single objective only)")
    budget: Budget = Field(Budget(), description="limits of the sweep")
    replicates: int = Field(1, ge=1, le=100, description="trials per grid point, with seeds seed, seed + 1, ... (data "
                            "order and initialization); they share a design_id and the report gives their mean and "
                            "95% interval")

    @field_validator("objectives")
    @classmethod
    def _unique(cls, v: list[Objective]) -> list[Objective]:
        names = [o.metric for o in v]
        if len(set(names)) != len(names):
            raise ValueError("each metric may appear once")
        return v


def space_problems(err: ValidationError, file: str) -> list[Problem]:
    """``file: dotted.key: message`` problems for a space file, with did-you-mean on unknown keys."""
    out = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        msg = e["msg"].removeprefix("Value error, ")
        loc, msg = located(loc, msg, _allowed_keys(SpaceFile, loc))
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(SpaceFile, loc[:-1])
            msg = f"unknown key '{loc[-1]}'{did_you_mean(loc[-1], allowed)}"
            msg += f" (allowed: {', '.join(allowed)})" if allowed else ""
        elif e["type"] == "missing":
            msg = "required"
        elif e["type"] in ("int_parsing", "float_parsing") and e.get("input") in ("true", "false"):
            msg = f"expected a number, got {e['input']} (true/false are not numbers)"
        msg = shape_hint(e, SpaceFile, loc) or msg
        out.append(Problem(file, ".".join(loc), msg))
    return out


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            by_alias = {(f.alias or n): f for n, f in node.model_fields.items()}
            if part not in by_alias:
                return []
            node = _strip_optional(by_alias[part].annotation)
            if get_origin(node) in (dict, list):  # the next loc part is a key or an index
                node = ("container", get_args(node)[-1])
        elif isinstance(node, tuple):
            node = _strip_optional(node[1])
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(f.alias or n for n, f in node.model_fields.items())
    return []


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else args[0]
    return ann


def _kind_registries() -> dict[type[BaseModel], Any]:
    """Models whose ``params`` are validated by the ``Params`` of the registered ``kind``."""
    from lolsearch.attention.featuremaps import FEATURE_MAPS
    from lolsearch.trial.layer_weights import LAYER_WEIGHTS

    return {FeatureMapConfig: FEATURE_MAPS, LayerWeightsConfig: LAYER_WEIGHTS}


def _node(ann: Any) -> tuple:
    """Schema node of an annotation: ("model", cls) | ("dict", key_type, value_ann) | ("leaf",)."""
    ann = _strip_optional(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ("model", ann)
    if get_origin(ann) is dict:
        k, v = get_args(ann)
        return ("dict", k, v)
    return ("leaf",)


def _child(node: tuple, part: str) -> tuple[tuple | None, str | None]:
    """(child node, None) or (None, error message) for one path component."""
    if node[0] == "model":
        cls = node[1]
        if part not in cls.model_fields:
            fields = sorted(cls.model_fields)
            return None, f"unknown key '{part}'{did_you_mean(part, fields)} (allowed: {', '.join(fields)})"
        regs = _kind_registries()
        if part == "params" and cls in regs:
            return ("params", regs[cls]), None
        return _node(cls.model_fields[part].annotation), None
    if node[0] == "params":
        names = sorted({n for kind in node[1].names() for n in node[1].params(kind).model_fields})
        if part not in names:
            return None, f"unknown parameter '{part}'{did_you_mean(part, names)} (parameters of any {node[1].kind}: {', '.join(names) or 'none'})"
        return ("leaf",), None
    if node[0] == "dict":
        if node[1] is int and not part.lstrip("-").isdigit():
            return None, f"'{part}' must be a layer index"
        return _node(node[2]), None
    return None, f"has no key '{part}' (it is a single value)"


def check_path(dotted: str, expr: str | None = None) -> str | None:
    """None if ``dotted`` names a TrialConfig field (or a registered map/schedule parameter), else why not."""
    node: tuple | None = ("model", TrialConfig)
    for part in dotted.split("."):
        node, msg = _child(node, part)
        if msg:
            return msg.replace(f"'{part}'", f"'{part}' (in '{dotted}')", 1) if expr is not None else msg
    return None


def check_config_tree(data: Any, node: tuple | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, message) for every unknown key of a nested (partial) trial-config dict."""
    node = node or ("model", TrialConfig)
    if not isinstance(data, dict) or node[0] == "leaf":
        return []
    out = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        child, msg = _child(node, str(k))
        if msg:
            out.append((key, msg))
        elif child[0] != "params":
            out += check_config_tree(v, child, key + ".")
        elif isinstance(v, dict):
            out += [(f"{key}.{pk}", m) for pk in v if (m := _child(child, str(pk))[1])]
    return out


def _key(container: dict, part: str, node: tuple) -> Any:
    if node[0] == "dict" and node[1] is int and part.lstrip("-").isdigit():
        return int(part)
    return part


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets ``a.b.c`` in place; a ``kind`` shorthand string on the way (``layer_weights: power``) expands."""
    node: tuple = ("model", TrialConfig)
    cur = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        k = _key(cur, part, node)
        node = _child(node, part)[0] or ("leaf",)
        nxt = cur.get(k)
        if isinstance(nxt, str) and node[0] == "model" and "kind" in node[1].model_fields:
            nxt = {"kind": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        cur[k] = nxt
        cur = nxt
    cur[_key(cur, parts[-1], node)] = value


def lookup_path(raw: dict[str, Any], dotted: str) -> Any:
    """Value of ``dotted`` in a partial config: set there, else the default (``params`` defaults follow
    the config's ``kind``); None when not set and without default. Tuples come back as lists."""
    node: tuple = ("model", TrialConfig)
    cur: Any = raw
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(cur, str) and node[0] == "model" and "kind" in node[1].model_fields:
            cur = {"kind": cur}
        k = _key(cur, part, node) if isinstance(cur, dict) else part
        child = _child(node, part)[0] or ("leaf",)
        if not isinstance(cur, dict) or k not in cur:
            return _default(raw, parts, i, node)
        cur, node = cur[k], child
    return _jsonable(cur)


def _default(raw: dict[str, Any], parts: list[str], i: int, node: tuple) -> Any:
    """Default of ``parts`` when the partial config stops before ``parts[i]`` (schema node ``node``)."""
    regs = _kind_registries()
    if node[0] == "params":  # the params dict exists but lacks the key
        owner, rest = parts[: i - 1], parts[i:]
    elif node[0] == "model" and node[1] in regs and parts[i] == "params":
        owner, rest = parts[:i], parts[i + 1:]
    else:
        owner = None
    if owner is not None:
        kind = lookup_path(raw, ".".join([*owner, "kind"]))
        reg = node[1] if node[0] == "params" else regs[node[1]]
        try:
            value: Any = reg.params(kind)().model_dump(mode="json")
        except Exception:  # unknown kind, or a schedule whose params have no defaults
            return None
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    value = TrialConfig
    for part in parts:
        if isinstance(value, type) and issubclass(value, BaseModel):
            f = value.model_fields.get(part)
            value = f.get_default(call_default_factory=True) if f else None
        elif isinstance(value, BaseModel):
            value = getattr(value, part, None)
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
