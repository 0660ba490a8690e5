"""Attention transfer's fused MSE against ``F.mse_loss`` on fp32 copies: loss and gradients, contiguous and strided
operands, on CPU (interpreter, fp32/fp16) and on a GPU (every dtype); and the layer's loss with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])


def _pair(shape, dtype, teacher_layout: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen)
    b = a + 0.1 * torch.randn(shape, generator=gen)  # close, as a trained student's output is to its teacher's
    if teacher_layout == "bthd":  # SDPA's usual output: [B, H, T, D] viewed on [B, T, H, D] memory
        b = b.transpose(1, 2).contiguous().transpose(1, 2)
    return a.to(DEV, dtype).requires_grad_(True), b.to(DEV, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 37, 16), (1, 2, 5, 64), (2, 9, 65, 80)])
@pytest.mark.parametrize("teacher_layout", ["bhtd", "bthd"])
def test_fused_mse_matches_plain(dtype, shape, teacher_layout):
    from lolsearch.kernels import fused_mse

    a, b = _pair(shape, dtype, teacher_layout)
    got = fused_mse(a, b)
    (ga,) = torch.autograd.grad(got * a.numel(), a)  # scaled out of fp16's subnormal range
    a2 = a.detach().clone().requires_grad_(True)
    want = F.mse_loss(a2.float(), b.float())
    (wa,) = torch.autograd.grad(want * a.numel(), a2)
    assert got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert ga.dtype == dtype and ga.shape == a.shape
    # the same difference rounded once to the input dtype, then scaled: within one rounding of the plain gradient
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert ((ga.float() - wa.float()).abs().max() / wa.float().abs().max()).item() <= tol


def test_fused_mse_without_grad_and_with_the_teachers_gradient():
    from lolsearch.kernels import fused_mse

    a, b = _pair((2, 3, 40, 16), torch.float32, "bthd", seed=1)
    with torch.no_grad():
        torch.testing.assert_close(fused_mse(a, b), F.mse_loss(a, b), rtol=1e-5, atol=0)
    a, b = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
    ga, gb = torch.autograd.grad(fused_mse(a, b), (a, b))
    wa, wb = torch.autograd.grad(F.mse_loss(a, b), (a, b))
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)


@pytest.mark.parametrize("teacher_layout", ["bhtd", "bthd"])
def test_fused_mse_hands_back_the_teacher_token_major(teacher_layout):
    """``b_tokens``: b comes back with its values in [B, T, H, D] memory (written by the loss's pass, or b itself
    when it lies so already), and the loss and a's gradient are those of the plain call."""
    from lolsearch.kernels import fused_mse
    from lolsearch.kernels._common import token_major

    a, b = _pair((2, 3, 37, 16), torch.float32, teacher_layout, seed=2)
    loss, bt = fused_mse(a, b, b_tokens=True)
    assert token_major(bt) and bt.shape == b.shape and not bt.requires_grad
    assert (bt is b) == (teacher_layout == "bthd")
    torch.testing.assert_close(bt, b, rtol=0, atol=0)
    assert bt.transpose(1, 2).reshape(2, 37, -1).data_ptr() == bt.data_ptr()  # the projection's rows: a view
    (ga,) = torch.autograd.grad(loss, a)
    a2 = a.detach().clone().requires_grad_(True)
    (wa,) = torch.autograd.grad(fused_mse(a2, b), a2)
    torch.testing.assert_close(loss, fused_mse(a.detach(), b), rtol=0, atol=0)
    torch.testing.assert_close(ga, wa, rtol=0, atol=0)


def test_fused_mse_refuses_mismatched_operands():
    from lolsearch.kernels import fused_mse

    a = torch.zeros(1, 2, 3, 4, device=DEV)
    with pytest.raises(ValueError, match="one shape and dtype"):
        fused_mse(a, torch.zeros(1, 2, 3, 5, device=DEV))
    with pytest.raises(ValueError, match="one shape and dtype"):
        fused_mse(a, a.half())


def test_distill_layer_loss_is_the_plain_mse(monkeypatch):
    """A linearized layer in distill mode on the Triton backend records the fused loss, equal to F.mse_loss of its
    student and teacher outputs, and its feature maps get the plain loss's gradients."""
    import lolsearch.kernels.mse as mse_kernel

    from lolsearch.attention.layer import DistillRecorder
    from lolsearch.config import AttentionConfig, ModelConfig
    from lolsearch.models import load_model
    from lolsearch.trial.surgery import attention_parameters, decoder_of, distill_mode, linearize

    calls = []
    real = mse_kernel.FusedMSEFn.apply
    monkeypatch.setattr(mse_kernel.FusedMSEFn, "apply", lambda *a: calls.append(1) or real(*a))
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), DEV)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout="sliding",
                                     window=4, backend="triton"))
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0)).to(DEV)
    params = attention_parameters(model)
    losses = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr("lolsearch.attention.layer.output_mse", lambda s, t, _b: (F.mse_loss(s.float(), t.float()), t))
        rec = DistillRecorder()
        with distill_mode(model, rec):
            decoder_of(model)(input_ids=ids, use_cache=False)
        loss = sum(rec.mse.values())
        losses[fused] = (loss.detach(), torch.autograd.grad(loss, params))
    assert len(calls) == 2  # one per layer, in the fused pass only
    torch.testing.assert_close(losses[True][0], losses[False][0], rtol=1e-5, atol=0)
    for got, want in zip(losses[True][1], losses[False][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
