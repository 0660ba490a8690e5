# ruff: noqa: T201 - a diagnostic that reports by printing
"""Long segments on the GPU: which kernel goes wrong when a segment walk spans several chunks (L > 1).

Runs hybrid_attention at T = 4097 with the segment length forced (hybrid.SEGMENT_CHUNKS = L) for several layouts,
windows and dtypes, and prints the relative RMS error of o (without autograd), of the segment states after the scan
(against a float64 prefix sum of φk vᵀ over the keys each segment starts after) and of the six gradients, all
against float64. With ``--old REV`` it also runs the state walks (fwd_state, bwd_state_q) of that git revision, to
tell a kernel change from the rest of the path. Run from the repo root on a CUDA machine:

    python3 results/kernels/seg_walk_20261204/diag.py --old 78a8742
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "kernels")]
sys.path.insert(0, os.path.join(ROOT, "kernels"))
from _launch import ensure_importable  # noqa: E402

ensure_importable()
import lolsearch.kernels.hybrid as hy  # noqa: E402
from kernel_testlib import GRAD_NAMES, make_inputs, reference_and_grads, rel_err  # noqa: E402
from lolsearch.kernels._common import BT, layout_id  # noqa: E402

from lolsearch.attention.layouts import get_layout  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: the Triton interpreter (TRITON_INTERPRET=1)


def old_kernels(rev: str) -> dict:
    """fwd_state_kernel and bwd_state_q_kernel of git revision ``rev`` (or of the folder ``rev`` holding that
    revision's _fwd.py and _bwd.py: the device's copy of the tree has no git), loaded as modules of their own."""
    out = {}
    tmp = tempfile.mkdtemp()
    for name, kern in (("_fwd", "fwd_state_kernel"), ("_bwd", "bwd_state_q_kernel")):
        if os.path.isdir(rev):
            path = os.path.join(rev, f"{name}.py")
        else:
            src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:kernels/{name}.py"], capture_output=True,
                                 text=True, check=True).stdout
            path = os.path.join(tmp, f"old{name}.py")
            with open(path, "w") as fh:
                fh.write(src)
        spec = importlib.util.spec_from_file_location(f"old{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out[kern] = getattr(mod, kern)
    return out


def state_error(inputs, window: int, layout: str, seg: int, st: torch.Tensor) -> float:
    """Relative error of the scanned segment states st [BH, NS+1, F*D+F] against float64 prefix sums."""
    q, k, v, fq, fk, _ = (x.double() for x in inputs)
    b, h, t, d = q.shape
    f = fq.shape[-1]
    kv = v.repeat_interleave(h // k.shape[1], dim=1)
    lay = get_layout(layout) if layout_id(layout, window)[0] else None
    errs = []
    ns = st.shape[1] - 1
    for s in range(ns):
        n0 = s * seg * BT
        start = max(0, int(lay.softmax_start(n0, window))) if lay is not None else n0 + 1
        kend = min(start // BT, n0 // BT) * BT
        S = torch.einsum("bhtf,bhtd->bhfd", fk[:, :, :kend], kv[:, :, :kend]).reshape(b * h, f * d)
        z = fk[:, :, :kend].sum(2).reshape(b * h, f)
        errs.append(rel_err(st[:, s].double(), torch.cat([S, z], -1)) if kend else st[:, s].abs().max().item())
    return max(errs)


def run(dtype, d, f, layout, window, seg, t: int) -> dict:
    hy.SEGMENT_CHUNKS = seg
    inputs = make_inputs(1, 4, 2, t, d, f, device=DEV, dtype=dtype, seed=d + f)
    lay, w = layout_id(layout, window)
    with torch.no_grad():
        o_eval = hy.hybrid_attention(*inputs, window, layout)
        _, st, _, plan, _ = hy._forward(*inputs, lay, w, None, None)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hy.hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    grads = torch.autograd.grad(o, leaves, do)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    row = {"o_eval": rel_err(o_eval, o_ref), "o": rel_err(o, o_ref), "states": state_error(inputs, window, layout, plan[0], st)}
    row.update({f"d{n}": rel_err(g, r) for n, g, r in zip(GRAD_NAMES, grads, ref_grads, strict=True)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default=None, help="git revision (or folder of its _fwd.py, _bwd.py) whose state walks to run as well")
    ap.add_argument("--t", type=int, default=4097)
    ap.add_argument("--dims", type=int, nargs=2, default=(64, 64), help="D F of the layout cases")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args()
    new = {"fwd_state_kernel": hy.fwd_state_kernel, "bwd_state_q_kernel": hy.bwd_state_q_kernel}
    variants = {"new": new}
    if args.old:
        variants["old"] = old_kernels(args.old)
    cases = [(layout, window) for layout, window in
             [("sliding", 100), ("sliding", 0), ("sliding", 64), ("terrace", 100), ("terrace", 256), ("sliding", 256)]]
    print(f"{'variant':12} {'dtype':9} {'D':>3} {'F':>3} {'layout':8} {'w':>3} {'L':>2} " + " ".join(
        f"{c:>8}" for c in ["o_eval", "o", "states", *[f"d{n}"[:8] for n in GRAD_NAMES]]), flush=True)
    for name, kerns in variants.items():
        for attr, kern in kerns.items():
            setattr(hy, attr, kern)
        for dtype in (getattr(torch, x) for x in args.dtypes):
            for layout, window in cases:
                for seg in (1, 2, 4):
                    r = run(dtype, *args.dims, layout, window, seg, args.t)
                    print(f"{name:12} {str(dtype)[6:]:9} {args.dims[0]:>3} {args.dims[1]:>3} {layout:8} {window:>3} {seg:>2} "
                          + " ".join(f"{x:8.1e}" for x in r.values()), flush=True)
        for d, f in ((128, 256),) if DEV == "cuda" else ():
            r = run(torch.float32, d, f, "sliding", 100, 4, args.t)
            print(f"{name:12} {'float32':9} {d:>3} {f:>3} {'sliding':8} {100:>3} {4:>2} "
                  + " ".join(f"{x:8.1e}" for x in r.values()), flush=True)


if __name__ == "__main__":
    main()
