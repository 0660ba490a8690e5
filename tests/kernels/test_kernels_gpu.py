"""The kernels on a CUDA GPU: bf16/fp16 against an fp32 reference (5e-3 outputs, 1e-2 gradients), fp32 at 2e-5 (3-pass TF32 dots),
larger T and the Llama-3-8B head shape, and a matrix over dtype x D x F x layout x window x T against the float64
reference. Run with ``pytest -m gpu tests/kernels`` (add ``-n 16 --dist loadgroup`` with pytest-xdist: the matrix is
grouped per compiled variant, dtype/D/F)."""

from __future__ import annotations

import pytest
import torch
from kernel_testlib import assert_close_grads, gamma_terms_norm, make_inputs, reference_and_grads, rel_err
from test_decode_kernel import DECODE_CASES, decode_case

from lolsearch.attention import hybrid_attention_chunked
from lolsearch.attention.chunked import LinearState, expand_kv

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DEV = "cuda"
TOLS = {torch.bfloat16: (5e-3, 1e-2), torch.float16: (5e-3, 1e-2), torch.float32: (2e-5, 2e-5)}

# (T, layout, window, D, F, H, Hkv, dtype)
CASES = [
    (63, "sliding", 64, 64, 128, 4, 2, torch.bfloat16),
    (257, "terrace", 64, 64, 128, 4, 2, torch.bfloat16),
    (257, "sliding", 16, 128, 128, 4, 1, torch.bfloat16),
    (1000, "sliding", 64, 128, 128, 4, 2, torch.bfloat16),
    (1000, "terrace", 100, 64, 128, 4, 2, torch.bfloat16),
    (1000, "sliding", 0, 64, 128, 4, 2, torch.bfloat16),
    (1000, "sliding", 256, 128, 128, 4, 2, torch.bfloat16),
    (4096, "terrace", 64, 128, 128, 4, 2, torch.bfloat16),
    (4096, "sliding", 64, 64, 128, 3, 1, torch.bfloat16),
    (1000, "terrace", 16, 64, 128, 4, 2, torch.float16),
    (257, "sliding", 64, 64, 64, 4, 2, torch.float32),
    (1000, "terrace", 64, 64, 64, 4, 2, torch.float32),
    (1000, "sliding", 1, 64, 64, 4, 2, torch.float32),
]


def _set_schedule(monkeypatch, mode: str) -> None:
    """Sets the schedule at every length: "walk", "quad" (the quadratic mode) or "parN" (parallel, N-chunk segments)."""
    if mode == "quad":
        monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", str(1 << 30))
    elif mode.startswith("par"):
        monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_T", str(1 << 30))
        monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_SEG", mode[3:])


@pytest.mark.parametrize("mode", ["walk", "quad", "par4"])
@pytest.mark.parametrize("t,layout,window,d,f,h,hkv,dtype", CASES)
def test_gpu_forward_and_gradients(t, layout, window, d, f, h, hkv, dtype, mode, nan_alloc, monkeypatch):
    from lolsearch.kernels import hybrid_attention

    _set_schedule(monkeypatch, mode)
    tol_o, tol_g = TOLS[dtype]
    inputs = make_inputs(1, h, hkv, t, d, f, device=DEV, dtype=dtype, seed=t + window)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    label = f"T={t} {layout} w={window} D={d} F={f} {dtype} {mode}"
    assert o.dtype == dtype
    assert rel_err(o, o_ref) <= tol_o, f"{label}: output error {rel_err(o, o_ref):.2e}"
    grads = torch.autograd.grad(o, leaves, do)
    assert_close_grads(grads, ref_grads, tol_g, label)


MATRIX_T = (1, 63, 65, 1000, 4097)
# segment lengths in chunks (None: the plan's own, one chunk at these batch sizes): a walk over several chunks
# absorbs the key tiles that leave the window between them, a path the plan's one-chunk segments never run;
# "quad": the quadratic mode (no segments); "par2": the parallel schedule, segments of 2 chunks
MATRIX_SEG = (None, 3, 2, 5, "quad", "par2")
MATRIX_LW = [("sliding", 0), ("sliding", 1), ("sliding", 7), ("sliding", 64), ("sliding", 100), ("sliding", 256),
             ("terrace", 1), ("terrace", 7), ("terrace", 64), ("terrace", 100), ("terrace", 256)]  # w = 0 is one layout


def _matrix_cases():
    """dtype {fp32, bf16, fp16} x D {64, 128} x F {64, 128, 256} x every (layout, window), each at one T: the T
    rotates so that every (dtype, D, F) meets every T twice and every (layout, window) meets every T. GQA groups
    of 2 and 4 (H = 4), batch 2 up to T = 1000, segments of MATRIX_SEG chunks (or another schedule) in rotation.
    198 cases; one xdist
    group per compiled variant (dtype, D, F)."""
    cases = []
    combos = [(dt, d, f) for dt in (torch.float32, torch.bfloat16, torch.float16) for d in (64, 128) for f in (64, 128, 256)]
    for i, (dt, d, f) in enumerate(combos):
        group = f"{str(dt).split('.')[1]}-D{d}-F{f}"
        for j, (layout, window) in enumerate(MATRIX_LW):
            t = MATRIX_T[(i + j) % len(MATRIX_T)]
            hkv = 2 if (i + j) % 2 else 1
            b = 2 if t <= 1000 else 1
            seg = MATRIX_SEG[(i + 2 * j) % len(MATRIX_SEG)]
            cases.append(pytest.param(dt, d, f, layout, window, t, hkv, b, seg,
                                      id=f"{group}-{layout}{window}-T{t}-kv{hkv}-L{seg or 'auto'}",
                                      marks=pytest.mark.xdist_group(group)))
    return cases


@pytest.mark.parametrize("dtype,d,f,layout,window,t,hkv,b,seg", _matrix_cases())
def test_gpu_matrix_vs_float64(dtype, d, f, layout, window, t, hkv, b, seg, nan_alloc, monkeypatch):
    """Forward and all six gradients against the float64 reference, at the tolerances of TOLS."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    if isinstance(seg, str):
        _set_schedule(monkeypatch, seg)
    else:
        monkeypatch.setattr(hy, "SEGMENT_CHUNKS", seg)

    tol_o, tol_g = TOLS[dtype]
    h = 4
    inputs = make_inputs(b, h, hkv, t, d, f, device=DEV, dtype=dtype, seed=t + window + d + f)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    label = f"B={b} T={t} {layout} w={window} D={d} F={f} H=4/{hkv} L={seg or 'auto'} {dtype}"
    assert o.dtype == dtype and torch.isfinite(o).all(), label
    assert rel_err(o, o_ref) <= tol_o, f"{label}: output error {rel_err(o, o_ref):.2e}"
    grads = torch.autograd.grad(o, leaves, do)
    assert_close_grads(grads, ref_grads, tol_g, label, gamma_terms_norm(inputs, window, layout, do))


def _long_segment_cases():
    combos = [(dt, d, f) for dt in (torch.float32, torch.bfloat16, torch.float16) for d in (64, 128) for f in (64, 128, 256)]
    return [pytest.param(dt, d, f, id=f"{str(dt).split('.')[1]}-D{d}-F{f}",
                         marks=pytest.mark.xdist_group(f"{str(dt).split('.')[1]}-D{d}-F{f}")) for dt, d, f in combos]


@pytest.mark.parametrize("dtype,d,f", _long_segment_cases())
def test_gpu_long_segments_vs_float64(dtype, d, f, nan_alloc, monkeypatch):
    """Four chunks per segment (the matrix's small batches get one), T = 4097, sliding 100: forward without autograd,
    then forward and all six gradients, against the float64 reference. Training shapes (many heads, batch 8) and
    the balanced plan of 16-bit forwards run segments this long or longer."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    monkeypatch.setattr(hy, "SEGMENT_CHUNKS", 4)
    tol_o, tol_g = TOLS[dtype]
    t, window, layout, h, hkv = 4097, 100, "sliding", 4, 2
    inputs = make_inputs(1, h, hkv, t, d, f, device=DEV, dtype=dtype, seed=d + f)
    with torch.no_grad():
        o_eval = hybrid_attention(*inputs, window, layout)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    label = f"L=4 T={t} {layout} w={window} D={d} F={f} {dtype}"
    assert rel_err(o_eval, o_ref) <= tol_o, f"{label}: output error without autograd {rel_err(o_eval, o_ref):.2e}"
    assert rel_err(o, o_ref) <= tol_o, f"{label}: output error {rel_err(o, o_ref):.2e}"
    grads = torch.autograd.grad(o, leaves, do)
    assert_close_grads(grads, ref_grads, tol_g, label, gamma_terms_norm(inputs, window, layout, do))


@pytest.mark.parametrize("wanted", ["phi_q phi_k gamma", "q v phi_q phi_k"])
@pytest.mark.parametrize("dtype,d,f,layout,window", [(torch.bfloat16, 64, 128, "sliding", 64),
                                                     (torch.bfloat16, 128, 128, "terrace", 100),
                                                     (torch.float32, 128, 128, "sliding", 64)])
def test_gpu_only_the_requested_gradients(dtype, d, f, layout, window, wanted, nan_alloc):
    """Gradients of a subset of the inputs (attention transfer: φ and γ only), batch 2, T = 1000, GQA group of 2,
    against the float64 reference; fp32 at D = F = 128 splits the walks' value columns (dφk through atomics)."""
    from kernel_testlib import GRAD_NAMES
    from lolsearch.kernels import hybrid_attention

    names = tuple(wanted.split())
    inputs = make_inputs(2, 4, 2, 1000, d, f, device=DEV, dtype=dtype, seed=d + window)
    leaves = [x.clone().requires_grad_(n in names) for n, x in zip(GRAD_NAMES, inputs, strict=True)]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    _, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    grads = torch.autograd.grad(o, [x for x in leaves if x.requires_grad], do)
    assert_close_grads(grads, ref_grads, TOLS[dtype][1], f"{wanted}: {layout} w={window} D={d} F={f} {dtype}",
                       gamma_terms_norm(inputs, window, layout, do), names=names)


@pytest.mark.parametrize("dtype,d,f,layout,window", [(torch.bfloat16, 64, 128, "sliding", 64),
                                                     (torch.bfloat16, 128, 128, "terrace", 100),
                                                     (torch.float16, 64, 64, "sliding", 0),
                                                     (torch.float32, 128, 128, "sliding", 64)])
def test_gpu_token_major_output(dtype, d, f, layout, window, nan_alloc):
    """``token_major_out`` (the linearized layers' path): o in [B, T, H, D] memory, its gradient read in that layout,
    all six gradients against the float64 reference; batch 2, T = 1000, GQA group of 2."""
    from lolsearch.kernels import hybrid_attention
    from lolsearch.kernels._common import token_major

    b, h, t = 2, 4, 1000
    inputs = make_inputs(b, h, 2, t, d, f, device=DEV, dtype=dtype, seed=d + window + 1)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout, token_major_out=True)
    assert token_major(o)
    rows = o.transpose(1, 2).reshape(b, t, h * d)
    w = torch.randn(rows.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(1)).to(dtype)
    grads = torch.autograd.grad(rows, leaves, w)
    do = w.view(b, t, h, d).transpose(1, 2)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    tol_o, tol_g = TOLS[dtype]
    label = f"token-major {layout} w={window} D={d} F={f} {dtype}"
    assert rel_err(o, o_ref) <= tol_o, f"{label}: output error {rel_err(o, o_ref):.2e}"
    assert_close_grads(grads, ref_grads, tol_g, label, gamma_terms_norm(inputs, window, layout, do))


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_gpu_llama_shape_and_states_vs_chunked(dtype, nan_alloc):
    """Llama-3-8B heads (32 q / 8 kv, D = F = 128), T = 4096, initial and final state, vs the fp32 chunked path."""
    from lolsearch.kernels import hybrid_attention

    b, h, hkv, t, d, f = 1, 32, 8, 4096, 128, 128
    inputs = make_inputs(b, h, hkv, t, d, f, device=DEV, dtype=dtype, seed=11)
    gen = torch.Generator(DEV).manual_seed(2)
    s0 = LinearState(torch.rand(b, h, f, d, device=DEV, generator=gen), torch.rand(b, h, f, device=DEV, generator=gen) * 4)
    o, st, covered = hybrid_attention(*inputs, 64, "terrace", initial_state=s0, return_state=True)
    q, k, v, fq, fk, g = (x.float() for x in inputs)
    o_ref, st_ref, cov_ref = hybrid_attention_chunked(
        q, expand_kv(k, h), expand_kv(v, h), fq, fk, g, 64, "terrace", state=s0, return_state=True
    )
    tol = TOLS[dtype][0]
    assert covered == cov_ref
    assert rel_err(o, o_ref) <= tol
    assert rel_err(st.S, st_ref.S) <= 1e-4 and rel_err(st.z, st_ref.z) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout,window,pos,n_abs,d,f", DECODE_CASES)
def test_gpu_decode_matches_torch_twin(layout, window, pos, n_abs, d, f, dtype, nan_alloc):
    from lolsearch.kernels import hybrid_decode_step, hybrid_decode_step_torch

    args, ref, _ = decode_case(layout, window, pos, n_abs, d, f, device=DEV, dtype=dtype)
    twin = dict(args, S=args["S"].clone(), z=args["z"].clone())
    o_twin = hybrid_decode_step_torch(**twin)
    o = hybrid_decode_step(**args)
    assert rel_err(o, o_twin) <= (1e-2 if dtype == torch.bfloat16 else 1e-4) * 0.5
    assert rel_err(o, ref) <= TOLS[dtype][0]
    assert rel_err(args["S"], twin["S"]) <= 1e-5 and rel_err(args["z"], twin["z"]) <= 1e-5


def _misaligned(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of x whose data starts one element past a 16-byte boundary (Triton specializes pointers on
    their alignment)."""
    flat = torch.empty(x.numel() + 8, device=x.device, dtype=x.dtype)
    out = flat[1 : 1 + x.numel()].view(x.shape)
    out.copy_(x)
    return out


@pytest.mark.parametrize("dtype,d,f,layout,window,grad", [(torch.bfloat16, 128, 128, "sliding", 64, True),
                                                          (torch.float32, 64, 64, "terrace", 100, True),
                                                          (torch.bfloat16, 64, 128, "sliding", 64, False)])
def test_gpu_direct_launch_matches_triton_launch(dtype, d, f, layout, window, grad, nan_alloc, monkeypatch):
    """Launches through the kept compiled kernels (kernels/_direct.py) give the same bits as ``kernel[grid]``: the
    second call of a shape takes the kept kernels (no new keys), and misaligned inputs get their own."""
    from lolsearch.kernels import _direct, hybrid_attention

    def run(seed, move=lambda x: x):
        inputs = make_inputs(2, 4, 2, 1000, d, f, device=DEV, dtype=dtype, seed=seed)
        leaves = [move(x).requires_grad_(grad) for x in inputs]
        if not grad:
            o, st, _ = hybrid_attention(*leaves, window, layout, return_state=True)
            return [o, st.S, st.z]
        o = hybrid_attention(*leaves, window, layout)
        do = torch.randn(o.shape, device=DEV, generator=torch.Generator(DEV).manual_seed(seed)).to(dtype)
        return [o, *torch.autograd.grad(o, leaves, do)]

    monkeypatch.setattr(_direct, "CHECK_SITES", True)
    monkeypatch.setattr(_direct, "ENABLED", False)
    plain = [run(1), run(2), run(3, _misaligned)]
    monkeypatch.setattr(_direct, "ENABLED", True)
    _direct.clear()
    first = run(1)
    kept = len(_direct._CACHE)
    second = run(2)
    assert kept > 0 and len(_direct._CACHE) == kept, "the second call of a shape must reuse the kept kernels"
    third = run(3, _misaligned)
    assert len(_direct._CACHE) > kept, "misaligned inputs must not reuse kernels compiled for aligned ones"
    for want, got in zip(plain, [first, second, third], strict=True):
        for a, b in zip(want, got, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("grad", [False, True])
def test_gpu_kept_plans_follow_settings(grad, nan_alloc, monkeypatch):
    """The forward's plan and launch sites are kept per call signature (hybrid._forward_plan, _direct's sites): a
    setting changed between two calls of one shape (env LOLSEARCH_KERNELS_PPS, hybrid.SEGMENT_CHUNKS, the quadratic
    limit) takes effect on the next call, which gives the bits of ``kernel[grid]`` launches under that setting; every
    site stands for one argument set (CHECK_SITES), token-major o and an initial state included."""
    import lolsearch.kernels._schedule as sc
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import _direct, hybrid_attention

    monkeypatch.setattr(_direct, "CHECK_SITES", True)
    monkeypatch.delenv("LOLSEARCH_KERNELS_PPS", raising=False)
    inputs = make_inputs(1, 8, 2, 2048, 128, 128, device=DEV, dtype=torch.bfloat16, seed=7)
    g = torch.Generator(DEV).manual_seed(8)
    state = LinearState(torch.rand(1, 8, 128, 128, device=DEV, generator=g),
                        torch.rand(1, 8, 128, device=DEV, generator=g) * 100)
    do = torch.randn(1, 8, 2048, 128, device=DEV, generator=g).to(torch.bfloat16)

    def run() -> list[torch.Tensor]:
        leaves = [x.clone().requires_grad_(grad) for x in inputs]
        with torch.set_grad_enabled(grad):
            outs = [hybrid_attention(*leaves, 64, "sliding", token_major_out=True),
                    hybrid_attention(*leaves, 64, "sliding", initial_state=state, return_state=True)[0]]
        return outs + (list(torch.autograd.grad(outs, leaves, [do, do])) if grad else [])

    plans = set()
    for setting in ("default", "pps2", "seg3", "quadratic", "default"):
        if setting == "pps2":
            monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "2")
        elif setting == "seg3":
            monkeypatch.delenv("LOLSEARCH_KERNELS_PPS")
            monkeypatch.setattr(hy, "SEGMENT_CHUNKS", 3)
        elif setting == "quadratic":
            monkeypatch.setattr(hy, "SEGMENT_CHUNKS", None)
            monkeypatch.setattr(sc, "QUADRATIC_MAX_T", 4096)
        else:
            monkeypatch.setattr(sc, "QUADRATIC_MAX_T", None)
        plan = hy._forward_plan((1, 8, 2, 2048, 128, 128), torch.bfloat16, torch.device(DEV), 1, 64, False, grad)
        plans.add((plan.mode, plan.seg, plan.ns))
        monkeypatch.setattr(_direct, "ENABLED", False)
        want = run()
        monkeypatch.setattr(_direct, "ENABLED", True)
        for got in (run(), run()):
            for a, b in zip(want, got, strict=True):
                assert torch.equal(a, b), setting
    assert len(plans) == 4
