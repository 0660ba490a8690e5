"""The gated MLP's fused activation ``silu(gate) · up`` (``kernels/gated.py``) against float64: output and both
gradients in every dtype, a gradient for one input only; on CPU (interpreter, fp32/fp16) and on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # one rounding, relative to the largest value


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 96), (2, 1000), (5,)], ids=lambda s: "x".join(map(str, s)))
def test_silu_mul_matches_float64(dtype, shape):
    from lolsearch.kernels import silu_mul

    gen = torch.Generator().manual_seed(0)
    g64, u64 = (3 * torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2))
    g, u = (x.to(DEV, dtype).requires_grad_() for x in (g64, u64))
    g64, u64 = (x.to(dtype).double().requires_grad_() for x in (g64, u64))  # the same rounded inputs
    dy = torch.randn(shape, generator=gen, dtype=torch.float64)
    want = F.silu(g64) * u64
    wg, wu = torch.autograd.grad(want, (g64, u64), dy)
    got = silu_mul(g, u)
    assert got.dtype == dtype and got.shape == want.shape
    assert _rel(got, want) <= TOL[dtype]
    dg, du = torch.autograd.grad(got, (g, u), dy.to(DEV, dtype))
    assert dg.dtype == du.dtype == dtype
    assert _rel(dg, wg) <= 2 * TOL[dtype] and _rel(du, wu) <= 2 * TOL[dtype]


def test_silu_mul_gradient_of_one_input_and_bad_operands():
    from lolsearch.kernels import silu_mul

    g = torch.randn(4, 33, device=DEV, requires_grad=True)
    u = torch.randn(4, 33, device=DEV)
    (dg,) = torch.autograd.grad(silu_mul(g, u).sum(), g)
    g2 = g.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad((F.silu(g2) * u).sum(), g2)
    assert _rel(dg, want) <= 1e-6
    with pytest.raises(ValueError, match="one shape and dtype"):
        silu_mul(g, u[:, :5])
