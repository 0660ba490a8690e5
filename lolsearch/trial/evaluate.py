"""Quality metrics of a (linearized, possibly LoRA-wrapped) causal LM on held-out data.

Every function runs under ``torch.no_grad`` in eval mode and restores the model's training flag.
Batches are dicts with ``input_ids`` and ``labels`` ``[B, T]`` (labels −100 = not scored); the
next-token shift is done here. Logits are handled one batch (and one sequence in fp32) at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lolsearch.attention.layer import DistillRecorder
from lolsearch.trial import surgery
from lolsearch.trial.forward_graph import Graph, GraphedForward, graph_wanted

log = logging.getLogger(__name__)

IGNORE = -100


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` + ``no_grad`` for the block; the training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = batch["input_ids"].to(device)
    labels = batch.get("labels")
    return ids, (labels.to(device) if labels is not None else None)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``[B, T, V]`` logits of a plain causal forward of unpadded ``ids [B, T]`` (no generation cache, no mask:
    :func:`~lolsearch.trial.surgery.unmasked_causal`, so no host sync per forward)."""
    with surgery.unmasked_causal(model, ids.shape[1]):
        return model(input_ids=ids, use_cache=False).logits


def _logits_pass(model: nn.Module, name: str, graph: Graph) -> GraphedForward:
    """:func:`_logits` of ``model`` for one pass, replayed from a CUDA graph where ``graph`` asks for it. A replay's
    logits are overwritten by the next call of the same forward."""
    dev = _device(model)
    return GraphedForward(name, lambda ids: _logits(model, ids), dev, graph_wanted(graph, dev))


def _next_token(logits: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 next-token log-probabilities ``[T-1, V]``, targets ``[T-1]`` and the scored mask ``[T-1]`` of one
    sequence (``logits [T, V]``, ``labels [T]``).

    Position t predicts label t+1 and is scored unless that label is −100 (whose target is replaced by 0). Without
    labels every position but the last is scored and the targets are 0 (only distributions are compared then).
    Unscored rows are masked, not dropped: the shapes stay fixed, so nothing here waits on the device.
    """
    logp = F.log_softmax(logits[:-1].float(), dim=-1)
    if labels is None:
        keep = torch.ones(logp.shape[0], dtype=torch.bool, device=logp.device)
        return logp, torch.zeros(logp.shape[0], dtype=torch.long, device=logp.device), keep
    target = labels[1:]
    keep = target != IGNORE
    return logp, target.clamp_min(0), keep


def _nll(logp: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Summed NLL of the scored rows (:func:`_next_token`'s outputs), a 0-d tensor."""
    return torch.where(keep, -logp.gather(-1, target[:, None]).squeeze(-1), 0.0).sum()


def _kl(logp: torch.Tensor, ref_logp: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Σ over scored rows of KL(ref ‖ model) = Σ_v p_ref(v) (log p_ref(v) − log p(v)), a 0-d tensor."""
    return torch.where(keep, F.kl_div(logp, ref_logp, log_target=True, reduction="none").sum(-1), 0.0).sum()


def _agree(logp: torch.Tensor, ref_logp: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Scored rows whose argmaxes agree, a 0-d tensor."""
    return ((logp.argmax(dim=-1) == ref_logp.argmax(dim=-1)) & keep).sum()


def _per_sequence(rows: Sequence[Sequence[torch.Tensor]]) -> list[list[float]]:
    """One host read for a pass: the per-sequence 0-d terms stacked in float64 (exact for the fp32 sums and the
    integer counts), as lists in sequence order."""
    return torch.stack([torch.stack([t.double() for t in row]) for row in rows]).tolist() if rows else []


def perplexity(model: nn.Module, batches: Iterable[dict], graph: Graph = "auto") -> float:
    """exp(mean next-token NLL over all label tokens != −100), token-weighted across batches (fp32 log-softmax).
    ``graph``: replay the forwards from a CUDA graph (``eval.cuda_graph``; the same values up to rounding)."""
    return perplexity_of(*sequence_nll(model, batches, graph))


def sequence_nll(model: nn.Module, batches: Iterable[dict], graph: Graph = "auto") -> tuple[list[float], list[int]]:
    """Per test sequence: the summed next-token NLL (fp32 log-softmax) over its label tokens != −100, and how many
    there were (``(nll_sum [n_seq], tokens [n_seq])``; sequences without a scored token are left out).
    ``exp(sum(nll_sum) / sum(tokens))`` is :func:`perplexity`; the per-sequence values let two designs be
    compared by a paired bootstrap over the same sequences."""
    rows = []
    with _inference(model):
        dev = _device(model)
        forward = _logits_pass(model, "sequence_nll", graph)
        for batch in batches:
            ids, labels = _inputs(batch, dev)
            if labels is None:
                raise ValueError("sequence_nll needs batches with 'labels'")
            logits = forward(ids)
            for b in range(ids.shape[0]):
                logp, target, keep = _next_token(logits[b], labels[b])
                rows.append((_nll(logp, target, keep), keep.sum()))
            del logits
    kept = [(nll, int(n)) for nll, n in _per_sequence(rows) if n]
    if not kept:
        raise ValueError("sequence_nll: no label tokens in the batches")
    return [nll for nll, _ in kept], [n for _, n in kept]


def perplexity_of(nll_sum: list[float], tokens: list[int]) -> float:
    """Token-weighted perplexity of :func:`sequence_nll`'s output."""
    return math.exp(sum(nll_sum) / sum(tokens))


def kl_to_reference(reference: nn.Module, model: nn.Module, batches: Iterable[dict], graph: Graph = "auto") -> float:
    """Mean over scored tokens of KL(reference ‖ model) between two models' next-token distributions (fp32)."""
    rows = []
    with _inference(model), _inference(reference):
        dev, ref_dev = _device(model), _device(reference)
        forward, ref_forward = _logits_pass(model, "kl student", graph), _logits_pass(reference, "kl reference", graph)
        for batch in batches:
            ids, labels = _inputs(batch, dev)
            student, ref = forward(ids), ref_forward(ids.to(ref_dev)).to(dev)
            for b in range(ids.shape[0]):
                logp, _, keep = _next_token(student[b], labels[b] if labels is not None else None)
                ref_logp = _next_token(ref[b], labels[b] if labels is not None else None)[0]
                rows.append((_kl(logp, ref_logp, keep), keep.sum()))
            del student, ref
    terms = _per_sequence(rows)
    count = sum(n for _, n in terms)
    if count == 0:
        raise ValueError("kl_to_reference: no scored tokens in the batches")
    return sum(kl for kl, _ in terms) / count


def teacher_agreement(model: nn.Module, batches: Iterable[dict], graph: Graph = "auto") -> dict[str, float]:
    """Student vs teacher next-token distributions on the scored tokens (labels != −100).

    The teacher is the same model under :func:`lolsearch.trial.surgery.teacher_mode` (softmax attention,
    PEFT adapters disabled), run batch by batch. Returns ``kl_teacher`` = mean over tokens of
    KL(teacher ‖ student) = Σ_v p_t(v) (log p_t(v) − log p_s(v)) (fp32 log-softmax) and ``top1_agree`` =
    fraction of tokens whose argmaxes agree.
    """
    rows = []
    with _inference(model):
        dev = _device(model)
        forward, teacher_forward = _logits_pass(model, "student", graph), _logits_pass(model, "teacher", graph)
        for batch in batches:
            ids, labels = _inputs(batch, dev)
            student = forward(ids)
            with surgery.teacher_mode(model):
                teacher = teacher_forward(ids)
            for b in range(ids.shape[0]):
                logp, _, keep = _next_token(student[b], labels[b] if labels is not None else None)
                teacher_logp = _next_token(teacher[b], labels[b] if labels is not None else None)[0]
                rows.append((_kl(logp, teacher_logp, keep), _agree(logp, teacher_logp, keep), keep.sum()))
            del student, teacher
    terms = _per_sequence(rows)
    count = sum(n for *_, n in terms)
    if count == 0:
        raise ValueError("teacher_agreement: no scored tokens in the batches")
    return {"kl_teacher": sum(t[0] for t in terms) / count, "top1_agree": sum(t[1] for t in terms) / count}


def attention_mse(model: nn.Module, batches: Iterable[dict], graph: Graph = "auto") -> tuple[float, list[float]]:
    """Held-out attention-transfer MSE (per-head outputs before o_proj, no loss factor).

    Runs the decoder (no lm_head) under :func:`lolsearch.trial.surgery.distill_mode`: every linearized layer
    compares its student output with the softmax output of the same q/k/v (LoRA, if present, stays on)
    on teacher-forced inputs. Per layer, the MSE is averaged over batches weighted by tokens. ``graph``: replay the
    decoder from a CUDA graph (``eval.cuda_graph``).

    Returns:
        (mean over linearized layers, per-layer list in layer order).
    """
    expected = sorted(m.layer_idx for m in surgery.linearized_layers(model))
    if not expected:
        raise ValueError("attention_mse: the model has no linearized layers")
    decoder = surgery.decoder_of(model)
    recorder = DistillRecorder()

    def layer_mse(ids: torch.Tensor) -> torch.Tensor:
        """``[len(expected)]`` float64: each linearized layer's MSE on the batch ``ids [B, T]``."""
        recorder.clear()
        with surgery.unmasked_causal(model, ids.shape[1]):
            decoder(input_ids=ids, use_cache=False)
        if sorted(recorder.mse) != expected:
            raise RuntimeError(f"attention_mse: layers {sorted(recorder.mse)} recorded, expected {expected}")
        return torch.stack([recorder.mse[i].detach().double() for i in expected])

    sums: torch.Tensor | float = 0.0  # float64 on the device: one read at the end
    tokens = 0
    with _inference(model), surgery.distill_mode(model, recorder):
        dev = _device(model)
        forward = GraphedForward("attention_mse", layer_mse, dev, graph_wanted(graph, dev))
        for batch in batches:
            ids, _ = _inputs(batch, dev)
            sums = sums + forward(ids) * ids.numel()
            tokens += ids.numel()
    if tokens == 0:
        raise ValueError("attention_mse: no batches")
    per_layer = [s / tokens for s in torch.as_tensor(sums).tolist()]
    return sum(per_layer) / len(per_layer), per_layer


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: context, candidate continuations, index of the right one."""

    context: str
    choices: tuple[str, ...]
    label: int


def load_mc_task(path: str | Path, limit: int | None = None) -> list[MCItem]:
    """Reads a JSONL task: per line ``context`` (or ``question``), ``choices`` (list of str), ``label`` (or ``answer``).

    Raises:
        ValueError: one line naming the file, line number and key that is wrong.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read multiple-choice task: {err.strerror or err}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        items.append(_mc_item(line, f"{path}:{n}"))
    if not items:
        raise ValueError(f"{path}: no multiple-choice items")
    return items


def _mc_item(line: str, where: str) -> MCItem:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON: {err.msg}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object")
    context = row.get("context", row.get("question"))
    if not isinstance(context, str):
        raise ValueError(f"{where}: context: expected a string in 'context' or 'question'")
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"{where}: choices: expected a list of at least 2 non-empty strings")
    label = row.get("label", row.get("answer"))
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise ValueError(f"{where}: label: expected an integer index into choices in 'label' or 'answer'")
    return MCItem(context, tuple(choices), label)


def multiple_choice(
    model: nn.Module, tokenizer: Any, path: str, limit: int | None = None, *, delimiter: str = " "
) -> dict[str, float]:
    """Zero-shot multiple-choice accuracy of a local JSONL task (format: :func:`load_mc_task`).

    Each choice is scored by the summed log-likelihood of its tokens after the context (continuation =
    ``delimiter + choice``; the context's tokens are a prefix of the joint encoding, as in lm-eval).
    ``acc``: argmax of the sum; ``acc_norm``: argmax of the sum divided by the continuation's length in
    characters. Keys: ``mc_<stem>_acc`` and ``mc_<stem>_acc_norm`` (stem of the file name).
    """
    items = load_mc_task(path, limit)
    stem = re.sub(r"[^0-9A-Za-z]+", "_", Path(path).stem).strip("_") or "task"
    right = right_norm = 0
    with _inference(model):
        for item in items:
            conts = [delimiter + c for c in item.choices]
            scores = choice_logliks(model, tokenizer, item.context, conts)
            right += int(max(range(len(conts)), key=lambda i: scores[i]) == item.label)
            normed = [s / len(c) for s, c in zip(scores, conts, strict=True)]
            right_norm += int(max(range(len(conts)), key=lambda i: normed[i]) == item.label)
    return {f"mc_{stem}_acc": right / len(items), f"mc_{stem}_acc_norm": right_norm / len(items)}


def choice_logliks(model: nn.Module, tokenizer: Any, context: str, continuations: list[str]) -> list[float]:
    """Σ log p(continuation tokens | context) for each continuation, in one right-padded batch.

    Right padding needs no attention mask in a causal model: padded positions come after every scored one.
    """
    ctx = _encode(tokenizer, context)
    if not ctx:
        ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    seqs, spans = [], []
    for cont in continuations:
        whole = _encode(tokenizer, context + cont) if context else []
        if whole[: len(ctx)] != ctx:  # the joint encoding does not extend the context's: encode apart
            whole = ctx + _encode(tokenizer, cont, special=False)
        cont_ids = whole[len(ctx) :]
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens")
        seqs.append(ctx + cont_ids)
        spans.append(len(cont_ids))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dev = _device(model)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=dev)
    logits = _logits(model, ids)
    out = []
    for b, (seq, n) in enumerate(zip(seqs, spans, strict=True)):
        start = len(seq) - n  # first continuation token; predicted by position start − 1
        lp = F.log_softmax(logits[b, start - 1 : len(seq) - 1].float(), dim=-1)
        target = torch.tensor(seq[start:], device=dev)
        out.append(float(lp.gather(-1, target[:, None]).sum()))
    return out


def _encode(tokenizer: Any, text: str, special: bool = True) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def lm_eval(
    model: nn.Module, tokenizer: Any, tasks: list[str], limit: int | None, *, batch_size: int = 1
) -> dict[str, float]:
    """lm-evaluation-harness tasks through its HF wrapper; flat ``lm_eval_<task>_<metric>`` floats.

    Raises:
        RuntimeError: one line, when lm-eval is not installed or a task (or its data) cannot be loaded/run;
            the pipeline records it instead of failing the trial.
    """
    try:
        import lm_eval as harness
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise RuntimeError(f"lm-eval is not installed (pip install lm-eval): {err}") from None
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = harness.simple_evaluate(model=lm, tasks=list(tasks), limit=limit)
    except Exception as err:  # noqa: BLE001 - any lm-eval failure becomes one recorded line
        first = str(err).splitlines()[0] if str(err) else ""
        raise RuntimeError(f"lm-eval failed on tasks {list(tasks)}: {type(err).__name__}: {first}") from err
    finally:
        model.train(was_training)
    if not results or "results" not in results:
        raise RuntimeError(f"lm-eval returned no results for tasks {list(tasks)}")
    return flatten_lm_eval(results["results"])


def flatten_lm_eval(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"arc_easy": {"acc,none": 0.5, "alias": ..}}`` -> ``{"lm_eval_arc_easy_acc": 0.5}``.

    The ``,none`` filter suffix is dropped; other filters are kept (``exact_match,strict-match`` ->
    ``exact_match_strict-match``). Non-numeric entries (aliases, "N/A" stderr) are skipped.
    """
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            name = metric if filt in ("", "none") else f"{metric}_{filt}"
            flat[f"lm_eval_{task}_{name}"] = float(value)
    return flat
