"""`--help` prints every command's and option's text as written: brackets (``lolsearch[dashboard]``), angle
brackets (``results/<space name>``) and backticks are not taken for markup, and long lines are wrapped, not cut."""

from __future__ import annotations

import re

import pytest
import typer

from lolsearch.cli import app
from lolsearch.cli import main as cli_main

GROUP = typer.main.get_command(app)


def _squeezed(text: str) -> str:
    """Text without whitespace: wrapping (also at hyphens) does not change it."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("name", sorted(GROUP.commands))
def test_help_prints_each_text_whole(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # narrow: every long help line must wrap
    command = GROUP.commands[name]
    assert cli_main([name, "--help"]) == 0
    shown = _squeezed(capsys.readouterr().out)
    texts = [command.help.split("\n\n")[0]] + [p.help for p in command.params if getattr(p, "help", None)]
    for text in texts:
        assert _squeezed(text) in shown, text
    assert "…" not in shown


def test_top_level_help_lists_every_command(capsys):
    assert cli_main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert all(re.search(rf"^\s+{name}\s", shown, re.MULTILINE) for name in GROUP.commands), shown
