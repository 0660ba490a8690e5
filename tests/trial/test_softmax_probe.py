"""``attention.softmax_rule``: the probe picks the top-k layers by initial attention-transfer MSE, and they run softmax."""

import copy

import torch
from trial_testlib import toy_config

from lolsearch.attention.layer import LinearizedAttention
from lolsearch.config import AttentionConfig, ModelConfig, parse_trial_config
from lolsearch.config.rules import top_layers
from lolsearch.data import packed_batches
from lolsearch.models import load_model
from lolsearch.trial import efficiency
from lolsearch.trial.export import export_trial, load
from lolsearch.trial.record import load_trial_model
from lolsearch.trial.run import run_trial
from lolsearch.trial.softmax_probe import linearize_by_rule, probe_mse
from lolsearch.trial.surgery import decoder_layers, linearize

ATTN = {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 8}}, "layout": "sliding", "window": 8,
        "backend": "torch", "chunk_size": 32}


def _batches(tok, n=2):
    cfg = parse_trial_config(toy_config())
    it = packed_batches(cfg.data, tok, "train", 2, 7, device="cpu")
    return [next(it) for _ in range(n)]


def test_top_layers_ranks_by_mse_with_ties_to_the_lower_index():
    assert top_layers({0: 0.1, 1: 0.5, 2: 0.3, 3: 0.5}, 2) == [1, 3]
    assert top_layers({0: 0.2, 1: 0.2, 2: 0.1}, 1) == [0]
    assert top_layers({0: 0.2}, 0) == []


def test_rule_keeps_the_top_mse_layers_as_softmax():
    teacher, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 4}))
    reference = copy.deepcopy(teacher)
    batches = _batches(tok)
    cfg = AttentionConfig(**ATTN, softmax_layers=(0,), softmax_rule={"top_mse": 2, "probe_batches": 2})
    torch.manual_seed(3)
    report, chosen, mse = linearize_by_rule(teacher, cfg, batches)
    # the probe measured every layer linearized without the rule; an independent probe gives the same MSE
    torch.manual_seed(3)
    linearize(reference, AttentionConfig(**ATTN, softmax_layers=(0,)))
    again = probe_mse(reference, batches)
    assert sorted(mse) == [1, 2, 3] and all(abs(mse[i] - again[i]) < 1e-6 * max(1.0, again[i]) for i in again)
    ranked = sorted(again, key=lambda i: -again[i])
    assert chosen == sorted(ranked[:2]) and len(set(again.values())) == 3
    kept = sorted({0, *chosen})
    assert list(report.kept_softmax) == kept and [p[0] == "softmax" for p in report.plan] == [i in kept for i in range(4)]
    for i, layer in enumerate(decoder_layers(teacher)):
        assert isinstance(layer.self_attn, LinearizedAttention) == (i not in kept), i
    # the kept layers compute the teacher's attention: with the rest linearized too, their outputs match the teacher
    fresh, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 4}))
    for i in kept:
        x = torch.randn(1, 5, fresh.config.hidden_size)
        pos = torch.arange(5)[None]
        emb = fresh.model.rotary_emb(x, pos)
        want = decoder_layers(fresh)[i].self_attn(x, position_embeddings=emb, attention_mask=None)[0]
        got = decoder_layers(teacher)[i].self_attn(x, position_embeddings=emb, attention_mask=None)[0]
        assert torch.allclose(got, want)


def test_run_trial_records_the_chosen_layers_and_accounts_the_final_plan(tmp_path):
    raw = toy_config(
        model={"source": "toy-llama", "toy": {"layers": 4}},
        attention={**ATTN, "softmax_rule": {"top_mse": 1, "probe_batches": 2}},
        distill={"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1},
        finetune={"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1, "lora": {"softmax_rank": 16}},
        eval={"tokens": 256, "batch_size": 2, "diagnostics": False},
        efficiency={"measure": False},
    )
    cfg = parse_trial_config(raw)
    result = run_trial(cfg, tmp_path)
    assert result.status == "ok", result.error
    m = result.metrics
    chosen = m["softmax_layers_chosen"]
    probe = {int(i): v for i, v in m["probe_mse_by_layer"].items()}
    assert sorted(probe) == [0, 1, 2, 3] and chosen == top_layers(probe, 1) and m["softmax_layers"] == chosen
    assert m["linearized_layers"] == 3
    model, _ = load_model(cfg.model)
    plan = [("softmax" if i in chosen else "sliding", 8) for i in range(4)]
    want = efficiency.analytic(model.config, plan, 8 * 2, list(cfg.efficiency.contexts), kv_dtype_bytes=4,
                               proj_dim=efficiency.feature_projection_dim("hedgehog", cfg.attention.feature_map.params,
                                                                          efficiency.attention_shape(model.config)[3]))
    assert m["state_bytes_32k"] == want["state_bytes_32k"]
    # the saved trial reloads with the chosen layers as softmax, and their LoRA has softmax_rank
    reloaded, _, _ = load_trial_model(tmp_path, torch.device("cpu"))
    for i, layer in enumerate(decoder_layers(reloaded)):
        assert isinstance(layer.self_attn, LinearizedAttention) == (i not in chosen), i
        assert layer.self_attn.q_proj.lora_A["default"].weight.shape[0] == (16 if i in chosen else 8)
    # an export carries the choice as softmax_layers and loads without a probe
    export_trial(tmp_path, tmp_path / "export")
    exported, _ = load(tmp_path / "export")
    assert [isinstance(layer.self_attn, LinearizedAttention) for layer in decoder_layers(exported)] == [
        i not in chosen for i in range(4)]
    linear_plan = [("sliding", 8)] * 4
    assert m["state_bytes_32k"] > efficiency.analytic(model.config, linear_plan, 8 * 2, [32768])["state_bytes_32k"]


def test_preflight_refuses_a_rule_that_leaves_nothing_to_linearize():
    from lolsearch.trial.preflight import preflight

    cfg = parse_trial_config(toy_config(attention={**ATTN, "softmax_layers": [0], "softmax_rule": {"top_mse": 1}}))
    problems = [p for p in preflight(cfg) if "softmax_rule" in str(p)]
    assert problems and "leave none of the 2 layers" in str(problems[0]), problems
    ok = parse_trial_config(toy_config(attention={**ATTN, "softmax_rule": {"top_mse": 1}}))
    assert not [p for p in preflight(ok) if "softmax_rule" in str(p)]


def test_top_mse_zero_runs_no_probe():
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    report, chosen, mse = linearize_by_rule(model, AttentionConfig(**ATTN, softmax_rule={"top_mse": 0}), iter(()))
    assert (chosen, mse, report.kept_softmax) == ([], {}, ())
