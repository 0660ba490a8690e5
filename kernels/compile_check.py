"""Compile every kernel for sm_90 (Hopper) without a GPU and report registers, spills and shared memory.

    python -m lolsearch.kernels.compile_check [--dtype bf16] [--dims 128x128 64x128] [--all-configs]

Uses Triton's NVIDIA backend and its bundled ptxas/cuobjdump (no driver needed). A kernel that needs more
than 255 registers spills to local memory (STACK > 0); shared memory above 232448 bytes cannot launch on an
H100/H200. Pointer arguments are marked 16-byte aligned as the JIT does, so loads vectorize and loops pipeline.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from lolsearch.kernels import _bwd, _bwd_window, _fwd, decode, featuremap
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

SMEM_LIMIT = 232448


def _jobs(dt: str, d: int, f: int, small: bool) -> dict:
    """kernel name -> (kernel, pointer/float arg types, constexprs), as hybrid.py / decode.py launch them
    (small: the branch-free walk / window variants used for windows within two tiles, e.g. w = 64)."""
    p = "*" + dt
    bdk, bf = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(f))
    bd = min(bdk, 128 if bf <= 128 else 64)
    f32, i32 = "*fp32", "*i32"
    fmap = dict(D=d, P=f // 2, BD=bdk, BP=max(16, triton.next_power_of_2(f // 2)), KIND=0, HALF=False,
                PREC="tf32x3" if dt == "fp32" else "tf32", LOWP=dt != "fp32")
    fmap_bwd = {"x": p, "w": f32, "bias": f32, "dout": p, "dx": f32, "dw": f32, "db": f32, "eps": "fp32"}
    esize = 4 if dt == "fp32" else 2

    def fcfg(kernel: str, fp: int) -> dict:  # the feature maps' first launch config (rows, warps, stages)
        return dict(featuremap.config(kernel, esize, d, fp, lowp=dt != "fp32"))

    jobs = {
        "seg_sums": (_fwd.seg_sums_kernel, {"fk": p, "v": p, "st": f32}, dict(D=d, F=f, BF=min(bf, 64), BD=min(bdk, 64), BT=64)),
        "scan": (_fwd.scan_kernel, {"st": f32}, dict(REVERSE=False, BLOCK=1024)),
        "fwd_state": (_fwd.fwd_state_kernel, {"fq": p, "fk": p, "v": p, "st": f32, "ys": p, "dens": f32},
                      dict(D=d, F=f, BF=bf, BD=bd, BT=64, SMALL=small)),
        "fwd_window": (_fwd.fwd_window_kernel, {**dict.fromkeys(("q", "k", "v", "fq", "fk", "ys", "o", "o_lo"), p), "gamma": f32,
                       "dens": f32, "st": f32, "m_out": f32, "z_out": f32, "am_out": i32, "qk_scale": "fp32"},
                       dict(D=d, F=f, BDK=bdk, BF=bf, BT=64, SMALL=small, LIN_CUR=False, SAVE_LO=dt != "fp32",
                       GROUPED=True, TOK_O=True, PAR=False, HAS_ST=True)),
        "bwd_pre": (_bwd.bwd_pre_kernel, {"o": p, "o_lo": p, "do": p, "zden": f32, "e_out": f32},
                    dict(D=d, BDK=bdk, BT=64, HAS_LO=dt != "fp32", TOK_O=True, TOK_DO=True)),
        "bwd_rsum": (_bwd.bwd_rsum_kernel, {"fq": p, "do": p, "zden": f32, "e_in": f32, "r": f32},
                     dict(D=d, F=f, BF=min(bf, 64), BD=min(bdk, 64), BT=64, TOK_DO=True)),
        "bwd_state_kv": (_bwd.bwd_state_kv_kernel, {"fq": p, "fk": p, "v": p, "do": p, "zden": f32, "e_in": f32, "r": f32,
                         "dfk": p if d <= bd else f32, "dv": f32}, dict(D=d, F=f, BF=bf, BD=bd, BT=64, SMALL=small, NEED_DV=True, TOK_DO=True)),
        "bwd_state_q": (_bwd.bwd_state_q_kernel, {"fk": p, "v": p, "do": p, "zden": f32, "e_in": f32, "st": f32, "dfq": p},
                        dict(D=d, F=f, BDK=bdk, BF=min(bf, 64), BT=64, SMALL=small, TOK_DO=True, PAR=False, HAS_ST=True)),
        "bwd_q": (_bwd_window.bwd_q_kernel, {**dict.fromkeys(("q", "k", "v", "do", "dq"), p), "gamma": f32,
                  "m2": f32, "zden": f32, "e_in": f32, "am": i32, "dc_out": f32, "dg_part": f32,
                  "qk_scale": "fp32", "scale": "fp32"}, dict(D=d, BDK=bdk, BT=64, NEED_DQ=True, GROUPED=True,
                  TOK_DO=True)),
        "bwd_kv": (_bwd_window.bwd_kv_kernel, {**dict.fromkeys(("q", "k", "v", "fq", "fk", "do", "dk", "dv", "dfk"), p), "gamma": f32,
                   "m2": f32, "zden": f32, "e_in": f32, "dc_in": f32, "am": i32, "dv_s": f32, "dfk_s": f32, "r": f32,
                   "qk_scale": "fp32", "scale": "fp32"}, dict(D=d, F=f, BDK=bdk, BF=bf, BT=64, BQ=32, NEED_DK=True,
                   NEED_DV=True, TOK_DO=True, STATE_DFK=d <= bd, PAR=False, HAS_ST=True)),
        "decode": (decode.decode_kernel, {**dict.fromkeys(("q", "fq", "kc", "vc", "fk_abs", "v_abs", "o"), p), "slot_pos": "*i64",
                   "S": f32, "z": f32, "gamma": f32, "scale": "fp32"},
                   dict(D=d, F=f, BDK=bdk, BFT=min(bf, max(16, 4096 // bdk)), BC=32, SOFT=True)),
        # the fused Hedgehog map with F = 2P features (P = f // 2), keys at kv heads (dx summed in fp32)
        "features_fwd": (featuremap.features_fwd_kernel, {"x": p, "w": f32, "bias": f32, "out": p, "eps": "fp32"},
                         {**fmap, **fcfg("fwd", f // 2)}),
        "features_bwd": (featuremap.features_bwd_kernel, fmap_bwd, {**fmap, **fcfg("bwd", f // 2), "WANT_DX": True}),
        # frozen maps (a LoRA stage): dx alone, one row tile per program
        "features_dx": (featuremap.features_dx_kernel, {"x": p, "w": f32, "bias": f32, "dout": p, "dx": p, "eps": "fp32"},
                        {**fmap, **fcfg("dx", f // 2)}),
        # the fused T2R map with F = P features
        "features_fwd_t2r": (featuremap.features_fwd_kernel, {"x": p, "w": f32, "bias": f32, "out": p, "eps": "fp32"},
                             {**fmap, "P": f, "BP": bf, "KIND": 1, **fcfg("fwd", f)}),
        "features_bwd_t2r": (featuremap.features_bwd_kernel, fmap_bwd,
                             {**fmap, "P": f, "BP": bf, "KIND": 1, **fcfg("bwd", f), "WANT_DX": True}),
    }
    # the parallel schedule (_par) and the quadratic mode (_quad): the kernels whose variants they launch
    for name, extra in (("fwd_window", dict(SMALL=False, LIN_CUR=False)), ("bwd_state_q", dict(SMALL=False)),
                        ("bwd_kv", dict(STATE_DFK=False))):
        kernel, types, consts = jobs[name]
        for tag, has_st in (("_par", True), ("_quad", False)):
            jobs[name + tag] = (kernel, types, {**consts, **extra, "PAR": True, "HAS_ST": has_st})
    return jobs


def compile_sm90(kernel, types: dict, consts: dict, num_warps: int, num_stages: int, maxnreg: int | None = None):
    """Compiles for sm_90 (at most ``maxnreg`` registers per thread, when given); returns (compiled kernel,
    {reg, stack, smem})."""
    fn = kernel.fn if hasattr(kernel, "configs") else kernel  # autotuned: the JITFunction inside
    sig = {a: ("constexpr" if a in consts else types.get(a, "i32")) for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if sig[a].startswith("*")}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages, **({"maxnreg": maxnreg} if maxnreg else {})}
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(c.asm["cubin"])
        fh.flush()
        out = subprocess.run([tool, "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return c, {"reg": int(m.group(1)), "stack": int(m.group(2)), "smem": c.metadata.shared}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--dims", nargs="+", default=["128x128", "64x128"], help="DxF head/feature dims")
    ap.add_argument("--all-configs", action="store_true", help="every autotune config, not only the first")
    ap.add_argument("--only", nargs="+", help="kernel names")
    ap.add_argument("--general", action="store_true", help="the general-window variants (default: w <= 64 ones)")
    args = ap.parse_args(argv)
    bad = 0
    for dims in args.dims:
        d, f = (int(x) for x in dims.split("x"))
        for name, (kernel, types, consts) in _jobs(args.dtype, d, f, not args.general).items():
            if args.only and name not in args.only:
                continue
            # a plain launch's config: the feature maps' own (in consts), else Triton's default
            fixed = (consts.pop("num_warps", 4), consts.pop("num_stages", 3))
            cfgs = [(c.num_warps, c.num_stages, c.maxnreg) for c in getattr(kernel, "configs", [])] or [(*fixed, None)]
            for w, s, cap in cfgs if args.all_configs else cfgs[:1]:
                try:
                    _, r = compile_sm90(kernel, types, consts, w, s, cap)
                    flag = " SPILLS" if r["stack"] else ""
                    flag += " SMEM>LIMIT" if r["smem"] > SMEM_LIMIT else ""
                    bad += bool(flag)
                    capped = f" maxnreg {cap}" if cap else ""
                    print(f"{args.dtype} D{d} F{f} {name:13s} warps {w} stages {s}{capped}: regs {r['reg']:3d} "  # noqa: T201
                          f"stack {r['stack']:4d} smem {r['smem']:6d}{flag}")
                except Exception as err:  # noqa: BLE001 - report and go on
                    bad += 1
                    print(f"{args.dtype} D{d} F{f} {name} warps {w} stages {s}: FAILED {type(err).__name__}: {err}")  # noqa: T201
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
