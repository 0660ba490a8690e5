"""Training/evaluation text: the splits of a data source (:mod:`lolsearch.data.sources`), tokenized and packed.

Tokenized splits are cached as ``.npy`` per (dataset, split definition, tokenizer) so concurrent trials
tokenize once. :func:`packed_batches` concatenates documents with EOS between them and cuts fixed-length
sequences.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lolsearch.config import DataConfig
from lolsearch.config.plugins import DATASETS
from lolsearch.core.files import atomic_dir, cache_path, fingerprint, locked
from lolsearch.data.sources import SPLITS, Document, _bad

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when tokenization or packing changes, to invalidate token caches


@dataclass(frozen=True)
class TokenStream:
    """A split as one token stream: documents concatenated, each followed by EOS.

    ``ids`` [N] int32; ``prompt_mask`` [N] bool (True on prompt tokens); ``doc_offsets`` [D+1] int64, document d
    is ``ids[doc_offsets[d]:doc_offsets[d+1]]`` (its EOS included); ``names`` [D] document names.
    """

    ids: np.ndarray
    prompt_mask: np.ndarray
    doc_offsets: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def load_documents(cfg: DataConfig) -> dict[str, list[Document]]:
    """The train/val/test documents of ``cfg.source`` (deterministic; independent of any seed)."""
    return DATASETS.get(cfg.source)(cfg).documents()


def load_splits(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, TokenStream]:
    """Tokenized train/val/test streams, from the on-disk cache (built once, under a lock, atomically)."""
    source = DATASETS.get(cfg.source)(cfg)
    key = fingerprint(_FORMAT, cfg.source, source.key(), tokenizer_fingerprint(tokenizer))
    final = cache_path("tokens", f"{cfg.source}-{key}")
    if not final.is_dir():
        with locked(final):
            if not final.is_dir():
                with atomic_dir(final) as tmp:
                    _write_splits(tmp, source.documents(), tokenizer)
    names = json.loads((final / "names.json").read_text())
    return {
        s: TokenStream(
            ids=np.load(final / f"{s}.ids.npy", mmap_mode="r"),
            prompt_mask=np.load(final / f"{s}.mask.npy", mmap_mode="r"),
            doc_offsets=np.load(final / f"{s}.offsets.npy"),
            names=names[s],
        )
        for s in SPLITS
    }


def split_token_count(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str) -> int:
    """Tokens in ``split`` (EOS separators included); packing uses ``count // seq_len`` sequences of them."""
    return len(load_splits(cfg, tokenizer)[_check_split(split)])


def packed_batches(
    cfg: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    split: str,
    batch_size: int,
    seed: int,
    *,
    mask_prompt: bool = False,
    num_tokens: int | None = None,
    shuffle: bool = True,
    device: str | torch.device | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches ``{"input_ids": [B, T], "labels": [B, T]}`` (int64, T = ``cfg.seq_len``) of packed sequences.

    The split's stream is cut into ``len // T`` sequences (the partial tail is dropped). ``labels`` equal
    ``input_ids`` (HF convention: the model shifts them), with -100 on prompt tokens when ``mask_prompt``.

    - ``shuffle=True`` (training): sequences in a random order fixed by ``seed``, re-shuffled every epoch
      (batches may span epochs); infinite unless ``num_tokens`` is given.
    - ``shuffle=False`` (evaluation): one pass in stream order; ``num_tokens`` keeps evenly spaced sequences so a
      capped evaluation still covers the whole split.
    - ``num_tokens``: at most ``max(1, num_tokens // T)`` sequences in total; only then may the last batch be
      smaller than ``batch_size`` (and with ``shuffle=False`` when the split runs out).
    """
    stream = load_splits(cfg, tokenizer)[_check_split(split)]
    seq_len = cfg.seq_len
    n_seq = len(stream) // seq_len
    if n_seq == 0:
        raise _bad("data.seq_len", f"split '{split}' of '{cfg.source}' has {len(stream)} tokens, < seq_len {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cap = None if num_tokens is None else max(1, num_tokens // seq_len)
    order = _shuffled_order(n_seq, seed, cap) if shuffle else _strided_order(n_seq, cap)
    return _batches(stream, order, seq_len, batch_size, mask_prompt=mask_prompt, device=device)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Content hash of a tokenizer (vocabulary, merges, normalizer, specials), for cache keys."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, tokenizer.all_special_tokens])
    return hashlib.sha256((body + specials).encode()).hexdigest()[:16]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (allowed: {', '.join(SPLITS)})")
    return split


def _write_splits(out: Path, docs: dict[str, list[Document]], tokenizer: PreTrainedTokenizerBase) -> None:
    """Tokenizes every split into ``<split>.{ids,mask,offsets}.npy`` plus ``names.json`` in ``out``."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token to separate documents")
    names = {}
    for split in SPLITS:
        kept = [d for d in docs[split] if d.text or d.prompt]
        ids, mask, offsets = [], [], [0]
        for start in range(0, len(kept), 256):  # bounded memory for large datasets
            chunk = kept[start : start + 256]
            bodies = _encode(tokenizer, [d.text for d in chunk])
            prompts = _encode(tokenizer, [d.prompt for d in chunk])
            for p, b in zip(prompts, bodies, strict=True):
                ids.append(np.asarray([*p, *b, eos], dtype=np.int32))
                mask.append(np.arange(len(p) + len(b) + 1) < len(p))
                offsets.append(offsets[-1] + len(ids[-1]))
        np.save(out / f"{split}.ids.npy", np.concatenate(ids) if ids else np.zeros(0, np.int32))
        np.save(out / f"{split}.mask.npy", np.concatenate(mask) if mask else np.zeros(0, bool))
        np.save(out / f"{split}.offsets.npy", np.asarray(offsets, dtype=np.int64))
        names[split] = [d.name for d in kept]
        log.info("tokenized %s: %d documents, %d tokens", split, len(kept), offsets[-1])
    (out / "names.json").write_text(json.dumps(names))


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    if not any(texts):
        return [[] for _ in texts]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _shuffled_order(n_seq: int, seed: int, cap: int | None) -> Iterator[int]:
    """Sequence indices, a fresh permutation per epoch (seeded by seed and epoch); stops after ``cap``."""
    emitted, epoch = 0, 0
    while cap is None or emitted < cap:
        perm = np.random.default_rng([seed % 2**63, epoch]).permutation(n_seq)
        for i in perm[: None if cap is None else cap - emitted]:
            yield int(i)
        emitted += n_seq if cap is None else min(n_seq, cap - emitted)
        epoch += 1


def _strided_order(n_seq: int, cap: int | None) -> Iterator[int]:
    """All sequences in order, or ``cap`` evenly spaced ones."""
    k = n_seq if cap is None else min(cap, n_seq)
    return iter(((np.arange(k) * n_seq) // k).tolist())


def _batches(
    stream: TokenStream,
    order: Iterator[int],
    seq_len: int,
    batch_size: int,
    *,
    mask_prompt: bool,
    device: str | torch.device | None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Groups sequence indices into batches of up to ``batch_size`` rows: ids and labels [B, T] int64."""
    rows = list(itertools.islice(order, batch_size))
    while rows:
        ids = np.stack([stream.ids[i * seq_len : (i + 1) * seq_len] for i in rows]).astype(np.int64)  # [B, T]
        labels = ids.copy()
        if mask_prompt:
            labels[np.stack([stream.prompt_mask[i * seq_len : (i + 1) * seq_len] for i in rows])] = -100
        batch = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
        yield _to_device(batch, device) if device is not None else batch
        rows = list(itertools.islice(order, batch_size))


def _to_device(batch: dict[str, torch.Tensor], device: str | torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``. To a GPU through pinned memory without blocking: a copy from pageable memory
    waits for the GPU to finish its queued work, which would stall a training loop that runs ahead of it."""
    if torch.device(device).type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
