"""The LOLSEARCH_KERNELS_* settings: every accepted spelling, and a one-line error naming the variable for the rest."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lolsearch.core import kernel_env
from lolsearch.core.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in kernel_env.READERS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), ("On", True), ("YES", True), ("0", False),
                                       ("false", False), ("off", False), ("No", False), ("", True), (" 0 ", False)])
def test_autotune_flag_spellings(monkeypatch, value, on):
    monkeypatch.setenv("LOLSEARCH_KERNELS_AUTOTUNE", value)
    assert kernel_env.read("LOLSEARCH_KERNELS_AUTOTUNE") is on


def test_unset_settings_read_as_their_defaults():
    assert kernel_env.read("LOLSEARCH_KERNELS_AUTOTUNE") is True
    assert kernel_env.read("LOLSEARCH_KERNELS_FP32_DOT") == "tf32x3"
    assert [kernel_env.read(n) for n in ("LOLSEARCH_KERNELS_BD", "LOLSEARCH_KERNELS_PPS", "LOLSEARCH_KERNELS_SEG_TILE")] == [None] * 3


@pytest.mark.parametrize("name, value, parsed", [
    ("LOLSEARCH_KERNELS_FP32_DOT", "ieee", "ieee"), ("LOLSEARCH_KERNELS_BD", "64", 64),
    ("LOLSEARCH_KERNELS_PPS", "16", 16), ("LOLSEARCH_KERNELS_SEG_TILE", "128x64", (128, 64)),
    ("LOLSEARCH_KERNELS_MIN_SEG", "4", 4), ("LOLSEARCH_KERNELS_GQA_ORDER", "auto", None),
    ("LOLSEARCH_KERNELS_GQA_ORDER", "on", True), ("LOLSEARCH_KERNELS_GQA_ORDER", "0", False),
])
def test_good_values_parse(monkeypatch, name, value, parsed):
    monkeypatch.setenv(name, value)
    assert kernel_env.read(name) == parsed
    kernel_env.check()


@pytest.mark.parametrize("name, value", [
    ("LOLSEARCH_KERNELS_AUTOTUNE", "maybe"), ("LOLSEARCH_KERNELS_AUTOTUNE", "2"), ("LOLSEARCH_KERNELS_FP32_DOT", "fp32"),
    ("LOLSEARCH_KERNELS_BD", "100"), ("LOLSEARCH_KERNELS_BD", "512"), ("LOLSEARCH_KERNELS_BD", "-64"),
    ("LOLSEARCH_KERNELS_PPS", "0"), ("LOLSEARCH_KERNELS_PPS", "2.5"), ("LOLSEARCH_KERNELS_SEG_TILE", "128"),
    ("LOLSEARCH_KERNELS_SEG_TILE", "128x100"), ("LOLSEARCH_KERNELS_SEG_TILE", "axb"), ("LOLSEARCH_KERNELS_MIN_SEG", "0"),
    ("LOLSEARCH_KERNELS_GQA_ORDER", "sometimes"),
])
def test_bad_values_are_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        kernel_env.read(name)
    assert str(err.value).startswith(f"environment: {name}: {value!r} is not ")
    with pytest.raises(ConfigError):
        kernel_env.check()


def test_check_lists_every_problem_and_suggests_the_known_name(monkeypatch):
    monkeypatch.setenv("LOLSEARCH_KERNELS_AUTOTUN", "0")
    monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "x")
    with pytest.raises(ConfigError) as err:
        kernel_env.check()
    assert [p.key for p in err.value.problems] == ["LOLSEARCH_KERNELS_AUTOTUN", "LOLSEARCH_KERNELS_PPS"]
    assert "did you mean LOLSEARCH_KERNELS_AUTOTUNE?" in str(err.value)


@pytest.mark.parametrize("entry", [["-m", "lolsearch", "ls", "models"], ["-m", "lolsearch.perf", "train"]])
def test_entry_points_exit_2_with_one_line(entry):
    env = {**os.environ, "LOLSEARCH_KERNELS_AUTOTUNE": "false-ish"}
    proc = subprocess.run([sys.executable, *entry], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not proc.stdout.strip()
    assert proc.stderr.strip() == "environment: LOLSEARCH_KERNELS_AUTOTUNE: 'false-ish' is not 0 or 1 (or true/false, on/off, yes/no)"
