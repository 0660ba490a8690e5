"""Backward kernels of the hybrid window + linear attention.

With o_i = N_i / Z_i, A_ij the unnormalized weights, g_i = do_i / Z_i and e_i = (do_i·o_i) / Z_i:
dA_ij = g_i·v_j − e_i. Softmax keys (A = γ·exp(s − c)): ds = dA·A, dγ = Σ dA·A/γ, and the stabilizer
c_i = max_j s_ij adds dc_i = −Σ_j dA_ij·A_ij at the saved argmax key. Linear keys in the window tiles:
dφq_i += Σ dA_ij φk_j, dφk_j += Σ dA_ij φq_i. Keys in the state: dφq_i += S_i g_i − z_i e_i, and per key
dφk_j += dS_j v_j − dz_j, dv_j += dS_jᵀ φk_j with dS_j = Σ φq_i g_iᵀ, dz_j = Σ φq_i e_i over the queries
whose state holds key j (a reverse scan over segments).

Order (hybrid.py): ``bwd_pre`` (e), ``bwd_rsum`` + suffix scan, ``bwd_state_kv`` and ``bwd_state_q`` (state
parts into fp32 buffers; this file), then ``bwd_q`` and ``bwd_kv`` (``_bwd_window.py``), which add the window
parts and write the final gradients. Register budget: 64-row tiles run at 4 warps (8 warps replicate an M=64
wgmma), so each window kernel keeps one [64, D] accumulator live at a time (one loop per output). No tl.trans of a
dot accumulator anywhere (Hopper miscompile with Triton 3.4-3.7, fla #640).
"""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels._common import F32_DOT, head_rows, tile_lo, tuned
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
def _state_kv_tile(t, d_s, dz, fk_base, v_base, dfk_base, dv_base, rt, rf, rd, mf, md, di,
                   D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                   NEED_DV: tl.constexpr):
    """Writes the state part of dφk (dS v − dz) and, with NEED_DV, of this query head's dv (dSᵀ φk) for key tile t
    (nothing for t < 0). Each program is the only writer of its tiles, except that value tiles (D > BD) share
    dφk: that sum goes through atomics."""
    rows = t * BT + rt
    rv = rows >= 0
    b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=rv[:, None] & md[None, :], other=0.0)
    # dφkᵀ [F, BT] = dS [F, BD] @ vᵀ: dS is the left operand, never transposed
    dfk_t = state_dot_left(d_s, tl.trans(b_v), tl.zeros([BF, BT], dtype=tl.float32))
    dfk_t -= tl.where(di == 0, dz, 0.0)[:, None]
    fk_ptr = dfk_base + rows[None, :] * F + rf[:, None]
    if D <= BD:
        tl.store(fk_ptr, dfk_t, mask=mf[:, None] & rv[None, :])
    else:
        tl.atomic_add(fk_ptr, dfk_t, mask=mf[:, None] & rv[None, :])
    if NEED_DV:
        b_fk = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=rv[:, None] & mf[None, :], other=0.0)
        dv_t = state_dot(b_fk, d_s, tl.zeros([BT, BD], dtype=tl.float32))
        tl.store(dv_base + rows[:, None] * D + rd[None, :], dv_t, mask=rv[:, None] & md[None, :])


@triton.jit
def _state_kv_tiles(t0, t1, d_s, dz, fk_base, v_base, dfk_base, dv_base, rt, rf, rd, mf, md, di,
                    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                    NEED_DV: tl.constexpr):
    """_state_kv_tile for the key tiles [t0, t1)."""
    for t in range(t0, t1):
        _state_kv_tile(t, d_s, dz, fk_base, v_base, dfk_base, dv_base, rt, rf, rd, mf, md, di, D, F, BF, BD, BT,
                       NEED_DV)


# with several value tiles (D > BD) dφk accumulates with atomics: autotuning must zero it before every trial run
@tuned([(8, 1), (8, 2), (4, 2)], key=["D", "F", "BD", "SMALL", "NEED_DV", "TUNE"], reset_to_zero=["dfk"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_kv_kernel(
    fq, fk, v, do, zden, e_in, r, dfk, dv,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, SMALL: tl.constexpr,
    NEED_DV: tl.constexpr, TOK_DO: tl.constexpr,
):
    """State part of dφk ``[BH, T, F]`` and, with NEED_DV, of dv per query head ``[BH, T, D]`` (fp32, written only
    for the keys before :func:`state_part_end`; dφk zero-initialised where D > BD sums it with atomics; bwd_kv sums
    dv over the GQA group) for the key tiles absorbed by segment s, walking it backwards with dS ``[F, BD]`` in
    registers."""
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
    _state_kv_tiles(tl.maximum(tile_lo(top, W, LAYOUT, BT), lo), hi, d_s, dz, fk_base, v_base, dfk_base, dv_base,
                    rt, rf, rd, mf, md, di, D, F, BF, BD, BT, NEED_DV)
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
            _state_kv_tile(n - 2, d_s, dz, fk_base, v_base, dfk_base, dv_base, rt, rf, rd, mf, md, di,
                           D, F, BF, BD, BT, NEED_DV)
        else:
            _state_kv_tiles(tile_lo(n - 1, W, LAYOUT, BT), tile_lo(n, W, LAYOUT, BT), d_s, dz, fk_base, v_base,
                            dfk_base, dv_base, rt, rf, rd, mf, md, di, D, F, BF, BD, BT, NEED_DV)


@tuned([(8, 1), (8, 2), (4, 2)], key=["D", "F", "BF", "SMALL", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def bwd_state_q_kernel(
    fk, v, do, zden, e_in, st, dfq,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr, SMALL: tl.constexpr,
    TOK_DO: tl.constexpr,
):
    """State part of dφq (S_i g_i − z_i e_i, F-columns [fi*BF, fi*BF+BF)) into fp32 ``dfq``, walking
    segment s forward from its stored state with Sᵀ ``[D, BF]`` in registers."""
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
    st_t = tl.load(sbase + rf[None, :] * D + rk[:, None], mask=mf[None, :] & mk[:, None], other=0.0)
    zs = tl.load(sbase + F * D + rf, mask=mf, other=0.0)
    n0 = s * L
    lo0 = tile_lo(n0, W, LAYOUT, BT)
    for n in range(n0, tl.minimum(n0 + L, NT)):
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
        acc = state_dot(b_do, st_t, tl.zeros([BT, BF], dtype=tl.float32))
        acc = acc * rz[:, None] - e[:, None] * zs[None, :]
        tl.store(dfq + bh * T * F + qpos[:, None] * F + rf[None, :], acc, mask=qm[:, None] & mf[None, :])
