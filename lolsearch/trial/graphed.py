"""Whole-model decoding of a linearized Llama-family model in one CUDA graph per step.

``graphed_generate`` prefills through the model's own forward (a :class:`LinearizedCache`, left padding
allowed), turns every layer's state into a :class:`StaticLayerState` sharing one device position tensor
``pos [B]``, and decodes greedily with :class:`StaticDecoder`: embed, RoPE at ``pos``, the decoder layers
(each linearized attention runs :func:`static_decode_step`), final norm, LM head, argmax into a static token
buffer. The step has no host sync and no Python value that depends on the position, so on CUDA it is captured
once with ``torch.cuda.CUDAGraph`` and replayed; elsewhere (CPU tests) the same step runs eagerly.

Layers kept as softmax (``softmax_layers``) decode against fixed KV buffers sized to the prompt plus the new
tokens (:meth:`LinearizedCache.to_static_kv`), written in place at a device index and masked per row (left pads
and positions not yet written), so they are graphed too. Their attention runs through
:func:`packed_decode_attention`: the query heads of a KV head packed as rows of one SDPA call, so the masked step
reads each cached key once instead of copying the cache per query head (``repeat_kv``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

from lolsearch.attention.cache import LayerState, LinearizedCache, new_cache
from lolsearch.attention.layer import LinearizedAttention, teacher_window
from lolsearch.attention.static import StaticLayerState
from lolsearch.trial.forward_graph import undo_failed_capture
from lolsearch.trial.surgery import cache_kwarg, decoder_layers, decoder_of, unwrap_peft


class GraphError(ValueError):
    """The model cannot decode through the static (graphable) step."""


def check_graphable(model: nn.Module) -> tuple[list[nn.Module], list[int]]:
    """The decoder layers and the indices of those kept as softmax; GraphError when none is linearized."""
    layers = list(decoder_layers(model))
    soft = [i for i, layer in enumerate(layers) if not isinstance(getattr(layer, "self_attn", None), LinearizedAttention)]
    if len(soft) == len(layers):
        raise GraphError("graphed decoding needs a linearized model (no attention layer is linearized)")
    return layers, soft


def to_static(st: LayerState | StaticLayerState) -> StaticLayerState:
    """The static form of a layer's generation state (a copy for a ``LayerState``)."""
    return st if isinstance(st, StaticLayerState) else StaticLayerState.from_rows([st], [0])


PACKED_DECODE = "lolsearch_packed_decode"


def packed_decode_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row (transformers' attention-function signature).

    Args:
        query: ``[B, H, 1, D]``. key, value: ``[B, Hkv, L, D]``. attention_mask: additive ``[B, 1, 1, L]`` or None.

    Returns:
        ``([B, 1, H, D], None)``: the G = H / Hkv query heads of each KV head are the G query rows of one
        ``[B, Hkv, G, D]`` SDPA call, so no copy of the cache is made per query head.
    """
    b, h, t, d = query.shape
    if t != 1:
        raise ValueError(f"packed decode attention takes one query token per row, got {t}")
    hkv = key.shape[1]
    out = F.scaled_dot_product_attention(query.reshape(b, hkv, h // hkv, d), key, value, attn_mask=attention_mask,
                                         scale=scaling)
    return out.reshape(b, h, 1, d).transpose(1, 2), None


AttentionInterface.register(PACKED_DECODE, packed_decode_attention)


def packed_config(config: Any) -> Any:
    """A shallow copy of a softmax attention module's config that selects :func:`packed_decode_attention`."""
    out = copy.copy(config)
    out._attn_implementation = PACKED_DECODE
    return out


@contextmanager
def packed_softmax_attention(attns: list[tuple[nn.Module, Any]]) -> Iterator[None]:
    """Inside the block each softmax attention module of ``attns`` (module, :func:`packed_config` of its config)
    uses :func:`packed_decode_attention`; its own config (the model's) is back after it."""
    saved = [a.config for a, _ in attns]
    for a, packed in attns:
        a.config = packed
    try:
        yield
    finally:
        for (a, _), c in zip(attns, saved, strict=True):
            a.config = c


class StaticDecoder:
    """Greedy one-token step of the whole model over static states (``tokens [B, 1]`` in, next tokens out)."""

    def __init__(self, model: nn.Module, cache: LinearizedCache, tokens: torch.Tensor, new_tokens: int = 0) -> None:
        """``new_tokens``: how many steps will run (sizes the softmax layers' KV buffers; needed only with them)."""
        self.layers, soft = check_graphable(model)
        self.decoder = decoder_of(model)
        self.head = unwrap_peft(model).get_output_embeddings()
        self.cache = cache
        linear = [i for i in range(len(self.layers)) if i not in soft]
        states = [to_static(cache.linear[i]) for i in linear]
        self.pos = states[0].pos.clone()  # [B] real position of the token in `tokens`, shared by all layers
        for i, st in zip(linear, states, strict=True):
            st.pos, st.advance = self.pos, False
            cache.linear[i] = st
        self.states = states
        self.tokens = tokens.reshape(-1, 1).to(torch.long).clone()  # [B, 1] static input buffer
        self.logits: torch.Tensor | None = None
        self.kv_pads: torch.Tensor | None = None
        self.soft_attns = [(a, packed_config(a.config)) for a in (self.layers[i].self_attn for i in soft)]
        # each softmax layer's own sliding window (None: attends to every key); 0 for linearized layers
        self.windows = [teacher_window(layer.self_attn) if i in soft else 0 for i, layer in enumerate(self.layers)]
        if soft:
            if new_tokens < 1:
                raise GraphError(f"layers {soft} are softmax: give new_tokens to size their fixed KV buffers")
            t = cache.to_static_kv(cache.get_seq_length() + new_tokens)
            if t == 0:
                raise GraphError(f"layers {soft} are softmax and the cache holds no prefilled keys for them")
            b, dev = self.tokens.shape[0], self.tokens.device
            self.kv_pads = torch.tensor(cache.pads or [0] * b, dtype=torch.long, device=dev)[:, None]  # [B, 1]
            self.kv_index = torch.arange(next(iter(cache.static_kv.values()))[0].shape[2], device=dev)[None, :]
        self._cache_kwarg = cache_kwarg(self.layers[0])

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a step mutates (for snapshots around graph warm-up)."""
        out = [self.pos, self.tokens]
        for st in self.states:
            out += [st.S, st.z, st.k, st.v, st.slot_pos]
        if self.kv_pads is not None:
            out += [self.cache.kv_slot, *(t for kv in self.cache.static_kv.values() for t in kv)]
        return out

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Logits ``[B, V]`` of the tokens in ``tokens``; writes the argmax into ``tokens`` and advances ``pos``."""
        dec = self.decoder
        h = dec.embed_tokens(self.tokens)
        position_ids = self.pos[:, None]
        pe = dec.rotary_emb(h, position_ids)
        masks: dict[int | None, torch.Tensor | None] = {0: None}
        if self.kv_pads is not None:  # softmax layers: keys from the row's first real token up to this one
            valid = (self.kv_index >= self.kv_pads) & (self.kv_index <= self.cache.kv_slot)  # [B, L]
            for w in set(self.windows) - {0}:  # and within the layer's sliding window
                seen = valid if w is None else valid & (self.cache.kv_slot - self.kv_index < w)
                masks[w] = torch.zeros(seen.shape, dtype=h.dtype, device=h.device).masked_fill_(
                    ~seen, torch.finfo(h.dtype).min)[:, None, None, :]
        with packed_softmax_attention(self.soft_attns):
            for layer, w in zip(self.layers, self.windows, strict=True):
                h = layer(h, attention_mask=masks[w], position_embeddings=pe, position_ids=position_ids,
                          use_cache=True, **{self._cache_kwarg: self.cache})
                h = h[0] if isinstance(h, tuple) else h
        logits = self.head(dec.norm(h)[:, -1])
        self.tokens.copy_(logits.argmax(-1, keepdim=True))
        self.pos.add_(1)
        if self.kv_pads is not None:
            self.cache.kv_slot.add_(1)
        self.logits = logits
        return logits


class GraphedStep:
    """``StaticDecoder.step`` captured in a CUDA graph; calling it replays the graph (state advances one token)."""

    def __init__(self, decoder: StaticDecoder, warmup: int = 2) -> None:
        if decoder.tokens.device.type != "cuda":
            raise GraphError("CUDA graphs need a CUDA device")
        self.decoder = decoder
        snapshot = [t.clone() for t in decoder.tensors()]  # warm-up steps must not advance the real state
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                decoder.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            with torch.cuda.graph(self.graph):
                self.logits = decoder.step()
        except Exception:
            undo_failed_capture(main, decoder.tokens.device)  # the process (a reused worker too) goes on eagerly
            raise
        for t, saved in zip(decoder.tensors(), snapshot, strict=True):
            t.copy_(saved)
        del snapshot

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits


def prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[LinearizedCache, torch.Tensor]:
    """Runs the prompt through the model's forward; returns the cache and the last position's logits ``[B, V]``."""
    cache = new_cache(model)
    cache.set_padding(attention_mask)
    position_ids = None
    if attention_mask is not None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    params = inspect.signature(type(model).forward).parameters
    kwarg = "cache" if "cache" in params else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                    logits_to_keep=1, **{kwarg: cache})
    return cache, out.logits[:, -1]


def graphed_generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     max_new_tokens: int = 32, graph: bool | None = None) -> torch.Tensor:
    """Greedy generation like ``model.generate(do_sample=False)`` without stopping at EOS.

    Args:
        input_ids: ``[B, T]`` prompts, left padded where ``attention_mask [B, T]`` has zeros.
        graph: replay a CUDA graph (default: on CUDA); False runs the same static step eagerly.

    Returns:
        ``[B, T + max_new_tokens]``: the prompts followed by the generated tokens.
    """
    check_graphable(model)
    cache, logits = prefill(model, input_ids, attention_mask)
    first = logits.argmax(-1)
    if max_new_tokens <= 1:
        return torch.cat([input_ids, first[:, None]][: 1 + max_new_tokens], 1)
    decoder = StaticDecoder(model, cache, first, new_tokens=max_new_tokens)
    use_graph = input_ids.device.type == "cuda" if graph is None else graph
    step = GraphedStep(decoder) if use_graph else decoder.step
    out = [first[:, None]]
    for _ in range(max_new_tokens - 1):
        step()
        out.append(decoder.tokens.clone())
    return torch.cat([input_ids, *out], 1)


def greedy_continuation(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, *, graph: bool, eos: int | None,
                        pad: int | None) -> list[int]:
    """The greedy continuation of one prompt ``ids [1, T]``: through ``model.generate()``, or with ``graph``
    through :func:`graphed_generate` (which does not stop at EOS: its tokens are cut after the first EOS)."""
    with torch.no_grad():
        if not graph:
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
            return gen[0, ids.shape[1]:].tolist()
        new = graphed_generate(model, ids, max_new_tokens=max_new_tokens)[0, ids.shape[1]:].tolist()
    return new[: new.index(eos) + 1] if eos in new else new


__all__ = ["GraphError", "GraphedStep", "StaticDecoder", "check_graphable", "graphed_generate", "greedy_continuation",
           "packed_decode_attention", "prefill", "to_static"]
