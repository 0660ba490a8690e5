"""The ``LOLSEARCH_KERNELS_*`` environment variables that tune the Triton kernels, parsed in one place.

A bad value is rejected with one line naming the variable (a :class:`ConfigError` from ``environment``), never read
as some other setting: ``LOLSEARCH_KERNELS_AUTOTUNE=false`` once meant "on", because only "0" turned it off. The
CLI checks them all before any work (:func:`check`); the kernels read them through the functions below.
"""

from __future__ import annotations

import os

from lolsearch.core.errors import ConfigError, Problem

_FLAGS = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False}
FP32_DOTS = ("tf32x3", "tf32", "ieee")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def _bad(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError.single("environment", name, f"{value!r} is not {expected}")


def flag(name: str, default: bool) -> bool:
    """An on/off variable: 1/0, true/false, on/off or yes/no (any case); unset or empty gives ``default``."""
    value = _raw(name)
    if value is None:
        return default
    if value.lower() not in _FLAGS:
        raise _bad(name, value, "0 or 1 (or true/false, on/off, yes/no)")
    return _FLAGS[value.lower()]


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; unset or empty gives ``default``."""
    value = _raw(name)
    if value is None:
        return default
    if value not in choices:
        raise _bad(name, value, "one of " + ", ".join(choices))
    return value


def auto_flag(name: str) -> bool | None:
    """``auto`` (or unset or empty): None, the kernels decide; otherwise an on/off value as :func:`flag` reads it."""
    value = _raw(name)
    if value is None or value.lower() == "auto":
        return None
    if value.lower() not in _FLAGS:
        raise _bad(name, value, "auto, 0 or 1 (or true/false, on/off, yes/no)")
    return _FLAGS[value.lower()]


def power_of_two(name: str, lo: int = 1, hi: int = 1 << 20) -> int | None:
    """A power of two in ``[lo, hi]``; None when unset or empty."""
    value = _raw(name)
    if value is None:
        return None
    n = int(value) if value.isdigit() else 0
    if not lo <= n <= hi or n & (n - 1):
        raise _bad(name, value, f"a power of two from {lo} to {hi}")
    return n


def positive_int(name: str) -> int | None:
    """An integer >= 1; None when unset or empty."""
    value = _raw(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise _bad(name, value, "an integer >= 1")
    return int(value)


def count(name: str) -> int | None:
    """An integer >= 0; None when unset or empty."""
    value = _raw(name)
    if value is None:
        return None
    if not value.isdigit():
        raise _bad(name, value, "an integer >= 0")
    return int(value)


def tile(name: str) -> tuple[int, int] | None:
    """``AxB`` with A and B powers of two from 16 to 256 (e.g. 128x64); None when unset or empty."""
    value = _raw(name)
    if value is None:
        return None
    parts = value.lower().split("x")
    sizes = [int(p) for p in parts if p.isdigit()]
    if len(parts) != 2 or len(sizes) != 2 or any(not 16 <= s <= 256 or s & (s - 1) for s in sizes):
        raise _bad(name, value, "AxB with A and B powers of two from 16 to 256 (e.g. 128x64)")
    return sizes[0], sizes[1]


#: Each variable and the reader that parses it (the kernels call the same readers with the same arguments).
READERS = {
    "LOLSEARCH_KERNELS_AUTOTUNE": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_FP32_DOT": lambda n: choice(n, "tf32x3", FP32_DOTS),
    "LOLSEARCH_KERNELS_BD": lambda n: power_of_two(n, 16, 256),
    "LOLSEARCH_KERNELS_PPS": positive_int,
    "LOLSEARCH_KERNELS_MIN_SEG": positive_int,
    "LOLSEARCH_KERNELS_QUADRATIC_T": count,
    "LOLSEARCH_KERNELS_PARALLEL_T": count,
    "LOLSEARCH_KERNELS_PARALLEL_SEG": positive_int,
    "LOLSEARCH_KERNELS_SEG_TILE": tile,
    "LOLSEARCH_KERNELS_GQA_ORDER": auto_flag,
    "LOLSEARCH_KERNELS_FUSED_FEATURES": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_FEATURES_16BIT": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_FUSED_ROPE": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_FUSED_XENT": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_DIRECT_LAUNCH": lambda n: flag(n, True),
    "LOLSEARCH_KERNELS_REG_CAPS": lambda n: flag(n, True),
}


def read(name: str):
    """The parsed value of kernel setting ``name`` (a key of :data:`READERS`)."""
    return READERS[name](name)


def check() -> None:
    """Raises one :class:`ConfigError` listing every ``LOLSEARCH_KERNELS_*`` variable with a bad value or an unknown
    name (with the closest known name)."""
    import difflib

    problems: list[Problem] = []
    for name in sorted(k for k in os.environ if k.startswith("LOLSEARCH_KERNELS_")):
        if name not in READERS:
            close = difflib.get_close_matches(name, list(READERS), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(READERS)}"
            problems.append(Problem("environment", name, f"unknown kernel setting{hint}"))
            continue
        try:
            READERS[name](name)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
