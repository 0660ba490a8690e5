"""The hybrid op's parallel schedule (segments whose chunks score every key tile since the segment's start and read
the state it starts from; no walk) and quadratic mode (one segment, no state) against the plain-PyTorch reference
and the walk schedule, in the Triton interpreter (fp32). GPU: test_kernels_gpu.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kernel_testlib import (
    GRAD_NAMES,
    assert_close_grads,
    check_against_reference,
    make_inputs,
    reference_and_grads,
    rel_err,
)
from test_hybrid_kernel import TOL

from lolsearch.attention.chunked import LinearState

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU-only machines (GPU: -m gpu)"),
]

# (T, layout, window, D, F, H, Hkv): the windows and lengths of the walks' cases, shorter (the interpreter's time
# grows as T² here)
QUAD_CASES = [(150, "sliding", 0, 16, 16, 4, 2), (150, "sliding", 64, 16, 16, 4, 2), (150, "terrace", 16, 16, 16, 4, 2),
              (130, "terrace", 100, 16, 16, 4, 1), (100, "sliding", 16, 64, 32, 4, 2), (65, "sliding", 7, 16, 16, 4, 2),
              (63, "terrace", 16, 32, 16, 4, 1), (1, "sliding", 256, 16, 16, 2, 1)]
# (T, layout, window, chunks per segment): segments shorter and longer than a window, windows inside one tile
PARALLEL_CASES = [(200, "sliding", 64, 2), (260, "terrace", 100, 2), (200, "sliding", 0, 1), (200, "sliding", 7, 3),
                  (200, "terrace", 256, 2), (65, "sliding", 1, 1), (1, "terrace", 7, 3)]
WALK_ONLY = {"fwd_state_kernel", "bwd_state_kv_kernel"}


def _recording(monkeypatch) -> list[tuple[str, dict]]:
    """Records (kernel name, keyword arguments) of every launch the hybrid op makes."""
    import lolsearch.kernels.hybrid as hy

    seen: list[tuple[str, dict]] = []
    launch = hy.launch

    def record(kernel, grid, *args, **kwargs):
        seen.append((getattr(kernel, "fn", kernel).__name__, kwargs))
        return launch(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(hy, "launch", record)
    return seen


@pytest.mark.parametrize("t,layout,window,d,f,h,hkv", QUAD_CASES)
def test_quadratic_mode_matches_reference(t, layout, window, d, f, h, hkv, nan_alloc, quadratic):
    check_against_reference(t, layout, window, d, f, h, hkv, TOL, "quadratic")


@pytest.mark.parametrize("t,layout,window,seg", PARALLEL_CASES)
def test_parallel_schedule_matches_reference(t, layout, window, seg, nan_alloc, parallel):
    parallel(seg)
    check_against_reference(t, layout, window, 16, 16 if window != 100 else 32, 4, 2, TOL, f"parallel L={seg}")


@pytest.mark.parametrize("mode", ["quadratic", "parallel"])
@pytest.mark.parametrize("layout,window", [("sliding", 64), ("terrace", 100), ("sliding", 0)])
def test_schedules_launch_no_walks(mode, layout, window, nan_alloc, quadratic, parallel, monkeypatch):
    """The quadratic forward is one launch (the window kernel over every key tile), the parallel one three
    (segment sums, scan, window kernel); neither backward walks. Outputs and gradients equal the walk schedule's
    up to rounding."""
    from lolsearch.kernels import hybrid_attention

    if mode == "parallel":
        parallel(2)
    seen = _recording(monkeypatch)
    inputs = make_inputs(1, 4, 2, 200, 16, 16, seed=5)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    forward = [name for name, _ in seen]
    assert forward == (["fwd_window_kernel"] if mode == "quadratic" else
                       ["seg_sums_kernel", "scan_kernel", "fwd_window_kernel"])
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(o, leaves, do)
    backward = [name for name, _ in seen[len(forward):]]
    assert not WALK_ONLY & set(backward) and backward[-2:] == ["bwd_q_kernel", "bwd_kv_kernel"]
    assert all(kw["PAR"] and kw["HAS_ST"] == (mode == "parallel") for _, kw in seen if "PAR" in kw)

    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "0")
    monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_T", "0")
    seen.clear()
    o_walk = hybrid_attention(*leaves, window, layout)
    assert "fwd_state_kernel" in [name for name, _ in seen]
    assert rel_err(o, o_walk) <= TOL
    assert_close_grads(grads, torch.autograd.grad(o_walk, leaves, do), TOL, f"{mode} vs walk {layout} {window}")


def test_calls_with_states_walk(nan_alloc, quadratic, monkeypatch):
    """A call that takes an initial state or returns the final one runs the walks whatever the lengths say; the same
    call without them runs the quadratic mode, with the same output."""
    from lolsearch.kernels import hybrid_attention

    seen = _recording(monkeypatch)
    b, h, hkv, t, d, f = 2, 4, 2, 130, 16, 16
    inputs = make_inputs(b, h, hkv, t, d, f, seed=9)
    o_state, _, covered = hybrid_attention(*inputs, 64, "sliding", return_state=True)
    assert "fwd_state_kernel" in [name for name, _ in seen] and covered == t - 63
    seen.clear()
    hybrid_attention(*inputs, 64, "sliding", initial_state=LinearState(torch.rand(b, h, f, d), torch.rand(b, h, f)))
    assert "fwd_state_kernel" in [name for name, _ in seen]
    seen.clear()
    o = hybrid_attention(*inputs, 64, "sliding")
    assert [name for name, _ in seen] == ["fwd_window_kernel"]
    assert rel_err(o, o_state) <= TOL


def test_schedule_choice(monkeypatch):
    """Quadratic up to its limit, then parallel up to its limit where the head size is at most PARALLEL_MAX_D, then the
    walks; calls with a state walk (defaults QUADRATIC_T_DEFAULT, PARALLEL_T_DEFAULT; env variables, 0 = never)."""
    from lolsearch.kernels import _schedule as sc

    monkeypatch.delenv("LOLSEARCH_KERNELS_QUADRATIC_T")
    monkeypatch.delenv("LOLSEARCH_KERNELS_PARALLEL_T")
    quad, small_d = sc.QUADRATIC_T_DEFAULT, sc.PARALLEL_MAX_D
    assert sc.schedule(quad, 128, False) == "quadratic" and sc.schedule(quad, 128, True) == "walk"
    assert sc.schedule(quad + 1, 128, False) == "walk" and sc.schedule(quad + 1, small_d, False) == "parallel"
    assert sc.schedule(1 << 20, small_d, True) == "walk"
    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "0")
    monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_T", "4096")
    assert sc.schedule(1, small_d, False) == "parallel" and sc.schedule(4097, small_d, False) == "walk"
    monkeypatch.setattr(sc, "QUADRATIC_MAX_T", 10)
    assert sc.schedule(10, small_d, False) == "quadratic" and sc.schedule(11, small_d, False) == "parallel"


def test_parallel_segments(monkeypatch):
    """Two chunks per segment for training calls up to 32 chunks, four beyond and without autograd; the env sets it."""
    from lolsearch.kernels import _schedule as sc

    assert sc.parallel_plan(2048, True) == (2, 16) and sc.parallel_plan(2049, True) == (4, 9)
    assert sc.parallel_plan(1024, False) == (4, 4) and sc.parallel_plan(100, True) == (2, 1)
    monkeypatch.setenv("LOLSEARCH_KERNELS_PARALLEL_SEG", "3")
    assert sc.parallel_plan(1024, True) == (3, 6)


@pytest.mark.parametrize("mode", ["quadratic", "parallel"])
@pytest.mark.parametrize("wanted", ["phi_q phi_k gamma", "q v phi_q phi_k", "k phi_k"])
def test_requested_gradients_and_token_major(mode, wanted, nan_alloc, quadratic, parallel, monkeypatch):
    """Attention transfer's case (no dq, dk, dv) and partial ones skip the unneeded work and return None; with
    ``token_major_out`` and the 16-bit path's rounding residual (FORCE_SAVE_LO), every kernel that reads do reads it
    where it lies."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    if mode == "parallel":
        parallel(2)
    monkeypatch.setattr(hy, "FORCE_SAVE_LO", True)
    seen = _recording(monkeypatch)
    names = tuple(wanted.split())
    b, h, t, d, window, layout = 1, 4, 200, 16, 100, "terrace"
    inputs = make_inputs(b, h, 2, t, d, 16, seed=11)
    leaves = [x.clone().requires_grad_(n in names) for n, x in zip(GRAD_NAMES, inputs, strict=True)]
    o = hybrid_attention(*leaves, window, layout, token_major_out=True)
    rows = o.transpose(1, 2).reshape(b, t, h * d)
    assert rows.data_ptr() == o.data_ptr()
    w = torch.randn(rows.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((rows * w).sum(), [x for x in leaves if x.requires_grad])
    _, ref_grads = reference_and_grads(inputs, window, layout, w.view(b, t, h, d).transpose(1, 2))
    assert_close_grads(grads, ref_grads, TOL, f"{mode} {wanted}", names=names)
    reads_do = [kw["TOK_DO"] for _, kw in seen if "TOK_DO" in kw]
    assert reads_do == [True] * (4 if mode == "quadratic" else 5)
    bwd_kv = next(kw for name, kw in seen if name == "bwd_kv_kernel")
    assert (bwd_kv["NEED_DK"], bwd_kv["NEED_DV"]) == ("k" in names, "v" in names)


@pytest.mark.parametrize("mode", ["walk", "quadratic", "parallel"])
def test_kv_query_blocks_of_16_rows(mode, nan_alloc, schedule, monkeypatch):
    """bwd_kv's query blocks of 16 rows (KV_QUERY_ROWS) give the reference's output and six gradients in every
    schedule, with GQA and a window that spans tiles."""
    import lolsearch.kernels.hybrid as hy

    schedule(mode)
    monkeypatch.setattr(hy, "KV_QUERY_ROWS", 16)
    seen = _recording(monkeypatch)
    check_against_reference(140, "sliding", 70, 16, 16, 4, 2, TOL, f"{mode} BQ=16")
    launched = {name for name, _ in seen}
    assert ("fwd_state_kernel" in launched) == (mode == "walk")
    assert {kw["BQ"] for name, kw in seen if name == "bwd_kv_kernel"} == {16}
