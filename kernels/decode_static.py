"""Triton decode step with positions in device tensors (CUDA-graphable): one program per (batch, head).

The variant of :mod:`lolsearch.kernels.decode` for :func:`lolsearch.attention.static.static_decode_step`:
every row has its own position ``pos [B]`` and window start ``start [B]`` (int64 on the device) and its own
``slot_pos [B, C]``; the ``n`` keys to absorb come with their features already zeroed where a key must not
be absorbed, so every step launches the same kernel with the same arguments whatever the positions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import block, next_pow2
from lolsearch.kernels.decode import decode_program


@triton.jit(do_not_specialize=["C", "NABS", "H", "G", "HKV"])
def static_decode_kernel(
    q, fq, kc, vc, slot_pos, start, pos, S, z, gamma, fk_abs, v_abs, o,
    C, NABS, H, G, HKV, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BFT: tl.constexpr, BC: tl.constexpr,
    SOFT: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    decode_program(bh, q, fq, kc, vc, slot_pos + b * C, S, z, gamma, fk_abs, v_abs, o,
                   C, NABS, tl.load(start + b), tl.load(pos + b), H, G, HKV, scale, D, F, BDK, BFT, BC, SOFT)


def static_decode_step_triton(
    q: torch.Tensor,
    phi_q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_pos: torch.Tensor,
    start: torch.Tensor,
    pos: torch.Tensor,
    S: torch.Tensor,
    z: torch.Tensor,
    gamma: torch.Tensor,
    phi_k_absorb: torch.Tensor,
    v_absorb: torch.Tensor,
    soft: bool,
) -> torch.Tensor:
    """Absorb then read out, one token per row; S and z are updated in place.

    Args:
        q: ``[B, H, D]``; phi_q: ``[B, H, F]``; k_cache, v_cache: ``[B, Hkv, C, D]`` already holding the new key.
        slot_pos: int64 ``[B, C]``; start, pos: int64 ``[B]`` (the row's window start and position).
        S, z: contiguous fp32 ``[B, H, F, D]`` / ``[B, H, F]``.
        phi_k_absorb: ``[B, H, n, F]`` (zero rows for keys not absorbed); v_absorb: ``[B, Hkv, n, D]``.
        soft: whether the window softmax is read (False for pure linear attention).

    Returns:
        o ``[B, H, D]`` in q's dtype.
    """
    b, h, d = q.shape
    hkv, c = k_cache.shape[1], k_cache.shape[2]
    f, n = phi_q.shape[-1], phi_k_absorb.shape[2]
    o = torch.empty_like(q)
    bdk = block(d)
    static_decode_kernel[(b * h,)](
        q.contiguous(), phi_q.contiguous(), k_cache, v_cache, slot_pos, start, pos, S, z, gamma,
        phi_k_absorb.contiguous(), v_absorb.contiguous(), o,
        c, n, h, h // hkv, hkv, d**-0.5,
        D=d, F=f, BDK=bdk, BFT=min(block(f), max(16, 4096 // bdk)), BC=min(32, max(16, next_pow2(max(c, 1)))),
        SOFT=soft, num_warps=4,
    )
    return o


__all__ = ["static_decode_kernel", "static_decode_step_triton"]
