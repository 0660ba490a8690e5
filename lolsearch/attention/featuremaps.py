"""Feature maps φ for linear attention, applied per query head after RoPE (method.md §2).

Every map takes ``x [B, H, T, D]`` and returns features ``[B, H, T, F]`` with
``F = FeatureMap.output_dim``. Learned maps hold per-head weights (untied across heads and
between q and k: the layer builds one map for q and one for k). Parameters of each map are
validated by its own pydantic ``Params`` model (``attention.feature_map.params``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from lolsearch.attention.feature_math import project, relu_features, signed_softmax
from lolsearch.attention.reference import EPS
from lolsearch.config.plugins import FEATURE_MAPS, HedgehogParams, PerformerParams, ProjectionParams


class FeatureMap(nn.Module):
    """Base class. Subclasses set ``Params`` and implement ``forward``."""

    #: whether every feature is >= 0 (Taylor features are not, though their inner products are > 0)
    nonnegative: bool = True
    #: whether :meth:`fused` exists (a Triton kernel pair of this map)
    has_fused: bool = False

    def __init__(self, num_heads: int, head_dim: int, params: BaseModel) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.params = num_heads, head_dim, params

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fused(self, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """φ by this map's fused Triton kernel (maps with ``has_fused``; Triton backend only).

        ``x`` is ``[B, HX, T, D]`` at its own heads: queries (HX = H) or keys at their kv heads (HX divides H);
        the result is ``[B, H, T, F]`` in ``out_dtype``, equal to ``forward`` of x expanded to H heads in fp32.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")


def build_feature_map(kind: str, params: dict, num_heads: int, head_dim: int) -> FeatureMap:
    """Instantiates a registered feature map from its (already validated or raw) params dict."""
    cls = FEATURE_MAPS.get(kind)
    return cls(num_heads, head_dim, FEATURE_MAPS.params(kind).model_validate(params))


def _projection(num_heads: int, head_dim: int, feature_dim: int, init: str) -> nn.Parameter:
    w = torch.empty(num_heads, head_dim, feature_dim)
    if init == "identity":
        # Rectangular identity per head: x̃ = x[..., :F'] (padded with zeros when F' > D).
        w.zero_()
        n = min(head_dim, feature_dim)
        w[:, torch.arange(n), torch.arange(n)] = 1.0
    else:
        for h in range(num_heads):
            nn.init.kaiming_uniform_(w[h], a=math.sqrt(5))
    return nn.Parameter(w)


class _SignedProjection(FeatureMap):
    """Shared by the Hedgehog-style maps: x̃ = xW per head, features of +x̃ and (unless halfspace) −x̃."""

    def __init__(self, num_heads: int, head_dim: int, params: HedgehogParams) -> None:
        super().__init__(num_heads, head_dim, params)
        self.weight = _projection(num_heads, head_dim, params.feature_dim, params.init)

    @property
    def output_dim(self) -> int:
        return self.params.feature_dim * (1 if self.params.halfspace else 2)


class Hedgehog(_SignedProjection):
    """Hedgehog (Zhang et al. 2024, arXiv 2402.04347): [softmax(xW) ⊕ softmax(−xW)], W per head, 2F' features."""

    has_fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return signed_softmax(project(x, self.weight), self.params.halfspace, EPS)

    def fused(self, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        from lolsearch.attention.ops import fused_feature_map

        return fused_feature_map("hedgehog", x, self.weight, None, self.params.halfspace, EPS, out_dtype)


class ExpDim(_SignedProjection):
    """Exponential features (Hedgehog paper, arXiv 2402.04347): [exp(x̃ − max x̃) ⊕ exp(−x̃ + min x̃)]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xw = project(x, self.weight)
        pos = torch.exp(xw - xw.amax(dim=-1, keepdim=True))
        if self.params.halfspace:
            return pos.clamp(min=EPS)
        neg = torch.exp(-xw + xw.amin(dim=-1, keepdim=True))
        return torch.cat([pos, neg], dim=-1).clamp(min=EPS)


class T2R(FeatureMap):
    """T2R (Kasai et al. 2021, arXiv 2103.13076): ReLU(xW + b), W per head, b per feature."""

    has_fused = True

    def __init__(self, num_heads: int, head_dim: int, params: ProjectionParams) -> None:
        super().__init__(num_heads, head_dim, params)
        self.weight = _projection(num_heads, head_dim, params.feature_dim, params.init)
        self.bias = nn.Parameter(torch.zeros(num_heads, params.feature_dim))

    @property
    def output_dim(self) -> int:
        return self.params.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_features(project(x, self.weight) + self.bias.to(x.dtype)[None, :, None, :], EPS)

    def fused(self, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        from lolsearch.attention.ops import fused_feature_map

        return fused_feature_map("t2r", x, self.weight, self.bias, False, EPS, out_dtype)


class Elu(FeatureMap):
    """1 + ELU(x) (Katharopoulos et al. 2020, arXiv 2006.16236); no parameters, F = D."""

    @property
    def output_dim(self) -> int:
        return self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + F.elu(x)).clamp(min=EPS)


class Relu(FeatureMap):
    """ReLU(x) (as in cosFormer/T2R without projection, arXiv 2202.08791); no parameters, F = D."""

    @property
    def output_dim(self) -> int:
        return self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_features(x, EPS)


class Taylor2(FeatureMap):
    """2nd-order Taylor of exp(q·k/√D) (Based, Arora et al. 2024, arXiv 2402.18668); no parameters.

    φ(x) = [1, x/D^¼, vec(x xᵀ)/(√2·√D)] so φ(q)·φ(k) = 1 + t + t²/2 with t = q·k/√D (> 0 always);
    F = 1 + D + D². Individual features can be negative; the kernel values never are.
    """

    nonnegative = False

    @property
    def output_dim(self) -> int:
        return 1 + self.head_dim + self.head_dim**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.head_dim
        x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2) * math.sqrt(d))
        return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, x2], dim=-1)


class Performer(FeatureMap):
    """FAVOR+ positive random features (Choromanski et al. 2021, arXiv 2009.14794); fixed seed, not trained.

    φ(x) = exp(ωᵀx' − |x'|²/2)/√m with x' = x/D^¼ and orthogonal Gaussian ω ``[H, D, m]``, so that
    E[φ(q)·φ(k)] = exp(q·k/√D).
    """

    def __init__(self, num_heads: int, head_dim: int, params: PerformerParams) -> None:
        super().__init__(num_heads, head_dim, params)
        gen = torch.Generator().manual_seed(params.seed)
        self.register_buffer("omega", _orthogonal_gaussian(num_heads, head_dim, params.feature_dim, gen))

    @property
    def output_dim(self) -> int:
        return self.params.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x / self.head_dim**0.25
        proj = project(xs, self.omega)
        sq = (xs * xs).sum(dim=-1, keepdim=True) / 2
        return (torch.exp(proj - sq) / math.sqrt(self.params.feature_dim)).clamp(min=EPS)


def _orthogonal_gaussian(num_heads: int, d: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """Blocks of orthogonal rows rescaled to Gaussian norms, ``[H, d, m]`` (FAVOR+ §2.4)."""
    heads = []
    for _ in range(num_heads):
        blocks, left = [], m
        while left > 0:
            q, r = torch.linalg.qr(torch.randn(d, d, generator=gen))
            q = q * torch.sign(torch.diagonal(r))  # sign fix: makes q Haar-distributed (uniform directions)
            blocks.append(q[:, : min(d, left)])
            left -= d
        w = torch.cat(blocks, dim=1)
        norms = torch.randn(d, m, generator=gen).norm(dim=0)
        heads.append(w * norms)
    return torch.stack(heads)
