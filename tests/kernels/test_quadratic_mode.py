"""The hybrid op's quadratic mode (short sequences: every key tile scored in the window kernels, no state) against
the plain-PyTorch reference and the chunked schedule, in the Triton interpreter (fp32). GPU: test_kernels_gpu.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kernel_testlib import GRAD_NAMES, assert_close_grads, make_inputs, reference_and_grads, rel_err
from test_hybrid_kernel import CASES, TOL

from lolsearch.attention.chunked import LinearState

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU-only machines (GPU: -m gpu)"),
]

QUAD_CASES = [c[:7] for c in CASES if c[7] is None][::2]


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
    from lolsearch.kernels import hybrid_attention

    inputs = make_inputs(2, h, hkv, t, d, f, seed=t + window)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    label = f"quadratic T={t} {layout} w={window} D={d} H={h}/{hkv}"
    assert rel_err(o, o_ref) <= TOL, f"{label}: output error {rel_err(o, o_ref):.2e}"
    assert_close_grads(torch.autograd.grad(o, leaves, do), ref_grads, TOL, label)


@pytest.mark.parametrize("layout,window", [("sliding", 64), ("terrace", 100), ("sliding", 0)])
def test_quadratic_mode_launches_no_state_kernels(layout, window, nan_alloc, quadratic, monkeypatch):
    """The forward is one launch (the window kernel over every key tile) and the backward four; outputs and
    gradients equal the chunked schedule's up to rounding."""
    from lolsearch.kernels import hybrid_attention

    seen = _recording(monkeypatch)
    inputs = make_inputs(2, 4, 2, 200, 16, 16, seed=5)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    assert [name for name, _ in seen] == ["fwd_window_kernel"]
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(o, leaves, do)
    assert [name for name, _ in seen[1:]] == ["bwd_pre_kernel", "bwd_state_q_kernel", "bwd_q_kernel", "bwd_kv_kernel"]
    assert all(kw.get("QUAD", True) for _, kw in seen[1:] if "QUAD" in kw)

    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "0")
    seen.clear()
    o_chunked = hybrid_attention(*leaves, window, layout)
    assert "seg_sums_kernel" in [name for name, _ in seen]
    assert rel_err(o, o_chunked) <= TOL
    assert_close_grads(grads, torch.autograd.grad(o_chunked, leaves, do), TOL, f"quadratic vs chunked {layout} {window}")


def test_calls_with_states_stay_chunked(nan_alloc, quadratic, monkeypatch):
    """A call that takes an initial state or returns the final one runs the chunked schedule, which forms states;
    the same call without them runs the quadratic mode, and both give the same output."""
    from lolsearch.kernels import hybrid_attention

    seen = _recording(monkeypatch)
    b, h, hkv, t, d, f = 2, 4, 2, 130, 16, 16
    inputs = make_inputs(b, h, hkv, t, d, f, seed=9)
    o_state, state, covered = hybrid_attention(*inputs, 64, "sliding", return_state=True)
    assert "seg_sums_kernel" in [name for name, _ in seen] and covered == t - 63
    seen.clear()
    s0 = LinearState(torch.rand(b, h, f, d), torch.rand(b, h, f) * 4)
    hybrid_attention(*inputs, 64, "sliding", initial_state=s0)
    assert "seg_sums_kernel" in [name for name, _ in seen]
    seen.clear()
    o = hybrid_attention(*inputs, 64, "sliding")
    assert [name for name, _ in seen] == ["fwd_window_kernel"]
    assert rel_err(o, o_state) <= TOL


def test_quadratic_limit(monkeypatch):
    """Up to the limit (default QUADRATIC_T_DEFAULT, env LOLSEARCH_KERNELS_QUADRATIC_T, 0 = never) and never with
    a state in or out."""
    import lolsearch.kernels.hybrid as hy

    monkeypatch.delenv("LOLSEARCH_KERNELS_QUADRATIC_T")
    limit = hy.QUADRATIC_T_DEFAULT
    assert hy.quadratic_mode(limit, False) and not hy.quadratic_mode(limit + 1, False)
    assert not hy.quadratic_mode(1, True)
    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "0")
    assert not hy.quadratic_mode(1, False)
    monkeypatch.setenv("LOLSEARCH_KERNELS_QUADRATIC_T", "4096")
    assert hy.quadratic_mode(4096, False) and not hy.quadratic_mode(4097, False)
    monkeypatch.setattr(hy, "QUADRATIC_MAX_T", 10)
    assert hy.quadratic_mode(10, False) and not hy.quadratic_mode(11, False)


@pytest.mark.parametrize("wanted", ["phi_q phi_k gamma", "q v phi_q phi_k", "k phi_k"])
def test_quadratic_mode_requested_gradients_and_token_major(wanted, nan_alloc, quadratic, monkeypatch):
    """Attention transfer's case (no dq, dk, dv) and partial ones skip the unneeded work and return None; with
    ``token_major_out`` and the 16-bit path's rounding residual (FORCE_SAVE_LO), every kernel that reads do reads it
    where it lies."""
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import hybrid_attention

    monkeypatch.setattr(hy, "FORCE_SAVE_LO", True)
    seen = _recording(monkeypatch)
    names = tuple(wanted.split())
    b, h, t, d, window, layout = 2, 4, 150, 16, 100, "terrace"
    inputs = make_inputs(b, h, 2, t, d, 16, seed=11)
    leaves = [x.clone().requires_grad_(n in names) for n, x in zip(GRAD_NAMES, inputs, strict=True)]
    o = hybrid_attention(*leaves, window, layout, token_major_out=True)
    rows = o.transpose(1, 2).reshape(b, t, h * d)
    assert rows.data_ptr() == o.data_ptr()
    w = torch.randn(rows.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((rows * w).sum(), [x for x in leaves if x.requires_grad])
    _, ref_grads = reference_and_grads(inputs, window, layout, w.view(b, t, h, d).transpose(1, 2))
    assert_close_grads(grads, ref_grads, TOL, f"quadratic {wanted}", names=names)
    reads_do = [kw["TOK_DO"] for _, kw in seen if "TOK_DO" in kw]
    assert reads_do == [True] * 4
    bwd_kv = next(kw for name, kw in seen if name == "bwd_kv_kernel")
    assert (bwd_kv["NEED_DK"], bwd_kv["NEED_DV"]) == ("k" in names, "v" in names)
