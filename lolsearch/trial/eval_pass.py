"""The final evaluation of a trial in one pass over the test batches.

Each batch goes once through the student and once through the teacher (the same model under
:func:`lolsearch.trial.surgery.teacher_mode`), and, when given, once through a reference model (the cached
``teacher_ft``). From those logits come the per-sequence NLL (:func:`lolsearch.trial.evaluate.sequence_nll`),
``kl_teacher``/``top1_agree`` (:func:`lolsearch.trial.evaluate.teacher_agreement`) and KL(reference ‖ student)
(:func:`lolsearch.trial.evaluate.kl_to_reference`), computed per sequence with the same operations as those
functions, so the values are the same as running them one after another (which costs two or three student
forwards per batch instead of one). The attention MSE stays separate: it runs the decoder teacher-forced under
``distill_mode``, whose logits are neither the student's nor the teacher's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lolsearch.config import TrialConfig
from lolsearch.trial import baselines, surgery
from lolsearch.trial.evaluate import (
    Graph,
    _agree,
    _device,
    _inference,
    _inputs,
    _kl,
    _logits_pass,
    _next_token,
    _nll,
    _per_sequence,
    perplexity_of,
)
from lolsearch.trial.record import write_seq_nll


@dataclass
class EvalPass:
    """What :func:`final_eval` measured: ``nll_sum``/``tokens`` per test sequence (as ``sequence_nll``),
    ``kl_teacher`` and ``top1_agree`` (as ``teacher_agreement``) and ``kl_reference`` (as ``kl_to_reference``;
    None without a reference)."""

    nll_sum: list[float]
    tokens: list[int]
    kl_teacher: float
    top1_agree: float
    kl_reference: float | None = None

    @property
    def ppl(self) -> float:
        """Token-weighted test perplexity."""
        return perplexity_of(self.nll_sum, self.tokens)


def final_eval(model: nn.Module, batches: Iterable[dict], reference: nn.Module | None = None,
               graph: Graph = "auto") -> EvalPass:
    """One student, one teacher (and one reference) forward per batch of ``batches`` (``input_ids``/``labels``
    ``[B, T]``, labels −100 = not scored); see the module docstring for what is derived from the logits. The
    per-sequence terms stay on the device until one read at the end. ``graph``: replay each of the forwards from a
    CUDA graph of its own (``eval.cuda_graph``)."""
    rows = []
    with _inference(model), (_inference(reference) if reference is not None else contextlib.nullcontext()):
        dev = _device(model)
        ref_dev = _device(reference) if reference is not None else dev
        forward, teacher_forward = _logits_pass(model, "student", graph), _logits_pass(model, "teacher", graph)
        ref_forward = _logits_pass(reference, "reference", graph) if reference is not None else None
        for batch in batches:
            ids, labels = _inputs(batch, dev)
            if labels is None:
                raise ValueError("final_eval needs batches with 'labels'")
            student = forward(ids)
            with surgery.teacher_mode(model):
                teacher = teacher_forward(ids)
            ref = ref_forward(ids.to(ref_dev)).to(dev) if ref_forward is not None else None
            for b in range(ids.shape[0]):
                logp, target, keep = _next_token(student[b], labels[b])
                teacher_logp = _next_token(teacher[b], labels[b])[0]
                row = [_nll(logp, target, keep), keep.sum(), _kl(logp, teacher_logp, keep),
                       _agree(logp, teacher_logp, keep)]
                if ref is not None:
                    row.append(_kl(logp, _next_token(ref[b], labels[b])[0], keep))
                rows.append(row)
            del student, teacher, ref
    terms = _per_sequence(rows)
    scored = sum(t[1] for t in terms)
    if scored == 0:
        raise ValueError("final_eval: no label tokens in the batches")
    kept = [t for t in terms if t[1]]
    kl_reference = sum(t[4] for t in terms) / scored if reference is not None else None
    return EvalPass([t[0] for t in kept], [int(t[1]) for t in kept], sum(t[2] for t in terms) / scored,
                    sum(t[3] for t in terms) / scored, kl_reference)


def trial_final_eval(cfg: TrialConfig, model: nn.Module, batches: Callable[[], Iterable[dict]], device: torch.device,
                     out_dir: Path | None) -> dict[str, float | str]:
    """A trial's ``ppl``, ``kl_teacher``, ``top1_agree`` and, when the sweep's teacher_ft adapter is already cached,
    ``kl_teacher_ft`` (or ``kl_teacher_ft_error``: the student's numbers stand without it) from one
    :func:`final_eval`; the per-sequence NLL goes to ``out_dir/seq_nll.json`` (when given)."""
    out: dict[str, float | str] = {}
    ev = None
    if cfg.finetune.enabled and cfg.eval.teacher_ft and baselines.teacher_ft_adapter(cfg, device).is_file():
        reference = None
        try:
            reference = baselines.teacher_ft_model(cfg, device)
            ev = final_eval(model, batches(), reference, cfg.eval.cuda_graph)
            out["kl_teacher_ft"] = ev.kl_reference
        except (OSError, RuntimeError, ValueError) as err:
            out["kl_teacher_ft_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        finally:
            del reference
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if ev is None:
        ev = final_eval(model, batches(), graph=cfg.eval.cuda_graph)
    if out_dir is not None:
        write_seq_nll(out_dir, ev.nll_sum, ev.tokens)
    return {"ppl": ev.ppl, "kl_teacher": ev.kl_teacher, "top1_agree": ev.top1_agree, **out}
