"""Row tiles and launch configs of the fused feature maps' kernels, timed on the GPU.

    python3 results/perf/features_tiles_20261206/probe.py OUT.json

Times ``features_fwd_kernel`` (R rows per tile, L tiles per program), ``features_dx_kernel`` and
``features_bwd_kernel`` without dx (attention transfer's case; beside it the old kernel that reloads W[h] per tile,
``old_bwd.py``), Hedgehog in bf16, at the SmolLM2 and Llama-3-8B shapes (8 × 1024 tokens; queries at every head, keys
at the kv heads), under each candidate config (spill-free at D = 64 and 128 in offline sm_90 compiles, Triton 3.9);
checks each config's outputs against the first config's, and writes per config the geometric mean over the shapes of
its time over the first config's (the old default), and the best config of each kernel, to OUT.json.
"""

from __future__ import annotations

import json
import math
import sys

import torch
from lolsearch.kernels import featuremap as fm

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from lolsearch.kernels._common import block, cdiv
from old_bwd import old_features_bwd_kernel  # noqa: E402

# (name, B, HX, G, T, D, P)
SHAPES = [("smol-q", 8, 9, 1, 1024, 64, 64), ("smol-k", 8, 3, 3, 1024, 64, 64),
          ("l8b-q", 8, 32, 1, 1024, 128, 64), ("l8b-k", 8, 8, 4, 1024, 128, 64)]
# (R, L, warps, stages) of the forward; (R, warps, stages) of the others; the first is the old default
FWD_CFGS = [(64, 1, 4, 3), (64, 2, 4, 3), (64, 4, 4, 3), (64, 4, 4, 1), (64, 2, 8, 1), (128, 1, 8, 1), (128, 2, 8, 1),
            (32, 4, 4, 1), (64, 8, 4, 1)]
DX_CFGS = [(32, 8, 2), (64, 8, 1), (64, 8, 2), (128, 8, 1), (32, 4, 1), (64, 4, 1)]
BWD_CFGS = [(32, 8, 2), (32, 8, 1), (64, 8, 1), (128, 8, 1)]  # the parameter-gradient kernel without dx (attention transfer)


def timed(kernel, grid: tuple[int, int], args: tuple, kwargs: dict, reps: int = 50) -> float:
    """Median µs of ``kernel[grid](*args, **kwargs)`` over ``reps`` launches (CUDA events around each)."""
    def fn() -> None:
        kernel[grid](*args, **kwargs)

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000)
    return sorted(times)[len(times) // 2]


def main(out: str) -> None:
    g = torch.Generator("cuda").manual_seed(0)
    result: dict = {"fwd": {}, "dx": {}, "bwd": {}}
    kernels = {"old": old_features_bwd_kernel, "new": fm.features_bwd_kernel}
    for name, b, hx, grp, t, d, p in SHAPES:
        h = hx * grp
        x = torch.randn(b, hx, t, d, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(h, d, p, device="cuda", generator=g) / d**0.5
        dout = torch.randn(b, h, t, 2 * p, device="cuda", dtype=torch.bfloat16, generator=g)
        common = dict(D=d, P=p, BD=block(d), BP=block(p), KIND=0, HALF=False, PREC="tf32")
        ref_fwd = ref_dx = ref_dw = None
        for r, lt, nw, ns in FWD_CFGS:
            o = torch.empty(b, h, t, 2 * p, device="cuda", dtype=torch.bfloat16)
            us = timed(fm.features_fwd_kernel, (cdiv(t, r * lt), b * h), (x, w, w, o, t, h, grp, hx, 1e-12),
                       dict(R=r, L=lt, num_warps=nw, num_stages=ns, **common))
            ref_fwd = o.clone() if ref_fwd is None else ref_fwd
            err = ((o.float() - ref_fwd.float()).abs().max() / ref_fwd.float().abs().max()).item()
            result["fwd"].setdefault(f"R{r}L{lt}w{nw}s{ns}", {})[name] = us
            print(f"fwd {name:7s} R{r:3d} L{lt} w{nw} s{ns}: {us:8.1f} us  max rel diff to default: {err:.1e}",  # noqa: T201
                  flush=True)
        for r, nw, ns in DX_CFGS:
            dx = torch.empty_like(x)
            us = timed(fm.features_dx_kernel, (cdiv(t, r), b * hx), (x, w, w, dout, dx, t, h, grp, hx, 1e-12),
                       dict(R=r, num_warps=nw, num_stages=ns, **common))
            ref_dx = dx.clone() if ref_dx is None else ref_dx
            err = ((dx.float() - ref_dx.float()).abs().max() / ref_dx.float().abs().max()).item()
            result["dx"].setdefault(f"R{r}w{nw}s{ns}", {})[name] = us
            print(f"dx  {name:7s} R{r:3d} w{nw} s{ns}: {us:8.1f} us  max rel diff to default: {err:.1e}", flush=True)  # noqa: T201
        for which, kernel in kernels.items():
            for r, nw, ns in BWD_CFGS:
                tiles = b * cdiv(t, r)
                nsplit = fm._splits(tiles, h, x.device)
                dw = torch.empty(nsplit, h, d, p, device="cuda")
                us = timed(kernel, (nsplit, h), (x, w, w, dout, x, dw, w, t, h, grp, hx, tiles, 1e-12),
                           dict(R=r, num_warps=nw, num_stages=ns, WANT_DX=False, **common))
                got = dw.sum(0)
                ref_dw = got if ref_dw is None else ref_dw
                err = ((got - ref_dw).abs().max() / ref_dw.abs().max()).item()
                result["bwd"].setdefault(f"{which}R{r}w{nw}s{ns}", {})[name] = us
                print(f"bwd {which} {name:7s} R{r:3d} w{nw} s{ns}: {us:8.1f} us  max rel diff to default: {err:.1e}",  # noqa: T201
                      flush=True)
    for kind, cfgs in list(result.items()):
        default = next(iter(cfgs.values()))
        for times in cfgs.values():
            times["geomean_vs_default"] = math.exp(sum(math.log(times[s] / default[s]) for s in default
                                                        if s != "geomean_vs_default") / len(SHAPES))
        best = min((c for c in cfgs if not c.startswith("old")), key=lambda c: cfgs[c]["geomean_vs_default"])
        result[f"best_{kind}"] = best
        print(f"{kind}: best {best}, {cfgs[best]['geomean_vs_default']:.3f} of the default's time", flush=True)  # noqa: T201
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
