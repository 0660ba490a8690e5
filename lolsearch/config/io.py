"""Reading user input into configs: YAML files, ``--set`` overrides, pydantic errors -> problem lines."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lolsearch.config.sections import TrialConfig
from lolsearch.core.errors import ConfigError, Problem, did_you_mean


def validation_problems(err: ValidationError, file: str, prefix: str = "", root: type[BaseModel] = TrialConfig) -> list[Problem]:
    """Turns a pydantic error into ``file: dotted.key: message`` problems, with did-you-mean on unknown keys."""
    problems = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            siblings = _field_names(root, loc[:-1])
            msg = f"unknown key '{loc[-1]}'{did_you_mean(loc[-1], siblings)}"
            if siblings:
                msg += f" (allowed: {', '.join(siblings)})"
        elif e["type"] == "missing":
            msg = "required"
        problems.append(Problem(file, key, msg))
    return problems


def _field_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the model reached by following ``loc`` from ``model`` (best effort)."""
    cls: Any = model
    for part in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    fields = getattr(cls, "model_fields", None)
    return sorted(fields) if fields else []


def parse_trial_config(data: dict[str, Any], file: str = "<config>", prefix: str = "") -> TrialConfig:
    """Validates a plain dict into a :class:`TrialConfig`, raising :class:`ConfigError`."""
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(validation_problems(err, file, prefix)) from None


def load_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file; YAML errors become a one-line :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError.single(str(path), "", f"cannot read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError.single(str(path), "", f"invalid YAML: {where}{problem}") from None


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Returns a deep copy of ``data`` with ``value`` set at ``a.b.c`` (intermediate dicts created)."""
    out = copy.deepcopy(data)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value
    return out


def parse_overrides(items: list[str], file: str = "--set") -> list[tuple[str, Any]]:
    """``key=value`` strings (value parsed as YAML) -> (dotted key, value)."""
    out, problems = [], []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(file, item, "expected dotted.key=value"))
            continue
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError:
            problems.append(Problem(file, key.strip(), f"cannot parse value {raw!r}"))
    if problems:
        raise ConfigError(problems)
    return out
