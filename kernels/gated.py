"""The gated MLP's activation, ``silu(gate) · up`` (SwiGLU, Shazeer 2020, arXiv 2002.05202), in one pass each way.

transformers' Llama-family MLP computes ``act_fn(gate_proj(x)) * up_proj(x)`` as two kernels, rounding silu(gate) to
the model's dtype in between, and autograd keeps that rounded activation for the backward beside gate and up: one
more ``[tokens, intermediate]`` tensor per layer (235 MB per layer at the Llama-3-8B shape, 8 × 1024 tokens, bf16).
Here the forward reads gate and up once and writes the product, computed in fp32 and rounded once; the backward
recomputes silu from the kept gate: ``d_gate = dy · up · σ(g)(1 + g(1 − σ(g)))``, ``d_up = dy · silu(g)``.

Shapes: gate and up of one shape and dtype, contiguous (any number of dimensions).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import cdiv

BLOCK = 1024  # elements per program


@triton.jit
def silu_mul_fwd_kernel(g, u, out, N, BLOCK: tl.constexpr):
    """out = silu(g) · u over elements [pid·BLOCK, pid·BLOCK + BLOCK)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(g + offs, mask=m, other=0.0).to(tl.float32)
    y = tl.load(u + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out + offs, (x * tl.sigmoid(x) * y).to(out.dtype.element_ty), mask=m)


@triton.jit
def silu_mul_bwd_kernel(g, u, dy, dg, du, N, BLOCK: tl.constexpr, WANT_DG: tl.constexpr, WANT_DU: tl.constexpr):
    """d_gate and d_up of out = silu(g) · u, from dy; each where asked for."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(g + offs, mask=m, other=0.0).to(tl.float32)
    grad = tl.load(dy + offs, mask=m, other=0.0).to(tl.float32)
    s = tl.sigmoid(x)
    if WANT_DG:
        y = tl.load(u + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(dg + offs, (grad * y * s * (1.0 + x * (1.0 - s))).to(dg.dtype.element_ty), mask=m)
    if WANT_DU:
        tl.store(du + offs, (grad * x * s).to(du.dtype.element_ty), mask=m)


class SiluMulFn(torch.autograd.Function):
    """Autograd of :func:`silu_mul`: keeps gate and up (not the activation)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(gate)
        n = gate.numel()
        silu_mul_fwd_kernel[(cdiv(n, BLOCK),)](gate, up, out, n, BLOCK=BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        gate, up = ctx.saved_tensors
        want_dg, want_du = ctx.needs_input_grad[:2]
        dy = dy.contiguous()
        dg = torch.empty_like(gate) if want_dg else None
        du = torch.empty_like(up) if want_du else None
        n = gate.numel()
        silu_mul_bwd_kernel[(cdiv(n, BLOCK),)](gate, up, dy, dg if want_dg else dy, du if want_du else dy, n,
                                                      BLOCK=BLOCK, WANT_DG=want_dg, WANT_DU=want_du, num_warps=4)
        return dg, du


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) · up`` in fp32, rounded once to the inputs' dtype, with its backward.

    Args:
        gate, up: one shape and dtype (made contiguous if they are not).

    Returns:
        A tensor of gate's shape and dtype.
    """
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"silu_mul takes gate and up of one shape and dtype, got {tuple(gate.shape)} {gate.dtype} "
                         f"and {tuple(up.shape)} {up.dtype}")
    return SiluMulFn.apply(gate.contiguous(), up.contiguous())


__all__ = ["SiluMulFn", "silu_mul"]
