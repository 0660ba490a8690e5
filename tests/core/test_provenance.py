"""Provenance of a record: the kernels' settings travel with every result."""

from __future__ import annotations

import os
from importlib.metadata import version

from lolsearch.core.provenance import kernel_settings


def test_kernel_settings_record_triton_and_the_kernel_variables(monkeypatch):
    monkeypatch.setenv("LOLSEARCH_KERNELS_AUTOTUNE", "0")
    monkeypatch.setenv("LOLSEARCH_KERNELS_FP32_DOT", "ieee")
    monkeypatch.setenv("LOLSEARCH_CACHE", "/elsewhere")  # not a kernel setting
    got = kernel_settings()
    assert got["triton"] == version("triton")
    assert got["LOLSEARCH_KERNELS_AUTOTUNE"] == "0" and got["LOLSEARCH_KERNELS_FP32_DOT"] == "ieee"
    assert "LOLSEARCH_CACHE" not in got


def test_kernel_settings_without_variables_hold_only_the_version(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LOLSEARCH_KERNELS_")]:
        monkeypatch.delenv(key)
    assert list(kernel_settings()) == ["triton"]
