"""Integrations there when asked for: lm-eval tasks without lm-eval fail before any compute, `lolsearch
dashboard` opens the study (or says which extra to install), TensorBoard events per trial under its trial_id,
the cluster's nodes for sweep.json."""

import importlib.util
import sys
import types

import pytest

from lolsearch.cli import main
from lolsearch.sweep.integrations import TrialEvents, cluster_nodes


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed here")
def test_lm_eval_tasks_without_lm_eval_fail_before_any_compute(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("device: cpu\nmodel: {source: toy-llama}\ndistill: {steps: 2}\nfinetune: {steps: 2}\n"
                   "eval: {lm_eval_tasks: [arc_easy]}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "t"), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "eval.lm_eval_tasks: lm-eval is not installed: pip install 'lolsearch[eval]'" in err
    assert not (tmp_path / "t" / "result.json").exists()
    assert main(["validate", str(cfg)]) == 2


def test_dashboard_command(tmp_path, capsys, monkeypatch):
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "no optuna.journal" in capsys.readouterr().err
    (tmp_path / "optuna.journal").write_text("")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # not installed
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "pip install 'lolsearch[dashboard]'" in capsys.readouterr().err
    calls = []
    fake = types.SimpleNamespace(run_server=lambda storage, host, port: calls.append((type(storage).__name__, host, port)))
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    assert main(["dashboard", str(tmp_path), "--port", "8123"]) == 0
    assert calls == [("JournalStorage", "127.0.0.1", 8123)]


def read_scalars(folder):
    """tag -> [(step, value)] from the TFRecord event files tensorboardX wrote in ``folder``."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_events_under_the_trial_id(tmp_path):
    events = TrialEvents(tmp_path, "abc123")
    for step in (1, 2, 3):
        events({"stage": "distill", "step": step, "loss": 1.0 / step, "tok_s": 100.0, "tokens": 64 * step})
    events({"stage": "swap", "ppl_swap": 300.0})  # no step: not a curve point
    events.final({"ppl": 12.5, "status_text": "ok", "flag": True})
    events.close()
    scalars = read_scalars(tmp_path / "tb" / "abc123")
    assert [s for s, _ in scalars["distill/loss"]] == [1, 2, 3]
    assert scalars["distill/loss"][2][1] == pytest.approx(1 / 3)
    assert scalars["metrics/ppl"] == [(0, 12.5)] and "metrics/flag" not in scalars


def test_cluster_nodes_lists_every_node():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, logging_level="error", log_to_driver=False)
    try:
        nodes = cluster_nodes()
    finally:
        if started:
            ray.shutdown()
    assert len(nodes) >= 1 and nodes[0]["cpu"] >= 1 and nodes[0]["host"]
    assert set(nodes[0]) == {"host", "address", "cpu", "gpu", "memory_gib", "accelerators"}
