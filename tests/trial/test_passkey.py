"""Passkey scoring: an ideal retriever (the toy teacher: copies whatever followed the longest earlier match of the
current suffix) scores 1, a model that only sees a short window finds the key only when it is near the end, and a
model with random logits scores 0."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lolsearch.config import ModelConfig
from lolsearch.models import byte_tokenizer, load_model
from lolsearch.trial.passkey import QUESTION, passkey_accuracy, passkey_sample, retrieved, retrieved_rows, row_batches


class Retriever(nn.Module):
    """Predicts, at each position, the token that followed the longest earlier match of the text ending there;
    with ``window`` it only looks that many tokens back (a state too small to hold the needle)."""

    def __init__(self, vocab: int, window: int | None = None) -> None:
        super().__init__()
        self.vocab, self.window = vocab, window
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.cat([self._row(row) for row in input_ids]))

    def _row(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.cpu().numpy()
        t = len(ids)
        logits = torch.zeros(1, t, self.vocab)
        run = np.zeros(t, dtype=np.int64)  # run[j]: length of the common suffix of ids[..j] and ids[..i]
        for i in range(t):
            prev = np.concatenate([[0], run[:-1]])
            run = np.where(ids == ids[i], prev + 1, 0)
            cand = run[:i].copy()
            if self.window is not None:
                cand[: max(0, i - self.window)] = 0
            if cand.max(initial=0) > 0:
                j = int(np.flatnonzero(cand == cand.max())[-1])
                logits[0, i, int(ids[j + 1])] = 1.0
        return logits


class Noise(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        gen = torch.Generator().manual_seed(int(input_ids.sum()))
        return SimpleNamespace(logits=torch.randn(*input_ids.shape, self.vocab, generator=gen))


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_sample_has_the_exact_length_and_the_key_twice(tok):
    ids, start = passkey_sample(tok, 400, 0.5, 12345)
    text = tok.decode(ids[1:])
    assert len(ids) == 400 and ids[0] == tok.bos_token_id
    assert text.count("12345") == 3 and text.endswith(QUESTION + " 12345")
    assert tok.decode(ids[start:]) == " 12345"
    with pytest.raises(ValueError, match="shorter than needle"):
        passkey_sample(tok, 50, 0.5, 12345)


def test_retriever_scores_one_windowed_model_depends_on_depth_noise_scores_zero(tok):
    vocab = len(tok)
    teacher = passkey_accuracy(Retriever(vocab), tok, [300], [0.0, 0.5, 1.0], samples=3)
    assert teacher == {"passkey_300": 1.0, "passkey_300_by_depth": [1.0, 1.0, 1.0]}
    windowed = passkey_accuracy(Retriever(vocab, window=120), tok, [300], [0.0, 0.5, 1.0], samples=3)
    assert windowed["passkey_300_by_depth"] == [0.0, 0.0, 1.0]  # the needle is in view only at the end
    broken = passkey_accuracy(Noise(vocab), tok, [300], [0.0, 1.0], samples=3, prefix="passkey_teacher")
    assert broken == {"passkey_teacher_300": 0.0, "passkey_teacher_300_by_depth": [0.0, 0.0]}


def test_one_wrong_digit_is_a_miss(tok):
    ids, start = passkey_sample(tok, 300, 0.2, 55555)
    assert retrieved(Retriever(len(tok)), ids, start)
    wrong = ids.clone()
    wrong[-1] = tok.encode("4", add_special_tokens=False)[0]  # the answer no longer matches the needle
    assert not retrieved(Retriever(len(tok)), wrong, start)


def test_row_batches_fill_the_token_budget_and_cover_every_prompt():
    assert row_batches(20, 4096, 8192) == [2] * 10
    assert row_batches(20, 1024, 8192) == [8, 8, 4]
    assert row_batches(3, 10_000, 8192) == [1, 1, 1]  # one prompt per pass even over the budget


@pytest.mark.parametrize("window", [None, 120])
def test_batched_passes_score_as_one_prompt_at_a_time(tok, window):
    """Batching the prompts of a length changes nothing: with a budget of one prompt per pass and with all in one."""
    model = Retriever(len(tok), window=window)
    args = (model, tok, [300, 400], [0.0, 0.5, 1.0], 3)
    one = passkey_accuracy(*args, max_tokens=1)
    assert passkey_accuracy(*args, max_tokens=10**6) == one == passkey_accuracy(*args, max_tokens=900)


def test_kept_logits_give_the_full_logits_verdict_on_a_real_model(tok):
    """A transformers model takes logits_to_keep: rows with answers of different lengths get the verdict of their
    full logits (the Retriever mock, which lacks the argument, runs the full-logit path)."""
    model, _ = load_model(ModelConfig(source="toy-llama"))
    model.eval()
    rows = [passkey_sample(tok, 200, d, k) for d, k in ((0.0, 12345), (0.5, 7), (1.0, 990))]
    ids, starts = torch.stack([r[0] for r in rows]), [r[1] for r in rows]
    assert len(set(starts)) == 3  # answers of 6, 2 and 4 tokens
    # make every row right under the full logits: each answer is what the model predicts
    with torch.no_grad():
        for r, start in enumerate(starts):
            for p in range(start, ids.shape[1]):
                ids[r, p] = model(input_ids=ids[r : r + 1, :p]).logits[0, -1].argmax()
    assert retrieved_rows(model, ids, starts) == [True, True, True]
    wrong = ids.clone()
    wrong[1, -1] = (wrong[1, -1] + 1) % len(tok)
    assert retrieved_rows(model, wrong, starts) == [True, False, True]
    assert [retrieved(model, wrong[r], s) for r, s in enumerate(starts)] == [True, False, True]
