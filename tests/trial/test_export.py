"""lolsearch.load and `lolsearch export`: exact round trips, peft's own adapter format, the refusal of plain
transformers."""

import json

import pytest
import torch
from trial_testlib import toy_config

import lolsearch
from lolsearch.cli import main
from lolsearch.config import parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.trial.record import load_trial_model
from lolsearch.trial.run import run_trial

TOY = toy_config(
    device="cpu",
    distill={"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1},
    finetune={"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1, "lr": 1e-2},
    eval={"tokens": 256, "batch_size": 4},
    efficiency={"measure": False},
)


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trial")
    result = run_trial(parse_trial_config(TOY, "test"), out)
    assert result.status == "ok", result.error
    yield out
    torch.set_num_threads(threads)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.arange(3, 43).reshape(1, 40) * 5 % 256


def test_load_of_a_trial_folder_is_the_trained_model(trial):
    reference, _, _ = load_trial_model(trial, torch.device("cpu"))
    model, tok = lolsearch.load(str(trial), device="cpu")
    assert torch.equal(_logits(model, IDS), _logits(reference, IDS))
    assert tok("abc").input_ids[-3:] == [97, 98, 99]


def test_export_round_trip_is_exact_and_lora_is_in_peft_format(trial, tmp_path):
    reference, _, _ = load_trial_model(trial, torch.device("cpu"))
    assert main(["export", str(trial), "--out", str(tmp_path / "exp")]) == 0
    files = {p.name for p in (tmp_path / "exp").iterdir()}
    assert {"config.json", "model.safetensors", "linear_attention.safetensors", "adapter_config.json",
            "adapter_model.safetensors", "trial_config.yaml", "tokenizer.json"} <= files
    peft_cfg = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 8
    model, tok = lolsearch.load(tmp_path / "exp", device="cpu")
    expected = _logits(reference, IDS)
    assert torch.equal(_logits(model, IDS), expected)
    assert lolsearch.load_tokenizer(tmp_path / "exp")("abc").input_ids == tok("abc").input_ids
    # generation runs with the constant-size cache and matches the trained model's greedy tokens
    kw = {"attention_mask": torch.ones_like(IDS[:, :6]), "max_new_tokens": 6, "do_sample": False,
          "pad_token_id": tok.pad_token_id}
    assert torch.equal(model.generate(input_ids=IDS[:, :6], **kw), reference.generate(input_ids=IDS[:, :6], **kw))


def test_merged_and_cast_exports(trial, tmp_path):
    reference, _, _ = load_trial_model(trial, torch.device("cpu"))
    expected = _logits(reference, IDS)
    assert main(["export", str(trial), "--out", str(tmp_path / "merged"), "--merge-lora"]) == 0
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged, _ = lolsearch.load(tmp_path / "merged", device="cpu")
    assert not hasattr(merged, "get_base_model")
    assert torch.allclose(_logits(merged, IDS), expected, atol=1e-4)
    assert main(["export", str(trial), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    half, _ = lolsearch.load(tmp_path / "bf16", device="cpu")
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert (_logits(half, IDS).float() - expected).abs().max() < 0.5


def test_plain_transformers_refuses_an_export(trial, tmp_path):
    from transformers import AutoModelForCausalLM

    lolsearch.trial.export.export_trial(trial, tmp_path / "exp")
    with pytest.raises(ValueError, match=r"lolsearch\.load\(path\).*softmax attention"):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "exp"))


def test_export_input_errors(trial, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a finished trial folder" in capsys.readouterr().err
    assert main(["export", str(trial), "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="config.yaml: cannot read"):
        lolsearch.load(tmp_path, device="cpu")
    assert main(["generate", str(tmp_path)]) == 2


def test_generate_graph_prints_what_generate_prints(trial, tmp_path, capsys):
    """`lolsearch generate --graph` (the static step; eager on CPU) continues a prompt as model.generate() does,
    also with a layer kept as softmax (its KV in a fixed buffer)."""
    cfg = tmp_path / "soft.yaml"
    cfg.write_text(json.dumps(toy_config(attention={"window": 8, "softmax_layers": [0], "backend": "torch"},
                                         device="cpu")))
    for source in (trial, cfg):
        assert main(["generate", str(source), "--max-new-tokens", "12"]) == 0
        plain = capsys.readouterr().out
        assert main(["generate", str(source), "--max-new-tokens", "12", "--graph"]) == 0
        assert capsys.readouterr().out == plain
