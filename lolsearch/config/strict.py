"""The base of every user-facing pydantic model: unknown keys, non-finite floats and booleans given for numbers
are refused (pydantic's lax mode would read ``window: true`` as 1 and ``lr: .nan`` as a learning rate)."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class CheckedModel(BaseModel):
    """Frozen, ``extra="forbid"``, ``allow_inf_nan=False``; a bool where a field wants a number is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        # A bool given for a number is passed on as its YAML spelling, so pydantic reports it at its own key
        # ("Input should be a valid integer", input 'true') together with every other problem of the config.
        if not isinstance(data, dict):
            return data
        fixed = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in data and _bool_for_number(field.annotation, data[key]):
                fixed[key] = _spelled(data[key])
        return {**data, **fixed} if fixed else data


def _spelled(value: Any) -> Any:
    """``value`` with every bool in it (dict keys included) replaced by ``"true"``/``"false"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_spelled(v) for v in value]
    if isinstance(value, dict):
        return {_spelled(k): v for k, v in value.items()}
    return value


def _bool_for_number(ann: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool where ``ann`` wants an int or float (scalars, tuples, lists, dict keys)."""
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if bool in args:
            return False
        return any(_bool_for_number(a, value) for a in args)
    if ann in (int, float):
        return isinstance(value, bool)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        inner = [a for a in get_args(ann) if a is not Ellipsis]
        return any(_bool_for_number(inner[0] if len(inner) == 1 else inner[min(i, len(inner) - 1)], v)
                   for i, v in enumerate(value)) if inner else False
    if origin is dict and isinstance(value, dict):
        key_ann = get_args(ann)[0] if get_args(ann) else Any
        return any(_bool_for_number(key_ann, k) for k in value)
    return False


def validated_params(params_cls: type[BaseModel], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` validated by a registry entry's own model, as plain JSON values. Its first problem is raised
    as ``"params.<key>: message"`` so that the error names ``....params.<key>``, not the owning section."""
    try:
        return params_cls.model_validate(params).model_dump(mode="json")
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in ("params", *e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("int_parsing", "float_parsing") and e.get("input") in ("true", "false"):
            msg = f"expected a number, got {e['input']} (true/false are not numbers)"
        elif e["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(params_cls.model_fields)) or "none"
            msg = f"unknown parameter '{e['loc'][-1]}' (parameters: {allowed})"
        raise ValueError(f"{loc}: {msg}") from None
