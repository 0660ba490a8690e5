"""Attention transfer's per-layer loss, MSE(student output, teacher output), in one pass each way.

The plain loss, ``F.mse_loss(a.float(), b.float())``, writes fp32 copies of both ``[B, H, T, D]`` outputs, keeps them
for the backward, and there writes an fp32 gradient that a further kernel casts back to a's dtype: about four times
the traffic of reading a and b once, and two fp32 tensors kept per layer. Here the forward reads a and b once,
sums the squared differences in fp32 (one partial sum per program, added by one small reduction) and keeps only
``a - b`` in a's dtype; the backward scales it. The differences of 16-bit values are exact in fp32, so the loss
matches the plain one up to summation order, and the gradient is rounded once to a's dtype, as the plain one is.

a and b may have any strides whose last one is 1 (the teacher's SDPA output is usually ``[B, T, H, D]`` in memory).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import cdiv, next_pow2

R = 32  # rows (of D elements) per program


@triton.jit
def _mse_fwd_kernel(a, b, d, part, H, T, sa0, sa1, sa2, sb0, sb1, sb2, sd0, sd1, sd2, N_ROWS,
                    D: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, STORE_D: tl.constexpr):
    """Rows [pid·R, pid·R + R) of the flattened [B·H·T, D]: the sum of (a − b)² into part[pid], and with STORE_D
    a − b into d."""
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
    y = tl.load(b + (bi * sb0 + h * sb1 + t * sb2)[:, None] + cols[None, :], mask=m, other=0.0).to(tl.float32)
    diff = x - y
    if STORE_D:
        tl.store(d + (bi * sd0 + h * sd1 + t * sd2)[:, None] + cols[None, :], diff.to(d.dtype.element_ty), mask=m)
    tl.store(part + pid, tl.sum(tl.sum(diff * diff, 1), 0))


class FusedMSEFn(torch.autograd.Function):
    """Autograd of :func:`fused_mse`: the forward keeps ``a − b`` (in a's dtype) where a gradient is asked for."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        bsz, h, t, dh = a.shape
        n_rows = bsz * h * t
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d = torch.empty_like(a) if need else a.new_empty(0)
        sd = d.stride()[:3] if need else (0, 0, 0)
        grid = (cdiv(n_rows, R),)
        part = torch.empty(grid[0], device=a.device, dtype=torch.float32)
        _mse_fwd_kernel[grid](a, b, d, part, h, t, *a.stride()[:3], *b.stride()[:3], *sd, n_rows,
                              D=dh, BD=next_pow2(dh), R=R, STORE_D=need, num_warps=4)
        ctx.save_for_backward(d)
        ctx.numel = a.numel()
        return part.sum() / a.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (d,) = ctx.saved_tensors
        g = d * (grad * (2.0 / ctx.numel))  # [B, H, T, D] in a's dtype: the 0-dim factor does not promote it
        return (g if ctx.needs_input_grad[0] else None), (-g if ctx.needs_input_grad[1] else None)


def fused_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean((a − b)²)`` in fp32 of a, b ``[B, H, T, D]`` (one dtype, last stride 1), with its backward.

    Returns:
        A 0-dim fp32 tensor, equal to ``F.mse_loss(a.float(), b.float())`` up to summation order.
    """
    if a.dim() != 4 or a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"fused_mse takes two [B, H, T, D] tensors of one shape and dtype, got "
                         f"{tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}")
    if a.stride(-1) != 1:
        a = a.contiguous()
    if b.stride(-1) != 1:
        b = b.contiguous()
    return FusedMSEFn.apply(a, b)
