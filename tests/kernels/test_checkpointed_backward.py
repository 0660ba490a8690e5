"""Every autograd function of the kernels under activation checkpointing (``finetune.checkpoint_layers`` wraps each
decoder layer in ``torch.utils.checkpoint`` without reentry): the backward must read its saved tensors once
(a second unpack raises ``CheckpointError``), and the recomputed forward must give the plain run's gradients.
The interpreter on CPU, the compiled kernels on a GPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from kernel_testlib import make_inputs
from torch.utils.checkpoint import checkpoint

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []


def _grads_plain_and_checkpointed(fn: Callable, inputs: list[torch.Tensor]) -> tuple[list, list]:
    """Gradients of a fixed random projection of ``fn(*inputs)`` w.r.t. the float inputs, plain and with ``fn``
    checkpointed; ``fn`` returns a tensor or a tuple of tensors."""
    leaves = [x for x in inputs if x.is_floating_point()]

    def run(wrap: bool) -> list:
        xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        out = checkpoint(fn, *xs, use_reentrant=False) if wrap else fn(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        gen = torch.Generator().manual_seed(5)
        loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs)
        return list(torch.autograd.grad(loss, [x for x in xs if x.requires_grad]))

    assert leaves
    return run(False), run(True)


def _assert_same(plain: list, ckpt: list) -> None:
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["walk", "parallel", "quadratic"])
def test_hybrid_op(mode, schedule):
    from lolsearch.kernels import hybrid_attention

    schedule(mode)
    inputs = make_inputs(1, 2, 1, 200, 16, 16, device=DEV)

    def fn(q, k, v, fq, fk, gamma):
        return hybrid_attention(q, k, v, fq, fk, gamma, 16, "sliding")

    _assert_same(*_grads_plain_and_checkpointed(fn, inputs))


@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
def test_feature_maps(kind):
    from lolsearch.kernels import fused_features

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 20, 8, generator=gen).to(DEV)
    w = (torch.randn(2, 8, 8, generator=gen) / 8**0.5).to(DEV)
    if kind == "hedgehog":  # no bias
        _assert_same(*_grads_plain_and_checkpointed(lambda x_, w_: fused_features(kind, x_, w_), [x, w]))
    else:
        b = (0.1 * torch.randn(2, 8, generator=gen)).to(DEV)
        _assert_same(*_grads_plain_and_checkpointed(lambda x_, w_, b_: fused_features(kind, x_, w_, b_), [x, w, b]))


def test_gated_rope_loss_and_mse():
    from lolsearch.kernels import cross_entropy_sum, fused_mse, rope_qkv, silu_mul

    gen = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(DEV)

    _assert_same(*_grads_plain_and_checkpointed(silu_mul, [rand(6, 40), rand(6, 40)]))
    ang = rand(1, 9, 8)
    _assert_same(*_grads_plain_and_checkpointed(
        lambda q, k, v: rope_qkv(q, k, v, ang.cos(), ang.sin()), [rand(1, 9, 4, 8), rand(1, 9, 2, 8), rand(1, 9, 2, 8)]))
    labels = torch.randint(0, 50, (7,), generator=gen).to(DEV)
    _assert_same(*_grads_plain_and_checkpointed(lambda x: cross_entropy_sum(x, labels), [rand(7, 50)]))
    _assert_same(*_grads_plain_and_checkpointed(fused_mse, [rand(1, 2, 10, 8), rand(1, 2, 10, 8)]))


def test_lora_layer():
    from lolsearch.trial.lora_linear import LoraLinearFn

    gen = torch.Generator().manual_seed(3)
    x, wt, a, b = (torch.randn(*s, generator=gen).to(DEV) for s in ((2, 5, 12), (10, 12), (3, 12), (10, 3)))
    _assert_same(*_grads_plain_and_checkpointed(lambda x_, a_, b_: LoraLinearFn.apply(x_, wt, None, a_, b_, 0.5),
                                                [x, a, b]))


COVERED = {"HybridAttentionFn", "FeatureMapFn", "SiluMulFn", "RopeFn", "CrossEntropySumFn", "FusedMSEFn", "LoraLinearFn"}


def test_every_autograd_function_is_covered():
    """A new autograd function in lolsearch must join the tests above (and COVERED)."""
    import importlib
    import pkgutil

    from lolsearch import attention, kernels, models, trial

    for pkg in (attention, kernels, models, trial):
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name not in ("bench", "compile_check", "__main__"):  # entry points with heavy imports
                importlib.import_module(f"{pkg.__name__}.{mod.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = {c.__name__ for c in subclasses(torch.autograd.Function) if c.__module__.startswith("lolsearch")}
    assert ours == COVERED, ours ^ COVERED
