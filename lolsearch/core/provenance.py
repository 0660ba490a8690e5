"""Provenance stored with every record: the package version and the checkout's git sha."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def lolsearch_version() -> str:
    try:
        return version("lolsearch")
    except PackageNotFoundError:  # a checkout run uninstalled (PYTHONPATH=.)
        return "unknown"


def git_sha() -> str | None:
    """HEAD of the checkout this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
