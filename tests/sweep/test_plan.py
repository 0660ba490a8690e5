"""lolsearch plan: tokens and estimates per trial in 100 columns; run/sweep stop over the time threshold unless
--yes; the default budgets are named."""

from pathlib import Path

import pytest

from lolsearch.cli import main
from lolsearch.trial import estimate

SPACES = Path(__file__).resolve().parents[2] / "spaces"


def test_plan_fits_100_columns(capsys):
    assert main(["plan", str(SPACES / "lolcats_ablation.yaml"), "--no-calibrate"]) == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "tok distill" in text and "1.05M" in text and "feature_map = attention.feature_map.kind" in text


def test_plan_estimates_the_toy_sweep(capsys, one_thread):
    assert main(["plan", str(SPACES / "toy.yaml")]) == 0
    text = capsys.readouterr().out
    assert "sweep: about" in text and "on cpu" in text
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4 and all(line.split()[-1].endswith("s") for line in rows)  # an estimate per trial


def test_run_and_sweep_stop_over_the_threshold_unless_yes(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setitem(estimate.THRESHOLD_S, "cpu", 0.001)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("device: cpu\nmodel: {source: toy-llama}\ndata: {seq_len: 64}\nattention: {window: 8}\n"
                   "distill: {steps: 2, batch_size: 2}\nfinetune: {steps: 2, batch_size: 2}\n"
                   "eval: {tokens: 256, batch_size: 2}\nefficiency: {measure: false}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "would take about" in err and "--yes runs it anyway" in err
    assert not (tmp_path / "t" / "result.json").exists()
    assert main(["sweep", str(SPACES / "toy.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert "over the 0s threshold" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_default_budgets_are_visible(tmp_path, capsys, command):
    space = tmp_path / "s.yaml"
    space.write_text("base: {device: cpu, model: {source: toy-llama}, finetune: {steps: 3}}\n"
                     "search: {attention.window: {choice: [8, 16]}}\nobjectives: [{metric: ppl}]\n"
                     "sampler: {kind: grid}\n")
    args = [command, str(space)] + (["--no-calibrate"] if command == "plan" else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: distill uses the default budget of 20,000,000 tokens" in out and "finetune uses" not in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_plan_of_a_gpu_space_without_cuda_lists_trials_without_estimates(capsys):
    assert main(["plan", str(SPACES / "smollm2_series.yaml")]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 15 and all(line.split()[-1] == "-" for line in rows)
    assert "5 designs x 3 seeds" in text
