"""The next-token loss: cross-entropy of logits ``[N, V]`` against labels ``[N]``, summed, in one pass each way.

The plain loss, ``F.cross_entropy(logits.float(), y)``, writes an fp32 copy of the logits, then their fp32
log-softmax (kept for the backward), and in the backward an fp32 gradient that a further kernel casts back to the
logits' dtype: at 8 × 1024 tokens and a 49K vocabulary, five passes over 1.6 GB tensors for a step whose matrix
products take about 12 ms (H100). Here the forward reads each row once (an online max and sum of exponentials,
fp32) and keeps only its log-sum-exp; the backward reads the row again and writes ``(softmax − onehot) · grad``,
computed in fp32 and rounded once, over the logits themselves: nothing reads them after the loss, so neither pass
allocates an ``[N, V]`` tensor. Rows labelled ``ignore_index`` add nothing and get a zero gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import cdiv

IGNORE_INDEX = -100
FWD_BLOCK = 4096  # vocabulary columns per step of a forward program (one program per row)
BWD_BLOCK = 4096  # vocabulary columns per backward program
_FLOOR = -1.0e30  # below any finite logit that matters; keeps exp(m_old - m_new) finite where a block is all -inf


@triton.jit
def xent_fwd_kernel(x, y, lse, loss, V, stride, BLOCK: tl.constexpr, IGNORE: tl.constexpr, FLOOR: tl.constexpr):
    """Row ``pid``: lse = log Σ exp(x), loss = lse − x[y] (0 where y is IGNORE), both fp32."""
    row = tl.program_id(0).to(tl.int64)
    base = x + row * stride
    cols = tl.arange(0, BLOCK)
    m = tl.max(tl.full([BLOCK], FLOOR, tl.float32), 0)
    s = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    for start in range(0, V, BLOCK):
        inside = start + cols < V
        v = tl.where(inside, tl.load(base + start + cols, mask=inside, other=0.0).to(tl.float32), FLOOR)
        m_new = tl.maximum(m, tl.max(v, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(v - m_new), 0)
        m = m_new
    total = m + tl.log(s)
    tl.store(lse + row, total)
    label = tl.load(y + row)
    keep = label != IGNORE
    picked = tl.load(base + tl.where(keep, label, 0)).to(tl.float32)
    tl.store(loss + row, tl.where(keep, total - picked, 0.0))


@triton.jit
def xent_bwd_kernel(x, y, lse, grad, V, stride, BLOCK: tl.constexpr, IGNORE: tl.constexpr):
    """Columns [pid1·BLOCK, pid1·BLOCK + BLOCK) of row pid0, in place: x ← (exp(x − lse) − [col = y]) · grad, zero
    where y is IGNORE. ``grad`` is the summed loss's 0-dim gradient, read here (no host sync)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < V
    ptr = x + row * stride + cols
    label = tl.load(y + row)
    g = tl.load(grad).to(tl.float32)
    g = tl.where(label != IGNORE, g, 0.0)
    p = tl.exp(tl.load(ptr, mask=m, other=0.0).to(tl.float32) - tl.load(lse + row))
    p = tl.where(cols == label, p - 1.0, p)
    tl.store(ptr, (p * g).to(x.dtype.element_ty), mask=m)


class CrossEntropySumFn(torch.autograd.Function):
    """Autograd of :func:`cross_entropy_sum`: keeps the logits (whose memory the backward overwrites with their
    gradient), the labels and each row's log-sum-exp."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, v = logits.shape
        lse = torch.empty(n, device=logits.device, dtype=torch.float32)
        loss = torch.empty(n, device=logits.device, dtype=torch.float32)
        xent_fwd_kernel[(n,)](logits, labels, lse, loss, v, logits.stride(0), BLOCK=FWD_BLOCK, IGNORE=IGNORE_INDEX,
                              FLOOR=_FLOOR, num_warps=8)
        ctx.save_for_backward(logits, labels, lse)
        ctx.spent = False
        return loss.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.spent:
            raise RuntimeError("cross_entropy_sum's backward ran twice: its first run overwrote the logits with "
                               "their gradient (retain_graph is not supported)")
        ctx.spent = True
        logits, labels, lse = ctx.saved_tensors
        n, v = logits.shape
        xent_bwd_kernel[(n, cdiv(v, BWD_BLOCK))](logits, labels, lse, grad.float().contiguous(), v, logits.stride(0),
                                                 BLOCK=BWD_BLOCK, IGNORE=IGNORE_INDEX, num_warps=8)
        return logits, None


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``logits`` ``[N, V]`` (any float dtype, rows contiguous) against ``labels`` ``[N]``
    (int64; −100 not scored), in fp32: ``F.cross_entropy(logits.float(), labels, reduction="sum")`` up to summation
    order. The logits must not be read after the loss's backward: it writes their gradient into their memory."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy_sum takes logits [N, V] and labels [N], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return CrossEntropySumFn.apply(logits, labels.contiguous())
