"""The one rich console settings of every printer: text is printed as written."""

from __future__ import annotations

from typing import Any


def text_console(**kwargs: Any) -> Any:
    """A ``rich.console.Console`` (``kwargs`` passed on) that takes no markup and no emoji codes: what is printed is
    data (paths, generated text, errors), so ``runs[i]``, a chat template's ``[/INST]`` or ``:smile:`` print as they
    are; styles come from ``style=`` arguments."""
    from rich.console import Console

    return Console(markup=False, emoji=False, **kwargs)
