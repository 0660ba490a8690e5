"""``hybrid_attention``: Triton forward/backward of the LoLCATs hybrid attention (arXiv 2410.10254, Eq. 7).

Same function as :func:`lolsearch.attention.hybrid_attention_reference` (and the state semantics of
:func:`lolsearch.attention.hybrid_attention_chunked`), computed chunkwise: window tiles scored directly,
older keys through a fp32 linear state carried per segment (see ``_fwd.py`` / ``_bwd.py`` / NOTES.md).
"""

from __future__ import annotations

import itertools
import math
import os
from typing import NamedTuple

import torch
from lolsearch.kernels import _schedule
from lolsearch.kernels._bwd import bwd_pre_kernel, bwd_rsum_kernel, bwd_state_kv_kernel, bwd_state_q_kernel
from lolsearch.kernels._bwd_window import bwd_kv_kernel, bwd_q_kernel
from lolsearch.kernels._common import (
    BT,
    LOG2E,
    block,
    cdiv,
    chunk_grid,
    fit_shared_memory,
    gqa_grouped,
    layout_id,
    num_sms,
    smem_limit,
    token_major,
    tune_bucket,
)
from lolsearch.kernels._direct import aligned, launch
from lolsearch.kernels._fwd import fwd_state_kernel, fwd_window_kernel, scan_kernel, seg_sums_kernel
from lolsearch.kernels._schedule import linear_in_diagonal_tile, parallel_plan, schedule, seg_tile, small_window

from lolsearch.attention.chunked import LinearState, state_cover
from lolsearch.core import kernel_env

# Query chunks per segment; None = pick from the machine size (tests override it to force many segments).
SEGMENT_CHUNKS: int | None = None
# Save o's rounding residual for the backward also for fp32 inputs (the residual is then 0; tests use it
# to exercise that path in the interpreter).
FORCE_SAVE_LO = False
# Segment-walk programs to aim for, per SM (env LOLSEARCH_KERNELS_PPS; the bench sweeps it).
PROGRAMS_PER_SM = 8
# Chunks per segment at least (env LOLSEARCH_KERNELS_MIN_SEG).
MIN_SEGMENT_CHUNKS = 8
# Query rows per block of bwd_kv's [64 keys, BQ queries] score tiles (tests and benches set it). 16 needs fewer
# registers but ran 1.00-1.08x slower than 32 on an H100 at every training shape (results/perf/fmap16_20261207/).
KV_QUERY_ROWS = 32


def _value_block(bdk: int, bf: int, esize: int, smem: int) -> int:
    """Value columns per program of the state walks. The fp32 state [F, BD] must stay in registers
    (F*BD <= 128*128 at 8 warps), and the walks stage about five [F, BD] state copies (operands of the
    state GEMMs, in the input precision) in shared memory: BD is halved until 5*F*BD*esize + 32 KB fits the
    device's budget (fp32 at F = 128 needs BD = 64 on an H200). Env LOLSEARCH_KERNELS_BD overrides it."""
    env = kernel_env.read("LOLSEARCH_KERNELS_BD")
    bd = min(bdk, env or (128 if bf <= 128 else 64))
    if env is None:
        while bd > 16 and 5 * bf * bd * esize + 32768 > smem:
            bd //= 2
    return bd


def _launch_walk(kernel, key: tuple, bd: int, grid, *args, prepare=None, site: tuple | None = None, **kwargs) -> int:
    """Launches a state-walk kernel with value tile ``BD = bd``, halving BD down to 16 while the compiled kernel
    needs more shared memory than the device has (:func:`fit_shared_memory`). ``grid(bd)`` gives the launch grid;
    ``prepare(bd)``, if given, runs before each try and returns keyword arguments that depend on BD (or None).
    ``site``: the call site of :func:`launch`, to which BD is added. Returns the BD that ran."""

    def run(x: int):
        extra = (prepare(x) if prepare is not None else None) or {}
        return launch(kernel, grid(x), *args, **kwargs, **extra, BD=x, site=None if site is None else (*site, x))

    fit, _ = fit_shared_memory(key, bd, lambda x: x // 2 if x > 16 else None, run)
    if fit is None:
        raise RuntimeError(f"{key[0]}: no value tile down to BD = 16 fits the device's shared memory")
    return fit


def _plan(t: int, bh: int, nd: int, device: torch.device, balance: bool = False) -> tuple[int, int]:
    """(chunks per segment L, number of segments NS) for T = t: enough segment walks for PROGRAMS_PER_SM programs
    per SM, segments of at least MIN_SEGMENT_CHUNKS chunks, and with ``balance`` at least ceil(sqrt(nt / 2)) chunks
    per segment. Env LOLSEARCH_KERNELS_PPS sets the programs per SM and leaves the fill rule alone (no minimum
    length, no balance); LOLSEARCH_KERNELS_MIN_SEG sets the minimum length.

    The scan over segments (NS dependent steps) and each walk (L dependent steps) are the forward's two serial paths;
    L ~ sqrt(nt / 2) balances them where the fill rule alone makes one-chunk segments (Llama-3-8B heads, bf16, by
    CUDA-graph replay on an H200: 2K 173 -> 117 us; results/kernels/graphed_knobs_20261203/). Every segment also
    costs fp32 states [F, D] in seg_sums, both scans and bwd_rsum (66 KB per head at D = F = 128), which at training
    shapes (batch x heads >= the SMs) outweighs the walks' parallelism: 8 chunks per segment instead of the fill
    rule's 2-4 made the training steps 0.4-2.0% faster on an H100 (results/perf/segments_20261206/)."""
    nt = cdiv(t, BT)
    if SEGMENT_CHUNKS:
        seg = SEGMENT_CHUNKS
    else:
        env = kernel_env.read("LOLSEARCH_KERNELS_PPS")
        want = max(1, cdiv((env or PROGRAMS_PER_SM) * num_sms(device), bh * nd))
        seg = cdiv(nt, want)
        if balance and env is None:
            seg = max(seg, math.ceil(math.sqrt(nt / 2)))
        seg = max(seg, kernel_env.read("LOLSEARCH_KERNELS_MIN_SEG") or (MIN_SEGMENT_CHUNKS if env is None else 1))
    seg = max(1, min(seg, nt))
    return seg, cdiv(nt, seg)


class ForwardPlan(NamedTuple):
    """The host-side decisions of a forward for one call signature (:func:`_forward_plan`); ``serial`` names it in
    the kept launches' keys (``_direct.launch(site=...)``)."""

    serial: int
    mode: str  # the schedule: "walk", "parallel" or "quadratic"
    seg: int  # query chunks per segment (L)
    ns: int  # segments (NS)
    bd: int  # value columns per program of the walk fwd_state (before any shared-memory halving)
    seg_tile: tuple[int, int, int]  # (BF, BD, warps) of seg_sums
    grouped: bool  # a kv head's query heads on adjacent programs (GROUPED)
    tune: int  # the autotune key's size class (TUNE)
    small: bool  # the small-window variants (SMALL)
    lin_cur: bool  # linear keys inside the diagonal tile (LIN_CUR)


# The settings a forward's plan reads beside the call's shape: their raw values are part of its key, so a changed
# setting takes effect on the next call (benches and tests change them within a process).
_PLAN_ENV = ("LOLSEARCH_KERNELS_BD", "LOLSEARCH_KERNELS_PPS", "LOLSEARCH_KERNELS_MIN_SEG", "LOLSEARCH_KERNELS_SEG_TILE",
             "LOLSEARCH_KERNELS_GQA_ORDER", "LOLSEARCH_KERNELS_QUADRATIC_T", "LOLSEARCH_KERNELS_PARALLEL_T",
             "LOLSEARCH_KERNELS_PARALLEL_SEG")
_PLANS: dict[tuple, ForwardPlan] = {}
_SERIAL = itertools.count()


def _forward_plan(shape: tuple[int, int, int, int, int, int], dtype: torch.dtype, device: torch.device, lay: int,
                  w: int, state_io: bool, grad: bool) -> ForwardPlan:
    """The forward's plan for q ``[B, H, T, D]`` with Hkv kv heads and F features (``shape``: (B, H, Hkv, T, D, F)),
    computed once per call signature: the key holds the shape, dtype, device, layout, window, whether a state goes in
    or out, whether the call is under autograd, the machine's SMs and shared memory, the module's plan overrides,
    the schedule's limits and the raw values of the settings in _PLAN_ENV. At small T the forward is bound by host
    time (issue 17), and this is most of it after the launches."""
    b, h, hkv, t, d, f = shape
    # The balanced segment plan (16-bit forwards outside autograd) only where it was measured faster: H200, CUDA-graph
    # replay at 2K and 8K. Longer segments as such are checked for every dtype by the GPU matrix (MATRIX_SEG).
    balance = not grad and dtype != torch.float32
    key = (shape, dtype, device, lay, w, state_io, grad, num_sms(device), smem_limit(device), SEGMENT_CHUNKS,
           PROGRAMS_PER_SM, MIN_SEGMENT_CHUNKS, _schedule.QUADRATIC_MAX_T, _schedule.PARALLEL_MAX_T,
           *map(os.environ.get, _PLAN_ENV))
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    mode = schedule(t, d, state_io)
    bdk, bf, nt = block(d), block(f), cdiv(t, BT)
    bd = _value_block(bdk, bf, dtype.itemsize, smem_limit(device))
    seg, ns = nt, 1  # the quadratic mode: one segment, no state
    if mode == "parallel":
        seg, ns = parallel_plan(t, grad)
    elif mode == "walk":
        seg, ns = _plan(t, b * h, cdiv(d, bd), device, balance)
    small = mode == "walk" and small_window(lay, w)
    plan = ForwardPlan(next(_SERIAL), mode, seg, ns, bd, seg_tile(bf, bdk), gqa_grouped(h, hkv, nt),
                       tune_bucket(b * h, t), small, small and linear_in_diagonal_tile(lay, w))
    if len(_PLANS) >= 1024:  # keys hold T: a process that sees ever new lengths starts over
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _forward(q, k, v, fq, fk, gamma, lay, w, s0, z0, plan: ForwardPlan, save_lo=False, tok_o=False):
    """Returns o, the segment states ``[BH, NS+1, F*D+F]`` (empty in the quadratic mode), the per-row stats (m, Z,
    argmax) and the rounding residual of o (``save_lo``; else None). ``plan``: :func:`_forward_plan` of the call (only
    the "walk" schedule takes ``s0``); ``tok_o``: o (and its residual) in token-major memory.

    The launches name their call site (``site``): the plan's serial number with everything else that sets a
    non-tensor argument or a tensor's dtype and alignment, so a repeated call skips the per-launch key."""
    b, h, t, d = q.shape
    hkv, f = k.shape[1], fq.shape[-1]
    bdk, bf = block(d), block(f)
    nt = cdiv(t, BT)
    site = (plan.serial, save_lo, tok_o, *aligned(q, k, v, fq, fk, gamma))
    o = torch.empty(b, t, h, d, device=q.device, dtype=q.dtype).transpose(1, 2) if tok_o else torch.empty_like(q)
    o_lo = torch.empty_like(o) if save_lo else None
    m2 = torch.empty(b * h, t, device=q.device, dtype=torch.float32)
    zden = torch.empty_like(m2)
    am = torch.empty(b * h, t, device=q.device, dtype=torch.int32)
    mode, seg, ns = plan.mode, plan.seg, plan.ns
    st, ys, dens = m2.new_empty(0), q, m2  # the quadratic mode: no state (ys, dens are not read)
    common = dict(T=t, W=w, LAYOUT=lay, L=seg, NS=ns, H=h, G=h // hkv, HKV=hkv)
    if mode != "quadratic":
        sz = f * d + f
        st = torch.empty(b * h, ns + 1, sz, device=q.device, dtype=torch.float32)
        if s0 is not None:  # else the scan writes entry 0 as zeros
            st[:, 0, : f * d] = s0.reshape(b * h, f * d)
            st[:, 0, f * d :] = z0.reshape(b * h, f)
        bf1, bd1, warps1 = plan.seg_tile
        launch(seg_sums_kernel, (cdiv(f, bf1) * cdiv(d, bd1), ns, b * h),
            fk, v, st, **common, D=d, F=f, BF=bf1, BD=bd1, BT=BT, num_warps=warps1, site=site
        )
        launch(scan_kernel, (cdiv(sz, 1024), b * h), st, ns + 1, sz, REVERSE=False, BLOCK=1024,
               ZERO_FIRST=s0 is None, num_warps=4, site=(*site, s0 is None))
    if mode == "walk":  # state part of every query: in the input dtype (fp32 for fp32 inputs), an fp32 denominator
        ys = torch.empty_like(q)
        dens = torch.empty(b * h, t, device=q.device, dtype=torch.float32)
        _launch_walk(fwd_state_kernel, ("fwd_state", q.dtype, d, f, q.device), plan.bd,
                     lambda x: (cdiv(d, x), ns, b * h), fq, fk, v, st, ys, dens, **common, TUNE=plan.tune, D=d, F=f,
                     BF=bf, BT=BT, SMALL=plan.small, site=site)
    launch(fwd_window_kernel, chunk_grid(nt, b, h, hkv, plan.grouped),
        q, k, v, fq, fk, gamma, ys, dens, st if st.numel() else m2, o, o if o_lo is None else o_lo, m2, zden, am,
        **common, TUNE=plan.tune, qk_scale=d**-0.5 * LOG2E, D=d, F=f, BDK=bdk, BF=bf, BT=BT, SMALL=plan.small,
        LIN_CUR=plan.lin_cur, SAVE_LO=save_lo, GROUPED=plan.grouped, TOK_O=tok_o, PAR=mode != "walk",
        HAS_ST=mode != "quadratic", site=site,
    )
    return o, st, (m2, zden, am), o_lo


def _backward(ctx, do):
    """The six gradients; those of q, k and v only where autograd asks for them (None otherwise), so attention
    transfer, where only the feature maps and γ train, skips their kernels' work. ``ctx.saved_tensors`` is read once
    (activation checkpointing refuses a second unpack).

    The launches name their call site, as the forward's do: the forward plan's serial number with the gradients
    asked for, the layouts of o and its gradient, and the alignment of the tensors that were not allocated here."""
    saved = ctx.saved_tensors
    q, k, v, fq, fk, gamma, o, st, m2, zden, am, o_lo = saved
    need_dq, need_dk, need_dv = ctx.needs_input_grad[:3]
    plan: ForwardPlan = ctx.plan
    lay, w, seg, ns = ctx.lay, ctx.w, plan.seg, plan.ns
    b, h, t, d = q.shape
    hkv, f = k.shape[1], fq.shape[-1]
    bdk, bf = block(d), block(f)
    nt = cdiv(t, BT)
    dev, f32 = q.device, torch.float32
    do = do.to(q.dtype)
    tok_do = token_major(do) and not do.is_contiguous()  # the grad of a token-major o is read where it lies
    do = do if tok_do else do.contiguous()
    has_lo = o_lo.numel() > 0
    site = (plan.serial, "bwd", need_dq, need_dk, need_dv, has_lo, ctx.tok_o, tok_do,
            *aligned(q, k, v, fq, fk, gamma, o, o_lo, do))
    heads = dict(H=h, G=h // hkv, HKV=hkv, TUNE=plan.tune)  # TUNE: the autotuned kernels' size class
    walk = dict(T=t, W=w, LAYOUT=lay, L=seg, NS=ns, **heads)
    e = torch.empty(b * h, t, device=dev, dtype=f32)
    launch(bwd_pre_kernel, (nt, b * h), o, o_lo if has_lo else o, do, zden, e, t, h, D=d, BDK=bdk, BT=BT,
           HAS_LO=has_lo, TOK_O=ctx.tok_o, TOK_DO=tok_do, num_warps=4, site=site)
    bf1 = min(bf, 64)
    has_st = plan.mode != "quadratic"
    r = e
    if has_st:  # the state parts' gradients, Σ φq gᵀ per segment, summed from the last segment back (fp32)
        sz = f * d + f
        r = torch.empty(b * h, ns + 1, sz, device=dev, dtype=f32)
        r[:, ns].zero_()
        bd1 = min(bdk, 64)
        launch(bwd_rsum_kernel, (cdiv(f, bf1) * cdiv(d, bd1), ns, b * h),
            fq, do, zden, e, r, t, seg, ns, h, D=d, F=f, BF=bf1, BD=bd1, BT=BT, TOK_DO=tok_do, num_warps=4, site=site
        )
        launch(scan_kernel, (cdiv(sz, 1024), b * h), r, ns + 1, sz, REVERSE=True, BLOCK=1024, ZERO_FIRST=False,
               num_warps=4, site=site)
    if plan.mode != "walk":  # no walks: dφq per query chunk, dv and dφk whole in bwd_kv
        dfq, dfk = torch.empty_like(fq), torch.empty_like(fk)
        launch(bwd_state_q_kernel, (cdiv(f, bf1), nt, b * h), fk, v, do, zden, e, st if has_st else e, dfq, **walk,
               D=d, F=f, BDK=bdk, BF=bf1, BT=BT, SMALL=False, TOK_DO=tok_do, PAR=True, HAS_ST=has_st, site=site)
        dq, dk, dv, dgamma = _window_grads(ctx, saved, do, tok_do, e, e, dfk, r, dfk, False, site)
        return dq, dk, dv, dfq, dfk, dgamma
    # dv's state part per query head (bwd_kv sums each GQA group) in fp32, written by plain stores for exactly the key
    # tiles some chunk reads through the state (bwd_kv reads no others), so not initialised. dφk: bwd_state_kv writes
    # it whole for those tiles where one value tile spans D; where value tiles split D, their state parts are summed
    # into zeroed fp32 with atomics and bwd_kv adds the window parts.
    dv_s = torch.empty(b, h, t, d, device=dev, dtype=f32) if need_dv else r.new_empty(0)
    dfk = torch.empty_like(fk)
    dfk_s = r.new_empty(0)

    def dfk_target(x: int) -> dict:
        nonlocal dfk_s
        if d <= x:
            return {"dfk": dfk}
        dfk_s = torch.zeros(b, h, t, f, device=dev, dtype=f32) if dfk_s.numel() == 0 else dfk_s.zero_()
        return {"dfk": dfk_s}

    bd = _launch_walk(bwd_state_kv_kernel, ("bwd_state_kv", q.dtype, d, f, dev), plan.bd,
                      lambda x: (cdiv(d, x), ns, b * h), fq, fk, v, do, zden, e, r, dv=dv_s, **walk, D=d, F=f, BF=bf,
                      BT=BT, SMALL=plan.small, NEED_DV=need_dv, TOK_DO=tok_do, prepare=dfk_target, site=site)
    dfq = torch.empty_like(fq)
    launch(bwd_state_q_kernel, (cdiv(f, bf1), ns, b * h),
        fk, v, do, zden, e, st, dfq, **walk, D=d, F=f, BDK=bdk, BF=bf1, BT=BT, SMALL=plan.small,
        TOK_DO=tok_do, PAR=False, HAS_ST=True, site=site,
    )
    dq, dk, dv, dgamma = _window_grads(ctx, saved, do, tok_do, e, dv_s, dfk_s if d > bd else dfk, r, dfk, d <= bd,
                                       (*site, bd))
    return dq, dk, dv, dfq, dfk, dgamma


def _window_grads(ctx, saved: tuple, do, tok_do: bool, e, dv_s, dfk_s, r, dfk, state_dfk: bool, site: tuple):
    """dq, dk, dv (None where autograd asks for none) and dγ from the window kernels, which write them in the input
    dtypes; ``bwd_kv`` also completes dφk into ``dfk``. ``saved``: ctx.saved_tensors, as ``_backward`` read them. The
    state parts: the walk's ``dv_s`` and, without ``state_dfk``, ``dfk_s``; the parallel schedule's from the suffix
    sums ``r``; none in the quadratic mode. ``site``: the backward's launch site (with the walk's value tile)."""
    q, k, v, fq, fk, gamma, o, st, m2, zden, am, o_lo = saved
    need_dq, need_dk, need_dv = ctx.needs_input_grad[:3]
    b, h, t, d = q.shape
    hkv, f = k.shape[1], fq.shape[-1]
    nt = cdiv(t, BT)
    plan: ForwardPlan = ctx.plan
    heads = dict(H=h, G=h // hkv, HKV=hkv, TUNE=plan.tune)
    scales = dict(qk_scale=d**-0.5 * LOG2E, scale=d**-0.5)
    dq = torch.empty_like(q) if need_dq else None
    dc = torch.empty_like(e)
    dgp = torch.empty(b * h, nt, device=q.device, dtype=torch.float32)
    grouped = plan.grouped
    launch(bwd_q_kernel, chunk_grid(nt, b, h, hkv, grouped),
        q, k, v, gamma, do, m2, zden, e, am, dq if need_dq else dc, dc, dgp, T=t, W=ctx.w,
        LAYOUT=ctx.lay, **heads, **scales, D=d, BDK=block(d), BT=BT, NEED_DQ=need_dq, GROUPED=grouped, TOK_DO=tok_do,
        site=site,
    )
    dk = torch.empty_like(k) if need_dk else None
    dv = torch.empty_like(v) if need_dv else None
    launch(bwd_kv_kernel, (nt, b * hkv, need_dk + need_dv + h // hkv),
        q, k, v, fq, fk, gamma, do, m2, zden, e, dc, am, dv_s, dfk_s, r, dk if need_dk else dfk,
        dv if need_dv else dfk, dfk, T=t, W=ctx.w, LAYOUT=ctx.lay, L=plan.seg, NS=plan.ns, **heads, **scales,
        D=d, F=f, BDK=block(d), BF=block(f), BT=BT, BQ=KV_QUERY_ROWS, NEED_DK=need_dk, NEED_DV=need_dv, TOK_DO=tok_do,
        STATE_DFK=state_dfk, PAR=plan.mode != "walk", HAS_ST=plan.mode != "quadratic", site=(*site, state_dfk),
    )
    return dq, dk, dv, dgp.view(b, h, nt).sum((0, 2))


def _final_state(st: torch.Tensor, ns: int, shape: torch.Size, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S ``[B, H, F, D]`` and z ``[B, H, F]`` (fp32 copies) of the scan's last entry; ``shape`` is q's."""
    b, h, _, d = shape
    return st[:, ns, : f * d].reshape(b, h, f, d).clone(), st[:, ns, f * d :].reshape(b, h, f).clone()


class HybridAttentionFn(torch.autograd.Function):
    """Autograd wrapper; inputs already validated, contiguous and in one dtype."""

    @staticmethod
    def forward(ctx, q, k, v, fq, fk, gamma, lay, w, s0, z0, want_state, tok_o, plan):
        save_lo = any(ctx.needs_input_grad[:6]) and (q.dtype != torch.float32 or FORCE_SAVE_LO)
        o, st, (m2, zden, am), o_lo = _forward(q, k, v, fq, fk, gamma, lay, w, s0, z0, plan, save_lo, tok_o)
        o_lo = o_lo if o_lo is not None else o.new_empty(0)
        ctx.save_for_backward(q, k, v, fq, fk, gamma, o, st, m2, zden, am, o_lo)
        ctx.lay, ctx.w, ctx.plan, ctx.tok_o = lay, w, plan, tok_o
        if not want_state:
            return o
        s_fin, z_fin = _final_state(st, plan.ns, q.shape, fq.shape[-1])
        ctx.mark_non_differentiable(s_fin, z_fin)
        return o, s_fin, z_fin

    @staticmethod
    def backward(ctx, do, *_state_grads):
        grads = _backward(ctx, do)
        return (*grads, None, None, None, None, None, None, None)


def _check(q, k, v, phi_q, phi_k, gamma, initial_state) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, H, T, D], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, t, d = q.shape
    hkv = k.shape[1]
    if k.shape != (b, hkv, t, d) or v.shape != k.shape:
        raise ValueError(f"k and v must be [B, Hkv, T, D] = [{b}, Hkv, {t}, {d}], got {tuple(k.shape)}, {tuple(v.shape)}")
    if hkv == 0 or h % hkv:
        raise ValueError(f"{h} query heads are not a multiple of {hkv} kv heads")
    f = phi_q.shape[-1]
    if phi_q.shape != (b, h, t, f) or phi_k.shape != (b, h, t, f):
        raise ValueError(f"phi_q, phi_k must be [B, H, T, F] = [{b}, {h}, {t}, F], got {tuple(phi_q.shape)}, {tuple(phi_k.shape)}")
    if gamma.shape != (h,):
        raise ValueError(f"gamma must be [H] = [{h}], got {tuple(gamma.shape)}")
    if t == 0:
        raise ValueError("need at least one position (T >= 1)")
    if initial_state is not None:
        s0, z0 = initial_state
        if s0.requires_grad or z0.requires_grad:
            raise ValueError("hybrid_attention has no gradient through initial_state: pass it detached")
        if s0.shape != (b, h, f, d) or z0.shape != (b, h, f):
            raise ValueError(f"initial_state must be S [B, H, F, D] = [{b}, {h}, {f}, {d}] and z [B, H, F], "
                             f"got {tuple(s0.shape)}, {tuple(z0.shape)}")


def hybrid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str = "sliding",
    initial_state: LinearState | None = None,
    return_state: bool = False,
    token_major_out: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LinearState, int]:
    """Hybrid window-softmax + linear attention, Triton forward and backward.

    Args:
        q: ``[B, H, T, D]`` (RoPE applied); k, v: ``[B, Hkv, T, D]`` with Hkv dividing H (GQA, not repeated).
        phi_q, phi_k: ``[B, H, T, F]`` non-negative features (per query head).
        gamma: ``[H]`` softmax weight per head. window: int >= 0 (0 = pure linear attention).
        layout: ``"sliding"``, ``"terrace"`` or ``"linear"``.
        initial_state: LinearState (S ``[B, H, F, D]``, z ``[B, H, F]``) of keys before position 0, linear for
            every query; no gradient flows into it.
        return_state: also return the state of the keys before ``covered = state_cover(layout, window, T)``.
        token_major_out: o in token-major memory (a ``[B, H, T, D]`` view of ``[B, T, H, D]``), so that
            ``o.transpose(1, 2).reshape(B, T, H * D)`` for the output projection copies nothing; the backward then
            reads o's gradient in that layout too.

    Returns:
        o ``[B, H, T, D]`` in q's dtype, or ``(o, LinearState(S fp32, z fp32), covered)``.
        Gradients flow to q, k, v, phi_q, phi_k and gamma.
    """
    _check(q, k, v, phi_q, phi_k, gamma, initial_state)
    lay, w = layout_id(layout, window)
    dt = q.dtype
    if dt not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"hybrid_attention supports fp32/bf16/fp16 inputs, got {dt}")
    args = [x.to(dt).contiguous() for x in (q, k, v, phi_q, phi_k)]
    s0 = z0 = None
    if initial_state is not None:
        s0 = initial_state.S.detach().float().contiguous()
        z0 = initial_state.z.detach().float().contiguous()
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, phi_q, phi_k, gamma))
    b, h, t, d = q.shape
    plan = _forward_plan((b, h, k.shape[1], t, d, phi_q.shape[-1]), dt, q.device, lay, w,
                         s0 is not None or return_state, grad)
    if grad:
        out = HybridAttentionFn.apply(*args, gamma.float().contiguous(), lay, w, s0, z0, return_state, token_major_out,
                                      plan)
        o, s_fin, z_fin = out if return_state else (out, None, None)
    else:  # nothing to save for a backward: no autograd node (host time counts at small T)
        o, st, _, _ = _forward(*args, gamma.float().contiguous(), lay, w, s0, z0, plan, False, token_major_out)
        if return_state:
            s_fin, z_fin = _final_state(st, plan.ns, q.shape, phi_q.shape[-1])
    if not return_state:
        return o
    return o, LinearState(s_fin, z_fin), state_cover(layout if w else "linear", w, q.shape[2])


__all__ = ["SEGMENT_CHUNKS", "HybridAttentionFn", "hybrid_attention"]
