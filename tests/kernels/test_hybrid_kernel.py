"""Triton hybrid attention (forward, all gradients, states) against the plain-PyTorch reference.

CPU: Triton interpreter in fp32, tolerance 1e-4 (relative RMS). GPU versions live in test_kernels_gpu.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kernel_testlib import assert_close_grads, check_against_reference, make_inputs, reference_and_grads, rel_err

from lolsearch.attention import hybrid_attention_chunked
from lolsearch.attention.chunked import LinearState, expand_kv

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU-only machines (GPU: -m gpu)"),
]

TOL = 1e-4

# (T, layout, window, D, F, H, Hkv, segment chunks) — windows below, at and above the 64-row chunk
CASES = [
    (257, "sliding", 0, 16, 16, 4, 2, None),
    (257, "sliding", 1, 16, 16, 4, 2, None),
    (257, "sliding", 16, 16, 16, 4, 2, 1),
    (257, "sliding", 64, 16, 16, 4, 2, None),
    (257, "sliding", 100, 16, 16, 4, 2, 2),
    (257, "terrace", 1, 16, 16, 4, 2, None),
    (257, "terrace", 16, 16, 16, 4, 2, None),
    (257, "terrace", 64, 16, 16, 4, 2, 1),
    (257, "terrace", 100, 16, 16, 4, 2, None),
    (257, "terrace", 31, 16, 16, 4, 2, 2),
    (100, "sliding", 16, 64, 32, 4, 2, None),
    (100, "terrace", 64, 64, 32, 4, 2, 1),
    (100, "sliding", 100, 64, 32, 2, 2, None),
    (63, "sliding", 64, 64, 16, 4, 2, None),
    (63, "terrace", 16, 32, 16, 4, 1, None),
    (1, "sliding", 64, 16, 16, 4, 2, None),
    (1, "terrace", 0, 16, 16, 4, 2, None),
    # the windows and lengths of the GPU matrix (test_kernels_gpu.py), small dims
    (65, "sliding", 7, 16, 16, 4, 2, None),
    (65, "terrace", 7, 16, 16, 4, 1, 1),
    (65, "sliding", 256, 16, 32, 4, 2, None),
    (63, "terrace", 256, 16, 16, 4, 2, None),
    (1, "terrace", 7, 16, 16, 4, 1, None),
    (1, "sliding", 256, 16, 16, 2, 1, None),
    # walks over 3- and 4-chunk segments that absorb key tiles in a loop (window over 65, or none): the bounds of
    # that loop, recomputed per chunk since the H200 built the carried version wrong (kernels/NOTES.md)
    (300, "sliding", 100, 16, 16, 2, 1, 4),
    (300, "sliding", 0, 16, 16, 2, 1, 3),
]


@pytest.fixture
def segments(monkeypatch):
    """Sets hybrid.SEGMENT_CHUNKS (None = automatic) for one test."""
    import lolsearch.kernels.hybrid as hy

    def set_(n):
        monkeypatch.setattr(hy, "SEGMENT_CHUNKS", n)

    return set_


@pytest.mark.parametrize("t,layout,window,d,f,h,hkv,seg", CASES)
def test_forward_and_gradients_match_reference(t, layout, window, d, f, h, hkv, seg, nan_alloc, segments):
    segments(seg)
    check_against_reference(t, layout, window, d, f, h, hkv, TOL, "")


@pytest.mark.parametrize(
    "t,layout,window,seg", [(257, "sliding", 16, None), (200, "terrace", 64, 1), (100, "sliding", 0, None), (70, "terrace", 100, None),
                            (40, "sliding", 100, None)]
)
def test_states_and_gradients_match_chunked(t, layout, window, seg, nan_alloc, segments, monkeypatch):
    """Initial state in, final state out (covering exactly the keys before `covered`), gradients with a state;
    also runs the 16-bit path that saves o's rounding residual for the backward (zero in fp32)."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    segments(seg)
    monkeypatch.setattr(hy, "FORCE_SAVE_LO", True)
    b, h, hkv, d, f = 2, 4, 2, 16, 16
    inputs = make_inputs(b, h, hkv, t, d, f, seed=7)
    gen = torch.Generator().manual_seed(3)
    s0 = LinearState(torch.rand(b, h, f, d, generator=gen) * 5, torch.rand(b, h, f, generator=gen) * 20)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o, st, covered = hybrid_attention(*leaves, window, layout, initial_state=s0, return_state=True)
    ref_leaves = [x.clone().requires_grad_(True) for x in inputs]
    rq, rk, rv, rfq, rfk, rg = ref_leaves
    o_ref, st_ref, cov_ref = hybrid_attention_chunked(
        rq, expand_kv(rk, h), expand_kv(rv, h), rfq, rfk, rg, window, layout, state=s0, return_state=True
    )
    assert covered == cov_ref
    assert rel_err(o, o_ref) <= TOL
    assert st.S.dtype == torch.float32 and st.z.dtype == torch.float32
    assert rel_err(st.S, st_ref.S) <= TOL and rel_err(st.z, st_ref.z) <= TOL
    do = torch.randn(o.shape, generator=gen)
    grads = torch.autograd.grad(o, leaves, do)
    ref_grads = torch.autograd.grad(o_ref, ref_leaves, do)
    assert_close_grads(grads, ref_grads, TOL, f"state T={t} {layout} w={window}")


@pytest.mark.parametrize("t,layout,window", [(65, "terrace", 7), (70, "sliding", 1)])
def test_matches_float64_reference(t, layout, window, nan_alloc):
    """The GPU matrix's check (float64 reference) on the interpreter, GQA group of 4, batch 2."""
    from lolsearch.kernels import hybrid_attention

    inputs = make_inputs(2, 4, 1, t, 16, 16, seed=t)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    assert rel_err(o, o_ref) <= TOL
    assert_close_grads(torch.autograd.grad(o, leaves, do), ref_grads, TOL, f"fp64 T={t} {layout} w={window}")


@pytest.mark.parametrize("wanted", ["phi_q phi_k gamma", "q v phi_q phi_k", "k phi_k"])
@pytest.mark.parametrize("t,layout,window,seg", [(257, "sliding", 64, None), (200, "terrace", 16, 1),
                                                 (100, "sliding", 0, None), (300, "sliding", 100, 4)])
def test_only_the_requested_gradients(t, layout, window, seg, wanted, nan_alloc, segments, monkeypatch):
    """Where q, k or v need no gradient (attention transfer: they come from frozen projections, only φ and γ
    train) the backward skips their work and returns None for them; the gradients asked for match the reference."""
    import lolsearch.kernels.hybrid as hy
    from kernel_testlib import GRAD_NAMES
    from lolsearch.kernels import hybrid_attention

    segments(seg)
    returned = []
    backward = hy._backward
    monkeypatch.setattr(hy, "_backward", lambda ctx, do: returned.append(backward(ctx, do)) or returned[-1])
    names = tuple(wanted.split())
    inputs = make_inputs(2, 4, 2, t, 16, 16, seed=t + window)
    leaves = [x.clone().requires_grad_(n in names) for n, x in zip(GRAD_NAMES, inputs, strict=True)]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(o, [x for x in leaves if x.requires_grad], do)
    _, ref_grads = reference_and_grads(inputs, window, layout, do)
    assert_close_grads(grads, ref_grads, TOL, f"{wanted}: T={t} {layout} w={window}", names=names)
    skipped = [n for n, g in zip(GRAD_NAMES[:3], returned[0][:3], strict=True) if g is None]
    assert skipped == [n for n in GRAD_NAMES[:3] if n not in names]


@pytest.mark.parametrize("t,layout,window,hkv,seg", [(257, "sliding", 64, 2, None), (200, "terrace", 16, 1, 1),
                                                  (100, "sliding", 0, 2, None), (65, "terrace", 7, 4, None)])
def test_token_major_output(t, layout, window, hkv, seg, nan_alloc, segments, monkeypatch):
    """``token_major_out``: o lies in [B, T, H, D] memory, so the output projection's [B, T, H·D] rows are a view;
    its gradient, which arrives in that layout, is read where it lies (no copy); values and all six gradients
    match the reference. The 16-bit path's rounding residual of o (FORCE_SAVE_LO) takes the same layout."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention
    from lolsearch.kernels._common import token_major

    segments(seg)
    monkeypatch.setattr(hy, "FORCE_SAVE_LO", True)
    flags = []
    launch = hy.launch
    monkeypatch.setattr(hy, "launch", lambda kernel, grid, *a, **k: flags.append(k.get("TOK_DO")) or launch(kernel, grid, *a, **k))
    b, h, d = 2, 4, 16
    inputs = make_inputs(b, h, hkv, t, d, 16, seed=t + window)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout, token_major_out=True)
    rows = o.transpose(1, 2).reshape(b, t, h * d)
    assert token_major(o) and rows.data_ptr() == o.data_ptr()
    w = torch.randn(rows.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((rows * w).sum(), leaves)
    do = w.view(b, t, h, d).transpose(1, 2)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    assert rel_err(o, o_ref) <= TOL
    assert_close_grads(grads, ref_grads, TOL, f"token-major T={t} {layout} w={window} H={h}/{hkv}")
    assert [f for f in flags if f is not None] == [True] * 6  # every kernel reading do read it token-major


def test_linearized_model_runs_token_major(monkeypatch):
    """The linearized layers (Triton backend) take o token-major and read its gradient where it lies: logits and every
    trained weight's gradient equal the torch backend's, with no copy of o or of its gradient (TOK_O and TOK_DO set
    in every launch that reads them)."""
    import lolsearch.kernels.hybrid as hy

    from lolsearch.config import AttentionConfig, ModelConfig
    from lolsearch.models import load_model
    from lolsearch.trial.surgery import linearize, linearized_layers

    flags = []
    launch = hy.launch
    monkeypatch.setattr(hy, "launch", lambda kernel, grid, *a, **k: flags.append((k.get("TOK_O"), k.get("TOK_DO")))
                        or launch(kernel, grid, *a, **k))
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), "cpu")
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout="sliding",
                                     window=16, backend="triton"))
    for p in model.parameters():
        p.requires_grad_(True)
    ids = torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(0))
    outs = {}
    for backend in ("triton", "torch"):
        for layer in linearized_layers(model):
            layer.backend = backend
        model.zero_grad()
        logits = model(input_ids=ids, use_cache=False).logits
        logits.square().mean().backward()
        outs[backend] = logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    o_flags = [f[0] for f in flags if f[0] is not None]
    do_flags = [f[1] for f in flags if f[1] is not None]
    assert o_flags == [True] * 4 and do_flags == [True] * 12  # fwd_window + bwd_pre; six readers of do; two layers
    torch.testing.assert_close(outs["triton"][0], outs["torch"][0], rtol=1e-4, atol=1e-5)
    assert outs["triton"][1].keys() == outs["torch"][1].keys()
    for name, g in outs["torch"][1].items():
        torch.testing.assert_close(outs["triton"][1][name], g, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("layout,window", [("sliding", 64), ("terrace", 100)])
def test_value_tiles_split_over_programs(layout, window, nan_alloc, segments, monkeypatch):
    """Value tiles narrower than D (fp32 at D = F = 128 on an H200): the walks' programs split the value columns
    and sum dφk over them (atomics; one program per tile writes it directly otherwise)."""
    from lolsearch.kernels import hybrid_attention

    monkeypatch.setenv("LOLSEARCH_KERNELS_BD", "16")
    segments(2)
    inputs = make_inputs(1, 4, 2, 200, 64, 32, seed=5)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(4))
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    assert rel_err(o, o_ref) <= TOL
    assert_close_grads(torch.autograd.grad(o, leaves, do), ref_grads, TOL, f"BD 16: {layout} w={window}")


@pytest.mark.parametrize("bd_env,fused", [(None, True), ("16", False)])
def test_walks_write_the_feature_gradients_whole(bd_env, fused, nan_alloc, segments, monkeypatch):
    """dφq is the tensor bwd_state_q writes, and dφk the one bwd_state_kv writes where one value tile spans D
    (bwd_kv then runs with STATE_DFK and writes only the last window's keys); with value tiles split (BD 16), dφk's
    state part goes through the fp32 buffer bwd_kv completes. Gradients match the reference either way."""
    import lolsearch.kernels.hybrid as hy

    if bd_env:
        monkeypatch.setenv("LOLSEARCH_KERNELS_BD", bd_env)
    segments(2)
    seen = {}
    launch = hy.launch

    def spy(kernel, grid, *args, **kwargs):
        seen[kernel] = (args, kwargs)
        return launch(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(hy, "launch", spy)
    inputs = make_inputs(2, 4, 2, 300, 32, 16, seed=7)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hy.hybrid_attention(*leaves, 40, "sliding")
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(8))
    grads = torch.autograd.grad(o, leaves, do)
    dfq, dfk = grads[3], grads[4]
    assert seen[hy.bwd_state_q_kernel][0][6].data_ptr() == dfq.data_ptr()
    assert (seen[hy.bwd_state_kv_kernel][1]["dfk"].data_ptr() == dfk.data_ptr()) is fused
    assert seen[hy.bwd_kv_kernel][1]["STATE_DFK"] is fused
    o_ref, ref_grads = reference_and_grads(inputs, 40, "sliding", do)
    assert rel_err(o, o_ref) <= TOL
    assert_close_grads(grads, ref_grads, TOL, f"walks write dφ whole: {fused}")


def test_value_block_fits_shared_memory():
    """The walks' value tile from the shared-memory budget: fp32 at F = 128 halves it on an H100/H200."""
    from lolsearch.kernels.hybrid import _value_block

    h200 = 232448
    assert _value_block(128, 128, 2, h200) == 128  # bf16 Llama shape: unchanged
    assert _value_block(128, 128, 4, h200) == 64  # fp32 D = F = 128 (needed 327680 bytes at 128)
    assert _value_block(128, 256, 4, h200) == 32
    assert _value_block(64, 64, 4, h200) == 64
    assert _value_block(128, 128, 2, 101376) == 32  # a 99 KB device


def test_walk_launch_halves_the_tile_on_out_of_resources(monkeypatch):
    """A launch that needs more shared memory than the device has is retried with half the value tile, and
    the tile that ran is remembered per key; where none down to 16 fits, the error names the kernel."""
    import lolsearch.kernels._common as common
    import lolsearch.kernels.hybrid as hy
    from triton.runtime.errors import OutOfResources

    monkeypatch.setattr(common, "_FITTED", {})
    tried = []

    class FakeKernel:
        def __getitem__(self, grid):
            def launch(*args, BD, **kwargs):
                tried.append((grid, BD))
                if BD > 32:
                    raise OutOfResources(327680, 232448, "shared memory")

            return launch

    assert hy._launch_walk(FakeKernel(), ("k",), 128, lambda bd: (128 // bd,), 1, x=2) == 32
    assert tried == [((1,), 128), ((2,), 64), ((4,), 32)]
    assert hy._launch_walk(FakeKernel(), ("k",), 128, lambda bd: (128 // bd,)) == 32
    assert tried[-1] == ((4,), 32) and len(tried) == 4

    class NeverFits:
        def __getitem__(self, grid):
            def launch(*args, BD, **kwargs):
                raise OutOfResources(327680, 232448, "shared memory")

            return launch

    with pytest.raises(RuntimeError, match="no value tile down to BD = 16"):
        hy._launch_walk(NeverFits(), ("walk",), 64, lambda bd: (1,))


@pytest.mark.parametrize("layout,window", [("sliding", 64), ("terrace", 16), ("sliding", 256)])
def test_window_rows_are_convex_combinations_in_fp16(layout, window, nan_alloc):
    """With every value 1, each output is exactly 1: the window's PV product and its row sum take the same
    16-bit-rounded weights (the fp32 row sum of unrounded weights biased o by up to 2^-9 in bf16). T < 128 keeps the
    linear part in its first segment, whose fp32 path the interpreter runs (the bf16 state GEMM it cannot)."""
    from lolsearch.kernels import hybrid_attention

    q, k, v, phi_q, phi_k, gamma = make_inputs(2, 4, 2, 120, 64, 32, dtype=torch.float16)
    o = hybrid_attention(q * 3, k, torch.ones_like(v), phi_q, phi_k, gamma, window, layout)
    assert torch.equal(o, torch.ones_like(o))


@pytest.mark.parametrize("t,layout,window", [(63, "sliding", 64), (65, "terrace", 64), (63, "sliding", 256)])
def test_dgamma_vanishes_where_every_key_is_softmax_in_fp16(t, layout, window, nan_alloc):
    """o does not depend on γ in a row whose keys are all softmax keys, so dγ is 0 there. The backward takes dγ
    from the 16-bit-rounded weights the forward multiplied v by; with unrounded ones each such row left rounding
    noise (2e-3 of gamma_terms_norm / 32 in fp16, 2-4e-2 in bf16 on the H200 GPU matrix)."""
    from kernel_testlib import gamma_terms_norm
    from lolsearch.kernels import hybrid_attention

    inputs = make_inputs(2, 4, 2, t, 64, 64, dtype=torch.float16, seed=t + window)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    _, ref = reference_and_grads(inputs, window, layout, do, dtype=torch.float64)
    dgamma = torch.autograd.grad(o, leaves, do)[5]
    floor = gamma_terms_norm(inputs, window, layout, do) / 32
    assert ((dgamma.double() - ref[5]).norm() / max(ref[5].norm().item(), floor)).item() <= 1e-4


def test_zero_initial_state_matches_none():
    from lolsearch.kernels import hybrid_attention

    inputs = make_inputs(1, 2, 2, 80, 16, 16, seed=5)
    o1 = hybrid_attention(*inputs, 16, "sliding")
    o2 = hybrid_attention(*inputs, 16, "sliding", initial_state=LinearState.zeros(1, 2, 16, 16))
    assert torch.equal(o1, o2)


def test_rejects_bad_input():
    from lolsearch.kernels import hybrid_attention

    q, k, v, fq, fk, g = make_inputs(1, 4, 2, 10, 16, 16)
    with pytest.raises(ValueError, match="no gradient through initial_state"):
        s = LinearState(torch.zeros(1, 4, 16, 16, requires_grad=True), torch.zeros(1, 4, 16))
        hybrid_attention(q, k, v, fq, fk, g, 4, "sliding", initial_state=s)
    with pytest.raises(ValueError, match="not a multiple"):
        hybrid_attention(q, k[:, :1].expand(1, 3, 10, 16), v[:, :1].expand(1, 3, 10, 16), fq, fk, g, 4, "sliding")
    with pytest.raises(ValueError, match="layout"):
        hybrid_attention(q, k, v, fq, fk, g, 4, "diagonal")
    with pytest.raises(ValueError, match="phi_q"):
        hybrid_attention(q, k, v, fq[..., :8], fk, g, 4, "sliding")


def test_small_window_rules_match_layouts():
    """The branch-free variants' preconditions, checked against the layout definitions (C = 64)."""
    from lolsearch.kernels._common import LAYOUT_IDS
    from lolsearch.kernels.hybrid import linear_in_diagonal_tile, small_window

    from lolsearch.attention.layouts import get_layout

    for name in ("sliding", "terrace"):
        lay = get_layout(name)
        for w in range(1, 200):
            tlo = [min(max(int(lay.softmax_start(64 * n, w)), 0) // 64, n) for n in range(300)]
            assert small_window(LAYOUT_IDS[name], w) == all(t == max(n - 1, 0) for n, t in enumerate(tlo)), (name, w)
            diag = any(int(lay.softmax_start(64 * n + r, w)) > 64 * n for n in range(1, 300) for r in range(64))
            assert linear_in_diagonal_tile(LAYOUT_IDS[name], w) == diag, (name, w)


@pytest.mark.parametrize("layout,window,h,hkv", [("sliding", 64, 4, 2), ("terrace", 100, 6, 2), ("sliding", 16, 4, 1)])
def test_gqa_order_changes_only_the_program_order(layout, window, h, hkv, nan_alloc, monkeypatch):
    """LOLSEARCH_KERNELS_GQA_ORDER=0 (one row of chunks per query head) and 1 (a kv head's query heads on adjacent
    programs; by default only from GQA_ORDER_MIN_CHUNKS chunks on) compute every output and gradient with the same
    operations: bit-identical, batch 2, and both within the reference's tolerance."""
    from lolsearch.kernels import hybrid_attention
    from lolsearch.kernels._common import GQA_ORDER_MIN_CHUNKS, gqa_grouped

    inputs = make_inputs(2, h, hkv, 150, 16, 16, seed=window)
    do = torch.randn(2, h, 150, 16, generator=torch.Generator().manual_seed(3))
    runs = []
    for order in ("0", "1"):
        monkeypatch.setenv("LOLSEARCH_KERNELS_GQA_ORDER", order)
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        o = hybrid_attention(*leaves, window, layout)
        runs.append([o, *torch.autograd.grad(o, leaves, do)])
    monkeypatch.setenv("LOLSEARCH_KERNELS_GQA_ORDER", "auto")
    assert gqa_grouped(h, hkv, 3) is False and gqa_grouped(h, hkv, GQA_ORDER_MIN_CHUNKS) is (h > hkv)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    assert rel_err(runs[1][0], o_ref) <= TOL
    assert_close_grads(runs[1][1:], ref_grads, TOL, f"{layout} w={window} H={h}/{hkv}")


@pytest.mark.parametrize("tile", ["64x64", "128x64", "128x128"])
def test_seg_sums_tile_knob_gives_the_same_states(tile, nan_alloc, segments, monkeypatch):
    """The bench's seg_sums tile knob (LOLSEARCH_KERNELS_SEG_TILE) changes the schedule only: with D = F = 128
    each tile covers the feature and value columns differently, and the states and output stay the reference's."""
    from lolsearch.kernels import hybrid_attention

    segments(1)
    monkeypatch.setenv("LOLSEARCH_KERNELS_SEG_TILE", tile)
    inputs = make_inputs(1, 2, 1, 130, 128, 128, seed=5)
    o, st, covered = hybrid_attention(*inputs, 16, "sliding", return_state=True)
    q, k, v, fq, fk, g = inputs
    o_ref, st_ref, cov_ref = hybrid_attention_chunked(q, expand_kv(k, 2), expand_kv(v, 2), fq, fk, g, 16, "sliding",
                                                      return_state=True)
    assert covered == cov_ref and rel_err(o, o_ref) <= TOL
    assert rel_err(st.S, st_ref.S) <= TOL and rel_err(st.z, st_ref.z) <= TOL


def test_balanced_plan_segments(monkeypatch):
    """The fill rule alone makes one-chunk segments for the Llama-3-8B bench shape (32 heads, 132 SMs); the balanced
    plan gives ceil(sqrt(nt / 2)) chunks per segment, keeps longer fill-rule segments, and steps aside for the
    LOLSEARCH_KERNELS_PPS knob."""
    import lolsearch.kernels.hybrid as hy

    monkeypatch.setattr(hy, "num_sms", lambda device: 132)
    monkeypatch.delenv("LOLSEARCH_KERNELS_PPS", raising=False)
    monkeypatch.setenv("LOLSEARCH_KERNELS_MIN_SEG", "1")
    cpu = torch.device("cpu")
    assert hy._plan(2048, 32, 1, cpu) == (1, 32)
    assert [hy._plan(t, 32, 1, cpu, balance=True) for t in (2048, 8192, 32768)] == [(4, 8), (8, 16), (16, 32)]
    assert hy._plan(1024, 256, 4, cpu, balance=True) == hy._plan(1024, 256, 4, cpu) == (8, 2)  # fill rule longer
    assert hy._plan(64, 32, 1, cpu, balance=True) == (1, 1)
    monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "8")
    assert hy._plan(2048, 32, 1, cpu, balance=True) == (1, 32)


def test_segments_have_a_minimum_length(monkeypatch):
    """Segments are at least MIN_SEGMENT_CHUNKS (8) chunks long, where the fill rule would cut them shorter (every
    segment costs fp32 states in four kernels); LOLSEARCH_KERNELS_MIN_SEG changes the length, and the bench's
    LOLSEARCH_KERNELS_PPS sweep runs the fill rule alone."""
    import lolsearch.kernels.hybrid as hy

    monkeypatch.setattr(hy, "num_sms", lambda device: 132)
    for name in ("LOLSEARCH_KERNELS_PPS", "LOLSEARCH_KERNELS_MIN_SEG"):
        monkeypatch.delenv(name, raising=False)
    cpu = torch.device("cpu")
    # Llama-3-8B heads, batch 1: 2K, 8K get 8-chunk segments, 32K keeps the fill rule's 16; a SmolLM2-shaped
    # training step (8 x 9 heads, 1K) and an 8B one (8 x 32 heads) get 8; fewer chunks than that: one segment
    assert [hy._plan(t, 32, 1, cpu) for t in (2048, 8192, 32768)] == [(8, 4), (8, 16), (16, 32)]
    assert hy._plan(2048, 32, 1, cpu, balance=True) == (8, 4)
    assert hy._plan(1024, 72, 1, cpu) == hy._plan(1024, 256, 1, cpu) == (8, 2)
    assert hy._plan(300, 72, 1, cpu) == (5, 1)
    monkeypatch.setenv("LOLSEARCH_KERNELS_MIN_SEG", "2")
    assert hy._plan(1024, 72, 1, cpu) == (2, 8)
    monkeypatch.delenv("LOLSEARCH_KERNELS_MIN_SEG")
    monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "8")
    assert hy._plan(1024, 72, 1, cpu) == (2, 8)


def test_forward_plan_is_kept_per_call_signature(monkeypatch):
    """A forward's host-side plan (schedule, segments, tiles, variants) is computed once per call signature: the same
    shape gets the same plan object back, and a changed setting between two calls (env LOLSEARCH_KERNELS_PPS, the
    module's SEGMENT_CHUNKS, the schedule's limits, the machine's SMs) gives a new plan with the new decision."""
    import lolsearch.kernels._schedule as sc
    import lolsearch.kernels.hybrid as hy

    for name in hy._PLAN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hy, "num_sms", lambda device: 132)
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    shape = (1, 32, 8, 32768, 128, 128)  # Llama-3-8B heads at 32K

    def plan(**kw):
        return hy._forward_plan(kw.get("shape", shape), kw.get("dtype", bf16), cpu, 1, 64, False, kw.get("grad", False))

    first = plan()
    assert plan() is first and (first.mode, first.seg, first.ns) == ("walk", 16, 32)
    assert plan(grad=True) is not first and plan(dtype=torch.float32).bd == 64  # fp32 D = F = 128: half the columns
    monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "2")
    assert (plan().seg, plan().ns) == (57, 9)  # the fill rule alone: 2 programs per SM
    monkeypatch.delenv("LOLSEARCH_KERNELS_PPS")
    assert plan() is first
    monkeypatch.setattr(hy, "SEGMENT_CHUNKS", 4)
    assert (plan().seg, plan().ns) == (4, 128)
    monkeypatch.setattr(hy, "SEGMENT_CHUNKS", None)
    monkeypatch.setattr(hy, "num_sms", lambda device: 1000)
    assert plan().serial != first.serial
    monkeypatch.setattr(sc, "QUADRATIC_MAX_T", 1 << 16)
    assert plan().mode == "quadratic" and plan().ns == 1
    monkeypatch.setattr(sc, "QUADRATIC_MAX_T", None)
    assert plan(shape=(1, 9, 3, 2048, 64, 64)).mode == "parallel"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_balanced_plan_only_for_16_bit_forwards_outside_autograd(dtype, monkeypatch, nan_alloc):
    """A 16-bit forward without autograd runs the balanced plan (2 chunks per segment here, against 1 with autograd or
    in fp32), and its output equals the one-chunk plan's to rounding and the reference's to the fp16 tolerance.
    Window 256 keeps every key out of the state: the interpreter has no bf16, which the 16-bit state GEMM uses (the
    plans' numerics in the state path: the segment-count cases above, in fp32)."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    monkeypatch.setattr(hy, "num_sms", lambda device: 1000)  # the fill rule alone: one chunk per segment
    monkeypatch.setenv("LOLSEARCH_KERNELS_MIN_SEG", "1")
    plans = []
    real = hy._plan
    monkeypatch.setattr(hy, "_plan", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    inputs = make_inputs(1, 2, 1, 320, 16, 16, dtype=dtype, seed=5)
    with torch.no_grad():
        o_fast = hybrid_attention(*inputs, 256, "sliding")
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o_grad = hybrid_attention(*leaves, 256, "sliding")
    assert plans == ([(2, 3), (1, 5)] if dtype == torch.float16 else [(1, 5), (1, 5)])
    assert torch.isfinite(o_fast).all()
    o_ref, _ = reference_and_grads(inputs, 256, "sliding", torch.ones_like(o_fast))
    assert rel_err(o_fast, o_grad.detach()) <= (1e-3 if dtype == torch.float16 else 1e-6)
    assert rel_err(o_fast, o_ref) <= (5e-3 if dtype == torch.float16 else TOL)


def test_autotune_keys_carry_the_size_class():
    """Every autotuned kernel is keyed by TUNE, the (batch × heads) × chunks size class rounded to a power of two,
    and TUNE is not specialized (a new class re-times the configs; it never recompiles)."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels._common import tune_bucket
    from lolsearch.kernels._fwd import NO_SPEC  # every kernel's do_not_specialize

    tuned = [hy.fwd_state_kernel, hy.fwd_window_kernel, hy.bwd_state_kv_kernel, hy.bwd_state_q_kernel,
             hy.bwd_q_kernel, hy.bwd_kv_kernel]
    assert all("TUNE" in k.keys and "TUNE" in k.arg_names for k in tuned) and "TUNE" in NO_SPEC
    # a test's 4 heads x 63 tokens, the SmolLM2 trial (8 x 9 heads x 1024), Llama-3-8B heads at 1 x 32K
    assert [tune_bucket(4, 63), tune_bucket(72, 1024), tune_bucket(32, 32768)] == [4, 2048, 16384]
    assert tune_bucket(64, 1000) == tune_bucket(64, 1024) == 1024 < tune_bucket(64, 1025)
