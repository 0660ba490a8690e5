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
from lolsearch.kernels._common import block


@triton.jit(do_not_specialize=["C", "NABS", "H", "G", "HKV"])
def static_decode_kernel(
    q, fq, kc, vc, slot_pos, start, pos, S, z, gamma, fk_abs, v_abs, o,
    C, NABS, H, G, HKV, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BFT: tl.constexpr, BC: tl.constexpr,
    SOFT: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    rd = tl.arange(0, BDK)
    md = rd < D
    num = tl.zeros([BDK], dtype=tl.float32)
    den = tl.zeros([BFT], dtype=tl.float32)
    for f0 in range(0, F, BFT):
        rf = f0 + tl.arange(0, BFT)
        mf = rf < F
        s_ptr = S + bh * F * D + rf[:, None] * D + rd[None, :]
        s_mask = mf[:, None] & md[None, :]
        s_t = tl.load(s_ptr, mask=s_mask, other=0.0)
        z_t = tl.load(z + bh * F + rf, mask=mf, other=0.0)
        for r in range(0, NABS):
            a = tl.load(fk_abs + (bh * NABS + r) * F + rf, mask=mf, other=0.0).to(tl.float32)
            vr = tl.load(v_abs + (kvh * NABS + r) * D + rd, mask=md, other=0.0).to(tl.float32)
            s_t += a[:, None] * vr[None, :]
            z_t += a
        if NABS > 0:
            tl.store(s_ptr, s_t, mask=s_mask)
            tl.store(z + bh * F + rf, z_t, mask=mf)
        b_fq = tl.load(fq + bh * F + rf, mask=mf, other=0.0).to(tl.float32)
        num += tl.sum(b_fq[:, None] * s_t, 0)
        den += b_fq * z_t
    den_lin = tl.sum(den, 0)
    acc = tl.zeros([BDK], dtype=tl.float32)
    l_soft = tl.zeros([BC], dtype=tl.float32)
    if SOFT:
        p_row = tl.load(pos + b)
        s_row = tl.load(start + b)
        b_q = tl.load(q + bh * D + rd, mask=md, other=0.0).to(tl.float32) * scale
        m = tl.full([1], -1e30, dtype=tl.float32)
        for c0 in range(0, C, BC):
            rc = c0 + tl.arange(0, BC)
            sp = tl.load(slot_pos + b * C + rc, mask=rc < C, other=-1)
            valid = (sp >= 0) & (sp >= s_row) & (sp <= p_row)
            kv_off = kvh * C * D + rc[:, None] * D + rd[None, :]
            kv_mask = valid[:, None] & md[None, :]
            k_t = tl.load(kc + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
            sc = tl.where(valid, tl.sum(k_t * b_q[None, :], 1), float("-inf"))
            m_new = tl.maximum(m, tl.max(sc, 0))
            alpha = tl.exp(m - m_new)
            p = tl.exp(sc - m_new)
            v_t = tl.load(vc + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(p[:, None] * v_t, 0)
            l_soft = l_soft * alpha + p
            m = m_new
        gam = tl.load(gamma + h).to(tl.float32)
        acc = acc * gam
        l_soft = l_soft * gam
    out = (acc + num) / (tl.sum(l_soft, 0) + den_lin + 1e-12)
    tl.store(o + bh * D + rd, out.to(o.dtype.element_ty), mask=md)


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
        D=d, F=f, BDK=bdk, BFT=min(block(f), max(16, 4096 // bdk)), BC=min(32, max(16, triton.next_power_of_2(max(c, 1)))),
        SOFT=soft, num_warps=4,
    )
    return o


__all__ = ["static_decode_kernel", "static_decode_step_triton"]
