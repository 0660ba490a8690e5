"""Window parts of the hybrid attention's backward (the state parts and the notation: ``_bwd.py``).

``bwd_q`` (per query chunk: dq incl. the stabilizer term at the saved argmax key, dc, dγ parts; dφq is written whole
by ``bwd_state_q``) and ``bwd_kv`` (per key tile and kv head: dk and dv summed over the GQA group, dφk per query head
where ``bwd_state_kv`` did not write it) write the final gradients in the input dtype. dq, dk and dv are computed
only where autograd asks for them (constexprs NEED_DQ / NEED_DK / NEED_DV). ``bwd_kv`` keeps one [64, D] accumulator
live at a time (one loop per output; queries in blocks of BQ rows).
"""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels._common import (
    F32_DOT,
    chunk_head,
    first_tile,
    head_rows,
    last_chunk_end,
    par_state_seg,
    soft_start,
    state_part_end,
    tile_lo,
    tuned,
)
from lolsearch.kernels._fwd import NO_SPEC, rows_state_dot, state_dot


# (4 warps, 1 stage, at most 168 registers) fits three programs per SM instead of two; at D = 64 it was 8-17% faster
# (results/perf/direct_20261206/), so the autotuner weighs it too
@tuned([(4, 1), (4, 2), (8, 2), (4, 1, 168)], key=["D", "NEED_DQ", "GROUPED", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_q_kernel(
    q, k, v, gamma, do, m2, zden, e_in, am,
    dq, dc_out, dg_part,
    T, W, LAYOUT, H, G, HKV, TUNE, qk_scale, scale,
    D: tl.constexpr, BDK: tl.constexpr, BT: tl.constexpr, NEED_DQ: tl.constexpr, GROUPED: tl.constexpr,
    TOK_DO: tl.constexpr,
):
    """Query chunk n: dq (softmax keys, incl. the stabilizer term at the argmax key; only with NEED_DQ), dc (for
    bwd_kv) and Σ dA·exp(s − c) (dγ part). GROUPED: the grid of :func:`chunk_grid`."""
    n, bh = chunk_head(H, G, GROUPED)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    mk = rk < D
    k_base = k + kvh * T * D
    v_base = v + kvh * T * D
    qpos = n * BT + rt
    qm = qpos < T
    b_do = tl.load(do + head_rows(bh, H, T, qpos, rk, D, TOK_DO), mask=qm[:, None] & mk[None, :], other=0.0)
    rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
    e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
    start = soft_start(qpos, W, LAYOUT)
    start_lo = soft_start(n * BT, W, LAYOUT)
    tlo = tile_lo(n, W, LAYOUT, BT)
    # dq over the tiles holding softmax keys
    acc = tl.zeros([BT, BDK], dtype=tl.float32)
    dsum = tl.zeros([BT], dtype=tl.float32)
    dsum_g = tl.zeros([BT], dtype=tl.float32)
    if LAYOUT != 0:
        gam = tl.load(gamma + h).to(tl.float32)
        b_q = tl.load(q + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
        b_m = tl.load(m2 + bh * T + qpos, mask=qm, other=0.0)
        for t in range(tl.maximum(tlo, start_lo // BT), n + 1):
            kpos = t * BT + rt
            km = kpos < T
            b_v = tl.load(v_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
            b_k = tl.load(k_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
            da = tl.dot(b_do, tl.trans(b_v), input_precision=F32_DOT) * rz[:, None] - e[:, None]
            sc = tl.dot(b_q, tl.trans(b_k), input_precision=F32_DOT) * qk_scale
            soft = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] >= start[:, None]) & qm[:, None]
            ex = tl.exp2(sc - b_m[:, None])
            dae = tl.where(soft, da * ex, 0.0)
            dsum += tl.sum(dae, 1)
            # dγ from the weights the forward multiplied v by, round(γ·exp)/γ: with them a row whose keys are all
            # softmax sums to 0 up to fp32 error, as o is invariant to γ there (16-bit inputs; fp32: unchanged)
            exr = tl.where(gam != 0.0, (gam * ex).to(b_k.dtype).to(tl.float32) / gam, ex)
            dsum_g += tl.sum(tl.where(soft, da * exr, 0.0), 1)
            if NEED_DQ:
                acc = tl.dot((gam * dae).to(b_k.dtype), b_k, acc, input_precision=F32_DOT)
        dc = -gam * dsum
        if NEED_DQ:
            b_am = tl.load(am + bh * T + qpos, mask=qm, other=0)
            k_am = tl.load(k_base + b_am[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
            acc += dc[:, None] * k_am.to(tl.float32)
    else:
        dc = dsum
    if NEED_DQ:
        tl.store(dq + bh * T * D + qpos[:, None] * D + rk[None, :], (acc * scale).to(dq.dtype.element_ty),
                 mask=qm[:, None] & mk[None, :])
    tl.store(dc_out + bh * T + qpos, dc, mask=qm)
    tl.store(dg_part + bh * NT + n, tl.sum(dsum_g, 0))


@triton.jit
def _q_rows(q, do, zden, e_in, bh, q0, rq, rk, mk, T, H, D: tl.constexpr, TOK_DO: tl.constexpr):
    """Query rows q0 + rq: positions, row mask, q, do, 1/Z and e (unused loads are dropped by the compiler)."""
    qpos = q0 + rq
    qm = qpos < T
    b_q = tl.load(q + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
    b_do = tl.load(do + head_rows(bh, H, T, qpos, rk, D, TOK_DO), mask=qm[:, None] & mk[None, :], other=0.0)
    rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
    e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
    return qpos, qm, b_q, b_do, rz, e


@triton.jit
def _dk_tile(q, do, gamma, m2, zden, e_in, dc_in, am, b_k, b_v, kpos, t, n_end, b, j, rq, rk, mk,
             T, W, LAYOUT, H, G, qk_scale,
             D: tl.constexpr, BDK: tl.constexpr, BT: tl.constexpr, BQ: tl.constexpr, TOK_DO: tl.constexpr):
    """dk of key tile t (unscaled) summed over the G heads of kv head (b, j): softmax keys only, with the
    stabilizer term where the key is a row's argmax; zero for the linear layout."""
    acc = tl.zeros([BT, BDK], dtype=tl.float32)
    if LAYOUT != 0:
        for hh in range(0, G):
            bh = b * H + j * G + hh
            gam = tl.load(gamma + j * G + hh).to(tl.float32)
            for n in range(t, n_end):
                if (tile_lo(n, W, LAYOUT, BT) <= t) & (t * BT + BT - 1 >= soft_start(n * BT, W, LAYOUT)):
                    for q0 in range(n * BT, n * BT + BT, BQ):
                        qpos, qm, b_q, b_do, rz, e = _q_rows(q, do, zden, e_in, bh, q0, rq, rk, mk, T, H, D, TOK_DO)
                        start = soft_start(qpos, W, LAYOUT)
                        b_m = tl.load(m2 + bh * T + qpos, mask=qm, other=0.0)
                        b_dc = tl.load(dc_in + bh * T + qpos, mask=qm, other=0.0)
                        b_am = tl.load(am + bh * T + qpos, mask=qm, other=-1)
                        # [keys, queries]
                        da = tl.dot(b_v, tl.trans(b_do), input_precision=F32_DOT) * rz[None, :] - e[None, :]
                        sc = tl.dot(b_k, tl.trans(b_q), input_precision=F32_DOT) * qk_scale
                        soft = (kpos[:, None] <= qpos[None, :]) & (kpos[:, None] >= start[None, :]) & qm[None, :]
                        ds = tl.where(soft, gam * da * tl.exp2(sc - b_m[None, :]), 0.0)
                        ds += tl.where(b_am[None, :] == kpos[:, None], b_dc[None, :], 0.0)
                        acc = tl.dot(ds.to(b_q.dtype), b_q, acc, input_precision=F32_DOT)
    return acc


@triton.jit
def _dv_tile(q, fq, fk, gamma, do, m2, zden, e_in, dv_s, r, s_st, b_k, kpos, km, t, n_end, b, j, rq, rk, mk, rf, mf,
             T, W, LAYOUT, L, NS, H, G, qk_scale,
             D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
             BQ: tl.constexpr, TOK_DO: tl.constexpr, PAR: tl.constexpr, HAS_ST: tl.constexpr):
    """dv of key tile t summed over the G heads of kv head (b, j): every directly scored weight A_ij (softmax and
    linear) times g_i = do_i / Z_i, plus each head's state part: from dv_s ``[BH, T, D]`` (walk schedule), or with
    PAR and HAS_ST φk·dS, dS the suffix sum ``r`` from segment ``s_st`` on (none in the quadratic mode)."""
    acc = tl.zeros([BT, BDK], dtype=tl.float32)
    st_mask = (kpos < state_part_end(T, W, LAYOUT, BT))[:, None] & mk[None, :]  # dv_s holds nothing elsewhere
    for hh in range(0, G):
        bh = b * H + j * G + hh
        b_fk = tl.load(fk + bh * T * F + kpos[:, None] * F + rf[None, :], mask=km[:, None] & mf[None, :], other=0.0)
        if PAR:
            if HAS_ST:  # φk·dS (no z: the second value is not used)
                acc, _ = rows_state_dot(acc, acc, fk + bh * T * F, kpos, km, r + (bh * (NS + 1) + s_st) * (F * D + F),
                                        rk, mk, F, D, BF, False)
        else:
            acc += tl.load(dv_s + bh * T * D + kpos[:, None] * D + rk[None, :], mask=st_mask, other=0.0)
        gam = tl.load(gamma + j * G + hh).to(tl.float32)
        for n in range(t, n_end):
            if first_tile(n, W, LAYOUT, BT, PAR, L) <= t:
                has_soft = (LAYOUT != 0) & (t * BT + BT - 1 >= soft_start(n * BT, W, LAYOUT))
                has_lin = t * BT < soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)
                for q0 in range(n * BT, n * BT + BT, BQ):
                    qpos, qm, b_q, b_do, rz, e = _q_rows(q, do, zden, e_in, bh, q0, rq, rk, mk, T, H, D, TOK_DO)
                    start = soft_start(qpos, W, LAYOUT)
                    causal = (kpos[:, None] <= qpos[None, :]) & qm[None, :]
                    a_t = tl.zeros([BT, BQ], dtype=tl.float32)
                    if has_soft:
                        b_m = tl.load(m2 + bh * T + qpos, mask=qm, other=0.0)
                        sc = tl.dot(b_k, tl.trans(b_q), input_precision=F32_DOT) * qk_scale
                        a_t = tl.where(causal & (kpos[:, None] >= start[None, :]), gam * tl.exp2(sc - b_m[None, :]), 0.0)
                    if has_lin:
                        b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :],
                                       other=0.0)
                        lin = tl.dot(b_fk, tl.trans(b_fq), input_precision=F32_DOT)
                        a_t += tl.where(causal & (kpos[:, None] < start[None, :]), lin, 0.0)
                    acc = tl.dot((a_t * rz[None, :]).to(b_do.dtype), b_do, acc, input_precision=F32_DOT)
    return acc


# (4 warps, 1 stage, at most 168 registers) fits three programs per SM instead of two; at D = 64 it was 8-17% faster
# (results/perf/direct_20261206/), so the autotuner weighs it too
@tuned([(4, 1), (4, 2), (8, 1), (4, 1, 168)],
       key=["D", "F", "BQ", "NEED_DK", "NEED_DV", "STATE_DFK", "PAR", "HAS_ST", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_kv_kernel(
    q, k, v, fq, fk, gamma, do, m2, zden, e_in, dc_in, am, dv_s, dfk_s, r,
    dk, dv, dfk,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE, qk_scale, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr, BQ: tl.constexpr,
    NEED_DK: tl.constexpr, NEED_DV: tl.constexpr, TOK_DO: tl.constexpr, STATE_DFK: tl.constexpr,
    PAR: tl.constexpr, HAS_ST: tl.constexpr,
):
    """Key tile t of kv head (b, j), one output per program (axis 2, ``part``): dk (NEED_DK) and dv (NEED_DV) summed
    over the G query heads of the group (dv adds the state parts dv_s ``[BH, T, D]`` of the group's heads), then dφk
    of one query head per program: the whole of it where STATE_DFK is off (adding the state part dfk_s), else only
    for the keys from :func:`state_part_end` on (``bwd_state_kv`` wrote the others). The outputs rescore the same
    tiles but share no accumulator, so they run in parallel: NEED_DK + NEED_DV + G programs per key tile. Queries go
    by in blocks of BQ rows ([keys, BQ] score tiles). PAR (the parallel schedule, segments of L chunks; STATE_DFK
    off, dv_s and dfk_s unread): the chunks of the segments before :func:`par_state_seg` score the tile directly, and
    with HAS_ST the state parts come from that segment's suffix sum of ``r`` (the quadratic mode has none)."""
    t = tl.program_id(0)
    bkv = tl.program_id(1).to(tl.int64)
    part = tl.program_id(2)
    NKV: tl.constexpr = NEED_DK + NEED_DV  # parts before the dφk ones
    b = bkv // HKV
    j = bkv % HKV
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rq = tl.arange(0, BQ)
    rk = tl.arange(0, BDK)
    rf = tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    kpos = t * BT + rt
    km = kpos < T
    kv_off = bkv * T * D + kpos[:, None] * D + rk[None, :]
    kv_mask = km[:, None] & mk[None, :]
    b_k = tl.load(k + kv_off, mask=kv_mask, other=0.0)
    b_v = tl.load(v + kv_off, mask=kv_mask, other=0.0)
    n_end = last_chunk_end(t, NT, W, LAYOUT, BT)  # the chunks holding softmax keys of tile t end there in both modes
    if PAR:
        s_st = par_state_seg(t, NT, W, LAYOUT, L, BT)
        n_all = tl.minimum(s_st * L, NT)
    else:
        s_st = n_end * 0
        n_all = n_end
    if NEED_DK:  # noqa: SIM102 - a constexpr test, then the program's part
        if part == 0:
            acc = _dk_tile(q, do, gamma, m2, zden, e_in, dc_in, am, b_k, b_v, kpos, t, n_end, b, j, rq, rk, mk,
                           T, W, LAYOUT, H, G, qk_scale, D, BDK, BT, BQ, TOK_DO)
            tl.store(dk + kv_off, (acc * scale).to(dk.dtype.element_ty), mask=kv_mask)
    if NEED_DV:  # noqa: SIM102 - a constexpr test, then the program's part
        if part == NKV - 1:
            acc = _dv_tile(q, fq, fk, gamma, do, m2, zden, e_in, dv_s, r, s_st, b_k, kpos, km, t, n_all, b, j, rq, rk,
                           mk, rf, mf, T, W, LAYOUT, L, NS, H, G, qk_scale, D, F, BDK, BF, BT, BQ, TOK_DO, PAR,
                           HAS_ST)
            tl.store(dv + kv_off, acc.to(dv.dtype.element_ty), mask=kv_mask)
    # dφk of query head part − NKV where bwd_state_kv did not write it whole (with STATE_DFK it did, for the keys
    # before state_part_end): the window's linear keys plus, without STATE_DFK, the fp32 state part dfk_s
    if part >= NKV:
        bh = b * H + j * G + (part - NKV)
        sp_end = state_part_end(T, W, LAYOUT, BT)
        first = 0
        if STATE_DFK:
            first = sp_end
        if t * BT >= first:
            f_off = bh * T * F + kpos[:, None] * F + rf[None, :]
            acc_f = tl.zeros([BT, BF], dtype=tl.float32)
            if PAR:
                if HAS_ST:  # dφk's state part v·dSᵀ − dz, dS read transposed, 32 value columns at a time
                    rbase = r + (bh * (NS + 1) + s_st) * (F * D + F)
                    for d0 in tl.static_range(0, BDK, 32):
                        rdc = d0 + tl.arange(0, 32)
                        mdc = rdc < D
                        v_blk = tl.load(v + bkv * T * D + kpos[:, None] * D + rdc[None, :],
                                        mask=km[:, None] & mdc[None, :], other=0.0)
                        d_blk = tl.load(rbase + rf[None, :] * D + rdc[:, None], mask=mf[None, :] & mdc[:, None],
                                        other=0.0)
                        acc_f = state_dot(v_blk, d_blk, acc_f)
                    acc_f -= tl.load(rbase + F * D + rf, mask=mf, other=0.0)[None, :]
            elif not STATE_DFK:  # dfk_s holds nothing from state_part_end on
                acc_f = tl.load(dfk_s + f_off, mask=(kpos < sp_end)[:, None] & mf[None, :], other=0.0)
            for n in range(t, n_all):
                if (first_tile(n, W, LAYOUT, BT, PAR, L) <= t) & (
                        t * BT < soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)):
                    for q0 in range(n * BT, n * BT + BT, BQ):
                        qpos, qm, b_q, b_do, rz, e = _q_rows(q, do, zden, e_in, bh, q0, rq, rk, mk, T, H, D, TOK_DO)
                        start = soft_start(qpos, W, LAYOUT)
                        b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :],
                                       mask=qm[:, None] & mf[None, :], other=0.0)
                        da = tl.dot(b_v, tl.trans(b_do), input_precision=F32_DOT) * rz[None, :] - e[None, :]
                        lin = (kpos[:, None] <= qpos[None, :]) & (kpos[:, None] < start[None, :]) & qm[None, :]
                        acc_f = tl.dot(tl.where(lin, da, 0.0).to(b_fq.dtype), b_fq, acc_f, input_precision=F32_DOT)
            tl.store(dfk + f_off, acc_f.to(dfk.dtype.element_ty), mask=km[:, None] & mf[None, :])
