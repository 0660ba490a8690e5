"""Rotary position embedding (RoPE, Su et al. 2021, arXiv 2104.09864) of q and k, and v's head-major copy, in one
launch each way.

transformers' ``apply_rotary_pos_emb`` computes ``x·cos + rotate_half(x)·sin`` with ``rotate_half(x) = [−x₂, x₁]``
(the two halves of the head dimension) as five elementwise kernels per tensor (a negation, a concatenation, two
products, a sum), each rounding to x's dtype, on q and k laid out ``[B, T, H, D]`` by their projections. The
linearized layer then makes q, k and v head-major ``[B, H, T, D]`` for its kernels: more copies, and as many again in
the backward. Here one program reads R positions of one head of q, k or v from the projection's layout, rotates q
and k in fp32 (one rounding), and writes the head-major output; the backward applies the transposed rotation,
``dx = dy·cos + [dy₂·sin₂, −dy₁·sin₁]``, and writes dx in the projection's layout.

Shapes: q ``[B, T, H, D]``, k and v ``[B, T, HKV, D]`` (any strides with the last one 1), cos and sin ``[B, T, D]`` or
``[1, T, D]`` (positions shared by the batch); outputs ``[B, H, T, D]`` and ``[B, HKV, T, D]``, contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import cdiv, next_pow2

R = 32  # positions per program


@triton.jit
def _rows(x, bi, hi, t0, T, sb, st, sh, D: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, SHIFT: tl.constexpr):
    """Offsets of R positions of head hi of batch row bi (columns rotated by SHIFT, mod D), and their mask."""
    rows = t0 + tl.arange(0, R)
    cols = (tl.arange(0, BD) + SHIFT) % D
    m = (rows < T)[:, None] & (tl.arange(0, BD) < D)[None, :]
    return x + (bi.to(tl.int64) * sb + hi * sh + rows.to(tl.int64)[:, None] * st) + cols[None, :], m


@triton.jit
def _rotate(src, dst, cos, sin, bi, hi, t0, T, sb, st, sh, db, dt, dh, cb, ct, D: tl.constexpr, BD: tl.constexpr,
            R: tl.constexpr, ROTATE: tl.constexpr, BACKWARD: tl.constexpr):
    """dst rows = src rows rotated (forward: x·cos + [−x₂, x₁]·sin; BACKWARD: the transpose), or copied."""
    HALF: tl.constexpr = D // 2
    ptr, m = _rows(src, bi, hi, t0, T, sb, st, sh, D, BD, R, 0)
    x = tl.load(ptr, mask=m, other=0.0).to(tl.float32)
    if ROTATE:
        first = (tl.arange(0, BD) < HALF)[None, :]
        cptr, _ = _rows(cos, bi, 0, t0, T, cb, ct, 0, D, BD, R, 0)
        xs = tl.load(_rows(src, bi, hi, t0, T, sb, st, sh, D, BD, R, HALF)[0], mask=m, other=0.0).to(tl.float32)
        if BACKWARD:  # dx_c = dy_c·cos_c + (c < D/2 ? dy_{c+D/2}·sin_{c+D/2} : −dy_{c−D/2}·sin_{c−D/2})
            s = tl.load(_rows(sin, bi, 0, t0, T, cb, ct, 0, D, BD, R, HALF)[0], mask=m, other=0.0).to(tl.float32)
            x = x * tl.load(cptr, mask=m, other=0.0).to(tl.float32) + tl.where(first, xs * s, -xs * s)
        else:  # y_c = x_c·cos_c + (c < D/2 ? −x_{c+D/2} : x_{c−D/2})·sin_c
            s = tl.load(_rows(sin, bi, 0, t0, T, cb, ct, 0, D, BD, R, 0)[0], mask=m, other=0.0).to(tl.float32)
            x = x * tl.load(cptr, mask=m, other=0.0).to(tl.float32) + tl.where(first, -xs, xs) * s
    out, _ = _rows(dst, bi, hi, t0, T, db, dt, dh, D, BD, R, 0)
    tl.store(out, x.to(dst.dtype.element_ty), mask=m)


@triton.jit
def rope_kernel(q, k, v, qo, ko, vo, cos, sin, T, H, HKV,
                sqb, sqt, sqh, skb, skt, skh, svb, svt, svh,
                oqb, oqt, oqh, okb, okt, okh, ovb, ovt, ovh, cb, ct,
                D: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, BACKWARD: tl.constexpr,
                DO_Q: tl.constexpr, DO_K: tl.constexpr, DO_V: tl.constexpr):
    """Program (tile, b·(H + 2·HKV) + j): positions [tile·R, tile·R + R) of head j of q (j < H), of k (j < H + HKV)
    or of v (the rest), from ``src`` strides (s*) to ``dst`` strides (o*); a tensor whose DO_* is off is skipped."""
    t0 = tl.program_id(0) * R
    nh = H + 2 * HKV
    bi = tl.program_id(1) // nh
    j = tl.program_id(1) % nh
    if j < H:
        if DO_Q:
            _rotate(q, qo, cos, sin, bi, j, t0, T, sqb, sqt, sqh, oqb, oqt, oqh, cb, ct, D, BD, R, True, BACKWARD)
    elif j < H + HKV:
        if DO_K:
            _rotate(k, ko, cos, sin, bi, j - H, t0, T, skb, skt, skh, okb, okt, okh, cb, ct, D, BD, R, True, BACKWARD)
    else:
        if DO_V:
            _rotate(v, vo, cos, sin, bi, j - H - HKV, t0, T, svb, svt, svh, ovb, ovt, ovh, cb, ct, D, BD, R, False,
                    BACKWARD)


def _launch(src: tuple, dst: tuple, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int,
            backward: bool) -> None:
    """One launch over (q, k, v): ``src`` to ``dst`` (None: that tensor is skipped), forward from the projections'
    ``[B, T, H, D]`` layout to head-major ``[B, H, T, D]``, backward the other way round."""
    ref = next(x for x in src if x is not None)
    b, t, d = ref.shape[0], cos.shape[1], ref.shape[-1]

    def strides(x: torch.Tensor | None, head_major: bool) -> tuple[int, int, int]:
        if x is None:
            return (0, 0, 0)
        s = x.stride()
        return (s[0], s[2], s[1]) if head_major else (s[0], s[1], s[2])  # (batch, position, head)

    s = [strides(x, backward) for x in src]
    o = [strides(x, not backward) for x in dst]
    cb = cos.stride(0) if cos.shape[0] > 1 else 0
    pick = [x if x is not None else ref for x in src]
    out = [x if x is not None else ref for x in dst]
    rope_kernel[(cdiv(t, R), b * (heads + 2 * kv_heads))](
        *pick, *out, cos, sin, t, heads, kv_heads, *s[0], *s[1], *s[2], *o[0], *o[1], *o[2], cb, cos.stride(1),
        D=d, BD=next_pow2(d), R=R, BACKWARD=backward,
        DO_Q=src[0] is not None, DO_K=src[1] is not None, DO_V=src[2] is not None, num_warps=4)


class RopeFn(torch.autograd.Function):
    """Autograd of :func:`rope_qkv`; cos and sin get no gradient."""

    @staticmethod
    def forward(ctx, q, k, v, cos, sin):
        b, t, h, d = q.shape
        hkv = k.shape[2]
        qo = q.new_empty(b, h, t, d)
        ko, vo = k.new_empty(b, hkv, t, d), v.new_empty(b, hkv, t, d)
        _launch((q, k, v), (qo, ko, vo), cos, sin, h, hkv, backward=False)
        ctx.save_for_backward(cos, sin)
        ctx.heads, ctx.kv_heads = h, hkv
        ctx.set_materialize_grads(False)
        return qo, ko, vo

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin = ctx.saved_tensors
        grads = [g if g is not None and need else None for g, need in
                 zip((dq, dk, dv), ctx.needs_input_grad[:3], strict=True)]
        if all(g is None for g in grads):
            return None, None, None, None, None
        grads = [g if g is None or g.stride(-1) == 1 else g.contiguous() for g in grads]
        outs = [None if g is None else g.new_empty(g.shape[0], g.shape[2], g.shape[1], g.shape[3]) for g in grads]
        _launch(tuple(grads), tuple(outs), cos, sin, ctx.heads, ctx.kv_heads, backward=True)
        return *outs, None, None


def rope_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RoPE of q and k and the head-major layout of q, k, v in one launch (forward and backward).

    Args:
        q: ``[B, T, H, D]``; k, v: ``[B, T, HKV, D]``; one dtype, last stride 1, D even.
        cos, sin: ``[B, T, D]`` or ``[1, T, D]`` (transformers' position embeddings, the full head dimension).

    Returns:
        ``(q_rot [B, H, T, D], k_rot [B, HKV, T, D], v [B, HKV, T, D])``, contiguous, in q's dtype: q_rot and k_rot
        equal ``apply_rotary_pos_emb`` computed in fp32 and rounded once.
    """
    b, t, h, d = q.shape
    if (k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != d or d % 2 or q.dtype != k.dtype
            or v.dtype != q.dtype):
        raise ValueError(f"rope_qkv takes q [B, T, H, D] and k, v [B, T, HKV, D] of one dtype with D even, got "
                         f"{tuple(q.shape)} {q.dtype}, {tuple(k.shape)} {k.dtype}, {tuple(v.shape)} {v.dtype}")
    if cos.shape != sin.shape or cos.dim() != 3 or cos.shape[0] not in (1, b) or cos.shape[1:] != (t, d):
        raise ValueError(f"rope_qkv takes cos and sin [B or 1, T, D] = [{b}, {t}, {d}], got {tuple(cos.shape)}, "
                         f"{tuple(sin.shape)}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    cos, sin = (x if x.stride(-1) == 1 else x.contiguous() for x in (cos, sin))
    return RopeFn.apply(q, k, v, cos.detach(), sin.detach())


__all__ = ["RopeFn", "rope_qkv"]
