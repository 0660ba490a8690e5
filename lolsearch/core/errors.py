"""User-facing input errors: one line per problem, ``file: dotted.key: message`` (``file: message`` when the
problem is the whole file). :class:`ConfigError` is bad input in a file or a value; :class:`UsageError` a bad
command line (its ``file`` is the option, e.g. ``--max-trials``). The CLI prints both and exits 2."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in user input."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        message = " ".join(str(self.message).split())  # one line, whatever the message holds
        return f"{self.file}: {self.key}: {message}" if self.key else f"{self.file}: {message}"


class ConfigError(ValueError):
    """Bad user input (YAML, CLI, config values, unknown names). The CLI exits 2 on it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, file: str, key: str, message: str) -> ConfigError:
        return cls([Problem(file, key, message)])

    def with_file(self, file: str, prefix: str = "") -> ConfigError:
        """The same problems attributed to ``file``, keys prefixed with ``prefix``."""
        out = []
        for p in self.problems:
            key = f"{prefix}.{p.key}" if prefix and p.key else (prefix or p.key)
            out.append(Problem(file, key, p.message))
        return ConfigError(out)


class UsageError(ConfigError):
    """A bad command line: an option value out of range, options that exclude each other, a folder in the way."""


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """`` ; did you mean 'x'?`` or an empty string."""
    close = difflib.get_close_matches(str(name), list(options), n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
