"""Fused Hedgehog feature map (Zhang et al. 2024, arXiv 2402.04347): φ(x) = [softmax(xW) ⊕ softmax(−xW)] per head.

One kernel computes projection, both softmaxes, the clamp at ``eps`` and the cast of a row tile; the backward
recomputes them from x (nothing but x and W is kept) and writes dx and the weight gradient. The unfused path
(``lolsearch.attention.featuremaps.Hedgehog``) runs about ten elementwise kernels each way over fp32
``[B, H, T, F]`` intermediates, plus a copy of the keys expanded to query heads; here keys are read at their kv
head (``groups`` query heads per kv head, GQA) and the gradients of a kv head's query heads are summed.

Shapes: x ``[B, HX, T, D]`` with ``H = HX · groups`` query heads, W ``[H, D, P]`` fp32, φ ``[B, H, T, F]`` with
F = 2P (P with ``halfspace``). The products run on fp32 operands: for fp32 x at ``F32_DOT`` (3-pass TF32, about fp32,
like the unfused path's fp32 matmul); for 16-bit x in one TF32 pass (10-bit mantissas, finer than the 16-bit φ and dx
they produce; the 3-pass split needs twice the registers and spilled the backward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import F32_DOT, block, num_sms

# Rows per tile and launch config of each kernel: the largest tiles that compile for sm_90 without spilling at D = 128
# in 16-bit (python -m lolsearch.kernels.compile_check --only hedgehog_fwd hedgehog_bwd; fp32 at D = 128 spills a
# little in the backward, a correctness path)
FWD = dict(R=64, num_warps=4, num_stages=3)
BWD = dict(R=32, num_warps=8, num_stages=2)


@triton.jit
def _softmax_rows(xw, valid):
    """Row softmax of ``xw [R, BP]`` over the columns where ``valid`` (fp32)."""
    s = tl.where(valid, xw, float("-inf"))
    e = tl.exp(s - tl.max(s, 1)[:, None])
    return e / tl.sum(e, 1)[:, None]


@triton.jit
def _tile(x, w, b, h, t0, T, H, G, HX, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr, BP: tl.constexpr,
          R: tl.constexpr, PREC: tl.constexpr):
    """Loads the x rows [t0, t0 + R) of query head h (at its kv head) and W[h]; returns (x fp32, W, xW, row mask)."""
    rows = t0 + tl.arange(0, R)
    rd = tl.arange(0, BD)
    rp = tl.arange(0, BP)
    rm = rows < T
    xh = (b * HX + h // G).to(tl.int64)
    xt = tl.load(x + (xh * T + rows[:, None]) * D + rd[None, :], mask=rm[:, None] & (rd[None, :] < D), other=0.0)
    wt = tl.load(w + (h * D + rd[:, None]) * P + rp[None, :], mask=(rd[:, None] < D) & (rp[None, :] < P), other=0.0)
    xt = xt.to(tl.float32)
    xw = tl.dot(xt, wt, input_precision=PREC)
    return xt, wt, xw, rm


@triton.jit
def hedgehog_fwd_kernel(x, w, out, T, H, G, HX, eps, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr,
                        BP: tl.constexpr, R: tl.constexpr, HALF: tl.constexpr, PREC: tl.constexpr):
    """out[b, h, rows] = [max(softmax(xW), eps), max(softmax(−xW), eps)] for one tile of R rows."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    _, _, xw, rm = _tile(x, w, b, h, pid * R, T, H, G, HX, D, P, BD, BP, R, PREC)
    rp = tl.arange(0, BP)
    valid = (rp < P)[None, :]
    F: tl.constexpr = P if HALF else 2 * P
    base = out + (bh.to(tl.int64) * T + pid * R + tl.arange(0, R)[:, None]) * F + rp[None, :]
    m = rm[:, None] & valid
    tl.store(base, tl.maximum(_softmax_rows(xw, valid), eps).to(out.dtype.element_ty), mask=m)
    if not HALF:
        tl.store(base + P, tl.maximum(_softmax_rows(-xw, valid), eps).to(out.dtype.element_ty), mask=m)


@triton.jit
def _softmax_grad(s, g, eps):
    """d(max(s, eps))/d(logits) applied to g, for s = softmax(logits): clamped entries pass no gradient."""
    g = tl.where(s >= eps, g, 0.0)
    return s * (g - tl.sum(g * s, 1)[:, None])


@triton.jit
def hedgehog_bwd_kernel(x, w, dout, dx, dw, T, H, G, HX, NTILES, eps, D: tl.constexpr, P: tl.constexpr,
                        BD: tl.constexpr, BP: tl.constexpr, R: tl.constexpr, HALF: tl.constexpr, PREC: tl.constexpr,
                        WANT_DW: tl.constexpr):
    """Program (split, h) walks the row tiles split, split + NSPLIT, ... of query head h over the whole batch:
    writes dx of its rows (per query head) and, with WANT_DW, one partial weight gradient dW[split, h] = Σ xᵀ d(xW)."""
    split = tl.program_id(0)
    h = tl.program_id(1)
    nsplit = tl.num_programs(0)
    nt = tl.cdiv(T, R)
    rp = tl.arange(0, BP)
    rd = tl.arange(0, BD)
    valid = (rp < P)[None, :]
    F: tl.constexpr = P if HALF else 2 * P
    acc = tl.zeros([BD, BP], dtype=tl.float32)
    for j in range(split, NTILES, nsplit):
        b = j // nt
        t0 = (j % nt) * R
        xt, wt, xw, rm = _tile(x, w, b, h, t0, T, H, G, HX, D, P, BD, BP, R, PREC)
        rows = t0 + tl.arange(0, R)
        row_off = ((b * H + h).to(tl.int64) * T + rows[:, None])
        m = rm[:, None] & valid
        g = tl.load(dout + row_off * F + rp[None, :], mask=m, other=0.0).to(tl.float32)
        dxw = _softmax_grad(_softmax_rows(xw, valid), g, eps)
        if not HALF:
            g = tl.load(dout + row_off * F + P + rp[None, :], mask=m, other=0.0).to(tl.float32)
            dxw -= _softmax_grad(_softmax_rows(-xw, valid), g, eps)
        dxt = tl.dot(dxw, tl.trans(wt), input_precision=PREC)
        tl.store(dx + row_off * D + rd[None, :], dxt.to(dx.dtype.element_ty), mask=rm[:, None] & (rd[None, :] < D))
        if WANT_DW:
            acc = tl.dot(tl.trans(xt), dxw, acc, input_precision=PREC)
    if WANT_DW:
        tl.store(dw + ((split * H + h) * D + rd[:, None]) * P + rp[None, :], acc, mask=(rd[:, None] < D) & (rp[None, :] < P))


def precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the kernels' fp32 products for inputs of ``dtype`` (see the module docstring)."""
    return F32_DOT.value if dtype == torch.float32 else "tf32"


def _splits(tiles: int, heads: int, device: torch.device) -> int:
    """Programs per head of the backward: about four per SM in all, at most one per row tile."""
    return max(1, min(tiles, triton.cdiv(4 * num_sms(device), heads)))


class HedgehogFn(torch.autograd.Function):
    """Autograd wrapper of the two kernels; x contiguous, W fp32 contiguous."""

    @staticmethod
    def forward(ctx, x, w, groups: int, halfspace: bool, eps: float, out_dtype: torch.dtype):
        b, hx, t, d = x.shape
        h, _, p = w.shape
        out = torch.empty(b, h, t, p if halfspace else 2 * p, device=x.device, dtype=out_dtype)
        hedgehog_fwd_kernel[(triton.cdiv(t, FWD["R"]), b * h)](
            x, w, out, t, h, groups, hx, eps, D=d, P=p, BD=block(d), BP=block(p), HALF=halfspace, PREC=precision(x.dtype),
            **FWD,
        )
        ctx.save_for_backward(x, w)
        ctx.groups, ctx.halfspace, ctx.eps = groups, halfspace, eps
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w = ctx.saved_tensors
        b, hx, t, d = x.shape
        h, _, p = w.shape
        tiles = b * triton.cdiv(t, BWD["R"])
        nsplit = _splits(tiles, h, x.device)
        # dx per query head: in x's dtype where each x head serves one query head, else fp32 and summed per group
        dxq = torch.empty(b, h, t, d, device=x.device, dtype=x.dtype if ctx.groups == 1 else torch.float32)
        want_dw = ctx.needs_input_grad[1]  # frozen maps (e.g. a LoRA stage that does not train them): dx only
        dw = torch.empty(nsplit if want_dw else 0, h, d, p, device=x.device, dtype=torch.float32)
        hedgehog_bwd_kernel[(nsplit, h)](
            x, w, dout.contiguous(), dxq, dw, t, h, ctx.groups, hx, tiles, ctx.eps,
            D=d, P=p, BD=block(d), BP=block(p), HALF=ctx.halfspace, PREC=precision(x.dtype), WANT_DW=want_dw, **BWD,
        )
        dx = dxq.view(b, hx, ctx.groups, t, d).sum(2) if ctx.groups > 1 else dxq
        return dx.to(x.dtype), dw.sum(0) if want_dw else None, None, None, None, None


def hedgehog_features(x: torch.Tensor, weight: torch.Tensor, halfspace: bool = False, eps: float = 1e-12,
                      out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Hedgehog features of every query head, fused.

    Args:
        x: ``[B, HX, T, D]`` queries (HX = H) or keys at their kv heads (HX divides H), fp32/bf16/fp16.
        weight: ``[H, D, P]`` projection per query head (kept in fp32; its gradient is fp32).
        halfspace: only softmax(xW) (F = P) instead of both signs (F = 2P).
        eps: features are clamped at ``eps`` from below (no gradient where clamped).
        out_dtype: dtype of φ (default x's).

    Returns:
        φ ``[B, H, T, F]``. Gradients flow to x and weight.
    """
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"x must be [B, HX, T, D] and weight [H, D, P], got {tuple(x.shape)}, {tuple(weight.shape)}")
    h, hx = weight.shape[0], x.shape[1]
    if hx == 0 or h % hx:
        raise ValueError(f"{h} query heads are not a multiple of x's {hx} heads")
    return HedgehogFn.apply(x.contiguous(), weight.float().contiguous(), h // hx, halfspace, eps, out_dtype or x.dtype)


__all__ = ["HedgehogFn", "hedgehog_features"]
