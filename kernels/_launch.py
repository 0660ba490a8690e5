"""Run lolsearch.kernels entry points from a source checkout, installed or not.

``python kernels/_launch.py bench [ARGS]`` runs ``python -m lolsearch.kernels.bench [ARGS]``;
``python kernels/_launch.py pytest [ARGS]`` runs pytest in-process. When ``lolsearch.kernels`` is not
importable (no ``pip install -e .``), the top-level ``kernels/`` folder is registered under that name.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_importable() -> None:
    """Makes ``import lolsearch.kernels`` work from this checkout (``lolsearch`` registers the folder itself)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    importlib.import_module("lolsearch.kernels")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("bench", "pytest"):
        print("usage: python kernels/_launch.py bench|pytest [ARGS...]", file=sys.stderr)  # noqa: T201
        return 2
    ensure_importable()
    if argv[0] == "pytest":
        import pytest

        return int(pytest.main(argv[1:]))
    sys.argv = ["lolsearch.kernels.bench", *argv[1:]]
    runpy.run_module("lolsearch.kernels.bench", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
