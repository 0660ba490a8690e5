"""Backward kernels of the hybrid window + linear attention.

With o_i = N_i / Z_i, A_ij the unnormalized weights, g_i = do_i / Z_i and e_i = (do_i·o_i) / Z_i:
dA_ij = g_i·v_j − e_i. Softmax keys (A = γ·exp(s − c)): ds = dA·A, dγ = Σ dA·A/γ, and the stabilizer
c_i = max_j s_ij adds dc_i = −Σ_j dA_ij·A_ij at the saved argmax key. Linear keys in the window tiles:
dφq_i += Σ dA_ij φk_j, dφk_j += Σ dA_ij φq_i. Keys in the state: dφq_i += S_i g_i − z_i e_i, and per key
dφk_j += dS_j v_j − dz_j, dv_j += dS_jᵀ φk_j with dS_j = Σ φq_i g_iᵀ, dz_j = Σ φq_i e_i over the queries
whose state holds key j (a reverse scan over segments).

Order (hybrid.py): ``bwd_pre`` (e), ``bwd_rsum`` + suffix scan, ``bwd_state_kv`` and ``bwd_state_q`` (this file),
then ``bwd_q`` and ``bwd_kv`` (``_bwd_window.py``). The walks write dφq and (one value tile, D <= BD) dφk whole, their
window parts included, in the input dtype, so that no fp32 copy of them goes through memory; dv's state part per
query head (and dφk's where value tiles split D) goes to fp32 buffers that ``bwd_kv`` completes.

Register budget: 64-row tiles run at 4 warps (8 warps replicate an M=64 wgmma), so each window kernel keeps one
[64, D] accumulator live at a time (one loop per output). No tl.trans of a dot accumulator anywhere (Hopper
miscompile with Triton 3.4-3.7, fla #640).
"""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels._common import F32_DOT, first_tile, head_rows, last_chunk_end, soft_start, tile_lo, tuned
from lolsearch.kernels._fwd import NO_SPEC, state_dot


@triton.jit(do_not_specialize=["T"])
def bwd_pre_kernel(o, o_lo, do, zden, e_out, T, H, D: tl.constexpr, BDK: tl.constexpr, BT: tl.constexpr,
                   HAS_LO: tl.constexpr, TOK_O: tl.constexpr, TOK_DO: tl.constexpr):
    """e_i = (do_i·o_i) / Z_i, with o = o + o_lo when the forward saved the rounding residual. TOK_O, TOK_DO: o (and
    o_lo), do in token-major memory (:func:`head_rows`)."""
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rows = n * BT + tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    msk = (rows < T)[:, None] & (rk < D)[None, :]
    off = head_rows(bh, H, T, rows, rk, D, TOK_O)
    b_o = tl.load(o + off, mask=msk, other=0.0).to(tl.float32)
    if HAS_LO:
        b_o += tl.load(o_lo + off, mask=msk, other=0.0).to(tl.float32)
    b_do = tl.load(do + head_rows(bh, H, T, rows, rk, D, TOK_DO), mask=msk, other=0.0)
    dot_ = tl.sum(b_do.to(tl.float32) * b_o, 1)
    z = tl.load(zden + bh * T + rows, mask=rows < T, other=1.0)
    tl.store(e_out + bh * T + rows, dot_ / z, mask=rows < T)


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_rsum_kernel(
    fq, do, zden, e_in, r, T, L, NS, H,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, TOK_DO: tl.constexpr,
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
        rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        b_do = tl.load(do + head_rows(bh, H, T, qpos, rd, D, TOK_DO), mask=qm[:, None] & md[None, :], other=0.0)
        gq = b_do.to(tl.float32) * rz[:, None]
        acc = state_dot(tl.trans(b_fq), gq.to(b_fq.dtype), acc)
        zacc += tl.sum(b_fq.to(tl.float32) * e[:, None], 0)
    base = r + (bh * (NS + 1) + s) * (F * D + F)
    tl.store(base + rf[:, None] * D + rd[None, :], acc, mask=mf[:, None] & md[None, :])
    if di == 0:
        tl.store(base + F * D + rf, zacc, mask=mf)


@triton.jit
def state_dot_left(s_mat, b, acc):
    """acc += s_mat @ b with the fp32 state on the left; bf16 inputs unless b is fp32."""
    if b.dtype == tl.float32:  # noqa: SIM108 - constexpr branch
        acc = tl.dot(s_mat, b, acc, input_precision=F32_DOT)
    else:
        acc = tl.dot(s_mat.to(tl.bfloat16), b.to(tl.bfloat16), acc, input_precision=F32_DOT)
    return acc


@triton.jit
def dfk_window_t(acc, fq, do, zden, e_in, b_v, bh, t, kpos, NT, T, W, LAYOUT, H, rk, mk, rf, mf,
                 D: tl.constexpr, F: tl.constexpr, BT: tl.constexpr, BQ: tl.constexpr, TOK_DO: tl.constexpr):
    """acc ``[BF, BT]`` plus the window part of dφkᵀ for key tile t (keys ``kpos``, values ``b_v`` [BT, BDK]) of
    query head bh: Σ_i φq_i dA_ij over the queries of the window chunks for which key j is linear. Transposed, so
    that it adds to the state part ``bwd_state_kv`` holds that way; nothing for t < 0."""
    if t >= 0:
        for n in range(t, last_chunk_end(t, NT, W, LAYOUT, BT)):
            if (tile_lo(n, W, LAYOUT, BT) <= t) & (t * BT < soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)):
                for q0 in range(n * BT, n * BT + BT, BQ):
                    qpos = q0 + tl.arange(0, BQ)
                    qm = qpos < T
                    b_do = tl.load(do + head_rows(bh, H, T, qpos, rk, D, TOK_DO), mask=qm[:, None] & mk[None, :],
                                   other=0.0)
                    b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :],
                                   other=0.0)
                    rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
                    e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
                    # [queries, keys]
                    da = tl.dot(b_do, tl.trans(b_v), input_precision=F32_DOT) * rz[:, None] - e[:, None]
                    start = soft_start(qpos, W, LAYOUT)
                    lin = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] < start[:, None]) & qm[:, None]
                    acc = tl.dot(tl.trans(b_fq), tl.where(lin, da, 0.0).to(b_fq.dtype), acc, input_precision=F32_DOT)
    return acc


@triton.jit
def _state_kv_tile(t, d_s, dz, fq, do, zden, e_in, fk_base, v_base, dfk_base, dv_base, bh, rt, rf, rd, mf, md, di,
                   NT, T, W, LAYOUT, H,
                   D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                   NEED_DV: tl.constexpr, TOK_DO: tl.constexpr):
    """Key tile t (nothing for t < 0): dφk (dS v − dz) and, with NEED_DV, this query head's dv state part
    (dSᵀ φk). With one value tile (D <= BD) the program writes dφk whole, adding its window part (:func:`dfk_window_t`), in
    ``dfk``'s dtype. Value tiles (D > BD) share dφk: the state part is summed into fp32 through atomics and
    ``bwd_kv`` adds the window part. Each program is the only writer of its tiles otherwise."""
    rows = t * BT + rt
    rv = rows >= 0
    b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=rv[:, None] & md[None, :], other=0.0)
    # dφkᵀ [F, BT] = dS [F, BD] @ vᵀ: dS is the left operand, never transposed
    dfk_t = state_dot_left(d_s, tl.trans(b_v), tl.zeros([BF, BT], dtype=tl.float32))
    dfk_t -= tl.where(di == 0, dz, 0.0)[:, None]
    fk_ptr = dfk_base + rows[None, :] * F + rf[:, None]
    if D <= BD:
        dfk_t = dfk_window_t(dfk_t, fq, do, zden, e_in, b_v, bh, t, rows, NT, T, W, LAYOUT, H, rd, md, rf, mf,
                             D, F, BT, 16, TOK_DO)
        tl.store(fk_ptr, dfk_t.to(dfk_base.dtype.element_ty), mask=mf[:, None] & rv[None, :])
    else:
        tl.atomic_add(fk_ptr, dfk_t, mask=mf[:, None] & rv[None, :])
    if NEED_DV:
        b_fk = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=rv[:, None] & mf[None, :], other=0.0)
        dv_t = state_dot(b_fk, d_s, tl.zeros([BT, BD], dtype=tl.float32))
        tl.store(dv_base + rows[:, None] * D + rd[None, :], dv_t, mask=rv[:, None] & md[None, :])


@triton.jit
def _state_kv_tiles(t0, t1, d_s, dz, fq, do, zden, e_in, fk_base, v_base, dfk_base, dv_base, bh, rt, rf, rd, mf, md,
                    di, NT, T, W, LAYOUT, H,
                    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                    NEED_DV: tl.constexpr, TOK_DO: tl.constexpr):
    """_state_kv_tile for the key tiles [t0, t1)."""
    for t in range(t0, t1):
        _state_kv_tile(t, d_s, dz, fq, do, zden, e_in, fk_base, v_base, dfk_base, dv_base, bh, rt, rf, rd, mf, md,
                       di, NT, T, W, LAYOUT, H, D, F, BF, BD, BT, NEED_DV, TOK_DO)


# with several value tiles (D > BD) dφk accumulates with atomics: autotuning must zero it before every trial run
@tuned([(8, 1), (8, 2), (4, 2)], key=["D", "F", "BD", "SMALL", "NEED_DV", "TUNE"], reset_to_zero=["dfk"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_kv_kernel(
    fq, fk, v, do, zden, e_in, r, dfk, dv,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, SMALL: tl.constexpr,
    NEED_DV: tl.constexpr, TOK_DO: tl.constexpr,
):
    """dφk ``[BH, T, F]`` and, with NEED_DV, the state part of dv per query head ``[BH, T, D]`` (fp32; bwd_kv sums it
    over the GQA group) for the key tiles absorbed by segment s, walking it backwards with dS ``[F, BD]`` in
    registers. Written only for the keys before :func:`state_part_end`. dφk: whole, in its dtype, where D <= BD;
    else its state part in fp32, zero-initialised and summed with atomics."""
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
    # tiles first read through the state by a chunk of a later segment: the suffix sum alone
    _state_kv_tiles(tl.maximum(tile_lo(top, W, LAYOUT, BT), lo), hi, d_s, dz, fq, do, zden, e_in, fk_base, v_base,
                    dfk_base, dv_base, bh, rt, rf, rd, mf, md, di, NT, T, W, LAYOUT, H, D, F, BF, BD, BT, NEED_DV,
                    TOK_DO)
    for i in range(0, top - n0):
        n = top - i
        qpos = n * BT + rt
        qm = qpos < T
        b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
        rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        b_do = tl.load(do + head_rows(bh, H, T, qpos, rd, D, TOK_DO), mask=qm[:, None] & md[None, :], other=0.0)
        gq = b_do.to(tl.float32) * rz[:, None]
        d_s = state_dot(tl.trans(b_fq), gq.to(b_fq.dtype), d_s)
        dz += tl.sum(b_fq.to(tl.float32) * e[:, None], 0)
        # tiles whose first state-reader is chunk n (SMALL: exactly tile n - 2, branch-free)
        if SMALL:
            _state_kv_tile(n - 2, d_s, dz, fq, do, zden, e_in, fk_base, v_base, dfk_base, dv_base, bh, rt, rf, rd, mf,
                           md, di, NT, T, W, LAYOUT, H, D, F, BF, BD, BT, NEED_DV, TOK_DO)
        else:
            _state_kv_tiles(tile_lo(n - 1, W, LAYOUT, BT), tile_lo(n, W, LAYOUT, BT), d_s, dz, fq, do, zden, e_in,
                            fk_base, v_base, dfk_base, dv_base, bh, rt, rf, rd, mf, md, di, NT, T, W, LAYOUT, H,
                            D, F, BF, BD, BT, NEED_DV, TOK_DO)


@tuned([(8, 1), (8, 2), (4, 2)], key=["D", "F", "BF", "SMALL", "PAR", "HAS_ST", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_q_kernel(
    fk, v, do, zden, e_in, st, dfq,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr, SMALL: tl.constexpr,
    TOK_DO: tl.constexpr, PAR: tl.constexpr, HAS_ST: tl.constexpr,
):
    """dφq, F-columns [fi*BF, fi*BF+BF), in its dtype: the state part S_i g_i − z_i e_i, walking segment s forward
    from its stored state with Sᵀ ``[D, BF]`` in registers, plus the window tiles' linear keys, Σ_j dA_ij φk_j.
    PAR (the parallel schedule): one query chunk per program (axis 1), the state its segment starts from (none
    without HAS_ST, the quadratic mode) and the linear keys of every tile from :func:`first_tile` on."""
    BK: tl.constexpr = 32
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
    if PAR:
        n0 = s
        n1 = s + 1
        seg = s // L
    else:
        n0 = s * L
        n1 = tl.minimum(n0 + L, NT)
        seg = s
        lo0 = tile_lo(n0, W, LAYOUT, BT)
    if HAS_ST:
        sbase = st + (bh * (NS + 1) + seg) * (F * D + F)
        st_t = tl.load(sbase + rf[None, :] * D + rk[:, None], mask=mf[None, :] & mk[:, None], other=0.0)
        zs = tl.load(sbase + F * D + rf, mask=mf, other=0.0)
    for n in range(n0, n1):
        if not PAR:
            if SMALL:  # exactly tile n - 2 leaves the window before chunk n (see fwd_state_kernel)
                rows = (n - 2) * BT + rt
                keep = (rows - rt) >= lo0 * BT  # tile n - 2 >= lo0 (>= 0); tensor-only mask
                a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=keep[:, None] & mf[None, :], other=0.0)
                b_v = tl.load(v_base + rows[:, None] * D + rk[None, :], mask=keep[:, None] & mk[None, :], other=0.0)
                st_t = tl.dot(tl.trans(b_v), a, st_t, input_precision=F32_DOT)
                zs += tl.sum(a.to(tl.float32), 0)
            else:
                for t in range(tl.maximum(tile_lo(n - 1, W, LAYOUT, BT), lo0), tile_lo(n, W, LAYOUT, BT)):  # as in fwd_state
                    rows = t * BT + rt
                    a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=mf[None, :], other=0.0)
                    b_v = tl.load(v_base + rows[:, None] * D + rk[None, :], mask=mk[None, :], other=0.0)
                    st_t = tl.dot(tl.trans(b_v), a, st_t, input_precision=F32_DOT)
                    zs += tl.sum(a.to(tl.float32), 0)
        qpos = n * BT + rt
        qm = qpos < T
        rz = 1.0 / tl.load(zden + bh * T + qpos, mask=qm, other=1.0)
        e = tl.load(e_in + bh * T + qpos, mask=qm, other=0.0)
        b_do = tl.load(do + head_rows(bh, H, T, qpos, rk, D, TOK_DO), mask=qm[:, None] & mk[None, :], other=0.0)
        if HAS_ST:
            acc = state_dot(b_do, st_t, tl.zeros([BT, BF], dtype=tl.float32))
            acc = acc * rz[:, None] - e[:, None] * zs[None, :]
        else:
            acc = tl.zeros([BT, BF], dtype=tl.float32)
        # the window tiles' linear keys, BK at a time
        start = soft_start(qpos, W, LAYOUT)
        start_hi = soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)
        for k0 in range(first_tile(n, W, LAYOUT, BT, PAR, L) * BT, tl.minimum(n + 1, tl.cdiv(start_hi, BT)) * BT, BK):
            kw = k0 + tl.arange(0, BK)
            kwm = kw < T
            b_vw = tl.load(v_base + kw[:, None] * D + rk[None, :], mask=kwm[:, None] & mk[None, :], other=0.0)
            b_fkw = tl.load(fk_base + kw[:, None] * F + rf[None, :], mask=kwm[:, None] & mf[None, :], other=0.0)
            da = tl.dot(b_do, tl.trans(b_vw), input_precision=F32_DOT) * rz[:, None] - e[:, None]
            lin = (kw[None, :] <= qpos[:, None]) & (kw[None, :] < start[:, None])
            acc = tl.dot(tl.where(lin, da, 0.0).to(b_fkw.dtype), b_fkw, acc, input_precision=F32_DOT)
        tl.store(dfq + bh * T * F + qpos[:, None] * F + rf[None, :], acc.to(dfq.dtype.element_ty),
                 mask=qm[:, None] & mf[None, :])
