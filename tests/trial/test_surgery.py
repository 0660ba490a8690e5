"""Surgery on tiny random Llama, Mistral, Qwen2 and Qwen3 models; generation with the constant-size cache."""

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.surgery import (
    SurgeryError,
    attention_parameters,
    cache_kwarg,
    linearize,
    linearized_layers,
    new_cache,
    teacher_mode,
)

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def tiny(arch: str, layers: int = 3):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, head_dim=16)
    cfg._attn_implementation = "sdpa"
    return model_cls(cfg).eval()


def attention(**kw) -> AttentionConfig:
    return AttentionConfig(**{"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 8}}, "backend": "torch",
                              "chunk_size": 16, **kw})


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_surgery_replaces_and_freezes(arch):
    model = tiny(arch)
    report = linearize(model, attention(layout="sliding", window=8, softmax_layers=(1,)))
    assert report.replaced == (0, 2) and report.kept_softmax == (1,)
    assert [m.layer_idx for m in linearized_layers(model)] == [0, 2]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in attention_parameters(model)}
    assert report.trainable_params == sum(p.numel() for p in attention_parameters(model))
    # hedgehog q and k maps [H, D, F'] per layer plus γ [H]
    assert report.trainable_params == 2 * (2 * 4 * 16 * 8 + 4)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_window_covering_sequence_reproduces_teacher_logits(arch):
    model = tiny(arch)
    x = torch.randint(0, 97, (2, 45))
    with torch.no_grad():
        teacher = model(x).logits
        linearize(model, attention(layout="sliding", window=64))
        student = model(x).logits
    assert torch.allclose(student, teacher, atol=1e-4, rtol=1e-4)


def test_teacher_mode_is_exact_and_student_differs():
    model = tiny("llama")
    x = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        teacher = model(x).logits
        linearize(model, attention(layout="terrace", window=4))
        with teacher_mode(model):
            again = model(x).logits
        student = model(x).logits
    assert torch.equal(again, teacher)
    assert (student - teacher).abs().max() > 1e-3


def test_surgery_refuses_bad_requests():
    model = tiny("llama", layers=2)
    with pytest.raises(SurgeryError, match="every layer is kept"):
        linearize(model, attention(softmax_layers=(0, 1)))
    with pytest.raises(SurgeryError, match="out of range"):
        linearize(tiny("llama", layers=2), attention(softmax_layers=(5,)))
    gpt2_like = torch.nn.Linear(2, 2)
    gpt2_like.config = type("C", (), {"model_type": "gpt2"})()
    with pytest.raises(SurgeryError, match="not supported"):
        linearize(gpt2_like, attention())


@pytest.fixture(scope="module")
def toy():
    model, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 3}))
    return model, tok


@pytest.mark.parametrize("layout,window,softmax_layers", [("sliding", 5, ()), ("terrace", 4, (1,)), ("linear", 0, ())])
def test_incremental_decoding_equals_full_forward(layout, window, softmax_layers):
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 3}))
    linearize(model, attention(layout=layout, window=window, softmax_layers=softmax_layers))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (2, 37), generator=g)
    with torch.no_grad():
        full = model(ids).logits
        cache = new_cache(model)
        steps = [model(ids[:, :11], use_cache=True, **{cache_kwarg(model): cache}).logits]
        for t in range(11, ids.shape[1]):
            steps.append(model(ids[:, t : t + 1], use_cache=True, **{cache_kwarg(model): cache}).logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_generate_memory_does_not_grow(toy):
    model, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    linearize(model, attention(layout="terrace", window=8))
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(0))
    sizes = {}
    for n in (10, 200):
        cache = new_cache(model)
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **{cache_kwarg(model, generate=True): cache})
        assert out.shape[1] == 20 + n
        sizes[n] = cache.linear_nbytes()
        assert cache.get_seq_length() == 20 + n - 1
    assert sizes[10] == sizes[200] > 0
    # generate() without a cache argument builds a LinearizedCache itself and matches the explicit one
    with torch.no_grad():
        auto = model.generate(input_ids=ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id)
        full = model.generate(input_ids=ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id,
                              **{cache_kwarg(model, generate=True): new_cache(model)})
    assert torch.equal(auto, full)


def _prefill_then_decode(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    with torch.no_grad():
        cache = new_cache(model)
        steps = [model(ids[:, :prefill], use_cache=True, **{cache_kwarg(model): cache}).logits]
        for t in range(prefill, ids.shape[1]):
            steps.append(model(ids[:, t : t + 1], use_cache=True, **{cache_kwarg(model): cache}).logits)
    return torch.cat(steps, 1)


@pytest.mark.parametrize("layout,window", [("sliding", 5), ("terrace", 4), ("linear", 0), ("sliding", 16),
                                           ("terrace", 16)])
def test_triton_decode_path_matches_reference_and_full_forward(layout, window):
    """Prefill + fused decode kernel (interpreter on CPU, real kernels on GPU), fp32, against the materialized
    reference backend's prefill + decode, and on CPU also against the full forward. On the H200 the one-token
    steps of every backend (triton, torch, reference alike) differ from the full forward by up to 4.6e-3 in
    the logits while the prefill matches to 2e-7 (torch 2.11, 2026-11-28), so that comparison is CPU-only."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = torch.randint(0, 256, (2, 23), generator=torch.Generator().manual_seed(2)).to(device)
    logits = {}
    for backend in ("triton", "reference"):
        model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), device)
        linearize(model, attention(layout=layout, window=window, backend=backend))
        # prefill 12 tokens and 11 steps: past windows 5 and 4; with window 16 the prompt is shorter than the
        # window, and keys first leave it during the steps
        logits[backend] = _prefill_then_decode(model, ids, 12)
    err = (logits["triton"] - logits["reference"]).abs().max().item()
    assert err <= 1e-4, f"triton vs reference backend, prefill + decode: max abs error {err:.2e}"
    if device == "cpu":
        with torch.no_grad():
            full = model(ids).logits
        err = (logits["triton"] - full).abs().max().item()
        assert err <= 2e-4, f"decode vs full forward: max abs error {err:.2e}"


@pytest.mark.parametrize("arch,window_kw", [("mistral", {"sliding_window": 5}),
                                            ("qwen2", {"use_sliding_window": True, "sliding_window": 5,
                                                       "max_window_layers": 1})])
def test_teacher_mode_keeps_the_teachers_sliding_window(arch, window_kw):
    """A teacher that attends through a sliding window shorter than the sequence (Mistral's; Qwen2's on the layers
    past max_window_layers) is the same model in teacher mode, and its targets in distill mode are its own."""
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=512, head_dim=16, **window_kw)
    cfg._attn_implementation = "sdpa"
    model = model_cls(cfg).eval()
    x = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        teacher = model(x, use_cache=False).logits
        linearize(model, attention(layout="sliding", window=4))
        with teacher_mode(model):
            again = model(x, use_cache=False).logits
    torch.testing.assert_close(again, teacher, rtol=1e-5, atol=1e-5)
    windows = [m.teacher_window for m in linearized_layers(model)]
    assert windows == ([5, 5, 5] if arch == "mistral" else [None, 5, 5])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_distill_mode_stops_after_the_last_linearized_attention(arch, monkeypatch):
    """Under distill_mode the decoder runs no layer after the last linearized one and not that layer's MLP; the
    recorded losses and their gradients are those of the whole stack, and the stack is whole again afterwards."""
    import contextlib

    from lolsearch.attention.layer import DistillRecorder
    from lolsearch.trial import surgery

    model = tiny(arch, layers=4)
    linearize(model, attention(layout="sliding", window=8, softmax_layers=(0, 3)))
    layers = surgery.decoder_layers(model)
    mlps = [layer.mlp for layer in layers]
    ran = []
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_, i=i: ran.append(("layer", i)))
        layer.mlp.register_forward_hook(lambda *_, i=i: ran.append(("mlp", i)))
    x = torch.randint(0, 97, (2, 45))
    params = attention_parameters(model)

    def losses() -> tuple[dict, tuple]:
        rec = DistillRecorder()
        with surgery.distill_mode(model, rec):
            surgery.decoder_of(model)(input_ids=x, use_cache=False)
        return rec.mse, torch.autograd.grad(sum(rec.mse.values()), params)

    mse, grads = losses()
    assert ran == [("mlp", 0), ("layer", 0), ("mlp", 1), ("layer", 1), ("layer", 2)]
    assert list(surgery.decoder_layers(model)) == list(layers) and [layer.mlp for layer in layers] == mlps
    ran.clear()
    monkeypatch.setattr(surgery, "_up_to_last_attention", lambda *_: contextlib.nullcontext())
    whole, whole_grads = losses()
    assert ("layer", 3) in ran and ("mlp", 2) in ran
    assert sorted(mse) == sorted(whole) == [1, 2]
    for i in mse:
        torch.testing.assert_close(mse[i], whole[i], rtol=0, atol=0)
    for got, want in zip(grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_feature_maps_wider_than_the_triton_kernels_run_in_torch():
    """Feature maps of more than TRITON_MAX_FEATURES columns (Taylor2: 1 + D + D² = 273 at D = 16; Hedgehog with
    feature_dim 200: F = 400) need more shared memory than the GPU has in the Triton kernels: under ``auto`` their
    layers run the torch backend; an explicit ``triton`` is refused with the limit named."""
    from lolsearch.attention.ops import TRITON_MAX_FEATURES, backend_for_features

    assert backend_for_features("auto", TRITON_MAX_FEATURES) == "auto"
    assert backend_for_features("reference", 10_000) == "reference"
    for fmap in ({"kind": "taylor2"}, {"kind": "hedgehog", "params": {"feature_dim": 200}}):
        model = tiny("llama", layers=2)
        report = linearize(model, attention(layout="sliding", window=8, backend="auto", feature_map=fmap))
        assert report.backend == "torch"  # the trial's attention_backend metric
        layers = list(linearized_layers(model))
        assert layers and all(m.feature_map_q.output_dim > TRITON_MAX_FEATURES for m in layers)
        assert all(m.backend == "torch" for m in layers)
        ids = torch.randint(0, 97, (1, 20))
        assert torch.isfinite(model(ids).logits).all()
        with pytest.raises(ValueError, match=f"at most {TRITON_MAX_FEATURES} features"):
            linearize(tiny("llama", layers=2), attention(layout="sliding", window=8, backend="triton", feature_map=fmap))
    narrow = tiny("llama", layers=2)
    linearize(narrow, attention(layout="sliding", window=8, backend="auto"))
    assert all(m.backend == "auto" for m in linearized_layers(narrow))
