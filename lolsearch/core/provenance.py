"""Provenance stored with every record: the package version, the checkout's git sha, the kernels' settings."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def lolsearch_version() -> str:
    try:
        return version("lolsearch")
    except PackageNotFoundError:  # a checkout run uninstalled (PYTHONPATH=.)
        return "unknown"


def git_sha(path: Path | None = None) -> str | None:
    """HEAD of the checkout this package runs from (or of ``path``), with ``-dirty`` appended when tracked files
    differ from it (as ``git describe --dirty``): a record made from uncommitted code says so. None outside a git
    checkout or without git."""
    cwd = path or Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("-dirty" if dirty else "")


def kernel_settings() -> dict:
    """Triton's version and the kernels' settings in effect (``kernels_autotune``, ``kernels_fp32_dot``, ...: each
    ``LOLSEARCH_KERNELS_*`` variable parsed, its default when unset; None where the kernels pick from the shape):
    they choose the kernels' launch configs, which change speed and round-off, not the function."""
    from lolsearch.core import kernel_env

    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = None
    return {"triton": triton, **{n.removeprefix("LOLSEARCH_").lower(): kernel_env.read(n) for n in kernel_env.READERS}}
