"""Reading user input into configs: YAML files, ``--set`` overrides, pydantic errors -> problem lines."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lolsearch.config.trial import TrialConfig
from lolsearch.core.errors import ConfigError, Problem, did_you_mean


def validation_problems(err: ValidationError, file: str, prefix: str = "", root: type[BaseModel] = TrialConfig) -> list[Problem]:
    """Turns a pydantic error into ``file: dotted.key: message`` problems, with did-you-mean on unknown keys."""
    problems = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        msg = e["msg"].removeprefix("Value error, ")
        loc, msg = located(loc, msg, _field_names(root, loc))
        key = ".".join([prefix, *loc] if prefix else loc)
        if e["type"] == "extra_forbidden":
            siblings = _field_names(root, loc[:-1])
            msg = f"unknown key '{loc[-1]}'{did_you_mean(loc[-1], siblings)}"
            if siblings:
                msg += f" (allowed: {', '.join(siblings)})"
        elif e["type"] == "missing":
            msg = "required"
        elif e["type"] in ("int_parsing", "float_parsing") and e.get("input") in ("true", "false"):
            msg = f"expected a number, got {e['input']} (true/false are not numbers)"
        msg = shape_hint(e, root, loc) or msg
        problems.append(Problem(file, key, msg))
    return problems


EXAMPLE_KEYS = ("source", "kind", "metric", "layout")  # the field a bare value most likely meant


def shape_hint(error: Any, root: type[BaseModel], loc: list[str]) -> str | None:
    """For a value of the wrong shape, the expected shape with an example built from the value given:
    ``model: toy-llama`` -> ``model is a mapping, e.g. {source: toy-llama}``."""
    kind, value = error["type"], error.get("input")
    name = loc[-1] if loc else "the file"
    if kind == "list_type":
        example = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()
        return f"{name} is a list, e.g. {example}" if isinstance(value, dict) else f"{name} is a list ([a, b])"
    if kind not in ("model_type", "dict_type", "model_attributes_type"):
        return None
    fields = _field_names(root, loc) if kind != "dict_type" else []  # a dict's values are not its keys
    guess = next((f for f in EXAMPLE_KEYS if f in fields), None)
    if guess and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        example = yaml.safe_dump({guess: value}, default_flow_style=True, width=10**6).strip()
        return f"{name} is a mapping, e.g. {example}"
    keys = f" of {', '.join(fields[:6])}{', ...' if len(fields) > 6 else ''}" if fields else ""
    return f"{name} is a mapping{keys} (key: value lines, or {{key: value}}); got {type(value).__name__} {value!r}"


def located(loc: list[str], msg: str, fields: list[str]) -> tuple[list[str], str]:
    """A validator's ``"sub.key: message"`` (a check across fields) moved into the location, when ``sub`` is a
    field of the model at ``loc``: the problem then names the key the user has to change."""
    m = re.match(r"^([A-Za-z_]\w*)((?:\.\w+)*): (.+)$", msg)
    if m and m.group(1) in fields:
        return [*loc, m.group(1), *filter(None, m.group(2).split("."))], m.group(3)
    return loc, msg


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


# Guards checked before anything is built from a YAML document (generous for real files).
MAX_YAML_BYTES = 4 << 20
MAX_YAML_NODES = 200_000  # nodes once every alias is expanded: a "billion laughs" file stops here
MAX_YAML_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_node_tree(root: yaml.Node) -> str | None:
    """Why the composed document is too big or too deep once aliases are expanded (None when fine).

    Walks the node graph without recursion; an alias is one shared node, so sizes are memoized per node and
    a self-referencing anchor is found as a cycle.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[id(node)] > MAX_YAML_NODES:
                return f"expands to more than {MAX_YAML_NODES} values (aliases counted at every use)"
            if depth[id(node)] > MAX_YAML_DEPTH:
                return f"nested more than {MAX_YAML_DEPTH} levels deep"
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            return "an alias refers to the node that contains it (a recursive structure)"
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return None


def parse_yaml(text: str) -> Any:
    """One YAML document with the guards above; raises ``yaml.YAMLError`` or ``ValueError`` with the reason."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _check_node_tree(node)
        if problem:
            raise ValueError(problem)
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def _yaml_problem(err: Exception) -> str:
    if not isinstance(err, yaml.YAMLError):
        return str(err)  # a guard above, or a value Python refuses (an integer with thousands of digits)
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"invalid YAML: {where}{problem}"


def load_yaml(path: str | Path) -> Any:
    """The one YAML reader: safe types only, duplicate keys refused, size/alias/depth guards, UTF-8 text.

    Every problem (unreadable, too big, not UTF-8, invalid YAML) becomes a one-line :class:`ConfigError`.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:  # a bounded read: a pipe or a device has no size to check first
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError.single(str(path), "", f"larger than {MAX_YAML_BYTES >> 20} MiB: not a config or space file")
    except OSError as err:
        raise ConfigError.single(str(path), "", f"cannot read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError.single(str(path), "", f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None
    try:
        return parse_yaml(text)
    except (yaml.YAMLError, ValueError) as err:
        raise ConfigError.single(str(path), "", _yaml_problem(err)) from None


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
            out.append((key.strip(), parse_yaml(raw)))
        except (yaml.YAMLError, ValueError) as err:
            problems.append(Problem(file, key.strip(), f"cannot parse value {raw[:80]!r}: {_yaml_problem(err)}"))
    if problems:
        raise ConfigError(problems)
    return out


def parse_with_overrides(data: dict[str, Any], overrides: list[str], file: str, prefix: str = "") -> TrialConfig:
    """A TrialConfig from ``data`` (read from ``file``, under ``prefix`` there) with ``--set`` overrides applied.

    A problem at (or inside, or around) an overridden key is the override's: it is reported as
    ``--set: dotted.key: message``, not as a problem of the file.
    """
    pairs = parse_overrides(overrides)
    for key, value in pairs:
        data = set_dotted(data, key, value)
    try:
        return parse_trial_config(data, file, prefix)
    except ConfigError as err:
        out = []
        for p in err.problems:
            key = p.key.removeprefix(f"{prefix}.") if prefix else p.key
            out.append(Problem("--set", key, p.message) if overridden(key, [k for k, _ in pairs]) else p)
        raise ConfigError(out) from None


def overridden(key: str, keys: list[str]) -> bool:
    """Whether a problem at ``key`` concerns one of the overridden ``keys`` (the same, inside, or around it)."""
    return any(key == k or key.startswith(f"{k}.") or (key and k.startswith(f"{key}.")) for k in keys)
