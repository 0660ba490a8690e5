"""``hybrid_attention_mapped``: the hybrid attention (``hybrid.py``) with its frozen feature maps
(``featuremap.py``) in one autograd node, for stages that train q and k but not the maps (a LoRA stage).

φq and φk are functions of q and k, so autograd would sum two gradients for each: the attention's own (softmax window
and values) and the feature map's. Here the maps' backward kernel adds its part into the attention's gradient as it
writes it (``features_dx(..., into=)``): no separate add over ``[B, H, T, D]`` per input. Same values as
``hybrid_attention(q, k, v, φ(q), φ(k), ...)`` with the fused maps; no state in or out.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import torch
from lolsearch.kernels import hybrid
from lolsearch.kernels._bwd_maps import bwd_q_maps_kernel
from lolsearch.kernels._common import BT, block, cdiv, fit_shared_memory, layout_id, tune_bucket
from lolsearch.kernels._direct import launch
from lolsearch.kernels._schedule import schedule
from lolsearch.kernels.featuremap import KINDS, features_dx, features_forward, precision
from lolsearch.kernels.hybrid import _backward, _check, _forward

from lolsearch.core import kernel_env

# dq's map part in the parallel schedule and the quadratic mode by bwd_q_maps_kernel, for 16-bit inputs (fp32 tiles
# spill there in sm_90 compiles); None: LOLSEARCH_KERNELS_MAPPED_OP ("fused", the default; "add": features_dx)
FUSED_Q_MAPS: bool | None = None
_NO_FIT: set[tuple] = set()  # shapes whose bwd_q_maps_kernel needs more shared memory than the device has


class MapArgs(NamedTuple):
    """One fused feature map: ``kind`` (:data:`KINDS`), ``weight`` ``[H, D, P]``, ``bias`` ``[H, P]`` (T2R) or
    None, ``halfspace`` (Hedgehog's softmax(xW) alone) and the clamp ``eps``."""

    kind: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    halfspace: bool
    eps: float


class HybridMappedFn(torch.autograd.Function):
    """Autograd node of :func:`hybrid_attention_mapped`; inputs validated, contiguous, in one dtype; W and b fp32."""

    @staticmethod
    def forward(ctx, q, k, v, gamma, wq, bq, wk, bk, kind: int, halfspace: bool, eps: float, lay: int, w: int,
                tok_o: bool, mode: str):
        h = q.shape[1]
        fq = features_forward(q, wq, bq, kind, 1, halfspace, eps, q.dtype)
        fk = features_forward(k, wk, bk, kind, h // k.shape[1], halfspace, eps, q.dtype)
        save_lo = q.dtype != torch.float32 or hybrid.FORCE_SAVE_LO
        o, st, (m2, zden, am), plan, o_lo = _forward(q, k, v, fq, fk, gamma, lay, w, None, None, save_lo, False, tok_o,
                                                     mode, True)
        o_lo = o_lo if o_lo is not None else o.new_empty(0)
        ctx.save_for_backward(q, k, v, fq, fk, gamma, o, st, m2, zden, am, o_lo, wq, wk,
                              *(x for x in (bq, bk) if x is not None))
        ctx.lay, ctx.w, ctx.plan, ctx.tok_o, ctx.mode = lay, w, plan, tok_o, mode
        ctx.maps = (kind, halfspace, eps)
        return o

    @staticmethod
    def backward(ctx, do):
        saved = ctx.saved_tensors
        q, k = saved[:2]
        wq, wk = saved[12:14]
        bq, bk = saved[14:16] if len(saved) > 14 else (None, None)
        need_q, need_k, need_v, need_g = ctx.needs_input_grad[:4]
        # the attention's gradients, then the maps' dx added into dq and dk; without the walks the queries' map part
        # comes from one kernel that forms dφq in registers (_bwd_maps.py), so the attention skips dφq
        att = SimpleNamespace(saved_tensors=saved[:12], needs_input_grad=(need_q, need_k, need_v, True, True, need_g),
                              lay=ctx.lay, w=ctx.w, plan=ctx.plan, tok_o=ctx.tok_o, mode=ctx.mode)
        kind, halfspace, eps = ctx.maps
        key = ("bwd_q_maps", q.dtype, q.shape[-1], wq.shape[-1], kind, halfspace)
        fuse = kernel_env.read("LOLSEARCH_KERNELS_MAPPED_OP") == "fused" if FUSED_Q_MAPS is None else FUSED_Q_MAPS
        fused_q = need_q and fuse and ctx.mode != "walk" and q.dtype != torch.float32 and key not in _NO_FIT
        dq, dk, dv, dfq, dfk, dgamma = _backward(att, do, want_dfq=need_q and not fused_q)
        if fused_q and not _q_maps(att, saved, dq, key, kind, halfspace, eps):
            _NO_FIT.add(key)  # once per shape: the attention's backward again, with its own dφq
            dq, dk, dv, dfq, dfk, dgamma = _backward(att, do, want_dfq=True)
        if need_q and dfq is not None:
            dq = features_dx(q, wq, bq, dfq, kind, 1, halfspace, eps, into=dq)
        if need_k:
            dk = features_dx(k, wk, bk, dfk, kind, q.shape[1] // k.shape[1], halfspace, eps, into=dk)
        return (dq, dk, dv, dgamma if need_g else None, *([None] * 11))


def _q_maps(att, saved: tuple, dq: torch.Tensor, key: tuple, kind: int, halfspace: bool, eps: float) -> bool:
    """Adds the queries' map part into dq by :func:`bwd_q_maps_kernel` (dφq formed in registers); False, with nothing
    run, where its compiled kernel needs more shared memory than the device has."""
    q, k, v, fq, fk, gamma, o, st, m2, zden, am, o_lo, wq, wk, *biases = saved
    do, tok_do, e = att.bwd_aux
    b, h, t, d = q.shape
    hkv, f, p = k.shape[1], fq.shape[-1], wq.shape[-1]
    seg, ns = att.plan

    def run(_: int) -> bool:
        launch(bwd_q_maps_kernel, (cdiv(t, BT), b * h), q, wq, biases[0] if biases else wq, fk, v, do, zden, e,
               st if st.numel() else e, dq, eps, T=t, W=att.w, LAYOUT=att.lay, L=seg, NS=ns, H=h, G=h // hkv, HKV=hkv,
               TUNE=tune_bucket(b * h, t), D=d, F=f, P=p, BDK=block(d), BP=block(p), BT=BT, TOK_DO=tok_do,
               HAS_ST=att.mode != "quadratic", KIND=kind, HALF=halfspace, PREC=precision(q.dtype))
        return True

    fit, _ = fit_shared_memory(key, 0, lambda _: None, run)
    return fit is not None


def hybrid_attention_mapped(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    map_q: MapArgs,
    map_k: MapArgs,
    gamma: torch.Tensor,
    window: int,
    layout: str = "sliding",
    token_major_out: bool = False,
) -> torch.Tensor:
    """Hybrid window-softmax + linear attention with φ(q), φ(k) by frozen fused feature maps, one autograd node.

    Args:
        q: ``[B, H, T, D]`` (RoPE applied); k, v: ``[B, Hkv, T, D]`` with Hkv dividing H (GQA, not repeated).
        map_q, map_k: the maps of the queries and of the keys (read at their kv heads), of one ``kind``, ``halfspace``
            and ``eps``; their parameters get no gradient (pass them frozen).
        gamma: ``[H]`` softmax weight per head. window, layout, token_major_out: as :func:`hybrid_attention`.

    Returns:
        o ``[B, H, T, D]`` in q's dtype; gradients flow to q, k, v and gamma.
    """
    if (map_q.kind, map_q.halfspace, map_q.eps) != (map_k.kind, map_k.halfspace, map_k.eps):
        raise ValueError(f"the query and key maps differ: {map_q.kind!r} vs {map_k.kind!r} (or halfspace, eps)")
    if map_q.kind not in KINDS:
        raise ValueError(f"no fused kernel for feature map {map_q.kind!r} (have {', '.join(KINDS)})")
    params = [x for m in (map_q, map_k) for x in (m.weight, m.bias) if x is not None]
    if any(x.requires_grad for x in params):
        raise ValueError("hybrid_attention_mapped takes frozen maps: their parameters must not require grad")
    b, h, t, d = q.shape
    if map_q.weight.shape[:2] != (h, d) or map_k.weight.shape[:2] != (h, d):
        raise ValueError(f"map weights must be [H, D, P] = [{h}, {d}, P], got {tuple(map_q.weight.shape)}, "
                         f"{tuple(map_k.weight.shape)}")
    f = map_q.weight.shape[2] * (2 if map_q.kind == "hedgehog" and not map_q.halfspace else 1)
    # the shapes hybrid_attention checks, with φ's shape from the maps
    phi = torch.empty(b, h, t, f, device="meta")
    _check(q, k, v, phi, phi, gamma, None)
    dt = q.dtype
    if dt not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"hybrid_attention_mapped supports fp32/bf16/fp16 inputs, got {dt}")
    lay, w = layout_id(layout, window)
    qc, kc, vc = (x.to(dt).contiguous() for x in (q, k, v))
    fp32 = [None if x is None else x.detach().float().contiguous() for x in (map_q.weight, map_q.bias, map_k.weight,
                                                                             map_k.bias)]
    mode = schedule(t, d, False)
    return HybridMappedFn.apply(qc, kc, vc, gamma.float().contiguous(), *fp32, KINDS[map_q.kind], map_q.halfspace,
                                map_q.eps, lay, w, token_major_out, mode)


__all__ = ["HybridMappedFn", "MapArgs", "hybrid_attention_mapped"]
