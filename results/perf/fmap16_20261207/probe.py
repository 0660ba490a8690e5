# ruff: noqa: B023, T201 - each lambda is called before the loop moves on; a probe prints its table
"""The fused feature maps' kernels with 16-bit products (LOWP, the new default for 16-bit x) against one TF32 pass on
fp32 operands (the old path), at several launch configs, timed by CUDA-graph replay (``graphed_us`` of
``../step_parity_20261207/fmap_probe.py``: 20 launches per graph, median of 7 replays, µs per launch).

    python3 results/perf/fmap16_20261207/probe.py
    TRITON_INTERPRET=1 python3 results/perf/fmap16_20261207/probe.py --tiny   # CPU check: small shapes, one launch

Hedgehog, bf16, 8 × 1024 tokens: queries at every head, keys at their kv heads (SmolLM2: 9 / 3 heads, D 64;
Llama-3-8B: 32 / 8, D 128), P = 64 (F = 128). Kernels: forward, frozen-map dx, parameter gradients (+ dx). Each
LOWP output is compared with the TF32 one (max |diff| / max |ref|).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lolsearch.kernels import featuremap as fm
from lolsearch.kernels._common import block, cdiv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "step_parity_20261207"))
from fmap_probe import SHAPES, _rel, graphed_us  # noqa: E402

FWD_CFGS = [(64, 4, 4), (64, 2, 4), (64, 1, 4), (128, 2, 8), (128, 1, 4), (32, 4, 4)]  # R, L, warps
DX_CFGS = [(64, 4), (128, 4), (128, 8), (32, 4), (64, 8)]  # R, warps
BWD_CFGS = [(128, 8), (64, 4), (128, 4), (64, 8)]


def _once(fn) -> float:
    fn()
    return 0.0


def main() -> None:
    tiny = "--tiny" in sys.argv
    dev, dt = ("cpu", torch.float16) if tiny else ("cuda", torch.bfloat16)  # the interpreter runs no bf16
    timer = _once if tiny else graphed_us
    if not tiny:
        print(torch.cuda.get_device_name())
    g = torch.Generator(dev).manual_seed(0)
    for name, b, hx, grp, t, d, p in SHAPES:
        if tiny:
            b, t = 1, 130
        h = hx * grp
        x = torch.randn(b, hx, t, d, device=dev, dtype=dt, generator=g)
        w = torch.randn(h, d, p, device=dev, generator=g) / d**0.5
        dout = torch.randn(b, h, t, 2 * p, device=dev, dtype=dt, generator=g)
        common = dict(D=d, P=p, BD=block(d), BP=block(p), KIND=0, HALF=False)
        old = dict(PREC="tf32", LOWP=False)
        new = dict(PREC="tf32", LOWP=True)

        def fwd(out, prec, r, lt, nw):
            return lambda: fm.features_fwd_kernel[(cdiv(t, r * lt), b * h)](
                x, w, w, out, t, h, grp, hx, 1e-12, **common, **prec, R=r, L=lt, num_warps=nw, num_stages=1)

        def dxk(out, prec, r, nw):
            return lambda: fm.features_dx_kernel[(cdiv(t, r), b * hx)](
                x, w, w, dout, out, t, h, grp, hx, 1e-12, **common, **prec, R=r, num_warps=nw, num_stages=1)

        def bwd(dxq, dw, prec, r, nw):
            tiles = b * cdiv(t, r)
            ns = fm._splits(tiles, h, x.device)
            return lambda: fm.features_bwd_kernel[(ns, h)](
                x, w, w, dout, dxq, dw, dw, t, h, grp, hx, tiles, 1e-12, **common, **prec, WANT_DX=False, R=r,
                num_warps=nw, num_stages=1)

        ref = torch.empty(b, h, t, 2 * p, device=dev, dtype=dt)
        print(f"fwd {name:6s} tf32 R64 L4 w4: {timer(fwd(ref, old, 64, 4, 4)):7.1f} us", flush=True)
        for r, lt, nw in FWD_CFGS:
            out = torch.empty_like(ref)
            us = timer(fwd(out, new, r, lt, nw))
            print(f"fwd {name:6s} lowp R{r} L{lt} w{nw}: {us:7.1f} us  rel {_rel(out, ref):.1e}", flush=True)
        ref = torch.empty_like(x)
        print(f"dx  {name:6s} tf32 R64 w4: {timer(dxk(ref, old, 64, 4)):7.1f} us", flush=True)
        for r, nw in DX_CFGS:
            out = torch.empty_like(x)
            us = timer(dxk(out, new, r, nw))
            print(f"dx  {name:6s} lowp R{r} w{nw}: {us:7.1f} us  rel {_rel(out, ref):.1e}", flush=True)
        dxq = torch.empty(0, device=dev, dtype=dt)
        ref = torch.zeros(fm._splits(b * cdiv(t, 32), h, x.device), h, d, p, device=dev)
        us = timer(bwd(dxq, ref, old, 128, 8))
        ref_sum = ref[:fm._splits(b * cdiv(t, 128), h, x.device)].sum(0)
        print(f"dW  {name:6s} tf32 R128 w8: {us:7.1f} us", flush=True)
        for r, nw in BWD_CFGS:
            dw = torch.zeros_like(ref)
            us = timer(bwd(dxq, dw, new, r, nw))
            got = dw[:fm._splits(b * cdiv(t, r), h, x.device)].sum(0)
            print(f"dW  {name:6s} lowp R{r} w{nw}: {us:7.1f} us  rel {_rel(got, ref_sum):.1e}", flush=True)


if __name__ == "__main__":
    main()
