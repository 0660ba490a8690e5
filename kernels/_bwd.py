"""Backward kernels of the hybrid window + linear attention.

With o_i = N_i / Z_i, A_ij the unnormalized weights, g_i = do_i / Z_i and e_i = (do_i·o_i) / Z_i:
dA_ij = g_i·v_j − e_i. Softmax keys (A = γ·exp(s − c)): ds = dA·A, dγ = Σ dA·A/γ, and the stabilizer
c_i = max_j s_ij adds dc_i = −Σ_j dA_ij·A_ij at the saved argmax key. Linear keys in the window tiles:
dφq_i += Σ dA_ij φk_j, dφk_j += Σ dA_ij φq_i. Keys in the state: dφq_i += S_i g_i − z_i e_i, and per key
dφk_j += dS_j v_j − dz_j, dv_j += dS_jᵀ φk_j with dS_j = Σ φq_i g_iᵀ, dz_j = Σ φq_i e_i over the queries
whose state holds key j (a reverse scan).

Kernels: ``bwd_q`` (per query chunk: dq, window part of dφq, e, dc, dγ parts), ``bwd_kv`` (per key tile:
dk, dv, window part of dφk), ``bwd_state_q`` (state part of dφq, forward walk), ``bwd_rsum`` + suffix scan
+ ``bwd_state_kv`` (state part of dφk and dv, backward walk). No tl.trans of a dot accumulator anywhere
(Hopper miscompile with Triton 3.4-3.7, fla #640): states that feed a transposed product are kept transposed.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lolsearch.kernels._common import configs, last_chunk_end, soft_start, tile_lo
from lolsearch.kernels._fwd import NO_SPEC, state_dot


@triton.jit
def _row_stats(do, o, zden, rows, rk, qm, mk, D):
    """g = do / Z (fp32) and e = (do·o) / Z for query rows; padded rows give zeros."""
    b_do = tl.load(do + rows[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0).to(tl.float32)
    b_o = tl.load(o + rows[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0).to(tl.float32)
    z = tl.load(zden + rows, mask=qm, other=1.0)
    e = tl.sum(b_do * b_o, 1) / z
    return b_do / z[:, None], e


@triton.autotune(configs=configs([(8, 2), (4, 2), (8, 1)]), key=["D", "F"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_q_kernel(
    q, k, v, fq, fk, gamma, o, do, m2, zden, am,
    dq, dfq, e_out, dc_out, dg_part,
    T, W, LAYOUT, H, G, HKV, qk_scale, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
):
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rf = tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    gam = tl.load(gamma + h).to(tl.float32)
    k_base = k + kvh * T * D
    v_base = v + kvh * T * D
    fk_base = fk + bh * T * F
    qpos = n * BT + rt
    qm = qpos < T
    b_q = tl.load(q + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
    b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
    gq, e = _row_stats(do + bh * T * D, o + bh * T * D, zden + bh * T, qpos, rk, qm, mk, D)
    gq_c = gq.to(b_q.dtype)
    b_m = tl.load(m2 + bh * T + qpos, mask=qm, other=0.0)
    start = soft_start(qpos, W, LAYOUT)
    start_lo = soft_start(n * BT, W, LAYOUT)
    start_hi = soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)
    tlo = tile_lo(n, W, LAYOUT, BT)
    acc_q = tl.zeros([BT, BDK], dtype=tl.float32)
    acc_f = tl.zeros([BT, BF], dtype=tl.float32)
    dsum = tl.zeros([BT], dtype=tl.float32)  # Σ_softmax dA·exp(s − c) per row (= dγ part, −dc/γ)
    for t in range(tlo, n + 1):
        kpos = t * BT + rt
        km = kpos < T
        causal = (kpos[None, :] <= qpos[:, None]) & qm[:, None]
        b_v = tl.load(v_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
        da = tl.dot(gq_c, tl.trans(b_v)) - e[:, None]
        if (LAYOUT != 0) & (t * BT + BT - 1 >= start_lo):
            b_k = tl.load(k_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
            sc = tl.dot(b_q, tl.trans(b_k)) * qk_scale
            soft = causal & (kpos[None, :] >= start[:, None])
            dae = tl.where(soft, da * tl.exp2(sc - b_m[:, None]), 0.0)
            dsum += tl.sum(dae, 1)
            acc_q = tl.dot((gam * dae).to(b_k.dtype), b_k, acc_q)
        if t * BT < start_hi:
            b_fk = tl.load(fk_base + kpos[:, None] * F + rf[None, :], mask=km[:, None] & mf[None, :], other=0.0)
            lin = causal & (kpos[None, :] < start[:, None])
            acc_f = tl.dot(tl.where(lin, da, 0.0).to(b_fk.dtype), b_fk, acc_f)
    dc = -gam * dsum
    if LAYOUT != 0:
        b_am = tl.load(am + bh * T + qpos, mask=qm, other=0)
        k_am = tl.load(k_base + b_am[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
        acc_q += dc[:, None] * k_am.to(tl.float32)
    tl.store(dq + bh * T * D + qpos[:, None] * D + rk[None, :], acc_q * scale, mask=qm[:, None] & mk[None, :])
    tl.store(dfq + bh * T * F + qpos[:, None] * F + rf[None, :], acc_f, mask=qm[:, None] & mf[None, :])
    tl.store(e_out + bh * T + qpos, e, mask=qm)
    tl.store(dc_out + bh * T + qpos, dc, mask=qm)
    tl.store(dg_part + bh * NT + n, tl.sum(tl.where(qm, dsum, 0.0), 0))


@triton.autotune(configs=configs([(8, 2), (4, 2), (8, 1)]), key=["D", "F"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_kv_kernel(
    q, k, v, fq, fk, gamma, o, do, m2, zden, e_in, dc_in, am,
    dk, dv, dfk,
    T, W, LAYOUT, H, G, HKV, qk_scale, scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
):
    t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rf = tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    gam = tl.load(gamma + h).to(tl.float32)
    kpos = t * BT + rt
    km = kpos < T
    b_k = tl.load(k + kvh * T * D + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
    b_v = tl.load(v + kvh * T * D + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
    b_fk = tl.load(fk + bh * T * F + kpos[:, None] * F + rf[None, :], mask=km[:, None] & mf[None, :], other=0.0)
    acc_k = tl.zeros([BT, BDK], dtype=tl.float32)
    acc_v = tl.zeros([BT, BDK], dtype=tl.float32)
    acc_f = tl.zeros([BT, BF], dtype=tl.float32)
    for n in range(t, last_chunk_end(t, NT, W, LAYOUT, BT)):
        if tile_lo(n, W, LAYOUT, BT) <= t:
            qpos = n * BT + rt
            qm = qpos < T
            b_q = tl.load(q + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
            b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
            gq, e = _row_stats(do + bh * T * D, o + bh * T * D, zden + bh * T, qpos, rk, qm, mk, D)
            gq_c = gq.to(b_q.dtype)
            start = soft_start(qpos, W, LAYOUT)
            start_lo = soft_start(n * BT, W, LAYOUT)
            start_hi = soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)
            causal = (kpos[:, None] <= qpos[None, :]) & qm[None, :]
            da = tl.dot(b_v, tl.trans(gq_c)) - e[None, :]  # [keys, queries]
            a_t = tl.zeros([BT, BT], dtype=tl.float32)
            if (LAYOUT != 0) & (t * BT + BT - 1 >= start_lo):
                b_m = tl.load(m2 + bh * T + qpos, mask=qm, other=0.0)
                b_dc = tl.load(dc_in + bh * T + qpos, mask=qm, other=0.0)
                b_am = tl.load(am + bh * T + qpos, mask=qm, other=-1)
                sc = tl.dot(b_k, tl.trans(b_q)) * qk_scale
                soft = causal & (kpos[:, None] >= start[None, :])
                a_t = tl.where(soft, gam * tl.exp2(sc - b_m[None, :]), 0.0)
                ds = da * a_t + tl.where(b_am[None, :] == kpos[:, None], b_dc[None, :], 0.0)
                acc_k = tl.dot(ds.to(b_q.dtype), b_q, acc_k)
            if t * BT < start_hi:
                lin = causal & (kpos[:, None] < start[None, :])
                a_t += tl.where(lin, tl.dot(b_fk, tl.trans(b_fq)), 0.0)
                acc_f = tl.dot(tl.where(lin, da, 0.0).to(b_fq.dtype), b_fq, acc_f)
            acc_v = tl.dot(a_t.to(gq_c.dtype), gq_c, acc_v)
    out = bh * T * D + kpos[:, None] * D + rk[None, :]
    tl.store(dk + out, acc_k * scale, mask=km[:, None] & mk[None, :])
    tl.store(dv + out, acc_v, mask=km[:, None] & mk[None, :])
    tl.store(dfk + bh * T * F + kpos[:, None] * F + rf[None, :], acc_f, mask=km[:, None] & mf[None, :])


@triton.autotune(configs=configs([(4, 2), (8, 2)]), key=["D", "F", "BF"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_q_kernel(
    fk, v, do, o, zden, e_in, st, dfq,
    T, W, LAYOUT, L, NS, H, G, HKV,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
):
    """dφq_i += S_i g_i − z_i e_i for the F-columns [fi*BF, fi*BF+BF), walking segment s forward."""
    fi = tl.program_id(0)
    s = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // H
    kvh = b * HKV + (bh % H) // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rf = fi * BF + tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    fk_base = fk + bh * T * F
    v_base = v + kvh * T * D
    SZ = F * D + F
    sbase = st + (bh * (NS + 1) + s) * SZ
    st_t = tl.load(sbase + rf[None, :] * D + rk[:, None], mask=mf[None, :] & mk[:, None], other=0.0)  # Sᵀ [D, BF]
    zs = tl.load(sbase + F * D + rf, mask=mf, other=0.0)
    n0 = s * L
    cur = tile_lo(n0, W, LAYOUT, BT)
    for n in range(n0, tl.minimum(n0 + L, NT)):
        tlo = tile_lo(n, W, LAYOUT, BT)
        for t in range(cur, tlo):
            rows = t * BT + rt
            a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=mf[None, :], other=0.0)
            b_v = tl.load(v_base + rows[:, None] * D + rk[None, :], mask=mk[None, :], other=0.0)
            st_t = tl.dot(tl.trans(b_v), a, st_t)
            zs += tl.sum(a.to(tl.float32), 0)
        cur = tl.maximum(cur, tlo)
        qpos = n * BT + rt
        qm = qpos < T
        gq, _ = _row_stats(do + bh * T * D, o + bh * T * D, zden + bh * T, qpos, rk, qm, mk, D)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        acc = state_dot(gq.to(do.dtype.element_ty), st_t, tl.zeros([BT, BF], dtype=tl.float32))
        acc -= e[:, None] * zs[None, :]
        ptr = dfq + bh * T * F + qpos[:, None] * F + rf[None, :]
        msk = qm[:, None] & mf[None, :]
        tl.store(ptr, tl.load(ptr, mask=msk, other=0.0) + acc, mask=msk)


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_rsum_kernel(
    fq, do, zden, e_in, r, T, L, NS,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
):
    """r[bh, s] = Σ over the chunks of segment s of φq_nᵀ g_n (dS part) and φq_nᵀ e_n (dz part)."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    nd = tl.cdiv(D, BD)
    fi = pid // nd
    di = pid % nd
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rf = fi * BF + tl.arange(0, BF)
    rd = di * BD + tl.arange(0, BD)
    mf = rf < F
    md = rd < D
    acc = tl.zeros([BF, BD], dtype=tl.float32)
    zacc = tl.zeros([BF], dtype=tl.float32)
    for n in range(s * L, tl.minimum(s * L + L, NT)):
        qpos = n * BT + rt
        qm = qpos < T
        b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
        z = tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        b_do = tl.load(do + bh * T * D + qpos[:, None] * D + rd[None, :], mask=qm[:, None] & md[None, :], other=0.0)
        gq = b_do.to(tl.float32) / z[:, None]
        acc = state_dot(tl.trans(b_fq), gq.to(b_fq.dtype), acc)
        zacc += tl.sum(b_fq.to(tl.float32) * e[:, None], 0)
    base = r + (bh * (NS + 1) + s) * (F * D + F)
    tl.store(base + rf[:, None] * D + rd[None, :], acc, mask=mf[:, None] & md[None, :])
    if di == 0:
        tl.store(base + F * D + rf, zacc, mask=mf)


@triton.jit
def _state_kv_tiles(t0, t1, d_s, dz, fk_base, v_base, dfk_base, dv_base, rt, rf, rd, mf, md, di,
                    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                    ATOMIC: tl.constexpr):
    """Adds the state part to dφk (dS v − dz) and dv (dSᵀ φk) for the key tiles [t0, t1)."""
    for t in range(t0, t1):
        rows = t * BT + rt
        b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=md[None, :], other=0.0)
        b_fk = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=mf[None, :], other=0.0)
        # dφkᵀ [F, BT] = dS [F, BD] @ vᵀ: dS is the left operand, never transposed
        dfk_t = state_dot_left(d_s, tl.trans(b_v), tl.zeros([BF, BT], dtype=tl.float32))
        dfk_t -= tl.where(di == 0, dz, 0.0)[:, None]
        ptr = dfk_base + rows[None, :] * F + rf[:, None]
        if ATOMIC:
            tl.atomic_add(ptr, dfk_t, mask=mf[:, None])
        else:
            tl.store(ptr, tl.load(ptr, mask=mf[:, None], other=0.0) + dfk_t, mask=mf[:, None])
        dv_t = state_dot(b_fk, d_s, tl.zeros([BT, BD], dtype=tl.float32))
        pv = dv_base + rows[:, None] * D + rd[None, :]
        tl.store(pv, tl.load(pv, mask=md[None, :], other=0.0) + dv_t, mask=md[None, :])


@triton.jit
def state_dot_left(s_mat, b, acc):
    """acc += s_mat @ b with the fp32 state on the left; bf16 inputs unless b is fp32."""
    if b.dtype == tl.float32:
        acc = tl.dot(s_mat, b, acc)
    else:
        acc = tl.dot(s_mat.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    return acc


@triton.autotune(configs=configs([(4, 2), (8, 2)]), key=["D", "F", "BD"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_kv_kernel(
    fq, fk, v, do, zden, e_in, r, dfk, dv,
    T, W, LAYOUT, L, NS, H, G, HKV,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """State part of dφk and dv for the key tiles absorbed by segment s, walking it backwards."""
    di = tl.program_id(0)
    s = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // H
    kvh = b * HKV + (bh % H) // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rf = tl.arange(0, BF)
    rd = di * BD + tl.arange(0, BD)
    mf = rf < F
    md = rd < D
    SZ = F * D + F
    rbase = r + (bh * (NS + 1) + s + 1) * SZ  # Σ over the chunks after this segment
    d_s = tl.load(rbase + rf[:, None] * D + rd[None, :], mask=mf[:, None] & md[None, :], other=0.0)
    dz = tl.load(rbase + F * D + rf, mask=mf, other=0.0)
    fk_base = fk + bh * T * F
    v_base = v + kvh * T * D
    dfk_base = dfk + bh * T * F
    dv_base = dv + bh * T * D
    n0 = s * L
    lo = tile_lo(n0, W, LAYOUT, BT)
    top = tl.minimum(n0 + L, NT) - 1
    hi = tile_lo(tl.minimum(n0 + L, NT - 1), W, LAYOUT, BT)
    # tiles first needed by a chunk of a later segment: the suffix sum alone
    _state_kv_tiles(tl.maximum(tile_lo(top, W, LAYOUT, BT), lo), hi, d_s, dz, fk_base, v_base, dfk_base, dv_base,
                    rt, rf, rd, mf, md, di, D, F, BF, BD, BT, ATOMIC)
    for i in range(0, top - n0):
        n = top - i
        qpos = n * BT + rt
        qm = qpos < T
        b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
        z = tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        b_do = tl.load(do + bh * T * D + qpos[:, None] * D + rd[None, :], mask=qm[:, None] & md[None, :], other=0.0)
        gq = b_do.to(tl.float32) / z[:, None]
        d_s = state_dot(tl.trans(b_fq), gq.to(b_fq.dtype), d_s)
        dz += tl.sum(b_fq.to(tl.float32) * e[:, None], 0)
        # tiles whose first state-reader is chunk n
        _state_kv_tiles(tile_lo(n - 1, W, LAYOUT, BT), tile_lo(n, W, LAYOUT, BT), d_s, dz, fk_base, v_base,
                        dfk_base, dv_base, rt, rf, rd, mf, md, di, D, F, BF, BD, BT, ATOMIC)
