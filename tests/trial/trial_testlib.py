"""The toy trial the trial tests share: a random 2-layer toy-llama on Shakespeare, Hedgehog + terrace window 8."""

from __future__ import annotations

import copy
from typing import Any

TOY_BASE: dict[str, Any] = {
    "model": {"source": "toy-llama", "toy": {"layers": 2}},
    "data": {"source": "shakespeare", "seq_len": 64},
    "attention": {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 8}}, "layout": "terrace",
                  "window": 8, "backend": "torch", "chunk_size": 32},
}


def toy_config(**sections: Any) -> dict[str, Any]:
    """The toy trial's raw config with ``sections`` (budgets, eval, efficiency, device...) set on top."""
    return {**copy.deepcopy(TOY_BASE), **sections}


STAGE_SEQ = 32  # sequence length of the stage-level tests (test_train_fast, test_step_graph)


def stage_student(device: str = "cpu"):
    """A 2-layer toy-llama linearized with Hedgehog (F = 8) + sliding window 8: (model, tokenizer)."""
    from lolsearch.config import AttentionConfig, ModelConfig
    from lolsearch.models import load_model
    from lolsearch.trial.surgery import linearize

    model, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), device)
    backend = "triton" if device == "cuda" else "torch"
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout="sliding",
                                     window=8, backend=backend, chunk_size=16))
    return model, tok


def stage_batches(tok, seed: int, device: str = "cpu", batch: int = 2):
    """Shuffled training batches of ``batch`` Shakespeare sequences of STAGE_SEQ tokens."""
    from lolsearch.config import DataConfig
    from lolsearch.data import packed_batches

    return packed_batches(DataConfig(source="shakespeare", seq_len=STAGE_SEQ), tok, "train", batch, seed, device=device)


def stage_val(tok, device: str = "cpu"):
    """A validation-batch factory: the first two validation sequences."""
    from lolsearch.config import DataConfig
    from lolsearch.data import packed_batches

    return lambda: packed_batches(DataConfig(source="shakespeare", seq_len=STAGE_SEQ), tok, "val", 2, 0, shuffle=False,
                                  num_tokens=2 * STAGE_SEQ, device=device)


def saved_bytes(model, batch: dict) -> int:
    """Bytes autograd saves for the backward pass of one LoRA next-token loss (runs the backward)."""
    import torch

    from lolsearch.trial.finetune import lm_loss

    sizes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model, batch).backward()
    return sum(sizes)
