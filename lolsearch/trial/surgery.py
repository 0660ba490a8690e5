"""Model surgery: swap softmax attention for linearized attention in HF Llama-family models.

``linearize(model, cfg)`` replaces every attention module except the layers kept as softmax,
freezes everything but the feature maps and γ, and returns a :class:`SurgeryReport`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from lolsearch.attention.cache import LinearizedCache, new_cache
from lolsearch.attention.layer import DistillRecorder, LinearizedAttention, teacher_window
from lolsearch.attention.ops import resolve_backend
from lolsearch.config import AttentionConfig

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


class SurgeryError(ValueError):
    """The model cannot be linearized as asked."""


@dataclass(frozen=True)
class SurgeryReport:
    """What :func:`linearize` did."""

    architecture: str
    num_layers: int
    replaced: tuple[int, ...]
    kept_softmax: tuple[int, ...]
    plan: tuple[tuple[str, int], ...]
    feature_dim: int
    trainable_params: int
    backend: str  # the kernel path the linearized layers run on the model's device ("+" joins several)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The causal LM inside a PEFT wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM (inside a PEFT wrapper too) computes only its last positions' logits on request."""
    return "logits_to_keep" in inspect.signature(type(unwrap_peft(model)).forward).parameters


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack of an HF causal LM (embeddings, layers, final norm; no LM head), also through PEFT."""
    inner = unwrap_peft(model)
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else getattr(inner, "model", None)
    if not isinstance(decoder, nn.Module):
        raise SurgeryError(f"cannot find the decoder of {type(model).__name__}")
    return decoder


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list of an HF causal LM (also through a PEFT wrapper)."""
    layers = getattr(decoder_of(model), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise SurgeryError(f"cannot find decoder layers in {type(model).__name__}")
    return layers


def linearize(model: nn.Module, cfg: AttentionConfig) -> SurgeryReport:
    """Replaces attention modules in place per ``cfg``; freezes all but feature maps and γ.

    Raises:
        SurgeryError: unsupported architecture, missing attention modules, or nothing to replace.
    """
    arch = getattr(getattr(model, "config", None), "model_type", None)
    if arch not in SUPPORTED:
        raise SurgeryError(f"architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED)})")
    mc = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_heads, num_kv = mc.num_attention_heads, mc.num_key_value_heads
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // num_heads
    layers = decoder_layers(model)
    if cfg.softmax_rule is not None and cfg.softmax_rule.top_mse > 0:
        raise SurgeryError("attention.softmax_rule needs its probe: linearize through softmax_probe.linearize_by_rule "
                           "(or name the chosen layers in softmax_layers)")
    try:
        plan = cfg.layer_plan(len(layers))
    except ValueError as err:
        raise SurgeryError(str(err)) from None
    for p in model.parameters():
        p.requires_grad_(False)
    replaced, kept = [], []
    for i, (layer, (layout, window)) in enumerate(zip(layers, plan, strict=True)):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            raise SurgeryError(f"layer {i} has no q/k/v/o attention module to replace")
        if layout == "softmax":
            kept.append(i)
            continue
        layer.self_attn = LinearizedAttention(
            attn, i, layout=layout, window=window, feature_map=cfg.feature_map.kind,
            feature_map_params=cfg.feature_map.params, gamma_init=cfg.gamma_init, train_gamma=cfg.train_gamma,
            backend=cfg.backend, chunk_size=cfg.chunk_size, num_heads=num_heads, num_kv_heads=num_kv,
            head_dim=head_dim,
        )
        replaced.append(i)
    if not replaced:
        raise SurgeryError("no attention layer was replaced: every layer is kept as softmax")
    # Plain forwards must not build a DynamicCache the linearized layers cannot use; generate() still
    # caches (generation_config.use_cache) through the LinearizedCache that _install_generate passes.
    model.config.use_cache = False
    _install_generate(model)
    attns = list(linearized_layers(model))
    return SurgeryReport(
        architecture=arch, num_layers=len(layers), replaced=tuple(replaced), kept_softmax=tuple(kept),
        plan=tuple(plan), feature_dim=attns[0].feature_map_q.output_dim,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        backend="+".join(sorted({resolve_backend(m.backend, m.q_proj.weight.device) for m in attns})),
    )


def linearized_layers(model: nn.Module) -> Iterator[LinearizedAttention]:
    for m in model.modules():
        if isinstance(m, LinearizedAttention):
            yield m


def attention_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Feature-map weights and γ of every linearized layer (the stage-1 trainables)."""
    params = []
    for m in linearized_layers(model):
        params += list(m.feature_map_q.parameters()) + list(m.feature_map_k.parameters())
        if isinstance(m.gamma_logit, nn.Parameter):
            params.append(m.gamma_logit)
    return params


def compile_targets(model: nn.Module) -> list[nn.Module]:
    """What a stage compiles (``compile`` in a stage's config): each decoder layer's norms and MLP and each
    linearized layer's feature maps. The attention itself stays eager (its Triton kernels are already fused)."""
    out = []
    for layer in decoder_layers(model):
        out += [m for name in ("input_layernorm", "post_attention_layernorm", "mlp") if (m := getattr(layer, name, None))]
    for attn in linearized_layers(model):
        out += [attn.feature_map_q, attn.feature_map_k]
    return out


@contextlib.contextmanager
def distill_mode(model: nn.Module, recorder: DistillRecorder) -> Iterator[DistillRecorder]:
    """Within the block every linearized layer runs teacher-forced and records its losses. The decoder's output
    is nobody's then, so the decoder stops after the last linearized layer's attention (:func:`_up_to_last_attention`)."""
    layers = list(linearized_layers(model))
    for m in layers:
        m.mode, m.recorder = "distill", recorder
    try:
        with _up_to_last_attention(model, layers):
            yield recorder
    finally:
        for m in layers:
            m.mode, m.recorder = "student", None


class _NoMLP(nn.Module):
    """Stands in for the last recorded layer's MLP: adds nothing to the residual stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


@contextlib.contextmanager
def _up_to_last_attention(model: nn.Module, linearized: list[LinearizedAttention]) -> Iterator[None]:
    """Within the block the decoder holds only its layers up to the last one with a linearized attention, and that
    layer's MLP adds nothing: a teacher-forced pass records every loss by then, and the rest of the stack (its MLP,
    later softmax layers) would only compute hidden states that nothing reads."""
    decoder = decoder_of(model)
    layers = getattr(decoder, "layers", None)
    owner = {id(m) for m in linearized}
    last = max((i for i, layer in enumerate(layers or ()) if any(id(m) in owner for m in layer.modules())), default=None)
    if last is None or not isinstance(getattr(layers[last], "mlp", None), nn.Module):
        yield
        return
    mlp = layers[last].mlp
    decoder.layers, layers[last].mlp = nn.ModuleList(layers[: last + 1]), _NoMLP()
    try:
        yield
    finally:
        decoder.layers, layers[last].mlp = layers, mlp


@contextlib.contextmanager
def _layer_setting(model: nn.Module, name: str, value: object) -> Iterator[nn.Module]:
    """Within the block every linearized layer's attribute ``name`` is ``value``; each gets its own back after."""
    layers = list(linearized_layers(model))
    before = [getattr(m, name) for m in layers]
    for m in layers:
        setattr(m, name, value)
    try:
        yield model
    finally:
        for m, old in zip(layers, before, strict=True):
            setattr(m, name, old)


def recomputed_features(model: nn.Module, on: bool) -> contextlib.AbstractContextManager[nn.Module]:
    """Within the block (with ``on``) every linearized layer recomputes φ(q), φ(k) in the backward pass."""
    return _layer_setting(model, "recompute_features", on)


def fused_features(model: nn.Module, on: bool | None) -> contextlib.AbstractContextManager[nn.Module]:
    """Within the block every linearized layer uses (``on``) or skips its feature maps' fused kernels (None: as
    LOLSEARCH_KERNELS_FUSED_FEATURES says, the layers' default)."""
    return _layer_setting(model, "fuse_features", on)


@contextlib.contextmanager
def checkpointed_layers(model: nn.Module, on: bool) -> Iterator[nn.Module]:
    """Within the block (with ``on``) each decoder layer keeps only its input for the backward pass and runs again
    there (transformers' gradient checkpointing, non-reentrant: frozen embeddings need no grad)."""
    base = unwrap_peft(model)
    # newer transformers releases call it activation checkpointing, older ones gradient checkpointing
    new = hasattr(base, "activation_checkpointing_enable")
    if on:
        kwargs = {"use_reentrant": False}
        if new:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        yield model
    finally:
        if on:
            (base.activation_checkpointing_disable if new else base.gradient_checkpointing_disable)()


@contextlib.contextmanager
def teacher_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes the original teacher: softmax attention, LoRA adapters off."""
    layers = list(linearized_layers(model))
    adapters = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    for m in layers:
        m.mode = "teacher"
    try:
        with adapters:
            yield model
    finally:
        for m in layers:
            m.mode = "student"


# transformers' SDPA attention under a name its mask registry does not know, so the model builds no mask for it.
UNMASKED_SDPA = "lolsearch_unmasked_sdpa"
AttentionInterface.register(UNMASKED_SDPA, sdpa_attention_forward)


def _refuse_padding(module: nn.Module, args: tuple, kwargs: dict) -> None:
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        raise ValueError("a 2-D attention_mask (padding) reached a forward inside unmasked_causal; "
                         "it takes unpadded batches only")


def _window_below(model: nn.Module, seq_len: int) -> bool:
    """Whether a softmax attention layer of the model (one not linearized) attends through a sliding window shorter
    than ``seq_len``, which only the mask carries into SDPA."""
    attns = (getattr(layer, "self_attn", None) for layer in decoder_layers(model))
    return any((w := teacher_window(a)) is not None and w < seq_len
               for a in attns if not isinstance(a, LinearizedAttention))


@contextlib.contextmanager
def unmasked_causal(model: nn.Module, seq_len: int) -> Iterator[nn.Module]:
    """Within the block the model's SDPA attention gets no mask and runs with ``is_causal``, as for unpadded batches
    of ``seq_len`` tokens.

    Outside it transformers' mask creation looks for packed sequences in the position ids on every forward: in an
    eager step that reads a device value back (a host sync per forward); in a captured or compiled step it cannot
    read it, so it builds a ``[B, 1, T, T]`` mask that keeps SDPA off its flash/cuDNN kernels. Training and
    validation batches (:func:`~lolsearch.data.packed_batches`) have no padding and plain causal positions, so
    they need no mask; a 2-D ``attention_mask`` passed inside the block raises. Models on another attention
    implementation, and models whose sliding window is shorter than ``seq_len``, are left as they are.
    """
    decoder = decoder_of(model)
    config = decoder.config
    if config._attn_implementation != "sdpa" or _window_below(model, seq_len):
        yield model
        return
    config._attn_implementation = UNMASKED_SDPA
    hook = decoder.register_forward_pre_hook(_refuse_padding, with_kwargs=True)
    try:
        yield model
    finally:
        hook.remove()
        config._attn_implementation = "sdpa"


def cache_kwarg(module: nn.Module, *, generate: bool = False) -> str:
    """Name under which this transformers version takes the cache: 'cache' or 'past_key_values'. For ``module``'s
    forward (a causal LM or a decoder layer), or with ``generate`` for ``model.generate()``, which some versions
    still take as 'past_key_values' after the forward's rename."""
    fn = type(module).prepare_inputs_for_generation if generate else type(module).forward
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


def _install_generate(model: nn.Module) -> None:
    """Makes ``model.generate()`` start from a :class:`LinearizedCache` unless one is passed."""
    if getattr(model, "_lolsearch_generate", False):
        return
    original = model.generate
    kwarg = cache_kwarg(model, generate=True)

    @functools.wraps(original)
    def generate(*args, **kwargs):
        if kwargs.get(kwarg) is None and kwargs.get("use_cache", True):
            kwargs[kwarg] = new_cache(model)
        if isinstance(kwargs.get(kwarg), LinearizedCache) and kwargs[kwarg].get_seq_length() == 0:
            kwargs[kwarg].set_padding(kwargs.get("attention_mask"))  # left pads: each row as if alone
        return original(*args, **kwargs)

    model.generate = generate
    model._lolsearch_generate = True
