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
