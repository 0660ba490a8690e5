"""perf scaling: k trials per GPU runs a valid copy of the space with resources.gpu = 1/k (sweeps faked); perf train:
each stage once per loss chunk and recompute setting; perf eval: the one-pass final evaluation is timed beside the
separate passes and gives the same metrics."""

import argparse
import json
import subprocess
from pathlib import Path

import pandas as pd

from lolsearch import perf
from lolsearch.config import AttentionConfig
from lolsearch.search.space import load_space

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "scaling.yaml"


def test_scaling_times_each_gpu_count_and_trials_per_gpu(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, float, float]] = []
    warmed: list[Path] = []

    def fake_run(cmd: list[str], **_kw) -> subprocess.CompletedProcess:
        assert warmed == [SPACE] and "--yes" in cmd  # baselines cached before the first timed sweep
        space = load_space(cmd[cmd.index("sweep") + 1])
        out = Path(cmd[cmd.index("--out") + 1])
        seen.append((int(cmd[cmd.index("--gpus") + 1]), space.resources.gpu, space.resources.cpu))
        for i in range(3):
            (out / "trials" / str(i)).mkdir(parents=True)
            record = {"status": "ok" if i else "failed", "timing": {"total_s": 10.0 * i}}
            (out / "trials" / str(i) / "result.json").write_text(json.dumps(record))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(perf.subprocess, "run", fake_run)
    monkeypatch.setattr(perf, "warm_baselines", warmed.append)
    args = argparse.Namespace(space=SPACE, gpus=[1, 2], trials_per_gpu=[1, 4], work=tmp_path)
    df = perf.cmd_scaling(args)
    assert seen == [(1, 1.0, 4.0), (2, 1.0, 4.0), (1, 0.25, 1.0), (2, 0.25, 1.0)]
    assert list(df["trials_per_gpu"]) == [1, 1, 4, 4] and list(df["trials_ok"]) == [2, 2, 2, 2]
    assert df["speedup"].iloc[0] == 1.0 and "efficiency_vs_linear" in df
    assert list(df["trial_s_median"]) == [15.0] * 4 and (df["trials_per_hour"] > 0).all()


def test_eval_times_separate_passes_and_one_pass_with_equal_metrics(tmp_path: Path) -> None:
    assert perf.main(["--out", str(tmp_path), "--device", "cpu", "eval", "--repeats", "1"]) == 0
    df = pd.read_csv(tmp_path / "eval.csv")
    assert list(df["way"]) == ["separate", "one_pass"] and (df["eval_s"] > 0).all()
    assert (df["max_rel_diff"] <= 1e-6).all()


def test_train_times_the_lora_stage_once_per_loss_chunk_recompute_and_checkpoint_setting(tmp_path: Path) -> None:
    from lolsearch.perf import main

    assert main(["--out", str(tmp_path), "--model", "toy-llama", "train", "--seq", "32", "--backends", "torch",
                 "--steps", "1", "--warmup", "0", "--stages", "attention_transfer", "lora",
                 "--loss-chunk-tokens", "0", "40", "--recompute-features", "off", "on",
                 "--checkpoint-layers", "off", "on"]) == 0
    df = pd.read_csv(tmp_path / "train.csv", dtype={"loss_chunk": str})
    lora = [(c, r, k) for c in ("0", "40") for r in ("off", "on") for k in ("off", "on")]
    assert list(zip(df["stage"], df["loss_chunk"], df["recompute"], df["checkpoint_layers"], strict=True)) == [
        ("attention_transfer", "-", "off", "-"), ("attention_transfer", "-", "on", "-"),
        *[("lora", *key) for key in lora]]
    assert (df["status"] == "ok").all() and (df["tok_s"] > 0).all()


def test_layout_label_names_the_window_schedule_and_the_softmax_layers() -> None:
    assert perf.layout_label(AttentionConfig(layout="sliding", window=64)) == "sliding64"
    scheduled = AttentionConfig(layout="sliding", window_schedule={"first": 32, "last": 512}, softmax_layers=(18, 29))
    assert perf.layout_label(scheduled) == "sliding32-512+softmax18,29"
