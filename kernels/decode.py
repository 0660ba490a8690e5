"""Triton decode step of the hybrid attention: one program per (batch, head), memory bound.

Per program: absorb the keys that left the window into the fp32 state (in place, F-tiles of
``[BFT, D]``), the linear part φq·S / φq·z, then the softmax over the ring-buffer window cache in slot
blocks (online max), all on CUDA cores in fp32. Same contract as :func:`hybrid_decode_step_torch`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import block, next_pow2
from lolsearch.kernels.decode_torch import check_decode_args, window_start


@triton.jit
def decode_program(
    bh, q, fq, kc, vc, slot_pos, S, z, gamma, fk_abs, v_abs, o,
    C, NABS, START, POS, H, G, HKV, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BFT: tl.constexpr, BC: tl.constexpr,
    SOFT: tl.constexpr,
):
    """The step of program ``bh`` (= b·H + h): ``slot_pos`` points at this row's C slot positions, START/POS are
    this row's window start and position (shared by :func:`decode_kernel`, per row in ``decode_static``)."""
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    rd = tl.arange(0, BDK)
    md = rd < D
    # linear part, absorbing first
    num = tl.zeros([BDK], dtype=tl.float32)
    den = tl.zeros([BFT], dtype=tl.float32)
    for f0 in range(0, F, BFT):
        rf = f0 + tl.arange(0, BFT)
        mf = rf < F
        s_ptr = S + bh * F * D + rf[:, None] * D + rd[None, :]
        s_mask = mf[:, None] & md[None, :]
        s_t = tl.load(s_ptr, mask=s_mask, other=0.0)
        z_t = tl.load(z + bh * F + rf, mask=mf, other=0.0)
        if NABS > 0:
            for r in range(0, NABS):
                a = tl.load(fk_abs + (bh * NABS + r) * F + rf, mask=mf, other=0.0).to(tl.float32)
                vr = tl.load(v_abs + (kvh * NABS + r) * D + rd, mask=md, other=0.0).to(tl.float32)
                s_t += a[:, None] * vr[None, :]
                z_t += a
            tl.store(s_ptr, s_t, mask=s_mask)
            tl.store(z + bh * F + rf, z_t, mask=mf)
        b_fq = tl.load(fq + bh * F + rf, mask=mf, other=0.0).to(tl.float32)
        num += tl.sum(b_fq[:, None] * s_t, 0)
        den += b_fq * z_t
    den_lin = tl.sum(den, 0)
    acc = tl.zeros([BDK], dtype=tl.float32)
    l_soft = tl.zeros([BC], dtype=tl.float32)
    if SOFT:
        b_q = tl.load(q + bh * D + rd, mask=md, other=0.0).to(tl.float32) * scale
        m = tl.full([1], -1e30, dtype=tl.float32)
        for c0 in range(0, C, BC):
            rc = c0 + tl.arange(0, BC)
            sp = tl.load(slot_pos + rc, mask=rc < C, other=-1)
            valid = (sp >= 0) & (sp >= START) & (sp <= POS)
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


@triton.jit(do_not_specialize=["C", "NABS", "START", "POS", "H", "G", "HKV"])
def decode_kernel(
    q, fq, kc, vc, slot_pos, S, z, gamma, fk_abs, v_abs, o,
    C, NABS, START, POS, H, G, HKV, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BFT: tl.constexpr, BC: tl.constexpr,
    SOFT: tl.constexpr,
):
    decode_program(tl.program_id(0).to(tl.int64), q, fq, kc, vc, slot_pos, S, z, gamma, fk_abs, v_abs, o,
                   C, NABS, START, POS, H, G, HKV, scale, D, F, BDK, BFT, BC, SOFT)

def hybrid_decode_step(
    q: torch.Tensor,
    phi_q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_pos: torch.Tensor,
    S: torch.Tensor,
    z: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str,
    pos: int,
    phi_k_absorb: torch.Tensor | None = None,
    v_absorb: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step on the GPU (or the Triton interpreter); S and z are updated in place.

    Shapes and semantics: see :func:`lolsearch.kernels.hybrid_decode_step_torch`. ``pos`` is a Python int
    (the step is captured into a CUDA graph per position by callers that want graphs).
    """
    n = check_decode_args(q, phi_q, k_cache, v_cache, slot_pos, S, z, gamma, phi_k_absorb, v_absorb)
    if not (S.is_contiguous() and z.is_contiguous()):
        raise ValueError("S and z must be contiguous: they are updated in place")
    b, h, d = q.shape
    hkv, c = k_cache.shape[1], k_cache.shape[2]
    f = phi_q.shape[-1]
    soft = c > 0 and window > 0 and layout != "linear"
    start = window_start(layout, window, pos)
    o = torch.empty_like(q)
    fk_abs = phi_k_absorb.contiguous() if n > 0 else S  # any tensor: not read when NABS = 0
    v_abs = v_absorb.contiguous() if n > 0 else S
    bdk = block(d)
    decode_kernel[(b * h,)](
        q.contiguous(), phi_q.contiguous(), k_cache.contiguous(), v_cache.contiguous(), slot_pos.contiguous(),
        S, z, gamma.float().contiguous(), fk_abs, v_abs, o,
        c, n, start, int(pos), h, h // hkv, hkv, d**-0.5,
        D=d, F=f, BDK=bdk, BFT=min(block(f), max(16, 4096 // bdk)), BC=min(32, max(16, next_pow2(max(c, 1)))),
        SOFT=soft, num_warps=4,
    )
    return o


__all__ = ["decode_kernel", "decode_program", "hybrid_decode_step"]
