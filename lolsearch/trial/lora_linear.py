"""A LoRA-adapted linear layer (Hu et al. 2021, arXiv 2106.09685) in one autograd function, on a GPU.

peft computes ``y = base(x) + lora_B(lora_A(x)) · s`` as separate operators: besides the three products, the scale
and the sum each read and write a ``[tokens, out]`` tensor in the forward, and again in the backward (the scale's
gradient, and the sum of x's gradients through the base weight and through the adapter). Here the adapter's
product is added by the base product's own epilogue (``addmm`` into y, and into dx in the backward), and the scale
is applied to the ``[tokens, rank]`` factors only:

    forward   u = x Aᵀ,  y = x Wᵀ + b,  y += s · u Bᵀ
    backward  gᵤ = s · g B,  dx = g W + gᵤ A,  dA = gᵤᵀ x,  dB = gᵀ (s · u)

Products run in x's dtype (``lora.compute_dtype: model``) from the fp32 adapter weights, cast per call; their
gradients are returned in fp32. The base weight and bias stay frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn


class LoraLinearFn(torch.autograd.Function):
    """``x`` ``[..., in]``, base ``weight`` ``[out, in]`` and ``bias`` (frozen), ``lora_a`` ``[r, in]``,
    ``lora_b`` ``[out, r]`` (fp32 or x's dtype), ``scaling`` s → ``[..., out]`` in x's dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        u = x2 @ a.t()  # [N, r]
        y = torch.nn.functional.linear(x2, weight, bias)
        y.addmm_(u, b.t(), alpha=scaling)
        ctx.save_for_backward(x2, weight, lora_a, lora_b, u)
        ctx.scaling = scaling
        ctx.x_shape = x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight, lora_a, lora_b, u = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        a, b = lora_a.to(g.dtype), lora_b.to(g.dtype)
        gu = (g @ b).mul_(ctx.scaling)  # [N, r]: the gradient at u
        dx = da = db = None
        if ctx.needs_input_grad[0]:
            dx = (g @ weight).addmm_(gu, a).view(ctx.x_shape)
        if ctx.needs_input_grad[3]:
            da = (gu.t() @ x2).to(lora_a.dtype)
        if ctx.needs_input_grad[4]:
            db = (g.t() @ (u * ctx.scaling)).to(lora_b.dtype)
        return dx, None, None, da, db, None


def fused_here(x: torch.Tensor) -> bool:
    """Where the fused layer runs: CUDA tensors (on CPU peft's operators are kept, bit for bit as before)."""
    return x.is_cuda


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA ``Linear`` whose forward runs :class:`LoraLinearFn` when it computes one plain adapter (no
    dropout in training, no variant such as DoRA, frozen ``nn.Linear`` base, products in x's dtype) on a GPU, and
    peft's own forward otherwise. Set on a layer by :func:`fuse`; names, parameters and state dicts are peft's."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else self._plain_adapter(x)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        return LoraLinearFn.apply(x, base.weight, base.bias, self.lora_A[adapter].weight, self.lora_B[adapter].weight,
                                  self.scaling[adapter])

    def _plain_adapter(self, x: torch.Tensor) -> str | None:
        if self.disable_adapters or self.merged or getattr(self, "cast_input_dtype_enabled", True) or not fused_here(x):
            return None
        active = [a for a in self.active_adapters if a in self.lora_A]
        if len(active) != 1 or active[0] in self.lora_variant:
            return None
        name = active[0]
        base, lora_a, lora_b = self.base_layer, self.lora_A[name], self.lora_B[name]
        frozen = not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
        no_dropout = isinstance(self.lora_dropout[name], nn.Identity) or not self.training
        plain = type(base) is nn.Linear and lora_a.bias is None and lora_b.bias is None
        return name if frozen and no_dropout and plain and x.dtype == base.weight.dtype else None


def fuse(layer: PeftLoraLinear, on: bool) -> bool:
    """Makes peft's LoRA ``Linear`` ``layer`` a :class:`FusedLoraLinear` (``on``) or peft's own class again;
    other layer types are left alone. Returns whether the layer's class changed."""
    want = FusedLoraLinear if on else PeftLoraLinear
    if type(layer) not in (PeftLoraLinear, FusedLoraLinear) or type(layer) is want:
        return False
    layer.__class__ = want
    return True
