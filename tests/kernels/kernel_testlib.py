"""Shared inputs and checks of the kernel tests (CPU interpreter and GPU)."""

from __future__ import annotations

import torch

from lolsearch.attention import hybrid_attention_reference
from lolsearch.attention.chunked import expand_kv
from lolsearch.attention.reference import hybrid_masks

GRAD_NAMES = ("q", "k", "v", "phi_q", "phi_k", "gamma")


def nan_filled(t: torch.Tensor) -> torch.Tensor:
    """``t`` filled with NaN (floats) or -123456789 (int32/int64), in place: what an allocation returns under the
    ``nan_alloc`` fixture, so that an element a kernel forgets to write shows up in a comparison."""
    if t.is_floating_point():
        t.fill_(float("nan"))
    elif t.dtype in (torch.int32, torch.int64):
        t.fill_(-123456789)
    return t


def hedgehog_like(x: torch.Tensor, f: int, gen: torch.Generator) -> torch.Tensor:
    """Non-negative features [.., f] shaped like Hedgehog's [softmax(xW), softmax(−xW)] (f even)."""
    w = torch.randn(x.shape[-1], f // 2, generator=gen, device="cpu").to(x.device, torch.float32) / x.shape[-1] ** 0.5
    y = x.float() @ w
    return torch.cat([y.softmax(-1), (-y).softmax(-1)], dim=-1)


def make_inputs(b, h, hkv, t, d, f, device="cpu", dtype=torch.float32, seed=0):
    """q [B,H,T,D], k/v [B,Hkv,T,D], phi_q/phi_k [B,H,T,F] (k features per query head), gamma [H], fp32 masters."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=gen)
    k = torch.randn(b, hkv, t, d, generator=gen)
    v = torch.randn(b, hkv, t, d, generator=gen)
    phi_q = hedgehog_like(q, f, gen)
    phi_k = hedgehog_like(expand_kv(k, h), f, gen)
    gamma = torch.rand(h, generator=gen) * 0.4 + 0.1
    return [x.to(device=device, dtype=dtype if x.dim() > 1 else torch.float32) for x in (q, k, v, phi_q, phi_k, gamma)]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error ||x − ref|| / ||ref|| in fp64."""
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def reference_and_grads(inputs, window, layout, do, dtype=torch.float32):
    """Reference output and gradients in ``dtype`` (fp32, or fp64 for the GPU matrix) from the inputs as the
    kernel sees them (k, v expanded to H heads, gradients summed back per kv head)."""
    leaves = [x.detach().to(dtype).requires_grad_(True) for x in inputs]
    q, k, v, phi_q, phi_k, gamma = leaves
    h = q.shape[1]
    o = hybrid_attention_reference(q, expand_kv(k, h), expand_kv(v, h), phi_q, phi_k, gamma, window, layout)
    grads = torch.autograd.grad(o, leaves, do.to(dtype))
    return o.detach(), grads


def gamma_terms_norm(inputs, window, layout, do, dtype=torch.float64) -> float:
    """The scale of dγ's rounding error: ‖(|g_i·v_j| + |e_i|)·E_ij‖ over rows i and softmax keys j.

    dγ_h = Σ_i Σ_j∈soft(i) (g_i·v_j − e_i)·E_ij with g_i = do_i / Z_i, e_i = do_i·o_i / Z_i, E_ij = exp(s_ij − c_i):
    the two parts cancel exactly in every row whose keys are all softmax keys, so e.g. T = 65 with window 64
    has a tiny dγ (one row per sequence has a linear key) next to 130 rows of rounding noise, and T = 1 has
    dγ = 0. dγ's error is measured against max(‖dγ‖, this norm / 32) (typical shapes have ‖dγ‖ above it, e.g.
    T = 300 terrace 100: 10.5 against 221 / 32; T = 65 window 64: 1.7 against 280 / 32); 0 when no key is a softmax key."""
    q, k, v, fq, fk, gamma = (x.detach().to(dtype) for x in inputs)
    b, h, t, d = q.shape
    k, v = expand_kv(k, h), expand_kv(v, h)
    soft, lin = hybrid_masks(t, t, window, layout, device=q.device)
    sc = (q @ k.transpose(-1, -2) * d**-0.5).masked_fill(~soft, float("-inf"))
    m = sc.amax(-1, keepdim=True)
    e_soft = torch.exp(sc - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    a = gamma.view(1, h, 1, 1) * e_soft + (fq @ fk.transpose(-1, -2)) * lin
    z = a.sum(-1, keepdim=True) + 1e-12
    o = (a @ v) / z
    do = do.to(dtype)
    g = do / z
    e = (do * o).sum(-1, keepdim=True) / z
    return (((g @ v.transpose(-1, -2)).abs() + e.abs()) * e_soft).norm().item()


def assert_close_grads(grads, ref_grads, tol: float, label: str, gamma_scale: float = 0.0,
                       names: tuple[str, ...] = GRAD_NAMES) -> None:
    """Relative RMS check per gradient. A gradient that is zero in exact arithmetic (e.g. dq with window 1,
    dφ when every key is softmax) must stay below tol relative to the dv scale instead. dγ is measured against
    max(‖dγ‖, gamma_scale / 32) (gamma_scale from gamma_terms_norm; 0 = plain relative error). ``grads`` are
    those of ``names`` (a subset of GRAD_NAMES, in order); ``ref_grads`` all six."""
    scale = ref_grads[2].norm().item()
    ref_grads = [r for n, r in zip(GRAD_NAMES, ref_grads, strict=True) if n in names]
    for name, g, r in zip(names, grads, ref_grads, strict=True):
        assert g is not None, f"{label}: no gradient for {name}"
        assert g.shape == r.shape, f"{label}: d{name} shape {tuple(g.shape)} != {tuple(r.shape)}"
        assert torch.isfinite(g).all(), f"{label}: d{name} has non-finite values"
        if name == "gamma" and gamma_scale > 0:
            err = ((g.double() - r.double()).norm() / max(r.norm().item(), gamma_scale / 32)).item()
        else:
            zero = r.norm().item() <= 1e-4 * scale
            err = (g.double().norm() / scale).item() if zero else rel_err(g, r)
        assert err <= tol, f"{label}: d{name} relative RMS error {err:.2e} > {tol:.0e}"


def check_against_reference(t, layout, window, d, f, h, hkv, tol: float, label: str, b: int = 1) -> None:
    """The Triton op (as the current settings schedule it) on fp32 inputs of batch ``b``: output and all six
    gradients against the reference, relative RMS error at most ``tol``."""
    from lolsearch.kernels import hybrid_attention

    inputs = make_inputs(b, h, hkv, t, d, f, seed=t + window)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    o = hybrid_attention(*leaves, window, layout)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    o_ref, ref_grads = reference_and_grads(inputs, window, layout, do)
    label = f"{label} T={t} {layout} w={window} D={d} H={h}/{hkv}".strip()
    assert o.dtype == inputs[0].dtype and o.shape == o_ref.shape, label
    assert rel_err(o, o_ref) <= tol, f"{label}: output error {rel_err(o, o_ref):.2e}"
    assert_close_grads(torch.autograd.grad(o, leaves, do), ref_grads, tol, label)
