"""The fused RoPE + head-major layout (``kernels/rope.py``) against transformers' ``apply_rotary_pos_emb`` in float64:
outputs and all three gradients, GQA, shared and per-row positions, odd lengths, a skipped gradient; on CPU
(interpreter, fp32/fp16) and on a GPU (every dtype); and a linearized layer's forward and gradients with it."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])
# one rounding of the fp32 result to the dtype, relative to the largest element
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _cos_sin(b: int, t: int, d: int, per_row: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama-style cos, sin ``[B or 1, T, D]`` (both halves equal) at positions that differ per row when asked."""
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).double() / d))
    pos = torch.arange(t).double()[None].repeat(b if per_row else 1, 1)
    if per_row:
        pos += torch.randint(0, 50, (b, 1), generator=gen).double()
    ang = torch.cat([pos[..., None] * inv] * 2, -1)
    return ang.cos(), ang.sin()


def _case(b, t, h, hkv, d, per_row, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, n, d, generator=gen, dtype=torch.float64) for n in (h, hkv, hkv))
    cos, sin = _cos_sin(b, t, d, per_row, gen)
    return q, k, v, cos, sin


def _reference(q, k, v, cos, sin):
    """transformers' RoPE on the head-major views, in float64."""
    qr, kr = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return qr, kr, v.transpose(1, 2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 37, 4, 2, 16), (1, 65, 3, 1, 64), (2, 5, 2, 2, 128), (1, 33, 6, 3, 80)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("per_row", [False, True], ids=["shared_pos", "per_row_pos"])
def test_rope_matches_transformers(dtype, shape, per_row):
    from lolsearch.kernels.rope import rope_qkv

    b, t, h, hkv, d = shape
    q, k, v, cos, sin = (x.requires_grad_(i < 3) for i, x in enumerate(_case(b, t, h, hkv, d, per_row)))
    want = _reference(q, k, v, cos, sin)
    gq, gk, gv = (torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) for x in want)
    wgrads = torch.autograd.grad(want, (q, k, v), (gq, gk, gv))
    ins = [x.detach().to(DEV, dtype).requires_grad_() for x in (q, k, v)]
    got = rope_qkv(*ins, cos.to(DEV, dtype), sin.to(DEV, dtype))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype and g.shape == w.shape and g.is_contiguous()
        assert _rel(g, w) <= 2 * TOL[dtype] + (TOL[dtype] if dtype != torch.float32 else 0)  # cos/sin rounded too
    grads = torch.autograd.grad(got, ins, [x.to(DEV, dtype) for x in (gq, gk, gv)])
    for g, w, x in zip(grads, wgrads, ins, strict=True):
        assert g.dtype == dtype and g.shape == x.shape
        assert _rel(g, w) <= 3 * TOL[dtype]


def test_rope_strided_inputs_and_a_skipped_gradient():
    """q, k, v as views of one fused projection output (row stride (H + 2 HKV)·D), and only q and v asking for
    a gradient: k's is None, the others match."""
    from lolsearch.kernels.rope import rope_qkv

    b, t, h, hkv, d = 2, 19, 4, 2, 16
    q, k, v, cos, sin = _case(b, t, h, hkv, d, per_row=False, seed=3)
    packed = torch.cat([q, k, v], 2).float().to(DEV)
    qs, ks, vs = packed.split([h, hkv, hkv], 2)
    qs = qs.detach().requires_grad_()
    vs = vs.detach().requires_grad_()
    got = rope_qkv(qs, ks, vs, cos.float().to(DEV), sin.float().to(DEV))
    want = _reference(q, k, v, cos, sin)
    for g, w in zip(got, want, strict=True):
        assert _rel(g, w) <= 2e-6
    dq, dv = torch.autograd.grad(got[0].sum() + 2 * got[2].sum() + got[1].sum(), (qs, vs))
    qd = q.clone().requires_grad_()
    wq = torch.autograd.grad(_reference(qd, k, v, cos, sin)[0].sum(), qd)[0]
    assert _rel(dq, wq) <= 2e-6
    assert torch.equal(dv.cpu(), torch.full_like(vs, 2.0).cpu())


def test_rope_refuses_mismatched_operands():
    from lolsearch.kernels.rope import rope_qkv

    q = torch.zeros(1, 4, 2, 8, device=DEV)
    cos = torch.zeros(1, 4, 8, device=DEV)
    with pytest.raises(ValueError, match="D even"):
        rope_qkv(q, torch.zeros(1, 4, 1, 8, device=DEV), torch.zeros(1, 4, 2, 8, device=DEV), cos, cos)
    with pytest.raises(ValueError, match="cos and sin"):
        rope_qkv(q, q, q, torch.zeros(1, 5, 8, device=DEV), torch.zeros(1, 5, 8, device=DEV))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_linearized_layer_with_fused_rope(monkeypatch, arch):
    """A linearized layer on the Triton backend gives the same output and gradients (of every weight: the RoPE's
    backward reaches the projections) with the fused RoPE as with transformers' (LOLSEARCH_KERNELS_FUSED_ROPE), and
    runs the kernel once per layer and forward. Qwen3 normalizes q and k before the rotation."""
    import lolsearch.kernels.rope as rope_kernel
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from lolsearch.config import AttentionConfig
    from lolsearch.trial.surgery import linearize

    calls = []
    real = rope_kernel.RopeFn.apply
    monkeypatch.setattr(rope_kernel.RopeFn, "apply", lambda *a: calls.append(1) or real(*a))
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[arch]
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=512, head_dim=16)
    cfg._attn_implementation = "sdpa"
    model = model_cls(cfg).to(DEV)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, backend="triton",
                                     layout="sliding", window=16))
    for p in model.parameters():
        p.requires_grad_(True)
    ids = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(0)).to(DEV)  # batches: the kernel tests
    outs = {}
    for on in ("0", "1"):
        monkeypatch.setenv("LOLSEARCH_KERNELS_FUSED_ROPE", on)
        model.zero_grad()
        logits = model(input_ids=ids, use_cache=False).logits
        logits.square().mean().backward()
        outs[on] = logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(calls) == 2  # the two layers, with the variable on
    torch.testing.assert_close(outs["1"][0], outs["0"][0], rtol=1e-4, atol=1e-5)
    assert outs["1"][1].keys() == outs["0"][1].keys() and any("q_proj" in n for n in outs["0"][1])
    for name, g in outs["0"][1].items():
        torch.testing.assert_close(outs["1"][1][name], g, rtol=1e-3, atol=1e-6, msg=name)
