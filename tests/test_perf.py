"""perf scaling: k trials per GPU runs a valid copy of the space with resources.gpu = 1/k (sweeps faked); perf train:
each stage once per loss chunk and recompute setting; perf eval: the one-pass final evaluation is timed beside the
separate passes and gives the same metrics; perf fixed: cold trials, then warm ones alternating with a variant;
the attention-free bound: its core, and its stage beside the teacher's."""

import argparse
import json
import subprocess
from pathlib import Path

import pandas as pd

from lolsearch import perf
from lolsearch.config import AttentionConfig
from lolsearch.search.space import load_space
from lolsearch.sweep import scaling

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

    monkeypatch.setattr(scaling.subprocess, "run", fake_run)
    monkeypatch.setattr(scaling, "warm_baselines", warmed.append)
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



def test_train_times_both_lora_compute_dtypes_and_checks_each(tmp_path: Path) -> None:
    assert perf.main(["--out", str(tmp_path), "--model", "toy-llama", "train", "--seq", "32", "--backends", "torch",
                      "--steps", "1", "--warmup", "0", "--stages", "lora", "teacher_lora", "--check",
                      "--lora-compute", "float32", "model"]) == 0
    df = pd.read_csv(tmp_path / "train.csv")
    assert list(zip(df["stage"], df["lora_compute"], strict=True)) == [
        ("teacher_lora", "float32"), ("teacher_lora", "model"), ("lora", "float32"), ("lora", "model")]
    assert (df["status"] == "ok").all() and (df["lora_compute_speedup"] > 0).all()
    assert (df["fast_rel_diff"] == 0).all()  # an fp32 model: both compute dtypes are the same products
    assert list(df["fused_features"].fillna("-")) == ["-", "-", "off", "off"]  # the torch backend computes φ itself


def test_train_rows_record_the_settings_in_effect_where_not_varied(tmp_path: Path) -> None:
    """Without --fused-features / --lora-compute each row still says what ran (the defaults; the torch backend never
    fuses the maps); such columns are no key of the ratios, so backends still compare."""
    assert perf.main(["--out", str(tmp_path), "--model", "toy-llama", "train", "--seq", "32", "--backends", "torch",
                      "--steps", "1", "--warmup", "0", "--stages", "attention_transfer", "lora", "teacher_lora"]) == 0
    df = pd.read_csv(tmp_path / "train.csv").set_index("stage")
    assert df.loc["lora", "lora_compute"] == "model" and df.loc["teacher_lora", "lora_compute"] == "model"
    assert df.loc["attention_transfer", "lora_compute"] == "-" and df.loc["teacher_lora", "fused_features"] == "-"
    assert df.loc["attention_transfer", "fused_features"] == "off" == df.loc["lora", "fused_features"]
    assert "fused_speedup" not in df and "lora_compute_speedup" not in df and (df["torch_speedup"] == 1).all()


def test_the_fast_side_of_the_check_runs_under_the_setting_and_the_eager_side_does_not() -> None:
    import contextlib

    import torch

    from lolsearch.config import StageConfig
    from lolsearch.trial.speed import check_fast_path

    w = torch.nn.Parameter(torch.ones(3))
    shift = {"on": False}

    @contextlib.contextmanager
    def setting():
        shift["on"] = True
        yield
        shift["on"] = False

    def loss_fn(batch: dict) -> torch.Tensor:
        return (w * batch["input_ids"]).sum() + (1.0 if shift["on"] else 0.0)

    batches = lambda: iter([{"input_ids": torch.ones(3)}] * 10)  # noqa: E731
    cfg = StageConfig(steps=3, lr=1e-3, cuda_graph=False, sync_every=1)
    got = check_fast_path("toy", [w], loss_fn, batches, cfg, 1, fast_setting=setting)
    assert got["eager"][0] == 3.0 and got["fast"][0] == 4.0 and not shift["on"]
    assert check_fast_path("toy", [w], loss_fn, batches, cfg, 1)["max_rel_diff"] == 0


def test_train_profile_writes_the_operators_the_timeline_and_the_host_functions(tmp_path: Path) -> None:
    """``perf train --profile``: the operator table of the steps and, beside it, their timeline (a gzipped Chrome
    trace) and the Python functions' host time (where a host-bound step goes), naming the stage's own code."""
    import gzip
    import json

    assert perf.main(["--out", str(tmp_path), "--model", "toy-llama", "train", "--seq", "32", "--backends", "torch",
                      "--stages", "lora", "--steps", "2", "--warmup", "1", "--profile"]) == 0
    ops = (tmp_path / "profile_lora_off.txt").read_text()
    host = (tmp_path / "profile_lora_off_host.txt").read_text()
    assert "aten::mm" in ops and "Name" in ops
    assert "Python functions by tottime" in host and "Python functions by cumulative" in host
    assert "run_stage" in host and "lolsearch/attention/" in host  # the linearized layers' own functions
    with gzip.open(tmp_path / "profile_lora_off_trace.json.gz", "rt") as fh:
        events = json.load(fh)["traceEvents"]
    assert any(e.get("name") == "aten::mm" and e.get("dur", 0) > 0 for e in events)


def test_kernels_by_op_gives_gpu_time_per_step_by_launching_operator() -> None:
    """The profile's kernel table divides by the profiled steps itself (a hand-passed count once halved a table's
    times), pools matrix products, and names each other kernel by the innermost operators around its launch."""
    from lolsearch.trial.speed import kernels_by_op

    def op(name: str, ts: int, dur: int) -> dict:
        return {"cat": "cpu_op", "name": name, "tid": 1, "ts": ts, "dur": dur}

    def kernel(name: str, corr: int, ts: int, dur: int) -> list[dict]:
        return [{"cat": "cuda_runtime", "name": "cudaLaunchKernel", "tid": 1, "ts": corr * 10 + 1, "dur": 1,
                 "args": {"correlation": corr}},
                {"cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"correlation": corr}}]

    events = [op("HybridAttentionFn", 0, 100), op("aten::mm", 30, 5)]
    events += kernel("bwd_kv_kernel", 0, 1000, 3000) + kernel("nvjet_sm90_tst", 3, 5000, 1000)
    events += kernel("bwd_kv_kernel", 5, 7000, 1000)
    table = kernels_by_op(events, steps=2).splitlines()
    assert table[0] == "kernels 2.5 ms/step; span 3.5 ms/step (2 steps)"
    assert table[1].split() == ["2.000", "1.0", "HybridAttentionFn", "::", "bwd_kv_kernel"]
    assert table[2].split() == ["0.500", "0.5", "GEMM"]
    assert kernels_by_op([op("aten::mm", 0, 5)], steps=2) == "no GPU kernels in the trace\n"


def test_train_warns_when_the_run_is_too_short_for_a_steady_rate(tmp_path: Path, caplog) -> None:
    """A run with no loss read-back between step 2 and the last (a 4-step run at the GPU's default of one every 25
    steps) is told before it starts that its steady_tok_s will be NaN; a run with that read-back is not."""
    from lolsearch.trial.speed import has_steady_window

    assert [has_steady_window(s, e) for s, e in [(4, 25), (30, 5), (10, 2), (3, 1), (2, 1)]] == [False, True, True, True, False]
    args = ["--model", "toy-llama", "train", "--seq", "32", "--backends", "torch", "--stages", "lora", "--warmup", "1"]
    for steps, every, short in [("3", "5", True), ("3", "1", False)]:
        caplog.clear()
        out = tmp_path / every
        with caplog.at_level("WARNING", logger="lolsearch.perf"):
            assert perf.main(["--out", str(out), *args, "--steps", steps, "--sync-every", every]) == 0
        assert ("steady_tok_s will be NaN" in caplog.text) == short
        assert pd.read_csv(out / "train.csv")["steady_tok_s"].isna().all() == short


def test_timing_and_profiling_wrap_the_compiled_modules_once(tmp_path: Path, monkeypatch) -> None:
    """A trial's stage wraps its modules for ``compile`` once; the timed and profiled steps must not pay for wrapping
    them again per run (torch.compile's set-up copies its config each time: 0.48 s for the 8B shape's 160 modules)."""
    import torch

    from lolsearch.config import StageConfig
    from lolsearch.trial.speed import profile_stage, time_stage

    wrapped = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: wrapped.append(self))
    mods = [torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)]
    w = torch.nn.Parameter(torch.ones(3))
    batches = iter([{"input_ids": torch.ones(1, 3)}] * 20)
    cfg = StageConfig(steps=1, lr=1e-3, cuda_graph=False, sync_every=1, compile="default")

    def loss_fn(batch: dict) -> torch.Tensor:
        return (w * batch["input_ids"]).sum()

    got = time_stage("toy", [w], loss_fn, batches, cfg, 3, torch.device("cpu"), steps=2, warmup=1, compile_modules=mods)
    assert got["tok_s"] > 0
    assert wrapped == mods
    profile_stage("toy", [w], loss_fn, batches, cfg, 3, tmp_path / "p.txt", steps=2, compile_modules=mods)
    assert wrapped == mods + mods
    assert all(m._compiled_call_impl is None for m in mods)  # eager again afterwards


def test_fixed_alternates_the_variant_with_the_trial_and_counts_cold_trials_apart(tmp_path: Path, monkeypatch) -> None:
    """perf fixed: ``--cold`` cold trials, then each warm trial followed by the ``--variant`` trial; every ``*_s``
    part of a trial's timing becomes a column (trials faked: their configs and cold flags recorded)."""
    from lolsearch.trial import speed

    seen: list[tuple[bool, bool]] = []

    def fake(cfg, trials: int, *, cold: bool) -> list[dict]:
        seen.extend([(cold, cfg.eval.cuda_graph)] * trials)
        return [{"trial": i, "cold": cold, "total_s": 5.0, "train_s": 4.0, "fixed_s": 1.0, "final_eval_s": 0.5,
                 "train_tokens": 4096} for i in range(trials)]

    monkeypatch.setattr(speed, "fixed_costs", fake)
    assert perf.main(["--out", str(tmp_path), "--device", "cpu", "fixed", "--trials", "2", "--cold", "1",
                      "--variant", "eval.cuda_graph=false"]) == 0
    assert seen == [(True, "auto"), (False, "auto"), (False, False), (False, "auto"), (False, False)]
    df = pd.read_csv(tmp_path / "fixed.csv", keep_default_na=False)
    assert list(df["variant"]) == ["", "", "eval.cuda_graph=false", "", "eval.cuda_graph=false"]
    assert list(df["trial"]) == [0, 0, 0, 1, 1] and "final_eval_s" in df
    assert perf.main(["--out", str(tmp_path), "--device", "cpu", "fixed", "--set", "eval.cuda_graph=sometimes"]) == 2


def test_attention_free_core_returns_each_positions_own_values_and_keeps_q_and_k_in_the_graph() -> None:
    """The bound's attention core equals attention over each position's own key alone (GQA: 4 query heads on 2 kv
    heads), and the query and key projections still get (zero) gradients, as around real attention."""
    import torch

    from lolsearch.trial import speed

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 5, 8, generator=gen, requires_grad=True) for h in (4, 2, 2))
    out, _ = speed._values_only(None, q, k, v, None)
    own = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=torch.eye(5, dtype=torch.bool))
    torch.testing.assert_close(out, own.transpose(1, 2))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q)) and torch.equal(k.grad, torch.zeros_like(k))
    assert (v.grad == 2).all()  # each kv head feeds two query heads


def test_train_times_the_attention_free_bound_beside_the_teacher(tmp_path: Path) -> None:
    assert perf.main(["--out", str(tmp_path), "--model", "toy-llama", "train", "--seq", "32", "--backends", "torch",
                      "--steps", "2", "--stages", "teacher_lora", "attention_free_lora"]) == 0
    df = pd.read_csv(tmp_path / "train.csv")
    assert list(df["stage"]) == ["teacher_lora", "attention_free_lora"] and (df["status"] == "ok").all()


def test_attention_free_changes_the_teachers_loss_and_restores_its_attention() -> None:
    import torch

    from lolsearch.config import ModelConfig
    from lolsearch.models import load_model
    from lolsearch.trial.speed import attention_free

    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}))
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(input_ids=ids, labels=ids).loss
        with attention_free(model):
            free = model(input_ids=ids, labels=ids).loss
        again = model(input_ids=ids, labels=ids).loss
    assert not torch.isclose(free, plain) and torch.equal(again, plain)
    assert model.config._attn_implementation == "sdpa"
