"""JSON Schema of space files (and of trial config files) generated from the pydantic models, for editors:
``lolsearch schema > spaces/schema.json`` and ``# yaml-language-server: $schema=./schema.json`` at the top of a
space completes and checks its keys. ``base`` is a :class:`~lolsearch.config.TrialConfig`; ``search`` keys are
dotted TrialConfig paths.

The schema describes the shapes; the loader still checks what a schema cannot (registered names, feature-map
params, expressions, metric families).
"""

from __future__ import annotations

import json
from typing import Any

from lolsearch.config import TrialConfig
from lolsearch.search.schema import SpaceFile

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def trial_schema() -> dict[str, Any]:
    """JSON Schema of a trial config file (``config.yaml``, ``lolsearch run FILE``)."""
    schema = TrialConfig.model_json_schema(mode="validation")
    return {"$schema": DRAFT, **schema, "title": "lolsearch trial config"}


def space_schema() -> dict[str, Any]:
    """JSON Schema of a space file, with ``base`` as a TrialConfig."""
    space = SpaceFile.model_json_schema(mode="validation", by_alias=True)
    trial = TrialConfig.model_json_schema(mode="validation")
    defs = {**trial.pop("$defs", {}), **space.pop("$defs", {})}
    defs["TrialConfig"] = trial
    props = space["properties"]
    props["base"] = {"$ref": "#/$defs/TrialConfig", "description": props["base"].get("description", "")}
    props["search"]["propertyNames"] = {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"}
    return {"$schema": DRAFT, **space, "title": "lolsearch search space", "$defs": dict(sorted(defs.items()))}


def schema_text(trial: bool = False) -> str:
    """The schema as the text ``lolsearch schema`` prints (stable key order, trailing newline)."""
    return json.dumps(trial_schema() if trial else space_schema(), indent=1, ensure_ascii=False) + "\n"


def undescribed(schema: dict[str, Any]) -> list[str]:
    """``Model.field`` of every property without a description (the schema test wants none)."""
    out = []
    models = {"(root)": schema, **schema.get("$defs", {})}
    for name, model in models.items():
        for field, prop in (model.get("properties") or {}).items():
            if not prop.get("description"):
                out.append(f"{name}.{field}")
    return out
