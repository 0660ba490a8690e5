"""Short labels for searched keys and their values, so tables fit a 100-column terminal.

``short_labels(["attention.feature_map.kind", "distill.lr", "finetune.lr"])`` ->
``{"attention.feature_map.kind": "feature_map", "distill.lr": "distill.lr", "finetune.lr": "finetune.lr"}``:
the last part of the dotted key (its parent when the last part is generic, e.g. ``kind`` or ``enabled``),
widened to the last two parts where two keys would share a label, cut to ``width`` characters.
"""

from __future__ import annotations

import json
from typing import Any

GENERIC = ("kind", "enabled", "params", "values", "name", "source")


def _base(key: str, parts: int) -> str:
    bits = key.split(".")
    while len(bits) > 1 and bits[-1] in GENERIC:
        bits = bits[:-1]
    return ".".join(bits[-parts:])


def short_labels(keys: list[str], width: int = 14) -> dict[str, str]:
    """A distinct short label per dotted key (see the module docstring)."""
    first = {k: _base(k, 1) for k in keys}
    labels = {k: _base(k, 2) if list(first.values()).count(v) > 1 else v for k, v in first.items()}
    out = {}
    for k, label in labels.items():
        cut = label if len(label) <= width else label[: width - 1] + "…"
        while cut in out.values():
            cut = cut[:-2] + "…" if len(cut) > 2 else cut + "'"
        out[k] = cut
    return out


def short_value(value: Any, width: int = 12) -> str:
    """A value as a cell: floats to 4 significant figures, lists/mappings as compact JSON, cut to ``width``."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def legend(keys: list[str], width: int = 14) -> str:
    """``label = full.key`` pairs for the labels that differ from their key."""
    return ", ".join(f"{v} = {k}" for k, v in short_labels(keys, width).items() if v != k)
