# ruff: noqa: B023 - each lambda is called before the loop moves on
"""Variants of the fused Hedgehog map's kernels (forward, frozen-map dx), timed by CUDA-graph replay on the GPU.

    python3 results/perf/step_parity_20261207/fmap_probe.py

Each variant runs 20 launches captured in one CUDA graph (so host launch time is not counted); the median of 7
replays, per launch, in µs, with the effective bandwidth (x + dφ read, dx written; x read, φ written). Variants:
the committed kernels (``featuremap.py``, TF32 products on fp32 operands) and a copy whose products take the inputs'
16-bit operands (``LOWP``; W rounded to x's dtype), at several row tiles and warps. Each variant's output is
compared with the committed kernel's (max |diff| / max |ref|).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from lolsearch.kernels import featuremap as fm
from lolsearch.kernels._common import block, cdiv

SHAPES = [("smol-q", 8, 9, 1, 1024, 64, 64), ("smol-k", 8, 3, 3, 1024, 64, 64),
          ("l8b-q", 8, 32, 1, 1024, 128, 64), ("l8b-k", 8, 8, 4, 1024, 128, 64)]


@triton.jit
def dx_lowp_kernel(x, w, dout, dx, T, H, G, HX, eps, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr,
                   BP: tl.constexpr, R: tl.constexpr):
    pid = tl.program_id(0)
    bx = tl.program_id(1)
    b = bx // HX
    hx = bx % HX
    t0 = pid * R
    rd = tl.arange(0, BD)
    rp = tl.arange(0, BP)
    valid = (rp < P)[None, :]
    rows = t0 + tl.arange(0, R)
    rm = rows < T
    xt = tl.load(x + (bx.to(tl.int64) * T + rows[:, None]) * D + rd[None, :], mask=rm[:, None] & (rd[None, :] < D),
                 other=0.0)
    acc = tl.zeros([R, BD], dtype=tl.float32)
    for gi in range(0, G):
        h = hx * G + gi
        wt = fm._w_head(w, h, D, P, BD, BP).to(xt.dtype)
        xw = tl.dot(xt, wt)
        row_off = ((b * H + h).to(tl.int64) * T + rows[:, None])
        m = rm[:, None] & valid
        g = tl.load(dout + row_off * 2 * P + rp[None, :], mask=m, other=0.0).to(tl.float32)
        g2 = tl.load(dout + row_off * 2 * P + P + rp[None, :], mask=m, other=0.0).to(tl.float32)
        dxw = fm._softmax_grad(fm._softmax_rows(xw, valid), g, eps)
        dxw -= fm._softmax_grad(fm._softmax_rows(-xw, valid), g2, eps)
        acc = tl.dot(dxw.to(xt.dtype), tl.trans(wt), acc)
    tl.store(dx + (bx.to(tl.int64) * T + rows[:, None]) * D + rd[None, :], acc.to(dx.dtype.element_ty),
             mask=rm[:, None] & (rd[None, :] < D))


@triton.jit
def fwd_lowp_kernel(x, w, out, T, H, G, HX, eps, D: tl.constexpr, P: tl.constexpr, BD: tl.constexpr, BP: tl.constexpr,
                    R: tl.constexpr, L: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rp = tl.arange(0, BP)
    rd = tl.arange(0, BD)
    valid = (rp < P)[None, :]
    wt = fm._w_head(w, h, D, P, BD, BP).to(out.dtype.element_ty)
    for li in range(L):
        t0 = (pid * L + li) * R
        rows = t0 + tl.arange(0, R)
        rm = rows < T
        xt = tl.load(x + ((b * HX + h // G).to(tl.int64) * T + rows[:, None]) * D + rd[None, :],
                     mask=rm[:, None] & (rd[None, :] < D), other=0.0)
        xw = tl.dot(xt, wt)
        base = out + (bh.to(tl.int64) * T + rows[:, None]) * 2 * P + rp[None, :]
        m = rm[:, None] & valid
        tl.store(base, tl.maximum(fm._softmax_rows(xw, valid), eps).to(out.dtype.element_ty), mask=m)
        tl.store(base + P, tl.maximum(fm._softmax_rows(-xw, valid), eps).to(out.dtype.element_ty), mask=m)


def graphed_us(fn, n: int = 20, reps: int = 7) -> float:
    """Median µs per call of ``fn`` over ``reps`` replays of a CUDA graph of ``n`` calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / n)
    return sorted(times)[reps // 2]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def main() -> None:
    print(torch.cuda.get_device_name())  # noqa: T201
    g = torch.Generator("cuda").manual_seed(0)
    for name, b, hx, grp, t, d, p in SHAPES:
        h = hx * grp
        x = torch.randn(b, hx, t, d, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(h, d, p, device="cuda", generator=g) / d**0.5
        dout = torch.randn(b, h, t, 2 * p, device="cuda", dtype=torch.bfloat16, generator=g)
        common = dict(D=d, P=p, BD=block(d), BP=block(p))
        mb_dx = (x.numel() * 2 * 2 + dout.numel() * 2) / 1e6
        mb_fwd = (x.numel() * 2 + dout.numel() * 2) / 1e6
        ref = torch.empty_like(x)
        cfg = fm.config("dx", 2, d, p, t)
        run = lambda: fm.features_dx_kernel[(cdiv(t, cfg["R"]), b * hx)](  # noqa: E731
            x, w, w, dout, ref, t, h, grp, hx, 1e-12, KIND=0, HALF=False, PREC="tf32", **common, **cfg)
        us = graphed_us(run)
        print(f"dx  {name:7s} committed {cfg}: {us:7.1f} us {mb_dx / us:6.0f} GB/s", flush=True)  # noqa: T201
        for r, nw in ((64, 4), (32, 4), (64, 8), (128, 8), (128, 4)):
            out = torch.empty_like(x)
            run = lambda: dx_lowp_kernel[(cdiv(t, r), b * hx)](  # noqa: E731
                x, w, dout, out, t, h, grp, hx, 1e-12, **common, R=r, num_warps=nw, num_stages=1)
            try:
                us = graphed_us(run)
            except Exception as err:  # noqa: BLE001
                print(f"dx  {name:7s} lowp R{r} w{nw}: {type(err).__name__}", flush=True)  # noqa: T201
                continue
            print(f"dx  {name:7s} lowp R{r:3d} w{nw}: {us:7.1f} us {mb_dx / us:6.0f} GB/s  rel diff {_rel(out, ref):.1e}",  # noqa: T201
                  flush=True)
        phi = torch.empty(b, h, t, 2 * p, device="cuda", dtype=torch.bfloat16)
        cfg = fm.config("fwd", 2, d, p, t)
        run = lambda: fm.features_fwd_kernel[(cdiv(t, cfg["R"] * cfg["L"]), b * h)](  # noqa: E731
            x, w, w, phi, t, h, grp, hx, 1e-12, KIND=0, HALF=False, PREC="tf32", **common, **cfg)
        us = graphed_us(run)
        print(f"fwd {name:7s} committed {cfg}: {us:7.1f} us {mb_fwd / us:6.0f} GB/s", flush=True)  # noqa: T201
        for r, lt, nw in ((64, 4, 4), (64, 1, 4), (64, 2, 4), (128, 2, 8), (128, 1, 4)):
            out = torch.empty_like(phi)
            run = lambda: fwd_lowp_kernel[(cdiv(t, r * lt), b * h)](  # noqa: E731
                x, w, out, t, h, grp, hx, 1e-12, **common, R=r, L=lt, num_warps=nw, num_stages=1)
            us = graphed_us(run)
            print(f"fwd {name:7s} lowp R{r:3d} L{lt} w{nw}: {us:7.1f} us {mb_fwd / us:6.0f} GB/s  "  # noqa: T201
                  f"rel diff {_rel(out, phi):.1e}", flush=True)
        cp = torch.empty_like(dout)
        us = graphed_us(lambda: cp.copy_(dout))
        print(f"copy {name:7s} dφ-sized copy: {us:7.1f} us {dout.numel() * 4 / 1e6 / us:6.0f} GB/s", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
