"""Backend dispatch for hybrid attention: ``reference`` (materialized), ``torch`` (chunked), ``triton``.

``auto`` picks Triton on CUDA when it is importable, the chunked PyTorch path elsewhere. The rest of the package
reaches ``lolsearch.kernels`` only through this module (also for the fused feature maps, :func:`fused_feature_map`,
attention transfer's loss, :func:`output_mse`, and the fused RoPE, :func:`fused_rope`).
"""

from __future__ import annotations

import torch

from lolsearch.attention.chunked import LinearState, expand_kv, hybrid_attention_chunked
from lolsearch.attention.reference import hybrid_attention_reference

BACKENDS = ("auto", "torch", "triton", "reference")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``auto`` stands for on ``device``; unknown names raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        from lolsearch.kernels import triton_available

        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton" and device.type != "cuda" and not _interpreting():
        raise ValueError("attention.backend 'triton' needs a CUDA device (or TRITON_INTERPRET=1)")
    return backend


# The Triton kernels hold [64, F] feature tiles per program. Up to F = 256 they pass the GPU test matrix in every
# dtype; beyond, offline sm_90 compiles need more shared memory than an H100/H200 has (fp32 from F = 512, every dtype
# from F = 1024; results/kernels/ISSUE17.md, 2026-12-06).
TRITON_MAX_FEATURES = 256


def backend_for_features(backend: str, features: int) -> str:
    """``backend`` for feature maps of ``features`` columns (F): ``auto`` means ``torch`` beyond
    :data:`TRITON_MAX_FEATURES`, where the Triton kernels do not fit the GPU; ``triton`` there raises ValueError."""
    if features <= TRITON_MAX_FEATURES or backend not in ("auto", "triton"):
        return backend
    if backend == "triton":
        raise ValueError(f"attention.backend 'triton' runs feature maps of at most {TRITON_MAX_FEATURES} features "
                         f"(F), got F = {features}: use 'auto' (runs them in torch ops) or 'torch'")
    return "torch"


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def hybrid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str,
    backend: str = "auto",
    chunk_size: int = 64,
    return_state: bool = False,
    token_major_out: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LinearState, int]:
    """Hybrid attention from position 0 on the chosen backend.

    Args:
        q: ``[B, H, T, D]``; k, v: ``[B, Hkv, T, D]``; phi_q, phi_k: ``[B, H, T, F]``; gamma ``[H]``.
        return_state: also return the final :class:`LinearState` and the position it covers up to.
        token_major_out: on the Triton backend, the output in token-major memory (a ``[B, H, T, D]`` view of
            ``[B, T, H, D]``, which the output projection reads without a copy); the other backends ignore it.
    """
    name = resolve_backend(backend_for_features(backend, phi_q.shape[-1]), q.device)
    if name == "triton":
        from lolsearch.kernels import hybrid_attention as triton_hybrid

        return triton_hybrid(q, k, v, phi_q, phi_k, gamma, window, layout, return_state=return_state,
                             token_major_out=token_major_out)
    if name == "reference" and not return_state:
        h = q.shape[1]
        return hybrid_attention_reference(q, expand_kv(k, h), expand_kv(v, h), phi_q, phi_k, gamma, window, layout)
    return hybrid_attention_chunked(
        q, k, v, phi_q, phi_k, gamma, window, layout, chunk_size=chunk_size, return_state=return_state
    )


def fused_feature_map(kind: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, halfspace: bool,
                      eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """Features ``[B, H, T, F]`` of x ``[B, HX, T, D]`` (HX divides H) by the fused Triton kernel of map ``kind``
    (hedgehog, t2r: :func:`lolsearch.kernels.fused_features`); Triton backend only."""
    from lolsearch.kernels import fused_features

    return fused_features(kind, x, weight, bias, halfspace, eps, out_dtype)


def output_mse(student: torch.Tensor, teacher: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention transfer's loss of one layer, ``mean((student − teacher)²)`` in fp32 (a 0-dim tensor), of outputs
    ``[B, H, T, D]``, and the teacher's output for the layer to return. On the Triton backend the loss is
    :func:`lolsearch.kernels.fused_mse` (one pass each way, only the difference kept for the backward), which also
    hands the teacher's output back in token-major memory (a view of ``[B, T, H, D]``), copied in the loss's pass
    over it, so the output projection reads it with no transposing copy. Else ``F.mse_loss`` on fp32 copies, and the
    teacher's output as given.

    Returns:
        (loss, teacher output ``[B, H, T, D]``, same values).
    """
    if resolve_backend(backend, student.device) == "triton" and student.dtype == teacher.dtype:
        from lolsearch.kernels import fused_mse

        return fused_mse(student, teacher, b_tokens=True)
    return torch.nn.functional.mse_loss(student.float(), teacher.float()), teacher


def fused_rope(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RoPE of q ``[B, T, H, D]`` and k ``[B, T, HKV, D]`` (the projections' layout) and the head-major copies
    ``[B, H, T, D]``, ``[B, HKV, T, D]`` of q, k and v, by one Triton launch each way
    (:func:`lolsearch.kernels.rope_qkv`); cos, sin ``[B or 1, T, D]``."""
    from lolsearch.kernels import rope_qkv

    return rope_qkv(q, k, v, cos, sin)
