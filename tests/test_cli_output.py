"""What the CLI prints is data, never rich markup: paths, generated text, errors and table cells with brackets
(``x[i]``, a chat template's ``[/INST]``) or emoji codes (``:smile:``) print as they are, and a closing tag does
not raise."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lolsearch import cli
from lolsearch.sweep import progress
from lolsearch.sweep.live import ProgressBoard

SPACES = Path(__file__).resolve().parent.parent / "spaces"
TEXT = "[/INST] a[i] = [bold]b[/bold] [dashboard] :smile:"


def _printed(console: Console, renderable: object) -> str:
    """What ``console`` writes for ``renderable``, on a capture with the console's own settings."""
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


def test_every_cli_console_prints_brackets_as_text():
    table = Table()
    table.add_column("cell")
    table.add_row(TEXT)
    board = ProgressBoard(1, interactive=False, emit=lambda line: None)
    for console in (cli.out, progress.console(), board.console):
        assert TEXT in _printed(console, TEXT)
        assert TEXT in _printed(console, table)


def test_a_path_with_brackets_prints_whole(tmp_path, capsys):
    folder = tmp_path / "runs[i]"
    folder.mkdir()
    shutil.copy(SPACES / "toy.yaml", folder / "toy.yaml")
    cli.out.file = io.StringIO()  # the module's console writes where capsys cannot see; read it here
    try:
        assert cli.main(["validate", str(folder / "toy.yaml"), "--samples", "1"]) == 0
        printed = cli.out.file.getvalue()
    finally:
        cli.out.file = None
    assert f"{folder / 'toy.yaml'}:ok" in "".join(printed.split()), printed  # wrapped lines joined
