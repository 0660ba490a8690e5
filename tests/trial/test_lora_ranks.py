"""Per-layer LoRA rank (``finetune.lora.rank_by_layer``, ``softmax_rank``) through peft's rank_pattern, MLP targets too."""

import pytest
import torch

from lolsearch.config import AttentionConfig, LoraOptions, ModelConfig, parse_trial_config
from lolsearch.models import load_model
from lolsearch.trial.finetune import add_lora
from lolsearch.trial.surgery import decoder_layers, linearize

ATTN = {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 8}}, "layout": "sliding", "window": 8,
        "backend": "torch"}
PROJ = {"q": ("self_attn", "q_proj"), "k": ("self_attn", "k_proj"), "v": ("self_attn", "v_proj"),
        "o": ("self_attn", "o_proj"), "gate": ("mlp", "gate_proj"), "up": ("mlp", "up_proj"), "down": ("mlp", "down_proj")}


def test_adapter_shapes_follow_the_rank_pattern():
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 4}))
    report = linearize(model, AttentionConfig(**ATTN, softmax_layers=(1,)))
    lora = LoraOptions(rank=4, alpha=8, targets=("q", "k", "v", "o", "gate", "up", "down"),
                       rank_by_layer={2: 8}, softmax_rank=16)
    peft_model = add_lora(model, lora, cotrain_attention=False, softmax_layers=report.kept_softmax)
    want = {0: 4, 1: 16, 2: 8, 3: 4}
    for i, layer in enumerate(decoder_layers(peft_model)):
        for name, (part, proj) in PROJ.items():
            mod = getattr(getattr(layer, part), proj)
            a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
            assert a.shape[0] == want[i] and b.shape[1] == want[i], (i, name, a.shape, b.shape)
            assert mod.scaling["default"] == pytest.approx(8 / 4), (i, name)  # alpha scales with the rank
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_without_softmax_layers_softmax_rank_changes_nothing():
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    linearize(model, AttentionConfig(**ATTN))
    peft_model = add_lora(model, LoraOptions(rank=4, softmax_rank=16), cotrain_attention=False)
    shapes = {m.lora_A["default"].weight.shape[0] for m in peft_model.modules() if hasattr(m, "lora_A") and m.lora_A}
    assert shapes == {4}


@pytest.mark.parametrize("bad", [{"rank_by_layer": {0: 0}}, {"rank_by_layer": {-1: 4}}, {"softmax_rank": 0}])
def test_bad_ranks_are_config_errors(bad):
    from lolsearch.core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError)):
        parse_trial_config({"finetune": {"lora": bad}})


def test_rank_by_layer_is_canonical():
    a = parse_trial_config({"finetune": {"lora": {"rank_by_layer": {3: 8, 1: 4}}}})
    b = parse_trial_config({"finetune": {"lora": {"rank_by_layer": {1: 4, 3: 8}}}})
    assert a.trial_id == b.trial_id


def test_teacher_baseline_key_ignores_softmax_rank_only():
    from lolsearch.trial.baselines import _key

    cpu = torch.device("cpu")
    a, b, c = (parse_trial_config({"finetune": {"lora": lora}})
               for lora in ({"softmax_rank": 4}, {"softmax_rank": 64}, {"rank_by_layer": {1: 4}}))
    assert _key(a, cpu, True) == _key(b, cpu, True) != _key(c, cpu, True)


def _scored_batch(vocab: int):
    ids = torch.randint(0, vocab, (5, 16))
    labels = ids.clone()
    labels[1, :9] = -100   # a row with few scored tokens
    labels[3, :] = -100    # a row with none
    return {"input_ids": ids, "labels": labels}


@pytest.mark.parametrize("chunk", [1, 7, 16, 75, 1000])
def test_chunked_loss_and_gradients_match_the_models_own_loss(chunk):
    """``lm_loss`` with ``chunk_tokens`` (logits recomputed per chunk in backward) against the model's loss over the
    whole batch: the same value and the same LoRA gradients, chunks that do not divide the batch included."""
    from lolsearch.trial.finetune import lm_loss

    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    peft_model = add_lora(model, LoraOptions(rank=4), cotrain_attention=False)
    for p in peft_model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)  # LoRA B starts at zero: give the gradients something to flow through
    batch = _scored_batch(peft_model.get_output_embeddings().weight.shape[0])
    params = [p for p in peft_model.parameters() if p.requires_grad]
    want = lm_loss(peft_model, batch)
    want_grads = torch.autograd.grad(want, params)
    got = lm_loss(peft_model, batch, chunk_tokens=chunk)
    got_grads = torch.autograd.grad(got, params)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_fused_loss_and_gradients_match_the_models_own_loss(monkeypatch):
    """``lm_loss``'s fused path (the cross-entropy kernel over the head's logits, on a GPU by default; here forced,
    through the Triton interpreter on CPU) against the model's own loss: the same value and LoRA gradients, rows
    with few or no scored tokens included; ``LOLSEARCH_KERNELS_FUSED_XENT=0`` turns it off."""
    from lolsearch.kernels import triton_available

    from lolsearch.models import fused
    from lolsearch.trial import finetune

    if not triton_available():
        pytest.skip("needs Triton (a GPU, or TRITON_INTERPRET=1 as tests/conftest.py sets on CPU)")
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter runs CPU tensors, a GPU's Triton CUDA ones
    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    peft_model = add_lora(model.to(dev), LoraOptions(rank=4), cotrain_attention=False)
    for p in peft_model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    batch = {k: v.to(dev) for k, v in _scored_batch(peft_model.get_output_embeddings().weight.shape[0]).items()}
    params = [p for p in peft_model.parameters() if p.requires_grad]
    monkeypatch.setenv("LOLSEARCH_KERNELS_FUSED_XENT", "0")  # the model's own loss, on a GPU too
    want = finetune.lm_loss(peft_model, batch)
    monkeypatch.delenv("LOLSEARCH_KERNELS_FUSED_XENT")
    want_grads = torch.autograd.grad(want, params)
    calls = []
    real = fused.cross_entropy_sum
    monkeypatch.setattr(fused, "cross_entropy_sum", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(finetune, "fused_loss_applies", lambda head: True)
    got = finetune.lm_loss(peft_model, batch)
    got_grads = torch.autograd.grad(got, params)
    assert calls == [1]
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    monkeypatch.undo()
    assert fused.fused_xent_on()
    monkeypatch.setenv("LOLSEARCH_KERNELS_FUSED_XENT", "0")
    assert not fused.fused_xent_on()


def test_validation_loss_in_chunks_is_the_single_pass_loss():
    from lolsearch.trial.finetune import lm_loss, validation_lm_loss

    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    peft_model = add_lora(model, LoraOptions(rank=4), cotrain_attention=False)
    vocab = peft_model.get_output_embeddings().weight.shape[0]
    plain = torch.randint(0, vocab, (2, 16))
    batches = [_scored_batch(vocab), {"input_ids": plain, "labels": plain}]
    with torch.no_grad():
        want = sum(lm_loss(peft_model, b).item() for b in batches) / 2
    assert validation_lm_loss(peft_model, batches) == pytest.approx(want, rel=1e-6)
    assert validation_lm_loss(peft_model, batches, logits_bytes=3 * vocab * 4) == pytest.approx(want, rel=1e-5)


def test_loss_chunk_tokens_is_a_speed_setting_outside_the_trial_id():
    base = parse_trial_config({})
    chunked = parse_trial_config({"finetune": {"loss_chunk_tokens": 4096}})
    assert chunked.trial_id == base.trial_id and chunked.finetune.loss_chunk_tokens == 4096
