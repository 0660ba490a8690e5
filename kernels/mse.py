"""Attention transfer's per-layer loss, MSE(student output, teacher output), in one pass each way.

The plain loss, ``F.mse_loss(a.float(), b.float())``, writes fp32 copies of both ``[B, H, T, D]`` outputs, keeps them
for the backward, and there writes an fp32 gradient that a further kernel casts back to a's dtype: about four times
the traffic of reading a and b once, and two fp32 tensors kept per layer. Here the forward reads a and b once,
sums the squared differences in fp32 (one partial sum per program, added by one small reduction) and keeps only
``a - b`` in a's dtype; the backward scales it by the loss's gradient, read on the device, in one pass. The
differences of 16-bit values are exact in fp32, so the loss matches the plain one up to summation order, and the
gradient is rounded once to a's dtype, as the plain one is.

a and b may have any strides whose last one is 1. With ``b_tokens`` the forward also writes b in token-major memory
(``[B, T, H, D]``), the layout the layer's output projection reads, while it reads b for the loss: the teacher's SDPA
output on head-major q (the fused RoPE's layout) is head-major, and a transposing copy of it would read it again.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import cdiv, next_pow2, token_major

R = 32  # rows (of D elements) per program
BWD_BLOCK = 4096  # elements per program of the backward


@triton.jit
def _mse_fwd_kernel(a, b, d, c, part, H, T, sa0, sa1, sa2, sb0, sb1, sb2, sd0, sd1, sd2, sc0, sc1, sc2, N_ROWS,
                    D: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, STORE_D: tl.constexpr, STORE_C: tl.constexpr):
    """Rows [pid·R, pid·R + R) of the flattened [B·H·T, D]: the sum of (a − b)² into part[pid], with STORE_D a − b
    into d, with STORE_C b into c."""
    pid = tl.program_id(0)
    rows = pid * R + tl.arange(0, R)
    rm = rows < N_ROWS
    rows = tl.where(rm, rows, 0).to(tl.int64)
    t = rows % T
    h = (rows // T) % H
    bi = rows // (T * H)
    cols = tl.arange(0, BD)
    m = rm[:, None] & (cols[None, :] < D)
    x = tl.load(a + (bi * sa0 + h * sa1 + t * sa2)[:, None] + cols[None, :], mask=m, other=0.0).to(tl.float32)
    yb = tl.load(b + (bi * sb0 + h * sb1 + t * sb2)[:, None] + cols[None, :], mask=m, other=0.0)
    if STORE_C:
        tl.store(c + (bi * sc0 + h * sc1 + t * sc2)[:, None] + cols[None, :], yb, mask=m)
    diff = x - yb.to(tl.float32)
    if STORE_D:
        tl.store(d + (bi * sd0 + h * sd1 + t * sd2)[:, None] + cols[None, :], diff.to(d.dtype.element_ty), mask=m)
    tl.store(part + pid, tl.sum(tl.sum(diff * diff, 1), 0))


@triton.jit
def _mse_bwd_kernel(d, grad, g, scale, N, BLOCK: tl.constexpr):
    """g = d · (grad · scale) over N contiguous elements, in fp32, rounded once to g's dtype; grad is the loss's
    0-dim gradient, read here so that no host sync and no broadcast kernel are needed."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    s = tl.load(grad).to(tl.float32) * scale
    x = tl.load(d + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(g + offs, (x * s).to(g.dtype.element_ty), mask=m)


class FusedMSEFn(torch.autograd.Function):
    """Autograd of :func:`fused_mse`: the forward keeps ``a − b`` (in a's dtype) where a gradient is asked for, and
    fills ``c`` (no gradient; or None) with b."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        bsz, h, t, dh = a.shape
        n_rows = bsz * h * t
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d = torch.empty(a.shape, device=a.device, dtype=a.dtype) if need else a.new_empty(0)
        sd = d.stride()[:3] if need else (0, 0, 0)
        sc = c.stride()[:3] if c is not None else (0, 0, 0)
        grid = (cdiv(n_rows, R),)
        part = torch.empty(grid[0], device=a.device, dtype=torch.float32)
        _mse_fwd_kernel[grid](a, b, d, c if c is not None else d, part, h, t, *a.stride()[:3], *b.stride()[:3], *sd,
                              *sc, n_rows, D=dh, BD=next_pow2(dh), R=R, STORE_D=need, STORE_C=c is not None,
                              num_warps=4)
        ctx.save_for_backward(d)
        ctx.numel = a.numel()
        return part.sum() / a.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (d,) = ctx.saved_tensors
        g = torch.empty_like(d)  # [B, H, T, D] contiguous, in a's dtype
        n = d.numel()
        _mse_bwd_kernel[(cdiv(n, BWD_BLOCK),)](d, grad.float().contiguous(), g, 2.0 / ctx.numel, n, BLOCK=BWD_BLOCK,
                                               num_warps=8)
        return (g if ctx.needs_input_grad[0] else None), (-g if ctx.needs_input_grad[1] else None), None


def fused_mse(a: torch.Tensor, b: torch.Tensor, b_tokens: bool = False,
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``mean((a − b)²)`` in fp32 of a, b ``[B, H, T, D]`` (one dtype, last stride 1), with its backward.

    Args:
        b_tokens: also return b in token-major memory (a ``[B, H, T, D]`` view of ``[B, T, H, D]``), written by the
            loss's own pass over b; b itself when it lies so already. b's copy carries no gradient.

    Returns:
        A 0-dim fp32 tensor, equal to ``F.mse_loss(a.float(), b.float())`` up to summation order; with ``b_tokens``
        the pair (loss, b in token-major memory).
    """
    if a.dim() != 4 or a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"fused_mse takes two [B, H, T, D] tensors of one shape and dtype, got "
                         f"{tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}")
    if a.stride(-1) != 1:
        a = a.contiguous()
    if b.stride(-1) != 1:
        b = b.contiguous()
    if not b_tokens:
        return FusedMSEFn.apply(a, b, None)
    if token_major(b):
        return FusedMSEFn.apply(a, b, None), b
    bsz, h, t, dh = b.shape
    c = torch.empty(bsz, t, h, dh, device=b.device, dtype=b.dtype).transpose(1, 2)
    return FusedMSEFn.apply(a, b, c), c
