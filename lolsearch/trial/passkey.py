"""Passkey retrieval (Mohtashami & Jaggi 2023): a random number hidden at a given depth of filler text, the model
asked for it at the end. Linear attention keeps a fixed-size state, so it is the standard test it fails; the
LoLCATs paper does not report it.

A sample is ``[bos] filler[:cut] needle filler[cut:] question answer`` of exactly ``length`` tokens, the needle
starting at ``depth`` (0 = start, 1 = end) of the filler. It counts as retrieved when every answer token is the
model's argmax given the tokens before it: with teacher forcing this is exactly what greedy decoding of
``len(answer)`` tokens would produce, at the cost of one forward pass. Every prompt of a length has exactly that many
tokens, so the prompts run in batches (no padding), and only the answer positions' logits are computed where the
model takes ``logits_to_keep``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from lolsearch.trial.surgery import takes_logits_to_keep

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def passkey_sample(tokenizer, length: int, depth: float, key: int) -> tuple[torch.Tensor, int]:
    """``(input_ids [length], answer_start)``: a prompt hiding ``key`` at ``depth`` of the filler, followed by the
    answer tokens (``" <key>"``) from position ``answer_start`` on. Raises ValueError when ``length`` is too short
    for the needle, question and answer."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    needle, question = _encode(tokenizer, NEEDLE.format(key=key)), _encode(tokenizer, QUESTION)
    answer = _encode(tokenizer, f" {key}")
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    n_filler = length - len(head) - len(needle) - len(question) - len(answer)
    if n_filler < 0:
        raise ValueError(f"passkey length {length} is shorter than needle + question + answer "
                         f"({length - n_filler} tokens)")
    unit = _encode(tokenizer, FILLER)
    filler = (unit * (n_filler // len(unit) + 1))[:n_filler]
    cut = round(depth * n_filler)
    ids = head + filler[:cut] + needle + filler[cut:] + question + answer
    return torch.tensor(ids, dtype=torch.long), len(ids) - len(answer)


def row_batches(prompts: int, length: int, max_tokens: int) -> list[int]:
    """Rows of each forward pass over ``prompts`` prompts of ``length`` tokens, at most ``max_tokens`` tokens (and at
    least one prompt) per pass."""
    rows = max(1, max_tokens // length)
    return [rows] * (prompts // rows) + ([prompts % rows] if prompts % rows else [])


@torch.no_grad()
def retrieved_rows(model: nn.Module, ids: torch.Tensor, answer_starts: Sequence[int]) -> list[bool]:
    """Per row of ``ids [N, T]``: whether every answer token ``ids[r, answer_starts[r]:]`` is the model's argmax
    after the tokens before it. One forward pass; only the last ``T - min(answer_starts) + 1`` positions' logits
    are computed when the model takes ``logits_to_keep``."""
    device = next(model.parameters()).device
    t = ids.shape[1]
    keep = t - min(answer_starts) + 1
    kwargs: dict = {"use_cache": False}
    if takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(input_ids=ids.to(device), **kwargs).logits[:, -keep:]
    predicted = logits[:, :-1].argmax(dim=-1).cpu()  # column j predicts position t - keep + 1 + j
    first = min(answer_starts)
    return [bool((predicted[r, start - first:] == ids[r, start:]).all()) for r, start in enumerate(answer_starts)]


def retrieved(model: nn.Module, ids: torch.Tensor, answer_start: int) -> bool:
    """Whether every answer token ``ids[answer_start:]`` is the model's argmax after the tokens before it."""
    return retrieved_rows(model, ids[None], [answer_start])[0]


def passkey_accuracy(model: nn.Module, tokenizer, lengths: Sequence[int], depths: Sequence[float], samples: int,
                     seed: int = 0, prefix: str = "passkey", max_tokens: int = 8192) -> dict[str, float | list[float]]:
    """Retrieval accuracy per context length: ``<prefix>_<length>`` (mean over depths and samples) and
    ``<prefix>_<length>_by_depth`` (one accuracy per depth, in ``depths`` order). The keys (5-digit numbers) depend
    only on ``seed``, length, depth and sample index, so the student and the teacher see the same prompts. The
    prompts of a length run in batches of at most ``max_tokens`` tokens (:func:`row_batches`)."""
    was_training = model.training
    model.eval()
    out: dict[str, float | list[float]] = {}
    try:
        for length in lengths:
            prompts = []  # (depth index, ids, answer start)
            for d_i, depth in enumerate(depths):
                rng = random.Random(f"{seed}-{length}-{d_i}")
                prompts += [(d_i, *passkey_sample(tokenizer, length, depth, rng.randrange(10_000, 100_000)))
                            for _ in range(samples)]
            hits = [0] * len(depths)
            done = 0
            for rows in row_batches(len(prompts), length, max_tokens):
                part = prompts[done:done + rows]
                done += rows
                ok = retrieved_rows(model, torch.stack([p[1] for p in part]), [p[2] for p in part])
                for (d_i, _, _), good in zip(part, ok, strict=True):
                    hits[d_i] += good
            by_depth = [h / samples for h in hits]
            out[f"{prefix}_{length}"] = sum(by_depth) / len(by_depth)
            out[f"{prefix}_{length}_by_depth"] = by_depth
    finally:
        model.train(was_training)
    return out
