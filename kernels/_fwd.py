"""Forward kernels of the hybrid window + linear attention (LoLCATs Eq. 7, arXiv 2410.10254).

Schedule (see NOTES.md): the sequence is cut into NS segments of L query chunks (BT = 64 rows each).
1. ``seg_sums``: per segment, the sum ``Σ φk_j v_jᵀ`` / ``Σ φk_j`` of the keys the segment's walk absorbs.
2. ``prefix_scan``: turns them into the state each segment starts from (plus the initial state); the
   last entry is the final state.
3. ``fwd_state``: per (b, h, segment, D-tile) walk the segment's chunks with the state in registers and
   write the state part of every query (``φq·S`` and ``φq·z``).
4. ``fwd_window``: per (b, h, query chunk), chunk-parallel: the window tiles (newest to oldest, online
   stabilizer) plus the state part, normalized. Splitting 3 and 4 keeps both within the register file
   at 64-row tiles (a fused walk spills; see NOTES.md).

All buffers are row-major ``[B*H, T, X]``; k/v are read at kv head ``h // G`` (GQA, no repeat).
"""

from __future__ import annotations

import triton
import triton.language as tl
from lolsearch.kernels._common import (
    F32_DOT,
    chunk_head,
    first_tile,
    head_rows,
    seg_key_start,
    soft_start,
    tile_lo,
    tuned,
)

NO_SPEC = ["T", "W", "LAYOUT", "L", "NS", "H", "G", "HKV", "TUNE"]


@triton.jit(do_not_specialize=NO_SPEC)
def seg_sums_kernel(
    fk, v, st, T, W, LAYOUT, L, NS, H, G, HKV,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
):
    """st[bh, s+1] = Σ over keys j in [K_s, K_{s+1}) of φk_j v_jᵀ (S part) and φk_j (z part). The z part runs on
    tensor cores, as column 0 of φkᵀ·col0: a column sum of every φk tile made this kernel shared-memory bound
    (277 -> 169 µs at 32K on an H100, results/perf/direct_20261206/)."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    nd = tl.cdiv(D, BD)
    fi = pid // nd
    di = pid % nd
    b = bh // H
    kvh = b * HKV + (bh % H) // G
    rf = fi * BF + tl.arange(0, BF)
    rd = di * BD + tl.arange(0, BD)
    rt = tl.arange(0, BT)
    k0 = seg_key_start(s, L, NS, T, W, LAYOUT, BT)
    k1 = seg_key_start(s + 1, L, NS, T, W, LAYOUT, BT)
    acc = tl.zeros([BF, BD], dtype=tl.float32)
    zmm = tl.zeros([BF, 16], dtype=tl.float32)
    ones = col0(BT, fk.dtype.element_ty)
    fk_base = fk + bh * T * F
    v_base = v + kvh * T * D
    for j0 in range(k0, k1, BT):
        rows = j0 + rt
        rm = rows < k1
        a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=rm[:, None] & (rf[None, :] < F), other=0.0)
        b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=rm[:, None] & (rd[None, :] < D), other=0.0)
        acc = tl.dot(tl.trans(a), b_v, acc, input_precision=F32_DOT)
        zmm = tl.dot(tl.trans(a), ones, zmm, input_precision=F32_DOT)
    zacc = tl.sum(zmm, 1)  # the other 15 columns are zeros
    SZ = F * D + F
    base = st + (bh * (NS + 1) + s + 1) * SZ
    tl.store(base + rf[:, None] * D + rd[None, :], acc, mask=(rf[:, None] < F) & (rd[None, :] < D))
    if di == 0:
        tl.store(base + F * D + rf, zacc, mask=rf < F)


@triton.jit(do_not_specialize=["N", "SZ"])
def scan_kernel(st, N, SZ, REVERSE: tl.constexpr, BLOCK: tl.constexpr, ZERO_FIRST: tl.constexpr):
    """In-place inclusive scan over the N entries (axis 1) of ``st [BH, N, SZ]`` (suffix scan if REVERSE).
    ``ZERO_FIRST`` (prefix scan only): entry 0 is written as zeros instead of read (no initial state)."""
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK)
    m = r < SZ
    base = st + bh * N * SZ
    if REVERSE:
        acc = tl.load(base + (N - 1) * SZ + r, mask=m, other=0.0)
        for i in range(1, N):
            p = base + (N - 1 - i) * SZ + r
            acc += tl.load(p, mask=m, other=0.0)
            tl.store(p, acc, mask=m)
    else:
        if ZERO_FIRST:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            tl.store(base + r, acc, mask=m)
        else:
            acc = tl.load(base + r, mask=m, other=0.0)
        for i in range(1, N):
            p = base + i * SZ + r
            acc += tl.load(p, mask=m, other=0.0)
            tl.store(p, acc, mask=m)


@triton.jit
def col0(rows: tl.constexpr, dtype: tl.constexpr):
    """[rows, 16] matrix with ones in column 0: ``xᵀ @ col0`` puts column sums of x in column 0 (tensor cores)."""
    return tl.where(tl.arange(0, 16)[None, :] == 0, 1.0, 0.0).to(dtype) + tl.zeros([rows, 16], dtype=dtype)


@triton.jit
def state_dot(a, s_mat, acc):
    """acc += a @ s_mat with an fp32 state: bf16 tensor-core inputs for 16-bit a, fp32 (tf32 on GPU) otherwise."""
    if a.dtype == tl.float32:  # noqa: SIM108 - constexpr branch
        acc = tl.dot(a, s_mat, acc, input_precision=F32_DOT)
    else:
        acc = tl.dot(a.to(tl.bfloat16), s_mat.to(tl.bfloat16), acc, input_precision=F32_DOT)
    return acc


@triton.jit
def rows_state_dot(acc, zsum, x_head, rows, rmask, s_base, rk, mk, F, D, BF: tl.constexpr, WITH_Z: tl.constexpr):
    """(acc + x·S, zsum + x·z) for the feature rows ``rows`` (mask ``rmask``) of one head's ``[T, F]`` features at
    ``x_head`` and the fp32 state at ``s_base`` (S ``[F, D]`` row-major, then z ``[F]``; z only WITH_Z). 32 features
    at a time: a whole fp32 ``[F, D]`` tile beside a window kernel's tiles would spill."""
    for f0 in tl.static_range(0, BF, 32):
        rfc = f0 + tl.arange(0, 32)
        mfc = rfc < F
        a = tl.load(x_head + rows[:, None] * F + rfc[None, :], mask=rmask[:, None] & mfc[None, :], other=0.0)
        s_blk = tl.load(s_base + rfc[:, None] * D + rk[None, :], mask=mfc[:, None] & mk[None, :], other=0.0)
        acc = state_dot(a, s_blk, acc)
        if WITH_Z:
            zsum += tl.sum(a.to(tl.float32) * tl.load(s_base + F * D + rfc, mask=mfc, other=0.0)[None, :], 1)
    return acc, zsum


# (4 warps, 2 stages) is not offered: Triton 3.6 miscompiles it on Hopper (shared-memory reads out of bounds in the
# bf16 state GEMM under compute-sanitizer, then wrong outputs; results/kernels/ISSUE17.md)
@tuned([(8, 1), (8, 2)], key=["D", "F", "BD", "SMALL", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def fwd_state_kernel(
    fq, fk, v, st, ys, dens, T, W, LAYOUT, L, NS, H, G, HKV, TUNE,
    D: tl.constexpr, F: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, SMALL: tl.constexpr,
):
    """State part of every query of segment s: ys = φq·S (value columns of D-tile di) and dens = φq·z.

    Walks the segment's chunks with S ``[F, BD]`` fp32 in registers, absorbing the key tiles that
    leave the window (those below tile_lo(n)) before chunk n. SMALL (tile_lo(n) = n - 1 for n >= 1): exactly
    tile n - 2 is absorbed before chunk n, a branch-free loop body that Triton can software-pipeline.
    """
    di = tl.program_id(0)
    s = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // H
    kvh = b * HKV + (bh % H) // G
    NT = tl.cdiv(T, BT)
    rt = tl.arange(0, BT)
    rf = tl.arange(0, BF)
    rd = di * BD + tl.arange(0, BD)
    r16 = tl.arange(0, 16)
    mf = rf < F
    md = rd < D
    fq_base = fq + bh * T * F
    fk_base = fk + bh * T * F
    v_base = v + kvh * T * D
    SZ = F * D + F
    sbase = st + (bh * (NS + 1) + s) * SZ
    S = tl.load(sbase + rf[:, None] * D + rd[None, :], mask=mf[:, None] & md[None, :], other=0.0)
    # z lives in column 0 of a [F, 16] matrix: φq·z and Σ φk then run on tensor cores
    zs = tl.load(sbase + F * D + rf[:, None] + r16[None, :] * 0, mask=mf[:, None] & (r16[None, :] == 0), other=0.0)
    ones = col0(BT, fk.dtype.element_ty)
    n0 = s * L
    lo0 = tile_lo(n0, W, LAYOUT, BT)
    for n in range(n0, tl.minimum(n0 + L, NT)):
        if SMALL:
            rows = (n - 2) * BT + rt
            keep = (rows - rt) >= lo0 * BT  # tile n - 2 >= lo0 (>= 0); tensor-only mask
            a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=keep[:, None] & mf[None, :], other=0.0)
            b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=keep[:, None] & md[None, :], other=0.0)
            S = tl.dot(tl.trans(a), b_v, S, input_precision=F32_DOT)
            zs = tl.dot(tl.trans(a), ones, zs, input_precision=F32_DOT)
        else:
            # the tiles leaving the window before chunk n, [tile_lo(n - 1), tile_lo(n)), none before the
            # segment's first chunk; the bounds are recomputed per chunk, not carried by the loop
            for t in range(tl.maximum(tile_lo(n - 1, W, LAYOUT, BT), lo0), tile_lo(n, W, LAYOUT, BT)):
                rows = t * BT + rt
                a = tl.load(fk_base + rows[:, None] * F + rf[None, :], mask=mf[None, :], other=0.0)
                b_v = tl.load(v_base + rows[:, None] * D + rd[None, :], mask=md[None, :], other=0.0)
                S = tl.dot(tl.trans(a), b_v, S, input_precision=F32_DOT)
                zs = tl.dot(tl.trans(a), ones, zs, input_precision=F32_DOT)
        qpos = n * BT + rt
        qm = qpos < T
        b_fq = tl.load(fq_base + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
        y = state_dot(b_fq, S, tl.zeros([BT, BD], dtype=tl.float32))
        tl.store(ys + bh * T * D + qpos[:, None] * D + rd[None, :], y.to(ys.dtype.element_ty), mask=qm[:, None] & md[None, :])
        den = tl.sum(state_dot(b_fq, zs, tl.zeros([BT, 16], dtype=tl.float32)), 1)
        tl.store(dens + bh * T + qpos, den, mask=qm & ((qpos * 0 + di) == 0))


@triton.jit
def _window_small(b_q, b_fq, k_base, v_base, fk_base, qpos, start, n, g, qk_scale, T,
                  D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
                  LIN_CUR: tl.constexpr):
    """Window part of chunk n when its softmax keys lie in tiles n-1 and n (tile n-1 always holds some)."""
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rf = tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    kc = n * BT + rt
    kp = kc - BT
    kmc = kc < T
    kmp = kp >= 0
    # tile n: every row's own key is a softmax key, so m is finite for real rows
    b_k = tl.load(k_base + kc[:, None] * D + rk[None, :], mask=kmc[:, None] & mk[None, :], other=0.0)
    sc = tl.dot(b_q, tl.trans(b_k), input_precision=F32_DOT) * qk_scale
    sc = tl.where((kc[None, :] <= qpos[:, None]) & (kc[None, :] >= start[:, None]), sc, float("-inf"))
    m, am = tl.max(sc, 1, return_indices=True)
    m = tl.maximum(m, -1e30)
    am += n * BT
    p = g * tl.exp2(sc - m[:, None])
    if LIN_CUR:
        b_fk = tl.load(fk_base + kc[:, None] * F + rf[None, :], mask=kmc[:, None] & mf[None, :], other=0.0)
        p += tl.where((kc[None, :] <= qpos[:, None]) & (kc[None, :] < start[:, None]), tl.dot(b_fq, tl.trans(b_fk), input_precision=F32_DOT), 0.0)
    b_v = tl.load(v_base + kc[:, None] * D + rk[None, :], mask=kmc[:, None] & mk[None, :], other=0.0)
    p_in = p.to(b_v.dtype)  # the weights the tensor cores see; the row sum takes the same rounded weights
    acc = tl.dot(p_in, b_v, input_precision=F32_DOT)
    lsum = tl.sum(p_in.to(tl.float32), 1)
    # tile n-1: all keys causal; softmax from start(i) on, linear before (zero rows when n = 0)
    b_k = tl.load(k_base + kp[:, None] * D + rk[None, :], mask=kmp[:, None] & mk[None, :], other=0.0)
    sc = tl.dot(b_q, tl.trans(b_k), input_precision=F32_DOT) * qk_scale
    sc = tl.where(kp[None, :] >= start[:, None], sc, float("-inf"))
    mt, at = tl.max(sc, 1, return_indices=True)
    m_new = tl.maximum(m, mt)
    alpha = tl.exp2(m - m_new)
    am = tl.where(mt > m, (n - 1) * BT + at, am)
    p = g * tl.exp2(sc - m_new[:, None])
    b_fk = tl.load(fk_base + kp[:, None] * F + rf[None, :], mask=kmp[:, None] & mf[None, :], other=0.0)
    p += tl.where(kp[None, :] < start[:, None], tl.dot(b_fq, tl.trans(b_fk), input_precision=F32_DOT), 0.0)
    b_v = tl.load(v_base + kp[:, None] * D + rk[None, :], mask=kmp[:, None] & mk[None, :], other=0.0)
    p_in = p.to(b_v.dtype)
    acc = tl.dot(p_in, b_v, acc * alpha[:, None], input_precision=F32_DOT)
    lsum = lsum * alpha + tl.sum(p_in.to(tl.float32), 1)
    return acc, lsum, m_new, am


# (8 warps, 2 stages) is not offered: wrong outputs for fp32 inputs on Triton 3.6 / Hopper (results/kernels/ISSUE17.md)
# (4 warps, 1 stage, at most 168 registers) fits three programs per SM instead of two; at D = 64 it was 8-17% faster
# (results/perf/direct_20261206/), so the autotuner weighs it too
@tuned([(4, 1), (4, 2), (4, 1, 168)], key=["D", "F", "SMALL", "LIN_CUR", "SAVE_LO", "GROUPED", "PAR", "HAS_ST", "TUNE"])
@triton.jit(do_not_specialize=NO_SPEC)
def fwd_window_kernel(
    q, k, v, fq, fk, gamma, ys, dens, st, o, o_lo, m_out, z_out, am_out,
    T, W, LAYOUT, L, NS, H, G, HKV, TUNE, qk_scale,
    D: tl.constexpr, F: tl.constexpr, BDK: tl.constexpr, BF: tl.constexpr, BT: tl.constexpr,
    SMALL: tl.constexpr, LIN_CUR: tl.constexpr, SAVE_LO: tl.constexpr, GROUPED: tl.constexpr, TOK_O: tl.constexpr,
    PAR: tl.constexpr, HAS_ST: tl.constexpr,
):
    """o of query chunk n: window tiles scored directly (newest to oldest, online stabilizer), plus the
    state part (ys, dens) from fwd_state_kernel; saves the stabilizer m (log2 units), the denominator Z
    and the argmax key for the backward. GROUPED: the grid of :func:`chunk_grid` (GQA heads adjacent). SMALL:
    the window tiles are n and n-1, straight-line code (all loads can be issued up front); LIN_CUR: whether tile n
    can hold linear keys for this layout/window.
    SAVE_LO: also store o − round(o) (16-bit inputs under autograd): the backward's e_i = do_i·o_i / Z_i then
    sees o to ~16 more bits (dγ sums e over all rows with cancellation; a 16-bit o alone costs ~1e-2).
    TOK_O: o and o_lo in token-major memory (:func:`head_rows`). PAR (the parallel schedule, segments of L chunks):
    every key tile from the segment's first chunk's tile_lo on is scored here, and with HAS_ST the state part is
    φq·S, φq·z of the state ``st [BH, NS+1, F·D+F]`` the segment starts from (without it, the quadratic mode, there
    is none); ys and dens are not read."""
    n, bh = chunk_head(H, G, GROUPED)
    b = bh // H
    h = bh % H
    kvh = b * HKV + h // G
    rt = tl.arange(0, BT)
    rk = tl.arange(0, BDK)
    rf = tl.arange(0, BF)
    mk = rk < D
    mf = rf < F
    g = tl.load(gamma + h).to(tl.float32)
    k_base = k + kvh * T * D
    v_base = v + kvh * T * D
    fk_base = fk + bh * T * F
    qpos = n * BT + rt
    qm = qpos < T
    b_q = tl.load(q + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :], other=0.0)
    b_fq = tl.load(fq + bh * T * F + qpos[:, None] * F + rf[None, :], mask=qm[:, None] & mf[None, :], other=0.0)
    start = soft_start(qpos, W, LAYOUT)
    start_lo = soft_start(n * BT, W, LAYOUT)
    start_hi = soft_start(tl.minimum(n * BT + BT - 1, T - 1), W, LAYOUT)
    tlo = first_tile(n, W, LAYOUT, BT, PAR, L)
    m = tl.full([BT], -1e30, dtype=tl.float32)
    lsum = tl.zeros([BT], dtype=tl.float32)
    am = tl.zeros([BT], dtype=tl.int32)
    acc = tl.zeros([BT, BDK], dtype=tl.float32)
    if SMALL:
        acc, lsum, m, am = _window_small(b_q, b_fq, k_base, v_base, fk_base, qpos, start, n, g, qk_scale, T,
                                         D, F, BDK, BF, BT, LIN_CUR)
    # newest -> oldest: a row's linear keys come after all of its softmax keys, so the online
    # rescaling only ever touches rows that hold softmax mass alone (linear terms are not scaled by e^-m).
    for tt in range(0, 0 if SMALL else n - tlo + 1):
        t = n - tt
        kpos = t * BT + rt
        km = kpos < T
        p = tl.zeros([BT, BT], dtype=tl.float32)
        if (LAYOUT != 0) & (t * BT + BT - 1 >= start_lo):
            b_k = tl.load(k_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
            sc = tl.dot(b_q, tl.trans(b_k), input_precision=F32_DOT) * qk_scale
            sc = tl.where((kpos[None, :] <= qpos[:, None]) & (kpos[None, :] >= start[:, None]), sc, float("-inf"))
            mt, at = tl.max(sc, 1, return_indices=True)
            m_new = tl.maximum(m, mt)
            alpha = tl.exp2(m - m_new)
            acc = acc * alpha[:, None]
            lsum = lsum * alpha
            am = tl.where(mt > m, t * BT + at, am)
            m = m_new
            p = g * tl.exp2(sc - m[:, None])
        if t * BT < start_hi:
            b_fk = tl.load(fk_base + kpos[:, None] * F + rf[None, :], mask=km[:, None] & mf[None, :], other=0.0)
            a_lin = tl.dot(b_fq, tl.trans(b_fk), input_precision=F32_DOT)
            p += tl.where((kpos[None, :] <= qpos[:, None]) & (kpos[None, :] < start[:, None]), a_lin, 0.0)
        b_v = tl.load(v_base + kpos[:, None] * D + rk[None, :], mask=km[:, None] & mk[None, :], other=0.0)
        p_in = p.to(b_v.dtype)
        lsum += tl.sum(p_in.to(tl.float32), 1)
        acc = tl.dot(p_in, b_v, acc, input_precision=F32_DOT)
    if PAR:
        if HAS_ST:  # φq·S and φq·z of the state the segment starts from
            acc, lsum = rows_state_dot(acc, lsum, fq + bh * T * F, qpos, qm, st + (bh * (NS + 1) + n // L) * (F * D + F),
                                       rk, mk, F, D, BF, True)
    else:
        acc += tl.load(ys + bh * T * D + qpos[:, None] * D + rk[None, :], mask=qm[:, None] & mk[None, :],
                       other=0.0).to(tl.float32)
        lsum += tl.load(dens + bh * T + qpos, mask=qm, other=0.0)
    out_off = head_rows(bh, H, T, qpos, rk, D, TOK_O)
    z = lsum + 1e-12
    out = acc / z[:, None]
    o_hi = out.to(o.dtype.element_ty)
    tl.store(o + out_off, o_hi, mask=qm[:, None] & mk[None, :])
    if SAVE_LO:
        tl.store(o_lo + out_off, (out - o_hi.to(tl.float32)).to(o_lo.dtype.element_ty), mask=qm[:, None] & mk[None, :])
    tl.store(m_out + bh * T + qpos, m, mask=qm)
    tl.store(z_out + bh * T + qpos, z, mask=qm)
    tl.store(am_out + bh * T + qpos, am, mask=qm)


__all__ = ["NO_SPEC", "col0", "fwd_state_kernel", "fwd_window_kernel", "rows_state_dot", "scan_kernel", "seg_sums_kernel",
           "state_dot"]
