"""Provenance stored with every record: the package version, the checkout's git sha, the kernels' settings."""

from __future__ import annotations

import os
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


def kernel_settings() -> dict[str, str | None]:
    """Triton's version and this process's ``LOLSEARCH_KERNELS_*`` variables (autotuning, fp32 dot precision, tile
    knobs): they choose the kernels' launch configs, which change speed and round-off, not the function."""
    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = None
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("LOLSEARCH_KERNELS_")}
    return {"triton": triton, **env}
