"""A small named registry shared by feature maps, layouts, models, datasets and schedules.

Unknown names fail with a did-you-mean, duplicate names are refused at import time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    Example:
        >>> FEATURE_MAPS = Registry("feature map")
        >>> @FEATURE_MAPS.register("hedgehog")
        ... class Hedgehog: ...
        >>> FEATURE_MAPS.get("hedgehog")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second object with the same name is refused."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered ({self._items[name]!r})")
            self._items[name] = obj
            text = doc if doc is not None else (getattr(obj, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return deco

    def get(self, name: str) -> T:
        """Returns the object registered as ``name`` or raises :class:`UnknownNameError`."""
        if name not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind} '{name}'"
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" (available: {', '.join(self.names())})"
        return msg

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        """Name -> first docstring line, for ``lolsearch ls``."""
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
