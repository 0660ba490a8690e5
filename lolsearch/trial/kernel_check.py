"""The attention kernels checked at the trial's own shapes before any training.

The Triton kernels choose their schedule (segments of query chunks, value tiles) from batch × heads, the sequence
length and the GPU, so a trial's shape can take a path that the test matrix, at its small batches, never ran. One
such path, walks over 4-chunk segments, gave wrong outputs in every dtype on the H200 while every matrix case
passed (``results/kernels/seg_walk_20261204/``). So before training, each distinct linearized layer runs once on
its own feature maps with random q, k, v of the trial's batch sizes, lengths and dtype: a forward without autograd
(the plan of evaluations) and a forward + backward (the plan of training), compared with the chunked PyTorch path
in fp32. Where the layers compute φ by the fused feature-map kernels (``LinearizedAttention.fused_maps``), those are
checked at the same shapes against the modules in fp32 (φ(q), φ(k), and with autograd the gradients of q, k and
the maps' trained parameters), and where they rotate q and k by the fused RoPE (``LinearizedAttention.fuses_rope``),
that kernel against transformers' RoPE in fp32 (q, k, v, and with autograd their gradients). A mismatch fails the
trial with the numbers. Each layer kind and shape is checked
once per process. Layers that do not run the Triton kernels are not checked: the chunked path is what they run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from lolsearch.attention.chunked import hybrid_attention_chunked
from lolsearch.attention.layer import LinearizedAttention
from lolsearch.attention.ops import fused_rope, hybrid_attention, resolve_backend
from lolsearch.config import TrialConfig
from lolsearch.trial.baselines import passkey_budget
from lolsearch.trial.passkey import row_batches

log = logging.getLogger(__name__)

#: Largest relative RMS error against the fp32 chunked path, per input dtype: 10x what the kernels' GPU tests allow
#: against float64 (16-bit outputs 5e-3, fp32 2e-5, on Hedgehog-like features; the H200 measured 2.3e-3 and 3e-7),
#: and below the faults this guards against (8e-2 to 1.7e-1 in every dtype, results/kernels/seg_walk_20261204/).
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}
GRADS = ("q", "k", "v", "phi_q", "phi_k")  # dγ is a sum over every row and key: checked by the GPU tests instead

_passed: set[tuple] = set()  # (layer kind, shape, autograd) checked in this process


class KernelCheckError(RuntimeError):
    """A Triton kernel (attention, fused feature map) disagrees with the PyTorch path at a trial's shape."""


@dataclass(frozen=True)
class Shape:
    """One call the trial will make: batch, length, and whether autograd is on (training) or off (evaluation)."""

    batch: int
    seq_len: int
    grad: bool


def trial_shapes(cfg: TrialConfig) -> list[Shape]:
    """The calls a trial makes: each enabled stage's batch with autograd (training) and without (its validation),
    the evaluation batch, the evaluation at each of ``eval.seq_lens`` (batches as ``quality.other_lengths``), and
    the passkey prompts' batches (``passkey.row_batches``)."""
    t = cfg.data.seq_len
    shapes = [Shape(stage.batch_size, t, grad) for stage in (cfg.distill, cfg.finetune) if stage.enabled
              for grad in (True, False)]
    shapes.append(Shape(cfg.eval.batch_size, t, False))
    shapes += [Shape(max(1, cfg.eval.batch_size * t // n), n, False) for n in cfg.eval.seq_lens]
    if (pk := cfg.eval.passkey) is not None:
        prompts = len(pk.depths) * pk.samples
        shapes += [Shape(rows, n, False) for n in pk.lengths
                   for rows in row_batches(prompts, n, passkey_budget(cfg))]
    return list(dict.fromkeys(shapes))


def check_model(model: nn.Module, shapes: list[Shape]) -> dict[str, float | str]:
    """Checks every distinct Triton-backed linearized layer of ``model`` at ``shapes``. Returns
    ``{"kernel_check_cases": n, "kernel_check_max_err": e}`` over the cases run in this call (empty when no layer
    runs the Triton kernels), plus ``kernel_check_skipped`` for shapes whose fp32 reference ran out of memory;
    raises :class:`KernelCheckError` on a mismatch."""
    layers = {}
    for layer in model.modules():
        if isinstance(layer, LinearizedAttention):
            dev = layer.q_proj.weight.device
            if resolve_backend(layer.backend, dev) == "triton":
                layers.setdefault(_kind(layer), layer)
    if not layers:
        return {}
    cases, worst, skipped = 0, 0.0, []
    for kind, layer in layers.items():
        for shape in dict.fromkeys(shapes):
            key = (kind, shape)
            if key in _passed:
                continue
            try:
                worst = max(worst, check_layer(layer, shape))
            except torch.OutOfMemoryError:  # the fp32 reference needs more than the trial's own step: not a fault
                torch.cuda.empty_cache()
                skipped.append(f"{shape.batch}x{shape.seq_len}{' grad' if shape.grad else ''}")
                log.warning("kernel check skipped, out of memory: %s at batch %d x %d", kind[:2], shape.batch,
                            shape.seq_len)
                continue
            _passed.add(key)
            cases += 1
    out: dict = {"kernel_check_cases": cases, "kernel_check_max_err": worst} if cases else {}
    if skipped:
        out["kernel_check_skipped"] = "out of memory: " + ", ".join(skipped)
    return out


def _kind(layer: LinearizedAttention) -> tuple:
    """What selects a kernel path besides the shape (the feature dimension is one per model)."""
    w = layer.q_proj.weight
    return (layer.layout, layer.window, layer.num_heads, layer.num_kv_heads, layer.head_dim, w.dtype, str(w.device),
            type(layer.feature_map_q).__name__, layer.fused_maps(w.device), layer.fuses_rope(w.device))


def check_layer(layer: LinearizedAttention, shape: Shape) -> float:
    """Largest relative RMS error (output, and with ``shape.grad`` the gradients of q, k, v, φq, φk) of the Triton
    path against the fp32 chunked path, on random q, k, v ``[B, H(kv), T, D]`` and the layer's own feature maps;
    and of the fused feature maps and RoPE against their modules where the layer uses them."""
    w = layer.q_proj.weight
    gen = torch.Generator(w.device).manual_seed(shape.batch * 1_000_003 + shape.seq_len)
    b, t, d = shape.batch, shape.seq_len, layer.head_dim
    q = torch.randn(b, layer.num_heads, t, d, device=w.device, generator=gen).to(w.dtype)
    k = torch.randn(b, layer.num_kv_heads, t, d, device=w.device, generator=gen).to(w.dtype)
    v = torch.randn(b, layer.num_kv_heads, t, d, device=w.device, generator=gen).to(w.dtype)
    with torch.no_grad():
        phi_q, phi_k = (x.detach() for x in layer._features_of_modules(q, k, w.dtype))
        gamma = layer.gamma.detach().float()
    inputs = [q, k, v, phi_q, phi_k]
    args = (layer.window, layer.layout)
    if not shape.grad:
        with torch.no_grad():
            o = hybrid_attention(*inputs, gamma, *args, backend="triton")
            o_ref = hybrid_attention_chunked(*(x.float() for x in inputs), gamma, *args, chunk_size=64)
        errs = {"o": _rel(o, o_ref)}
    else:
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        refs = [x.float().clone().requires_grad_(True) for x in inputs]
        o = hybrid_attention(*leaves, gamma, *args, backend="triton")
        o_ref = hybrid_attention_chunked(*refs, gamma, *args, chunk_size=64)
        do = torch.randn(o.shape, device=w.device, generator=gen)
        grads = torch.autograd.grad(o, leaves, do.to(o.dtype))
        ref_grads = torch.autograd.grad(o_ref, refs, do)
        errs = {"o": _rel(o, o_ref)} | {f"d{n}": _rel(g, r) for n, g, r in zip(GRADS, grads, ref_grads, strict=True)}
    if layer.fused_maps(w.device):
        errs |= _map_errors(layer, q, k, shape.grad, gen)
    if layer.fuses_rope(w.device):
        errs |= _rope_errors(q, k, v, shape.grad, gen)
    tol = TOLERANCE[w.dtype]
    bad = {n: e for n, e in errs.items() if not e <= tol}
    where = (f"layout {layer.layout} window {layer.window}, heads {layer.num_heads}/{layer.num_kv_heads}, D "
             f"{layer.head_dim}, F {phi_q.shape[-1]}, {str(w.dtype).removeprefix('torch.')}, batch {b} x {t} tokens, "
             f"{'forward + backward' if shape.grad else 'forward without autograd'}")
    if bad:
        got = ", ".join(f"{n} {e:.2e}" for n, e in bad.items())
        fix = ("LOLSEARCH_KERNELS_FUSED_FEATURES=0 runs the feature-map modules" if all(n.startswith("map ") for n in bad)
               else "LOLSEARCH_KERNELS_FUSED_ROPE=0 runs transformers' RoPE" if all(n.startswith("rope ") for n in bad)
               else "attention.backend: torch runs the PyTorch path")
        raise KernelCheckError(f"Triton kernels disagree with the PyTorch path ({where}): relative error {got} > {tol:g}; "
                               f"{fix}")
    log.info("kernel check passed (%s): max relative error %.2e", where, max(errs.values()))
    return max(errs.values())


def _map_errors(layer: LinearizedAttention, q: torch.Tensor, k: torch.Tensor, grad: bool,
                gen: torch.Generator) -> dict[str, float]:
    """Relative errors of the fused feature maps against their modules in fp32: ``map φ_q``, ``map φ_k`` and with
    ``grad`` the gradients of the input and of each trained parameter (``map dq``, ``map φ_q.weight``, ...)."""
    errs = {}
    for name, fmap, x in (("q", layer.feature_map_q, q), ("k", layer.feature_map_k, k)):
        params = [(n, p) for n, p in fmap.named_parameters() if p.requires_grad]
        with torch.set_grad_enabled(grad):
            xl, xr = x.clone().requires_grad_(grad), x.detach().float().requires_grad_(grad)
            out = layer.phi(fmap, xl, x.dtype, True)
            ref = layer.phi(fmap, xr, torch.float32, False)
        errs[f"map φ_{name}"] = _rel(out, ref)
        if grad:
            g = torch.randn(ref.shape, device=ref.device, generator=gen)
            got = torch.autograd.grad(out, [xl, *(p for _, p in params)], g.to(out.dtype))
            want = torch.autograd.grad(ref, [xr, *(p for _, p in params)], g)
            names = [f"d{name}", *(f"φ_{name}.{n}" for n, _ in params)]
            errs |= {f"map {n}": _rel(a, b) for n, a, b in zip(names, got, want, strict=True)}
    return errs


def _rope_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: bool,
                 gen: torch.Generator) -> dict[str, float]:
    """Relative errors of the fused RoPE against transformers' in fp32 on q, k, v laid out as the projections give
    them (``[B, T, H, D]``), at Llama-style positions 0..T-1: ``rope q``, ``rope k``, ``rope v``, and with ``grad``
    the gradients ``rope dq``, ``rope dk``, ``rope dv``."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    t, d = q.shape[2], q.shape[3]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=q.device, dtype=torch.float32) / d))
    ang = torch.arange(t, device=q.device, dtype=torch.float32)[:, None] * inv
    cos, sin = (f(torch.cat([ang, ang], -1))[None].to(q.dtype) for f in (torch.cos, torch.sin))
    xs = [x.transpose(1, 2).contiguous() for x in (q, k, v)]  # [B, T, H(kv), D]
    with torch.set_grad_enabled(grad):
        mine = [x.clone().requires_grad_(grad) for x in xs]
        refs = [x.float().requires_grad_(grad) for x in xs]
        got = fused_rope(*mine, cos, sin)
        rq, rk = apply_rotary_pos_emb(refs[0].transpose(1, 2), refs[1].transpose(1, 2), cos.float(), sin.float())
        want = (rq, rk, refs[2].transpose(1, 2))
    errs = {f"rope {n}": _rel(a, b) for n, a, b in zip("qkv", got, want, strict=True)}
    if grad:
        gs = [torch.randn(w.shape, device=w.device, generator=gen) for w in want]
        mine_g = torch.autograd.grad(got, mine, [g.to(q.dtype) for g in gs])
        ref_g = torch.autograd.grad(want, refs, gs)
        errs |= {f"rope d{n}": _rel(a, b) for n, a, b in zip("qkv", mine_g, ref_g, strict=True)}
    return errs


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()
