"""The parameter-gradient kernel as it was before W[h] was loaded once per program (commit 0a66695): it reloads W[h]
for every row tile. Kept here only to time it beside ``lolsearch.kernels.featuremap.features_bwd_kernel``."""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels.featuremap import _dlogits, _w_head, _x_rows


@triton.jit
def old_features_bwd_kernel(x, w, bias, dout, dx, dw, db, T, H, G, HX, NTILES, eps, D: tl.constexpr, P: tl.constexpr,
                            BD: tl.constexpr, BP: tl.constexpr, R: tl.constexpr, KIND: tl.constexpr,
                            HALF: tl.constexpr, PREC: tl.constexpr, WANT_DX: tl.constexpr):
    split = tl.program_id(0)
    h = tl.program_id(1)
    nsplit = tl.num_programs(0)
    nt = tl.cdiv(T, R)
    rp = tl.arange(0, BP)
    rd = tl.arange(0, BD)
    valid = (rp < P)[None, :]
    acc = tl.zeros([BD, BP], dtype=tl.float32)
    bacc = tl.zeros([BP], dtype=tl.float32)
    for j in range(split, NTILES, nsplit):
        b = j // nt
        t0 = (j % nt) * R
        xt, rm = _x_rows(x, b, h // G, t0, T, HX, D, BD, R)
        wt = _w_head(w, h, D, P, BD, BP)  # inside the loop: once per tile
        xw = tl.dot(xt, wt, input_precision=PREC)
        row_off = ((b * H + h).to(tl.int64) * T + t0 + tl.arange(0, R)[:, None])
        dxw = _dlogits(xw, bias, dout, row_off, h, rm[:, None] & valid, valid, eps, P, BP, KIND, HALF)
        if KIND == 1:
            bacc += tl.sum(dxw, 0)
        if WANT_DX:
            dxt = tl.dot(dxw, tl.trans(wt), input_precision=PREC)
            tl.store(dx + row_off * D + rd[None, :], dxt.to(dx.dtype.element_ty), mask=rm[:, None] & (rd[None, :] < D))
        acc = tl.dot(tl.trans(xt), dxw, acc, input_precision=PREC)
    tl.store(dw + ((split * H + h) * D + rd[:, None]) * P + rp[None, :], acc, mask=(rd[:, None] < D) & (rp[None, :] < P))
    if KIND == 1:
        tl.store(db + (split * H + h) * P + rp, bacc, mask=rp < P)
