"""A small named registry shared by feature maps, layouts, models, datasets and schedules.

Entries are declared lazily as ``"module:attr"`` strings, optionally with a pydantic ``params`` model and plain
metadata, so validating a config against a registry never imports the (torch) module that implements an entry;
:meth:`Registry.get` imports it on first use. Unknown names fail with a did-you-mean; duplicates are refused.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


@dataclass
class Entry:
    """One registered name: where its object lives, its parameter model and metadata."""

    target: str | None
    params: type[BaseModel] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    obj: Any = None


class Registry(Generic[T]):
    """Maps names to objects (classes or factories), declared lazily or registered directly.

    Example:
        >>> FEATURE_MAPS = Registry("feature map")
        >>> FEATURE_MAPS.declare("hedgehog", "lolsearch.attention.featuremaps:Hedgehog", params=HedgehogParams)
        >>> "hedgehog" in FEATURE_MAPS          # no import
        >>> FEATURE_MAPS.get("hedgehog")       # imports lolsearch.attention.featuremaps
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def declare(self, name: str, target: str, params: type[BaseModel] | None = None, **meta: Any) -> None:
        """Declares ``name`` as the object at ``target`` (``"package.module:attr"``), imported on first :meth:`get`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered ({self._entries[name].target})")
        self._entries[name] = Entry(target, params, dict(meta))

    def register(self, name: str, params: type[BaseModel] | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator registering an object directly (for extensions defined outside lolsearch)."""

        def deco(obj: T) -> T:
            self.declare(name, f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}", params, **meta)
            self._entries[name].obj = obj
            return obj

        return deco

    def _entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def get(self, name: str) -> T:
        """Returns the object registered as ``name`` (importing its module) or raises :class:`UnknownNameError`."""
        entry = self._entry(name)
        if entry.obj is None:
            module, _, attr = entry.target.partition(":")
            entry.obj = getattr(importlib.import_module(module), attr)
        return entry.obj

    def params(self, name: str) -> type[BaseModel] | None:
        """The pydantic model that validates ``name``'s parameters (no import of the implementation)."""
        return self._entry(name).params

    def meta(self, name: str, key: str, default: Any = None) -> Any:
        """Declared metadata of ``name`` (e.g. a dataset's ``needs_path``)."""
        return self._entry(name).meta.get(key, default)

    def target(self, name: str) -> str:
        return self._entry(name).target

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind} '{name}'"
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" (available: {', '.join(self.names())})"
        return msg

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> first line of the object's docstring (imports every entry), for ``lolsearch ls``."""
        out = {}
        for n in self.names():
            doc = self._entries[n].meta.get("doc") or getattr(self.get(n), "__doc__", None) or ""
            out[n] = doc.strip().splitlines()[0] if doc.strip() else ""
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
