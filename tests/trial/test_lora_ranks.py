"""Per-layer LoRA rank (``finetune.lora.rank_by_layer``, ``softmax_rank``) through peft's rank_pattern, MLP targets too."""

import pytest

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
    import torch

    from lolsearch.trial.baselines import _key

    cpu = torch.device("cpu")
    a, b, c = (parse_trial_config({"finetune": {"lora": lora}})
               for lora in ({"softmax_rank": 4}, {"softmax_rank": 64}, {"rank_by_layer": {1: 4}}))
    assert _key(a, cpu, True) == _key(b, cpu, True) != _key(c, cpu, True)


def test_validation_in_row_groups_gives_the_single_forward_loss():
    """``validation_lm_loss`` splits a batch so its fp32 logits fit a byte budget; the batch mean must not move,
    including when the rows hold different numbers of scored tokens."""
    import torch

    from lolsearch.trial.finetune import lm_loss, validation_lm_loss

    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    peft_model = add_lora(model, LoraOptions(rank=4), cotrain_attention=False)
    vocab = peft_model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (5, 16))
    labels = ids.clone()
    labels[1, :9] = -100   # a row with few scored tokens
    labels[3, :] = -100    # a row with none
    batches = [{"input_ids": ids, "labels": labels}, {"input_ids": ids[:2], "labels": ids[:2]}]
    whole = validation_lm_loss(peft_model, batches)
    with torch.no_grad():
        want = sum(lm_loss(peft_model, b).item() for b in batches) / 2
    one_row = validation_lm_loss(peft_model, batches, logits_bytes=16 * vocab * 4)  # one row per forward
    two_rows = validation_lm_loss(peft_model, batches, logits_bytes=2 * 16 * vocab * 4)
    assert whole == pytest.approx(want, rel=1e-6)
    assert one_row == pytest.approx(want, rel=1e-5) and two_rows == pytest.approx(want, rel=1e-5)
