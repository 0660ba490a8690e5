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
