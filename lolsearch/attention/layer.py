"""The linearized attention layer that replaces an HF Llama/Mistral/Qwen2/Qwen3 attention module.

It reuses the teacher's q/k/v/o projections (so LoRA targets keep their names), applies RoPE, then
φ after RoPE per query head (k expanded first, method.md §2.1), and mixes window softmax with
linear attention (LoLCATs, arXiv 2410.10254, Eq. 7). Modes:

- ``student``: the linearized attention (training stage 2, evaluation, generation).
- ``teacher``: the original softmax attention through the same projections (with PEFT adapters
  disabled this is exactly the teacher; used for KL/agreement metrics without a second model copy).
- ``distill``: computes the teacher's softmax output and the student's output per head (before
  o_proj), hands both to a :class:`DistillRecorder`, and passes the *teacher's* output on
  (teacher forcing), so every layer trains on exact teacher inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lolsearch.attention.cache import LayerState, LinearizedCache
from lolsearch.attention.chunked import LinearState, expand_kv, hybrid_attention_chunked
from lolsearch.attention.featuremaps import build_feature_map
from lolsearch.attention.layouts import get_layout
from lolsearch.attention.ops import backend_for_features, fused_rope, hybrid_attention, output_mse, resolve_backend
from lolsearch.attention.reference import EPS, hybrid_masks, unnormalized_weights
from lolsearch.attention.static import StaticLayerState, static_decode_step
from lolsearch.core import kernel_env


@dataclass
class DistillRecorder:
    """Per-layer attention-transfer losses of one forward pass (attached to every linearized layer)."""

    xent: bool = False
    xent_chunk: int = 256
    mse: dict[int, torch.Tensor] = field(default_factory=dict)
    xent_loss: dict[int, torch.Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        self.mse.clear()
        self.xent_loss.clear()


def teacher_window(attn: nn.Module) -> int | None:
    """The sliding window of a softmax attention module (Mistral: its config's; Qwen2/3: the layer's own, None on
    full layers); None when it attends to every earlier key."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(getattr(attn, "config", None), "sliding_window", None)


class LinearizedAttention(nn.Module):
    """Hybrid window-softmax + linear attention in place of a softmax attention module."""

    def __init__(
        self,
        base: nn.Module,
        layer_idx: int,
        *,
        layout: str,
        window: int,
        feature_map: str,
        feature_map_params: dict,
        gamma_init: float,
        train_gamma: bool,
        backend: str,
        chunk_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
    ) -> None:
        super().__init__()
        self.config = getattr(base, "config", None)
        self.layer_idx = layer_idx
        self.layout, self.window = layout, window
        self.backend, self.chunk_size = backend, chunk_size
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = base.q_proj, base.k_proj, base.v_proj, base.o_proj
        self.q_norm = getattr(base, "q_norm", None)
        self.k_norm = getattr(base, "k_norm", None)
        self.teacher_window = teacher_window(base)
        device = base.q_proj.weight.device
        self.feature_map_q = build_feature_map(feature_map, feature_map_params, num_heads, head_dim).to(device)
        self.feature_map_k = build_feature_map(feature_map, feature_map_params, num_heads, head_dim).to(device)
        self.backend = backend_for_features(backend, self.feature_map_q.output_dim)
        w0 = torch.full((num_heads,), math.log(gamma_init / (1 - gamma_init)), device=device)
        if train_gamma:
            self.gamma_logit = nn.Parameter(w0)
        else:
            self.register_buffer("gamma_logit", w0)
        self.mode = "student"
        self.recorder: DistillRecorder | None = None
        self.recompute_features = False  # a stage's recompute_features: φ recomputed in backward, not kept
        # φ by the feature map's fused kernel where it has one (Triton backend); None: LOLSEARCH_KERNELS_FUSED_FEATURES
        self.fuse_features: bool | None = None

    @property
    def gamma(self) -> torch.Tensor:
        """Softmax weight per head, ``[H]``."""
        return torch.sigmoid(self.gamma_logit)

    def extra_repr(self) -> str:
        return f"layout={self.layout}, window={self.window}, heads={self.num_heads}/{self.num_kv_heads}, backend={self.backend}"

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: object | None = None,
        cache: object | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        b, t, _ = hidden_states.shape
        cache = cache if cache is not None else past_key_values
        q, k, v = self._qkv(hidden_states, position_embeddings, cache is None and self.fuses_rope(hidden_states.device))
        if self.mode == "distill":
            y = self._distill(q, k, v)
        elif self.mode == "teacher":
            if cache is not None:
                raise ValueError("teacher mode runs full forwards only (no generation cache)")
            y = self._softmax(q, k, v)
        elif cache is not None:
            y = self._with_cache(q, k, v, cache)
        else:
            y = hybrid_attention(q, k, v, *self._features(q, k), self.gamma, self.window, self.layout, self.backend,
                                 self.chunk_size, token_major_out=True)
        y = y.transpose(1, 2).reshape(b, t, -1).to(hidden_states.dtype)  # a view where y is token-major
        return self.o_proj(y), None

    def _qkv(self, x: torch.Tensor, position_embeddings, fused: bool = False,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections + (Qwen3) q/k norms + RoPE -> q ``[B, H, T, D]``, k/v ``[B, Hkv, T, D]``; with ``fused``
        (and RoPE over the whole head) by one kernel that also writes q, k, v head-major (:func:`fused_rope`)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.head_dim)
        k = self.k_proj(x).view(b, t, -1, self.head_dim)
        v = self.v_proj(x).view(b, t, -1, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if position_embeddings is None:
            raise ValueError("linearized attention needs position_embeddings (RoPE cos, sin) from the model")
        cos, sin = position_embeddings
        if fused and cos.dim() == 3 and cos.shape[-1] == self.head_dim:
            return fused_rope(q, k, v, cos, sin)
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        return q, k, v.transpose(1, 2)

    def fuses_rope(self, device: torch.device) -> bool:
        """Whether RoPE and the head-major layout run by the fused kernel: on the Triton backend, with
        LOLSEARCH_KERNELS_FUSED_ROPE (default on). Generation (a cache) keeps transformers' RoPE."""
        return kernel_env.read("LOLSEARCH_KERNELS_FUSED_ROPE") and resolve_backend(self.backend, device) == "triton"

    def fused_maps(self, device: torch.device) -> bool:
        """Whether φ runs by the feature maps' fused kernels (``FeatureMap.fused``): maps that have one, on the
        Triton backend, with ``fuse_features`` (None: LOLSEARCH_KERNELS_FUSED_FEATURES, default on)."""
        fuse = self.fuse_features
        if fuse is None:
            fuse = kernel_env.read("LOLSEARCH_KERNELS_FUSED_FEATURES")
        return bool(fuse) and self.feature_map_q.has_fused and resolve_backend(self.backend, device) == "triton"

    def phi(self, fmap: nn.Module, x: torch.Tensor, out_dtype: torch.dtype, fused: bool) -> torch.Tensor:
        """φ ``[B, H, T, F]`` in ``out_dtype`` of x ``[B, HX, T, D]`` at its own heads (queries, or keys at their kv
        heads): by the map's fused kernel, or by the module on x expanded to query heads in fp32."""
        if fused:
            return fmap.fused(x, out_dtype)
        return fmap(expand_kv(x, self.num_heads).float()).to(out_dtype)

    def _features(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """φ(q), φ(k) ``[B, H, T, F]``, in q's dtype for the Triton kernels, else fp32. Fused kernels
        (:meth:`fused_maps`) keep nothing but q and k for the backward. Otherwise, with ``recompute_features`` and
        grad, the modules' intermediates (several fp32 ``[B, H, T, F]`` tensors per layer) are recomputed in the
        backward pass instead of kept."""
        dt = q.dtype if resolve_backend(self.backend, q.device) == "triton" else torch.float32
        if self.fused_maps(q.device):
            return self.phi(self.feature_map_q, q, dt, True), self.phi(self.feature_map_k, k, dt, True)
        if self.recompute_features and torch.is_grad_enabled():
            return checkpoint(self._features_of_modules, q, k, dt, use_reentrant=False, preserve_rng_state=False)
        return self._features_of_modules(q, k, dt)

    def _features_of_modules(self, q: torch.Tensor, k: torch.Tensor, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.phi(self.feature_map_q, q, dt, False), self.phi(self.feature_map_k, k, dt, False)

    def _softmax(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The teacher's causal softmax attention ``[B, H, T, D]`` (SDPA reads each kv head for its query heads),
        within its sliding window when it has one shorter than the sequence."""
        gqa, t = k.shape[1] != q.shape[1], q.shape[-2]
        if self.teacher_window is None or t <= self.teacher_window:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        i = torch.arange(t, device=q.device)
        band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < self.teacher_window)  # [T, T]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=band, enable_gqa=gqa)

    def _distill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Records student-vs-teacher losses and returns the teacher's output (teacher forcing)."""
        if self.recorder is None:
            raise RuntimeError("distill mode needs a DistillRecorder (use lolsearch.trial.surgery.distill_mode)")
        with torch.no_grad():
            y_teacher = self._softmax(q, k, v)
        phi_q, phi_k = self._features(q, k)
        gamma = self.gamma
        y_student = hybrid_attention(
            q, k, v, phi_q, phi_k, gamma, self.window, self.layout, self.backend, self.chunk_size
        )
        self.recorder.mse[self.layer_idx], y_teacher = output_mse(y_student, y_teacher, self.backend)
        if self.recorder.xent:
            self.recorder.xent_loss[self.layer_idx] = attention_xent(
                q, expand_kv(k, self.num_heads), phi_q, phi_k, gamma, self.window, self.layout,
                self.recorder.xent_chunk, self.teacher_window,
            )
        return y_teacher

    def _with_cache(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: object) -> torch.Tensor:
        """Prefill or decode against the constant-size generation state of this layer."""
        if not isinstance(cache, LinearizedCache):
            raise TypeError(
                "a linearized model needs a lolsearch LinearizedCache for incremental decoding "
                "(model.generate() creates one; or pass lolsearch.attention.new_cache(model))"
            )
        st = cache.linear.get(self.layer_idx)
        if isinstance(st, StaticLayerState):
            if q.shape[-2] != 1:
                raise ValueError("a padded (or static) generation cache takes one token per step after its prefill")
            return static_decode_step(self, q, k, v, st)
        if st is None and cache.pads is not None:
            o, cache.linear[self.layer_idx] = self._padded_prefill(q, k, v, cache.pads)
            return o
        if st is None:
            st = self._empty_state(q)
            cache.linear[self.layer_idx] = st
        if q.shape[-2] == 1:
            return self._decode_step(q, k, v, st)
        return self._prefill(q, k, v, st)

    def _empty_state(self, q: torch.Tensor) -> LayerState:
        b, dev = q.shape[0], q.device
        f = self.feature_map_q.output_dim
        cap = get_layout("linear" if self.window == 0 else self.layout).window_capacity(self.window)
        return LayerState(
            state=LinearState.zeros(b, self.num_heads, f, self.head_dim, device=dev),
            k=torch.zeros(b, self.num_kv_heads, cap, self.head_dim, device=dev, dtype=q.dtype),
            v=torch.zeros(b, self.num_kv_heads, cap, self.head_dim, device=dev, dtype=q.dtype),
            win_start=0,
            seen=0,
        )

    def _padded_prefill(self, q, k, v, pads: list[int]) -> tuple[torch.Tensor, StaticLayerState]:
        """Prefill of a left-padded batch: each row alone from its first real token (pads contribute nothing),
        then the rows stacked into a :class:`StaticLayerState` with a position per row. Pad outputs are 0."""
        t = q.shape[-2]
        if len(pads) != q.shape[0] or max(pads) >= t:
            raise ValueError(f"left pads {pads} do not fit a batch of {q.shape[0]} rows of {t} tokens")
        o = q.new_zeros(q.shape)
        rows = []
        for b, p in enumerate(pads):
            st = self._empty_state(q[b : b + 1])
            o[b : b + 1, :, p:] = self._prefill(q[b : b + 1, :, p:], k[b : b + 1, :, p:], v[b : b + 1, :, p:], st)
            rows.append(st)
        return o, StaticLayerState.from_rows(rows, pads)

    def _softmax_start(self, pos: int) -> int:
        return int(get_layout("linear" if self.window == 0 else self.layout).softmax_start(pos, self.window))

    def _prefill(self, q, k, v, st: LayerState) -> torch.Tensor:
        p0, first = st.seen, st.win_start
        k_win, v_win = st.window()
        keys, vals = torch.cat([k_win, k.to(k_win.dtype)], dim=-2), torch.cat([v_win, v.to(v_win.dtype)], dim=-2)
        phi_q, phi_k = self._features(q, keys)
        if p0 == 0 and resolve_backend(self.backend, q.device) == "triton":
            o, state, covered = hybrid_attention(
                q, k, v, phi_q, phi_k, self.gamma, self.window, self.layout, "triton", return_state=True
            )
        else:
            o, state, covered = hybrid_attention_chunked(
                q, keys, vals, phi_q.float(), phi_k.float(), self.gamma, self.window, self.layout,
                chunk_size=self.chunk_size, state=st.state, q_start=p0, return_state=True,
            )
        st.state = LinearState(state.S.float(), state.z.float())
        st.seen = p0 + q.shape[-2]
        st.store_window(keys[..., covered - first :, :], vals[..., covered - first :, :], covered)
        return o

    def _decode_step(self, q, k, v, st: LayerState) -> torch.Tensor:
        """One token: keys leaving the window go into the state, the new key into its ring slot, then one
        read-out over window and state (the fused Triton step on the triton backend, its PyTorch twin else)."""
        from lolsearch.kernels.decode_torch import hybrid_decode_step_torch

        pos = st.seen
        start = self._softmax_start(pos)
        slot_pos = st.device_slot_positions()
        leave_end = min(start, pos)  # cached keys before `start` leave the window
        idx = st.slots(st.win_start, leave_end) if leave_end > st.win_start else slice(0, 0)
        k_out, v_out = st.k[..., idx, :].clone(), st.v[..., idx, :].clone()  # the new key may reuse their slot
        slot_pos[idx] = -1
        st.win_start = max(st.win_start, leave_end)
        if pos < start:  # the new key is linear already (linear layout): straight into the state
            k_out, v_out = torch.cat([k_out, k.to(k_out.dtype)], -2), torch.cat([v_out, v.to(v_out.dtype)], -2)
            st.win_start = pos + 1
        else:
            slot = pos % st.capacity
            st.k[..., slot, :], st.v[..., slot, :] = k[..., 0, :], v[..., 0, :]
            slot_pos[slot] = pos
        fused = self.fused_maps(q.device)
        phi_out = self.phi(self.feature_map_k, k_out, torch.float32, fused) if k_out.shape[-2] else None
        st.seen = pos + 1
        phi_q = self.phi(self.feature_map_q, q, torch.float32, fused)[..., 0, :]
        if resolve_backend(self.backend, q.device) == "triton":
            from lolsearch.kernels import hybrid_decode_step as step
        else:
            step = hybrid_decode_step_torch
        o = step(q[..., 0, :], phi_q, st.k, st.v, slot_pos, st.state.S, st.state.z, self.gamma, self.window,
                 self.layout, pos, phi_out, v_out if phi_out is not None else None)
        return o.unsqueeze(-2)


def attention_xent(
    q: torch.Tensor,
    k: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str,
    chunk: int = 256,
    teacher_window: int | None = None,
) -> torch.Tensor:
    """Cross-entropy −Σ_j a_ij log â_ij between teacher softmax weights and hybrid weights, mean over queries.

    Computed per query chunk under activation checkpointing, so no T×T map is ever held for the
    whole sequence (peak O(chunk × T) per layer). q, k: ``[B, H, T, D]``; phi: ``[B, H, T, F]``.
    ``teacher_window``: the teacher attends only to its last that many keys (a sliding-window teacher).
    """
    t = q.shape[-2]
    total = q.new_zeros((), dtype=torch.float32)
    for s in range(0, t, chunk):
        e = min(s + chunk, t)
        total = total + checkpoint(
            _xent_chunk, q[..., s:e, :], k[..., :e, :], phi_q[..., s:e, :], phi_k[..., :e, :], gamma, window, layout, s,
            teacher_window, use_reentrant=False,
        )
    return total / (q.shape[0] * q.shape[1] * t)


def _xent_chunk(q, k, phi_q, phi_k, gamma, window: int, layout: str, q_start: int,
                teacher_window: int | None) -> torch.Tensor:
    """Sum over the chunk's queries of −Σ_j a_ij log â_ij (keys 0..q_start+C)."""
    c, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    qf, kf = q.float(), k.float()
    soft, lin = hybrid_masks(c, tk, window, layout, q_start=q_start, k_start=0, device=q.device)
    causal = soft | lin
    seen = causal
    if teacher_window is not None:
        rows = torch.arange(q_start, q_start + c, device=q.device)[:, None]
        seen = causal & (rows - torch.arange(tk, device=q.device)[None, :] < teacher_window)
    with torch.no_grad():
        s = torch.einsum("bhid,bhjd->bhij", qf, kf) * d**-0.5
        teacher = s.masked_fill(~seen, float("-inf")).softmax(dim=-1)
    a = unnormalized_weights(qf, kf, phi_q.float(), phi_k.float(), gamma.float(), soft, lin)
    log_a = torch.log(a.clamp_min(EPS)) - torch.log(a.sum(dim=-1, keepdim=True) + EPS)
    return -(teacher * log_a.masked_fill(~causal, 0.0)).sum()
