"""perf generate's rows: series points, statuses (ok, oom, error, skipped by budget), speedup column."""

import pytest
import torch

from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.perf import main
from lolsearch.trial import decode_speed
from lolsearch.trial.decode_speed import generate_rows, sweep_points
from lolsearch.trial.surgery import linearize


def test_sweep_points_are_the_context_series_then_the_batch_series():
    assert sweep_points([64, 128], 4, [1, 4, 8], 128) == [(64, 4), (128, 4), (128, 1), (128, 8)]


@pytest.fixture(scope="module")
def models():
    teacher, tok = load_model(ModelConfig(source="toy-llama"))
    student, _ = load_model(ModelConfig(source="toy-llama"))
    linearize(student, AttentionConfig(window=8, backend="torch"))
    return teacher, student, len(tok)


def test_rows_record_oom_and_errors_instead_of_raising(models, monkeypatch):
    teacher, student, vocab = models

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    monkeypatch.setattr(decode_speed, "teacher_cache_at", oom)
    rows = generate_rows(teacher, student, vocab, torch.device("cpu"), [(32, 2)], steps=1, graph_modes=("off", "on"))
    status = {(r["model"], r["graph"]): r["status"] for r in rows}
    assert status[("linearized", "off")] == "ok"
    assert status[("linearized", "on")].startswith("error: GraphError")  # CUDA graphs need CUDA
    assert all(r["decode_tok_s"] != r["decode_tok_s"] for r in rows if r["status"] != "ok")  # nan


def test_rows_after_the_budget_are_skipped(models):
    teacher, student, vocab = models
    rows = generate_rows(teacher, student, vocab, torch.device("cpu"), [(32, 1), (64, 1)], steps=1, budget_s=0.0)
    assert {r["status"] for r in rows} == {"skipped: budget"}


def test_generate_command_writes_the_graph_column(tmp_path):
    assert main(["--out", str(tmp_path), "--model", "toy-llama", "--window", "8", "generate", "--contexts", "32",
                 "--batch", "2", "--batches", "1", "--steps", "1", "--graph", "off", "--max-batch-limit", "0"]) == 0
    text = (tmp_path / "generate.csv").read_text()
    assert text.splitlines()[0].startswith("model,context,batch,graph,")
    assert len(text.splitlines()) == 1 + 4  # (32, 2) and (32, 1), teacher and linearized each


def test_cache_at_context_keeps_softmax_layers_and_the_static_step_decodes_it():
    """A design with a layer kept as softmax: its cache at the context holds that many keys, and the static
    (graphable) step decodes it eagerly here, filling its fixed KV buffer one slot per step."""
    from lolsearch.trial.graphed import StaticDecoder

    student, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    linearize(student, AttentionConfig(window=8, backend="torch", softmax_layers=(0,)))
    cache = decode_speed.linear_cache_at(student, batch=2, context=24)
    assert cache.get_seq_length() == 24 and set(cache.linear) == {1}
    decoder = StaticDecoder(student, cache, torch.randint(0, len(tok), (2,)), new_tokens=3)
    k0 = cache.static_kv[0][0]
    assert k0.shape[2] == 27 and not k0[:, :, 24:].any()
    for _ in range(3):
        assert torch.isfinite(decoder.step()).all()
    assert k0[:, :, 24:].abs().sum(-1).gt(0).all() and int(cache.kv_slot) == 27


def test_generate_command_takes_softmax_layers(tmp_path):
    assert main(["--out", str(tmp_path), "--model", "toy-llama", "--window", "8", "--softmax-layers", "0", "generate",
                 "--contexts", "32", "--batch", "2", "--steps", "1", "--graph", "off", "--max-batch-limit", "0"]) == 0
    rows = (tmp_path / "generate.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(",ok," in r for r in rows)


def test_generate_command_times_a_trial_design(tmp_path, capsys):
    """--design: the trial's attention section, with its probe's choice of softmax layers from result.json."""
    import argparse
    import json

    import yaml

    from lolsearch.perf import _attention

    trial = tmp_path / "trial"
    trial.mkdir()
    attention = {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 8}}, "layout": "sliding",
                 "window_schedule": {"first": 4, "last": 16}, "softmax_rule": {"top_mse": 1}}
    (trial / "config.yaml").write_text(yaml.safe_dump({"model": {"source": "toy-llama"}, "attention": attention}))
    assert main(["--out", str(tmp_path / "o"), "--model", "toy-llama", "--design", str(trial), "generate"]) == 2
    assert "no softmax_layers in the result" in capsys.readouterr().err  # the probe's choice is needed

    (trial / "result.json").write_text(json.dumps({"status": "ok", "metrics": {"softmax_layers": [1]}}))
    att = _attention(argparse.Namespace(design=trial), "torch")
    assert att.softmax_layers == (1,) and att.softmax_rule is None and att.backend == "torch"
    assert att.feature_map.params["feature_dim"] == 8 and att.window_schedule.last == 16
    assert main(["--out", str(tmp_path / "o"), "--model", "toy-llama", "--design", str(trial), "generate",
                 "--contexts", "32", "--batch", "2", "--steps", "1", "--graph", "off", "--max-batch-limit", "0"]) == 0
    rows = (tmp_path / "o" / "generate.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(",ok," in r for r in rows)
