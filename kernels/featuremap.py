"""Fused projected feature maps, per query head, in one kernel each way:

- Hedgehog (Zhang et al. 2024, arXiv 2402.04347): φ(x) = [softmax(xW) ⊕ softmax(−xW)] (softmax(xW) with halfspace);
- T2R (Kasai et al. 2021, arXiv 2103.13076): φ(x) = ReLU(xW + b).

Both clamp φ at ``eps`` from below. The forward computes projection, activation, clamp and cast of a row tile; the
backward recomputes them from x (nothing but x and the parameters is kept) and writes dx and the parameters'
gradients. The unfused modules (``lolsearch.attention.featuremaps``) run several elementwise kernels each way over
fp32 ``[B, H, T, F]`` intermediates, plus a copy of the keys expanded to query heads; here keys are read at their kv
head (``groups`` query heads per kv head, GQA) and the gradients of a kv head's query heads are summed.

Shapes: x ``[B, HX, T, D]`` with ``H = HX · groups`` query heads, W ``[H, D, P]`` fp32, b ``[H, P]`` fp32 (T2R),
φ ``[B, H, T, F]`` with F = 2P for two-sided Hedgehog, else P. For fp32 x the products run at ``F32_DOT`` (3-pass
TF32, about fp32, like the modules' fp32 matmul). For 16-bit x (constexpr LOWP, :func:`low_precision`) they take
16-bit operands, x as it is, W and the logits' gradient rounded to x's dtype, with fp32 sums: the modules' matmul
in x's dtype does the same. With ``LOLSEARCH_KERNELS_FEATURES_16BIT=0`` they run one TF32 pass on fp32 operands
instead (10-bit mantissas; the 3-pass split needs twice the registers and spilled the backward).

Each launch starts at the config of :func:`config` and steps down (one stage, then half the rows) while the compiled
kernel needs more shared memory than the device has; heads whose W tile fits at no config run the same math in plain
torch ops. What fit is remembered per shape.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels._common import F32_DOT, block, cdiv, fit_shared_memory, num_sms

from lolsearch.attention.feature_math import project, relu_features, signed_softmax
from lolsearch.core import kernel_env

KINDS = {"hedgehog": 0, "t2r": 1}
# Rows per tile (R) and launch config of each kernel, for 16-bit x with W[h] tiles up to 128 × 64 (D and P
# padded to powers of two): the fastest measured at the SmolLM2 and Llama-3-8B shapes on an H100
# (results/perf/features_tiles_20261206/), spill-free in sm_90 compiles. fp32 x or wider W take the *_WIDE configs.
# A forward program takes L consecutive tiles; it and the parameter-gradient kernel's programs load their head's W
# once. BWD is the parameter-gradient kernel's, DX the frozen maps' dx kernel's (no parameter-gradient accumulators).
# With 16-bit products (LOWP) the forward's and, up to 64 projected features, the parameter gradients' fastest configs
# differ (*_LOWP; Hedgehog P = 64 on an H100, results/perf/fmap16_20261207/: 0.83-0.86x and 0.87-0.89x of those
# kernels' time at the SmolLM2 shape, 0.92-0.96x and 0.92-0.97x at 8B's).
FWD = dict(R=64, L=4, num_warps=4, num_stages=1)
BWD = dict(R=128, num_warps=8, num_stages=1)
DX = dict(R=64, num_warps=4, num_stages=1)
FWD_LOWP = dict(R=64, L=2, num_warps=4, num_stages=1)
BWD_LOWP = dict(R=64, num_warps=4, num_stages=1)
BWD_WIDE = dict(R=32, num_warps=8, num_stages=2)
DX_WIDE = dict(R=32, num_warps=8, num_stages=2)


@triton.jit
def _softmax_rows(xw, valid):
    """Row softmax of ``xw [R, BP]`` over the columns where ``valid`` (fp32)."""
    s = tl.where(valid, xw, float("-inf"))
    e = tl.exp(s - tl.max(s, 1)[:, None])
    return e / tl.sum(e, 1)[:, None]


@triton.jit
def _x_rows(x, b, hx, t0, T, HX, D: tl.constexpr, BD: tl.constexpr, R: tl.constexpr, LOWP: tl.constexpr):
    """The x rows [t0, t0 + R) of x head hx (in x's dtype with LOWP, else fp32), and their row mask."""
    rows = t0 + tl.arange(0, R)
    rd = tl.arange(0, BD)
    rm = rows < T
    xt = tl.load(x + ((b * HX + hx).to(tl.int64) * T + rows[:, None]) * D + rd[None, :],
                 mask=rm[:, None] & (rd[None, :] < D), other=0.0)
    if not LOWP:
        xt = xt.to(tl.float32)
    return xt, rm


@triton.jit
def _w_head(w, h, x_dtype, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr, BP: tl.constexpr,
            LOWP: tl.constexpr):
    """W[h] ``[BD, BP]``, zero outside D × P: fp32, or rounded to ``x_dtype`` with LOWP."""
    rd = tl.arange(0, BD)
    rp = tl.arange(0, BP)
    wt = tl.load(w + (h * D + rd[:, None]) * P + rp[None, :], mask=(rd[:, None] < D) & (rp[None, :] < P), other=0.0)
    if LOWP:
        wt = wt.to(x_dtype)
    return wt


@triton.jit
def _mm(a, b, acc, x_dtype, PREC: tl.constexpr, LOWP: tl.constexpr):
    """acc + a·b (a·b where acc is None) in fp32: with LOWP on operands rounded to ``x_dtype``, else on fp32 ones
    at ``PREC``."""
    if LOWP:  # noqa: SIM108 - a constexpr test: the untaken branch is never compiled
        out = tl.dot(a.to(x_dtype), b.to(x_dtype), acc)
    else:
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out


@triton.jit
def features_fwd_kernel(x, w, bias, out, T, H, G, HX, eps, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr,
                        BP: tl.constexpr, R: tl.constexpr, L: tl.constexpr, KIND: tl.constexpr, HALF: tl.constexpr,
                        PREC: tl.constexpr, LOWP: tl.constexpr):
    """out[b, h, rows] for L consecutive tiles of R rows (W[h] loaded once): Hedgehog (KIND 0)
    [max(softmax(xW), eps), max(softmax(−xW), eps)] (the first half alone with HALF), T2R (KIND 1)
    max(xW + b, eps)."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rp = tl.arange(0, BP)
    valid = (rp < P)[None, :]
    F: tl.constexpr = 2 * P if (KIND == 0) and not HALF else P
    wt = _w_head(w, h, x.dtype.element_ty, D, P, BD, BP, LOWP)
    for li in range(L):
        t0 = (pid * L + li) * R
        xt, rm = _x_rows(x, b, h // G, t0, T, HX, D, BD, R, LOWP)
        xw = _mm(xt, wt, None, x.dtype.element_ty, PREC, LOWP)
        base = out + (bh.to(tl.int64) * T + t0 + tl.arange(0, R)[:, None]) * F + rp[None, :]
        m = rm[:, None] & valid
        if KIND == 0:
            tl.store(base, tl.maximum(_softmax_rows(xw, valid), eps).to(out.dtype.element_ty), mask=m)
            if not HALF:
                tl.store(base + P, tl.maximum(_softmax_rows(-xw, valid), eps).to(out.dtype.element_ty), mask=m)
        else:
            y = xw + tl.load(bias + h * P + rp, mask=rp < P, other=0.0)[None, :]
            tl.store(base, tl.maximum(y, eps).to(out.dtype.element_ty), mask=m)


@triton.jit
def _softmax_grad(s, g, eps):
    """d(max(s, eps))/d(logits) applied to g, for s = softmax(logits): clamped entries pass no gradient."""
    g = tl.where(s >= eps, g, 0.0)
    return s * (g - tl.sum(g * s, 1)[:, None])


@triton.jit
def _dlogits(xw, bias, dout, row_off, h, m, valid, eps, P: tl.constexpr, BP: tl.constexpr, KIND: tl.constexpr,
             HALF: tl.constexpr):
    """d(xW) ``[R, BP]`` fp32 of the rows ``row_off`` of query head h, from dφ (``dout``) and the recomputed xW."""
    rp = tl.arange(0, BP)
    F: tl.constexpr = 2 * P if (KIND == 0) and not HALF else P
    g = tl.load(dout + row_off * F + rp[None, :], mask=m, other=0.0).to(tl.float32)
    if KIND == 0:
        dxw = _softmax_grad(_softmax_rows(xw, valid), g, eps)
        if not HALF:
            g = tl.load(dout + row_off * F + P + rp[None, :], mask=m, other=0.0).to(tl.float32)
            dxw -= _softmax_grad(_softmax_rows(-xw, valid), g, eps)
    else:
        y = xw + tl.load(bias + h * P + rp, mask=rp < P, other=0.0)[None, :]
        dxw = tl.where(y >= eps, g, 0.0)  # ReLU's and the clamp's gradients together
    return dxw


@triton.jit
def features_bwd_kernel(x, w, bias, dout, dx, dw, db, T, H, G, HX, NTILES, eps, D: tl.constexpr, P: tl.constexpr,
                        BD: tl.constexpr, BP: tl.constexpr, R: tl.constexpr, KIND: tl.constexpr, HALF: tl.constexpr,
                        PREC: tl.constexpr, LOWP: tl.constexpr, WANT_DX: tl.constexpr):
    """Program (split, h) walks the row tiles split, split + NSPLIT, ... of query head h over the whole batch:
    writes one partial parameter gradient per program, dW[split, h] = Σ xᵀ d(xW) and (T2R) db[split, h] = Σ d(xW),
    and with WANT_DX dx of its rows (per query head)."""
    split = tl.program_id(0)
    h = tl.program_id(1)
    nsplit = tl.num_programs(0)
    nt = tl.cdiv(T, R)
    rp = tl.arange(0, BP)
    rd = tl.arange(0, BD)
    valid = (rp < P)[None, :]
    acc = tl.zeros([BD, BP], dtype=tl.float32)
    bacc = tl.zeros([BP], dtype=tl.float32)
    wt = _w_head(w, h, x.dtype.element_ty, D, P, BD, BP, LOWP)
    for j in range(split, NTILES, nsplit):
        b = j // nt
        t0 = (j % nt) * R
        xt, rm = _x_rows(x, b, h // G, t0, T, HX, D, BD, R, LOWP)
        xw = _mm(xt, wt, None, x.dtype.element_ty, PREC, LOWP)
        row_off = ((b * H + h).to(tl.int64) * T + t0 + tl.arange(0, R)[:, None])
        dxw = _dlogits(xw, bias, dout, row_off, h, rm[:, None] & valid, valid, eps, P, BP, KIND, HALF)
        if KIND == 1:
            bacc += tl.sum(dxw, 0)
        if WANT_DX:
            dxt = _mm(dxw, tl.trans(wt), None, x.dtype.element_ty, PREC, LOWP)
            tl.store(dx + row_off * D + rd[None, :], dxt.to(dx.dtype.element_ty), mask=rm[:, None] & (rd[None, :] < D))
        acc = _mm(tl.trans(xt), dxw, acc, x.dtype.element_ty, PREC, LOWP)
    tl.store(dw + ((split * H + h) * D + rd[:, None]) * P + rp[None, :], acc, mask=(rd[:, None] < D) & (rp[None, :] < P))
    if KIND == 1:
        tl.store(db + (split * H + h) * P + rp, bacc, mask=rp < P)


@triton.jit
def features_dx_kernel(x, w, bias, dout, dx, T, H, G, HX, eps, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr,
                       BP: tl.constexpr, R: tl.constexpr, KIND: tl.constexpr, HALF: tl.constexpr, PREC: tl.constexpr,
                       LOWP: tl.constexpr):
    """dx of frozen maps (no parameter gradients, e.g. a LoRA stage): program (tile, b·HX + hx) takes one row tile of
    x head hx and sums the gradients of its G query heads in fp32, stored once in x's dtype. Every tile runs in
    parallel (the parameter-gradient kernel walks tiles serially to keep few partial sums)."""
    pid = tl.program_id(0)
    bx = tl.program_id(1)
    b = bx // HX
    hx = bx % HX
    t0 = pid * R
    rd = tl.arange(0, BD)
    valid = (tl.arange(0, BP) < P)[None, :]
    xt, rm = _x_rows(x, b, hx, t0, T, HX, D, BD, R, LOWP)  # read once, shared by the group's query heads
    acc = tl.zeros([R, BD], dtype=tl.float32)
    for gi in range(0, G):
        h = hx * G + gi
        wt = _w_head(w, h, x.dtype.element_ty, D, P, BD, BP, LOWP)
        xw = _mm(xt, wt, None, x.dtype.element_ty, PREC, LOWP)
        row_off = ((b * H + h).to(tl.int64) * T + t0 + tl.arange(0, R)[:, None])
        dxw = _dlogits(xw, bias, dout, row_off, h, rm[:, None] & valid, valid, eps, P, BP, KIND, HALF)
        acc = _mm(dxw, tl.trans(wt), acc, x.dtype.element_ty, PREC, LOWP)
    rows = t0 + tl.arange(0, R)
    tl.store(dx + (bx.to(tl.int64) * T + rows[:, None]) * D + rd[None, :], acc.to(dx.dtype.element_ty),
             mask=rm[:, None] & (rd[None, :] < D))


def precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the kernels' fp32-operand products for inputs of ``dtype`` (module docstring)."""
    return F32_DOT.value if dtype == torch.float32 else "tf32"


def low_precision(dtype: torch.dtype) -> bool:
    """Whether the kernels' products take 16-bit operands for x of ``dtype`` (constexpr LOWP): for 16-bit x unless
    ``LOLSEARCH_KERNELS_FEATURES_16BIT=0``."""
    return dtype != torch.float32 and kernel_env.read("LOLSEARCH_KERNELS_FEATURES_16BIT")


def _precision_args(dtype: torch.dtype) -> dict:
    return dict(PREC=precision(dtype), LOWP=low_precision(dtype))


def _splits(tiles: int, heads: int, device: torch.device) -> int:
    """Programs per head of the backward: about four per SM in all, at most one per row tile."""
    return max(1, min(tiles, cdiv(4 * num_sms(device), heads)))


def config(kernel: str, esize: int, d: int, p: int, t: int | None = None, lowp: bool = False) -> dict:
    """First launch config of ``kernel`` (``fwd``, ``bwd`` or ``dx``) for x of ``esize`` bytes per element, head
    size d and P projected features, with 16-bit products (``lowp``) or not: the measured fast one where it holds
    (16-bit, W tile up to 128 × 64). With the sequence length ``t``, a program's tiles hold no more rows than there
    are: R down to the power of two (at least 16) that covers t, and a forward program takes no more tiles than t
    fills (a decode step's one row ran 4 × 64)."""
    narrow = esize == 2 and block(d) * block(p) <= 128 * 64
    if kernel == "fwd":
        cfg = FWD_LOWP if narrow and lowp else FWD
    elif kernel == "bwd":
        cfg = (BWD_LOWP if lowp and block(p) <= 64 else BWD) if narrow else BWD_WIDE  # T2R P 128: R64 spills
    else:
        cfg = DX if narrow else DX_WIDE
    if t is None or t >= cfg["R"] * cfg.get("L", 1):
        return cfg
    rows = min(cfg["R"], max(16, triton.next_power_of_2(t)))
    return {**cfg, "R": rows, **({"L": min(cfg["L"], cdiv(t, rows))} if "L" in cfg else {})}


def _smaller(cfg: tuple) -> tuple | None:
    """The next config down (sorted ``(name, value)`` pairs) when ``cfg`` needs more shared memory than the device
    has: one stage, then half the rows; None at one stage and R = 16."""
    c = dict(cfg)
    if c["num_stages"] > 1:
        c["num_stages"] = 1
    elif c["R"] > 16:
        c["R"] //= 2
    else:
        return None
    return tuple(sorted(c.items()))


def _fit(key: tuple, cfg: dict, run):
    """``run(cfg)``'s result at the first config from ``cfg`` down that fits the device's shared memory, or None
    where none does (:func:`fit_shared_memory`: remembered per shape)."""
    fit, out = fit_shared_memory(key, tuple(sorted(cfg.items())), _smaller, lambda c: run(dict(c)))
    return None if fit is None else out


def _features_torch(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, kind: int, groups: int,
                    halfspace: bool, eps: float) -> torch.Tensor:
    """The kernels' φ ``[B, H, T, F]`` in fp32 by the modules' torch ops, for heads whose W tile does not fit the
    device's shared memory at any config (e.g. T2R with P = 256 at D = 128 in fp32)."""
    xw = project(x.float().repeat_interleave(groups, 1), w)
    if kind == 0:
        return signed_softmax(xw, halfspace, eps)
    return relu_features(xw + bias[None, :, None], eps)


class FeatureMapFn(torch.autograd.Function):
    """Autograd wrapper of the kernels; x contiguous, W (and b) fp32 contiguous."""

    @staticmethod
    def forward(ctx, x, w, bias, kind: int, groups: int, halfspace: bool, eps: float, out_dtype: torch.dtype):
        b, hx, t, d = x.shape
        h, _, p = w.shape
        f = 2 * p if kind == 0 and not halfspace else p
        out = torch.empty(b, h, t, f, device=x.device, dtype=out_dtype)
        prec = _precision_args(x.dtype)

        def run(cfg: dict) -> torch.Tensor:
            features_fwd_kernel[(cdiv(t, cfg["R"] * cfg["L"]), b * h)](
                x, w, w if bias is None else bias, out, t, h, groups, hx, eps, D=d, P=p, BD=block(d), BP=block(p),
                KIND=kind, HALF=halfspace, **prec, **cfg)
            return out

        first = config("fwd", x.element_size(), d, p, t, prec["LOWP"])
        if _fit(("fwd", x.dtype, prec["LOWP"], d, p, kind, halfspace, False), first, run) is None:
            out.copy_(_features_torch(x, w, bias, kind, groups, halfspace, eps))
        ctx.save_for_backward(x, w, bias)
        ctx.kind, ctx.groups, ctx.halfspace, ctx.eps = kind, groups, halfspace, eps
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, bias = ctx.saved_tensors
        b, hx, t, d = x.shape
        h, _, p = w.shape
        want_dx = ctx.needs_input_grad[0]
        want_dw = any(ctx.needs_input_grad[1:3])
        dout = dout.contiguous()
        args = dict(D=d, P=p, BD=block(d), BP=block(p), KIND=ctx.kind, HALF=ctx.halfspace,
                    **_precision_args(x.dtype))
        bias_arg = w if bias is None else bias
        key = (x.dtype, args["LOWP"], d, p, ctx.kind, ctx.halfspace, want_dx)
        if not want_dw:  # frozen maps (e.g. a LoRA stage that does not train them): dx alone, every tile in parallel
            dx = torch.empty_like(x)

            def run_dx(cfg: dict) -> torch.Tensor:
                features_dx_kernel[(cdiv(t, cfg["R"]), b * hx)](
                    x, w, bias_arg, dout, dx, t, h, ctx.groups, hx, ctx.eps, **args, **cfg)
                return dx

            if _fit(("dx", *key), config("dx", x.element_size(), d, p, t, args["LOWP"]), run_dx) is None:
                dx = FeatureMapFn._grads_torch(ctx, x, w, bias, dout, True, False)[0]
            return dx, None, None, None, None, None, None, None

        def run(cfg: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            tiles = b * cdiv(t, cfg["R"])
            nsplit = _splits(tiles, h, x.device)
            # dx per query head: in x's dtype where each x head serves one query head, else fp32 and summed per
            # group; none where x needs no gradient (attention transfer: q and k come from frozen projections)
            dxq = torch.empty(b if want_dx else 0, h, t, d, device=x.device,
                              dtype=x.dtype if ctx.groups == 1 else torch.float32)
            dw = torch.empty(nsplit, h, d, p, device=x.device, dtype=torch.float32)
            db = torch.empty(nsplit if bias is not None else 0, h, p, device=x.device, dtype=torch.float32)
            features_bwd_kernel[(nsplit, h)](
                x, w, bias_arg, dout, dxq, dw, db, t, h, ctx.groups, hx, tiles, ctx.eps, WANT_DX=want_dx, **args,
                **cfg)
            return dxq, dw, db

        fitted = _fit(("bwd", *key), config("bwd", x.element_size(), d, p, t, args["LOWP"]), run)
        if fitted is None:
            return (*FeatureMapFn._grads_torch(ctx, x, w, bias, dout, want_dx, True), None, None, None, None, None)
        dxq, dw, db = fitted
        dx = None
        if want_dx:
            dx = (dxq.view(b, hx, ctx.groups, t, d).sum(2) if ctx.groups > 1 else dxq).to(x.dtype)
        return dx, dw.sum(0), db.sum(0) if bias is not None else None, None, None, None, None, None

    @staticmethod
    def _grads_torch(ctx, x, w, bias, dout, want_dx: bool, want_dw: bool) -> tuple:
        """(dx, dW, db) of :func:`_features_torch` by autograd (None where not wanted)."""
        with torch.enable_grad():
            xr = x.detach().requires_grad_(want_dx)
            wr = w.detach().requires_grad_(want_dw)
            br = None if bias is None else bias.detach().requires_grad_(want_dw)
            phi = _features_torch(xr, wr, br, ctx.kind, ctx.groups, ctx.halfspace, ctx.eps)
            wanted = [t for t, want in ((xr, want_dx), (wr, want_dw), (br, want_dw and br is not None)) if want]
            grads = iter(torch.autograd.grad(phi, wanted, dout.float()))
        dx = next(grads).to(x.dtype) if want_dx else None
        dw = next(grads) if want_dw else None
        db = next(grads) if want_dw and bias is not None else None
        return dx, dw, db


def fused_features(kind: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   halfspace: bool = False, eps: float = 1e-12, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Features of every query head by a fused kernel.

    Args:
        kind: ``"hedgehog"`` or ``"t2r"`` (:data:`KINDS`).
        x: ``[B, HX, T, D]`` queries (HX = H) or keys at their kv heads (HX divides H), fp32/bf16/fp16.
        weight: ``[H, D, P]`` projection per query head (used in fp32; its gradient is fp32).
        bias: ``[H, P]`` (T2R only).
        halfspace: Hedgehog's softmax(xW) alone (F = P) instead of both signs (F = 2P).
        eps: features are clamped at ``eps`` from below (no gradient where clamped).
        out_dtype: dtype of φ (default x's).

    Returns:
        φ ``[B, H, T, F]``. Gradients flow to x, weight and bias.
    """
    if kind not in KINDS:
        raise ValueError(f"no fused kernel for feature map {kind!r} (have {', '.join(KINDS)})")
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"x must be [B, HX, T, D] and weight [H, D, P], got {tuple(x.shape)}, {tuple(weight.shape)}")
    h, hx, p = weight.shape[0], x.shape[1], weight.shape[2]
    if hx == 0 or h % hx:
        raise ValueError(f"{h} query heads are not a multiple of x's {hx} heads")
    if (bias is None) != (kind == "hedgehog") or (bias is not None and bias.shape != (h, p)):
        raise ValueError(f"{kind} takes {'no bias' if kind == 'hedgehog' else f'a bias [H, P] = [{h}, {p}]'}, "
                         f"got {None if bias is None else tuple(bias.shape)}")
    bias = None if bias is None else bias.float().contiguous()
    return FeatureMapFn.apply(x.contiguous(), weight.float().contiguous(), bias, KINDS[kind], h // hx, halfspace, eps,
                              out_dtype or x.dtype)


__all__ = ["KINDS", "FeatureMapFn", "config", "fused_features"]
