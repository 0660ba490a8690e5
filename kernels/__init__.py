"""Triton kernels for hybrid window + linear attention, installed as ``lolsearch.kernels``.

Public API (Triton is imported lazily, on first use, so that ``TRITON_INTERPRET`` can still be set):
- :func:`hybrid_attention` — training / prefill, forward and backward (autograd).
- :func:`hybrid_decode_step` — one decode step over a ring-buffer window cache + linear state.
- :func:`hybrid_decode_step_torch` — the plain-PyTorch twin of the decode step (CPU path, test reference).
- :func:`fused_features` — the Hedgehog and T2R feature maps fused (forward and backward).
- :func:`fused_mse` — attention transfer's MSE of two ``[B, H, T, D]`` outputs in one pass each way.
- :func:`rope_qkv` — RoPE of q and k and the head-major layout of q, k, v in one launch each way.
- :func:`silu_mul` — the gated MLP's activation ``silu(gate) · up`` in one pass each way.
- :func:`cross_entropy_sum` — the next-token loss over ``[N, V]`` logits in one pass each way, no fp32 copies.
- :func:`triton_available` — whether the Triton kernels can run here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata


def _hand_over_top_level_name() -> None:
    """Run when this folder is imported as the top-level package ``kernels``, which happens when the checkout's
    root is on sys.path (``python -m`` from the root). That name belongs to PyPI's ``kernels``, which transformers
    5.25+ depends on and imports: if it is installed, it replaces this module in ``sys.modules``."""
    try:
        init = metadata.distribution("kernels").locate_file("kernels/__init__.py")
    except metadata.PackageNotFoundError:
        return
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location("kernels", init, submodule_search_locations=[os.path.dirname(init)])
    real = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = real
    spec.loader.exec_module(real)


if __name__ == "kernels":
    _hand_over_top_level_name()

import torch  # noqa: E402 - after the hand-over, which must not pay for torch


def triton_available() -> bool:
    """True when triton is importable and either CUDA is present or ``TRITON_INTERPRET=1``."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1"


def hybrid_attention(q, k, v, phi_q, phi_k, gamma, window, layout="sliding", initial_state=None, return_state=False,
                     token_major_out=False):
    """See :func:`lolsearch.kernels.hybrid.hybrid_attention`."""
    from lolsearch.kernels.hybrid import hybrid_attention as fn

    return fn(q, k, v, phi_q, phi_k, gamma, window, layout, initial_state, return_state, token_major_out)


def fused_features(kind, x, weight, bias=None, halfspace=False, eps=1e-12, out_dtype=None):
    """See :func:`lolsearch.kernels.featuremap.fused_features`."""
    from lolsearch.kernels.featuremap import fused_features as fn

    return fn(kind, x, weight, bias, halfspace, eps, out_dtype)


def fused_mse(a, b, b_tokens=False):
    """See :func:`lolsearch.kernels.mse.fused_mse`."""
    from lolsearch.kernels.mse import fused_mse as fn

    return fn(a, b, b_tokens)


def rope_qkv(q, k, v, cos, sin):
    """See :func:`lolsearch.kernels.rope.rope_qkv`."""
    from lolsearch.kernels.rope import rope_qkv as fn

    return fn(q, k, v, cos, sin)


def silu_mul(gate, up):
    """See :func:`lolsearch.kernels.gated.silu_mul`."""
    from lolsearch.kernels.gated import silu_mul as fn

    return fn(gate, up)


def cross_entropy_sum(logits, labels):
    """See :func:`lolsearch.kernels.xent.cross_entropy_sum`."""
    from lolsearch.kernels.xent import cross_entropy_sum as fn

    return fn(logits, labels)


def hybrid_decode_step(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, window, layout, pos,
                       phi_k_absorb=None, v_absorb=None):
    """See :func:`lolsearch.kernels.decode.hybrid_decode_step`."""
    from lolsearch.kernels.decode import hybrid_decode_step as fn

    return fn(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, window, layout, pos, phi_k_absorb, v_absorb)


def hybrid_decode_step_torch(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, window, layout, pos,
                             phi_k_absorb=None, v_absorb=None):
    """See :func:`lolsearch.kernels.decode_torch.hybrid_decode_step_torch` (no Triton needed)."""
    from lolsearch.kernels.decode_torch import hybrid_decode_step_torch as fn

    return fn(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, window, layout, pos, phi_k_absorb, v_absorb)


__all__ = ["cross_entropy_sum", "fused_features", "fused_mse", "hybrid_attention", "hybrid_decode_step", "hybrid_decode_step_torch", "rope_qkv",
           "silu_mul", "triton_available"]
