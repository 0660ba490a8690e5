"""Teacher modules swapped for fused equivalents on a GPU when a model is loaded (:func:`lolsearch.models.load_model`):
the RMSNorms (:class:`FusedRMSNorm`) and the gated MLPs' activation (:class:`FusedGatedMLP`). Off CUDA each computes
exactly what the module it replaces does; on CUDA the same formula with one rounding instead of several. Also the
next-token loss over the head's logits by one kernel (:func:`next_token_loss`), where :func:`fused_loss_applies`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lolsearch.core import kernel_env
from lolsearch.kernels import cross_entropy_sum, silu_mul, triton_available

# The teacher's RMSNorms on PyTorch's fused kernel on a GPU. transformers' Llama-family RMSNorm runs six elementwise
# kernels with an fp32 round trip per call: 522 µs at the Llama-3-8B shape (8 x 1024 tokens, bf16, H100) against
# 64 µs for F.rms_norm, 66 against 9 µs at SmolLM2's (results/perf/at_glue_20261206/), about 9% of an
# attention-transfer step. F.rms_norm computes the same formula in fp32 and rounds once to the output dtype, at
# most one unit in the last place from the original's two roundings. FUSIBLE: transformers' RMSNorm classes of the
# formula w · x / sqrt(mean(x²) + eps) (Gemma's 1 + w is not one of them).
FUSIBLE = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")


class FusedRMSNorm(nn.Module):
    """An RMSNorm over the last dimension that runs ``F.rms_norm`` on CUDA with input and weight in one dtype, and
    exactly the replaced module's computation elsewhere; holds the replaced module's weight."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.variance_epsilon = float(norm.variance_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[..., C]`` -> ``[..., C]``."""
        if x.is_cuda and x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.variance_epsilon)
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def fuse_rms_norms(model: nn.Module) -> int:
    """Replaces every module of a :data:`FUSIBLE` class in ``model`` by a :class:`FusedRMSNorm`; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if type(m).__name__ in FUSIBLE]
    for name, m in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, FusedRMSNorm(m))
    return len(targets)


# The gated MLPs' activation in one kernel each way on a GPU (kernels/gated.py): transformers' Llama-family MLP runs
# silu and the product as two kernels, rounding silu(gate) in between, and autograd keeps that activation for the
# backward, one more [tokens, intermediate] tensor per layer. GATED: the MLP classes of down(silu(gate(x)) · up(x)).
GATED = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")


class FusedGatedMLP(nn.Module):
    """``down_proj(silu(gate_proj(x)) · up_proj(x))`` with the replaced MLP's projections (so LoRA targets keep their
    names); the activation and product by :func:`lolsearch.kernels.silu_mul` on CUDA where Triton runs, by the
    replaced module's ``act_fn`` elsewhere."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act_fn = mlp.act_fn
        self.triton = triton_available()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[..., C]`` -> ``[..., C]``."""
        gate, up = self.gate_proj(x), self.up_proj(x)
        if gate.is_cuda and self.triton:
            return self.down_proj(silu_mul(gate, up))
        return self.down_proj(self.act_fn(gate) * up)


def _is_silu(act: nn.Module) -> bool:
    return type(act).__name__ in ("SiLU", "SiLUActivation")


def fuse_gated_mlps(model: nn.Module) -> int:
    """Replaces every module of a :data:`GATED` class whose activation is SiLU by a :class:`FusedGatedMLP`; returns
    how many."""
    targets = [(name, m) for name, m in model.named_modules()
               if type(m).__name__ in GATED and _is_silu(getattr(m, "act_fn", None))]
    for name, m in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, FusedGatedMLP(m))
    return len(targets)


def fused_loss_applies(head: nn.Module) -> bool:
    """Whether :func:`next_token_loss` can score ``head``'s logits: a plain ``nn.Linear`` on a CUDA device where
    Triton runs, with LOLSEARCH_KERNELS_FUSED_XENT on (the default)."""
    return isinstance(head, nn.Linear) and head.weight.is_cuda and fused_xent_on()


def fused_xent_on() -> bool:
    """LOLSEARCH_KERNELS_FUSED_XENT (default on) and a place where the Triton kernels run."""
    return bool(kernel_env.read("LOLSEARCH_KERNELS_FUSED_XENT")) and triton_available()


def next_token_loss(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (labels −100 not scored) of the logits ``head(hidden)``, by
    :func:`lolsearch.kernels.cross_entropy_sum`: hidden ``[B, T, C]``, labels ``[B, T]``. The logits are taken at
    every position (``hidden`` as a view, no copy) and each scored against the next position's label; the last
    position has none. No fp32 copy of the ``[B·T, vocab]`` logits is made, and their memory holds their gradient
    in the backward."""
    y = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1).reshape(-1)
    logits = F.linear(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)  # [B·T, vocab]
    return cross_entropy_sum(logits, y) / (y != -100).sum()
