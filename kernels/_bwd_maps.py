"""The queries' feature-map backward fused into the hybrid op's backward (``mapped.py``, parallel schedule and
quadratic mode): dφq of a query chunk (:func:`_bwd.dfq_chunk`) stays in registers and goes straight through the map's
backward (Hedgehog's two softmax halves, T2R's ReLU) and Wᵀ into dq, so dφq never goes through memory and no
separate map kernel runs for the queries.
"""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels._bwd import dfq_chunk, seg_state_t
from lolsearch.kernels._common import tuned
from lolsearch.kernels._fwd import NO_SPEC
from lolsearch.kernels.featuremap import softmax_grad, softmax_rows, w_head


@tuned([(8, 1), (4, 1)], key=["D", "F", "P", "KIND", "HAS_ST", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_q_maps_kernel(
    q, wq, bq, fk, v, do, zden, e_in, st, dq, eps,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, P: tl.constexpr, BDK: tl.constexpr, BP: tl.constexpr, BT: tl.constexpr,
    TOK_DO: tl.constexpr, HAS_ST: tl.constexpr, KIND: tl.constexpr, HALF: tl.constexpr, PREC: tl.constexpr,
):
    """dq of query chunk n (axis 0) of head bh (axis 1) plus the queries' map part: for each block of P features (the
    two signs of Hedgehog, or T2R's one), dφq of the block (parallel schedule, or no state without HAS_ST), then
    d(xW) = the map's backward of it at the recomputed xW = q W[h], and dq += d(xW) W[h]ᵀ. dq holds the softmax part
    (``bwd_q``) on entry and is read and overwritten, in its dtype; the sum runs in fp32."""
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rp = tl.arange(0, BP)
    mk = rk < D
    mp = rp < P
    qpos = n * BT + rt
    qm = qpos < T
    fk_base = fk + bh * T * F
    v_base = v + kvh * T * D
    tile = bh * T * D + qpos[:, None] * D + rk[None, :]
    tmask = qm[:, None] & mk[None, :]
    xt = tl.load(q + tile, mask=tmask, other=0.0).to(tl.float32)
    wt = w_head(wq, h, D, P, BDK, BP)
    xw = tl.dot(xt, wt, input_precision=PREC)
    acc = tl.load(dq + tile, mask=tmask, other=0.0).to(tl.float32)
    NB: tl.constexpr = 2 if KIND == 0 and not HALF else 1
    for fi in tl.static_range(NB):
        rf = fi * P + rp
        st_t, zs = seg_state_t(st, bh, n // L, NS, rk, mk, rf, mp, D, F, BDK, BP, HAS_ST)
        g = dfq_chunk(n, st_t, zs, fk_base, v_base, do, zden, e_in, bh, T, W, LAYOUT, L, H, rk, mk, rf, mp, D, F, BP,
                      BT, TOK_DO, True, HAS_ST)
        if KIND == 0:
            if fi == 0:
                dxw = softmax_grad(softmax_rows(xw, mp[None, :]), g, eps)
            else:
                dxw = -softmax_grad(softmax_rows(-xw, mp[None, :]), g, eps)
        else:
            y = xw + tl.load(bq + h * P + rp, mask=mp, other=0.0)[None, :]
            dxw = tl.where(y >= eps, g, 0.0)
        acc += tl.dot(dxw, tl.trans(wt), input_precision=PREC)
    tl.store(dq + tile, acc.to(dq.dtype.element_ty), mask=tmask)


__all__ = ["bwd_q_maps_kernel"]
