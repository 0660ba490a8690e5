"""The fused next-token loss against ``F.cross_entropy`` on fp32 copies: the summed loss and the logits' gradient,
with ignored labels, vocabularies shorter and longer than a block, on CPU (interpreter, fp32/fp16) and on a GPU
(every dtype)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])


def _case(n: int, v: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, v, generator=gen)
    labels = torch.randint(0, v, (n,), generator=gen)
    labels[::3] = -100  # every third row unscored, as padding and the last position of a sequence are
    return logits.to(DEV, dtype), labels.to(DEV)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,v", [(7, 50), (5, 4096), (4, 4097), (3, 9000)])
def test_cross_entropy_sum_matches_plain(dtype, n, v):
    from lolsearch.kernels import cross_entropy_sum

    logits, labels = _case(n, v, dtype)
    want_in = logits.clone().requires_grad_(True)
    want = F.cross_entropy(want_in.float(), labels, ignore_index=-100, reduction="sum")
    (wg,) = torch.autograd.grad(want * 2.5, want_in)
    got_in = logits.clone().requires_grad_(True)
    got = cross_entropy_sum(got_in, labels)
    (gg,) = torch.autograd.grad(got * 2.5, got_in)  # the upstream gradient is read on the device
    assert got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-5)
    assert gg.dtype == dtype and gg.shape == logits.shape
    assert gg[labels == -100].abs().max().item() == 0
    # one rounding of the same fp32 gradient to the logits' dtype
    tol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert ((gg.float() - wg.float()).abs().max() / wg.float().abs().max()).item() <= tol


def test_cross_entropy_sum_without_grad_and_with_extreme_logits():
    """No grad: the loss alone. Logits of -inf (a vocabulary's masked entries) and large ones stay finite where the
    plain loss is."""
    from lolsearch.kernels import cross_entropy_sum

    logits, labels = _case(6, 5000, torch.float32, seed=1)
    logits[:, 4500:] = float("-inf")
    logits[1, 7] = 80.0
    labels[labels >= 4500] = 3
    with torch.no_grad():
        got = cross_entropy_sum(logits, labels)
    want = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-5)


def test_cross_entropy_sum_refuses_a_second_backward_and_bad_shapes():
    """Its backward writes the gradient over the logits, so a retained graph cannot run it again; shapes other than
    [N, V] with [N] labels are refused."""
    from lolsearch.kernels import cross_entropy_sum

    logits, labels = _case(4, 64, torch.float32)
    x = logits.clone().requires_grad_(True)
    loss = cross_entropy_sum(x * 1.0, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()
    with pytest.raises(ValueError, match=r"logits \[N, V\]"):
        cross_entropy_sum(logits[None], labels)
