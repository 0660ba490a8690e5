"""Reports from synthetic sweep folders with a known Pareto set (ties, failed/pruned/running trials,
a minimised and a maximised objective), hand-computed ablation numbers, markdown/LaTeX and plots."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lolsearch.core.errors import ConfigError
from lolsearch.report import compare, load_records, load_sweep, write_report
from lolsearch.report.analysis import ablation_table, pareto_fronts, pareto_mask
from lolsearch.report.render import Table, importance, latex_table, markdown_table

# id: (feature map, window, rank, status, ppl_ratio_ft, top1_agree, device)
TRIALS = {
    "t01": ("hedgehog", 64, 8, "ok", 1.00, 0.80, "NVIDIA H200"),
    "t02": ("hedgehog", 64, 4, "ok", 1.00, 0.80, "NVIDIA H200"),  # exact duplicate of t01 on every objective
    "t03": ("hedgehog", 16, 8, "ok", 1.20, 0.85, "NVIDIA H200"),
    "t04": ("t2r", 16, 4, "ok", 1.50, 0.85, "NVIDIA H200"),  # ties t03 on state bytes, worse quality
    "t05": ("t2r", 64, 8, "ok", 1.10, 0.70, "NVIDIA H200"),
    "t06": ("hedgehog", 0, 4, "ok", 1.60, 0.90, "cpu"),
    "t07": ("t2r", 0, 8, "ok", 1.90, 0.95, "cpu"),
    "t08": ("t2r", 16, 8, "ok", 1.25, 0.60, "NVIDIA H200"),
    "t09": ("hedgehog", 64, 4, "failed", None, None, "NVIDIA H200"),
    "t10": ("t2r", 0, 4, "failed", 0.50, 0.99, "NVIDIA H200"),  # would dominate everything, but failed
    "t11": ("hedgehog", 0, 8, "pruned", 0.90, 0.99, "NVIDIA H200"),
    "t12": ("hedgehog", 16, 4, "ok", None, 0.99, "NVIDIA H200"),  # ok but the quality metric is missing
}
STATE_BYTES = {0: 100 * 2**20, 16: 300 * 2**20, 64: 600 * 2**20}
FRONT_MIN_MIN = {"t01", "t02", "t03", "t06"}  # ppl_ratio_ft min, state_bytes_32k min
FRONT_MIN_MAX = {"t01", "t02", "t03", "t06", "t07"}  # ppl_ratio_ft min, top1_agree max
TOTAL_S = 3600.0
GPU_FRACTION = 0.5
SEARCH = {"attention.feature_map.kind": {"choice": ["hedgehog", "t2r"]}, "attention.window": {"choice": [0, 16, 64]},
          "finetune.lora.rank": {"choice": [4, 8]}}


def _config(fm: str, window: int, rank: int) -> dict:
    return {"model": {"source": "toy-llama"}, "data": {"source": "shakespeare", "seq_len": 64},
            "attention": {"feature_map": {"kind": fm, "params": {}}, "layout": "linear" if window == 0 else "terrace",
                          "window": window, "softmax_layers": []},
            "distill": {"enabled": True, "tokens": 4096, "layer_weights": {"kind": "uniform", "params": {}}},
            "finetune": {"enabled": True, "tokens": 4096, "lora": {"rank": rank, "alpha": 2 * rank, "targets": ["q", "v"]}},
            "seed": 0}


def _record(tid: str, fm: str, window: int, rank: int, status: str, ppl: float | None, top1: float | None, device: str) -> dict:
    metrics = {"ppl_teacher": 40.0, "state_bytes_32k": STATE_BYTES[window], "kv_bytes_teacher_32k": 3000 * 2**20,
               "attn_flops_per_token_32k": 1e6 * (1 + window), "teacher_attn_flops_per_token_32k": 3.3e10,
               "mse_by_layer": [1e-4 * 10**i * (2 if fm == "t2r" else 1) for i in range(4)]}
    if ppl is not None:
        metrics.update(ppl_ratio_ft=ppl, ppl_ratio=ppl * 0.9, ppl=ppl * 36)
    if top1 is not None:
        metrics["top1_agree"] = top1
    steps = range(1, 9 if status != "failed" else 4)
    curves = {"distill": [{"step": s, "tokens": 512 * s, "loss": 100.0 / s} for s in steps],
              "finetune": [{"step": s, "tokens": 512 * s, "loss": 3 + ppl / s if ppl else 9.0} for s in steps],
              "finetune_eval": [{"step": 8, "tokens": 4096, "eval_loss": 3.5}]}
    return {"trial_id": tid, "space": "synthetic", "config": _config(fm, window, rank), "status": status,
            "error": "RuntimeError: CUDA out of memory | tried 2 GiB" if status == "failed" else None,
            "metrics": metrics, "curves": curves, "timing": {"total_s": TOTAL_S if device != "cpu" else TOTAL_S / 2},
            "env": {"git_sha": "deadbee", "torch": "2.13.0", "device": device, "started_at": f"2026-11-01T00:{tid[1:]}:00"}}


def make_sweep(root: Path, objectives: list[dict] | None, trials: dict = TRIALS, search: dict | None = SEARCH) -> Path:
    root.mkdir(parents=True)
    space = {"name": "synthetic", "resources": {"gpu": GPU_FRACTION, "cpu": 1}}
    if search is not None:
        space["search"] = search
    if objectives is not None:
        space["objectives"] = objectives
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    (root / "sweep.json").write_text(json.dumps({"space": "synthetic", "command": "lolsearch sweep x.yaml", "git_sha": "deadbee"}))
    for tid, spec in trials.items():
        d = root / "trials" / tid
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(_record(tid, *spec)))
    running = root / "trials" / "t13"
    running.mkdir()
    (running / "config.yaml").write_text(yaml.safe_dump(_config("t2r", 64, 4)))
    return root


MIN_MIN = [{"metric": "ppl_ratio_ft", "mode": "min"}, {"metric": "state_bytes_32k", "mode": "min"}]


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    root = make_sweep(tmp_path_factory.mktemp("rep") / "sweep", MIN_MIN)
    write_report(root)
    return root


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def _reference_front(X: np.ndarray) -> np.ndarray:
    """Plain double loop over rows of a minimisation matrix."""
    return np.array([not any(_dominates(X[j], X[i]) for j in range(len(X)) if j != i) for i in range(len(X))])


def test_pareto_mask_known_set_with_ties_failed_nan_and_max():
    df = pd.DataFrame({
        "trial_id": list("abcdefghijk"),
        "status": ["ok"] * 5 + ["failed", "ok", "ok", "ok", "ok", "pruned"],
        "q": [1.0, 1.0, 2.0, 2.0, 0.5, 0.4, np.nan, 3.0, 0.5, 1.5, 0.1],
        "tps": [10, 10, 20, 15, 5, 50, 100, 20, np.inf, 12, 100],
    })
    mask = pareto_mask(df, ["q", "tps"], ["min", "max"])
    assert set(df.trial_id[mask]) == {"a", "b", "c", "e", "j"}
    fronts = pareto_fronts(df, ["q", "tps"], ["min", "max"])
    assert dict(zip(df.trial_id, fronts, strict=True)) == {"a": 1, "b": 1, "c": 1, "e": 1, "j": 1, "d": 2, "h": 2,
                                              "f": 0, "g": 0, "i": 0, "k": 0}
    # Flipping the mode of tps changes the answer: the max objective is honoured.
    assert set(df.trial_id[pareto_mask(df, ["q", "tps"], ["min", "min"])]) == {"e"}


def test_pareto_matches_plain_reference_on_random_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        df = pd.DataFrame({"a": rng.integers(0, 4, n).astype(float), "b": rng.integers(0, 4, n).astype(float),
                           "c": rng.integers(0, 3, n).astype(float)})
        modes = ["min", "max", "min"]
        X = np.column_stack([df.a, -df.b, df.c])
        assert np.array_equal(pareto_mask(df, list(df.columns), modes), _reference_front(X))
        fronts = pareto_fronts(df, list(df.columns), modes)
        for k in range(1, fronts.max() + 1):
            rest = fronts >= k
            assert np.array_equal(fronts[rest] == k, _reference_front(X[rest]))


def test_pareto_rejects_bad_modes():
    with pytest.raises(ValueError, match="mode"):
        pareto_mask(pd.DataFrame({"a": [1.0]}), ["a"], ["minimise"])


def test_ablation_table_matches_hand_computation():
    df = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e", "f", "g"],
        "status": ["ok", "ok", "ok", "failed", "ok", "ok", "pruned"],
        "config.attention.window": [16, 16, 64, 64, np.nan, 16, 64],
        "ppl": [1.0, 2.0, 0.5, 0.1, 3.0, np.nan, 0.2],
    })
    t = ablation_table(df, "attention.window", "ppl", "min")
    assert list(t.index) == [16, 64, "-"]
    assert t.loc[16, "n"] == 2 and t.loc[16, "failed"] == 0
    assert t.loc[16, "mean"] == pytest.approx(1.5) and t.loc[16, "std"] == pytest.approx(math.sqrt(0.5))
    assert t.loc[16, "best"] == 1.0 and t.loc[16, "best_trial"] == "a"
    assert t.loc[64, "n"] == 1 and t.loc[64, "failed"] == 1 and t.loc[64, "mean"] == 0.5 and math.isnan(t.loc[64, "std"])
    assert t.loc["-", "n"] == 1 and t.loc["-", "mean"] == 3.0
    t_max = ablation_table(df, "attention.window", "ppl", "max")
    assert t_max.loc[16, "best"] == 2.0 and t_max.loc[16, "best_trial"] == "b"


def test_ablation_bins_a_continuous_factor():
    lrs = [1e-3 * 1.5**i for i in range(12)]
    df = pd.DataFrame({"trial_id": [f"t{i}" for i in range(13)], "status": ["ok"] * 13,
                       "config.distill.lr": [*lrs, np.nan], "ppl": [float(i) for i in range(13)]})
    t = ablation_table(df, "distill.lr", "ppl", "min")
    assert list(t.index) == [f"{lrs[0]:.3g} to {lrs[2]:.3g}", f"{lrs[3]:.3g} to {lrs[5]:.3g}",
                             f"{lrs[6]:.3g} to {lrs[8]:.3g}", f"{lrs[9]:.3g} to {lrs[11]:.3g}", "-"]
    assert list(t["n"]) == [3, 3, 3, 3, 1] and list(t["mean"]) == [1.0, 4.0, 7.0, 10.0, 12.0]


def test_ablation_on_loaded_sweep(reported):
    df = load_sweep(reported).df
    t = ablation_table(df, "attention.feature_map.kind", "ppl_ratio_ft", "min")
    assert t.loc["hedgehog", "n"] == 4 and t.loc["hedgehog", "mean"] == pytest.approx((1.0 + 1.0 + 1.2 + 1.6) / 4)
    assert t.loc["t2r", "n"] == 4 and t.loc["t2r", "mean"] == pytest.approx((1.5 + 1.1 + 1.9 + 1.25) / 4)
    assert t.loc["hedgehog", "failed"] == 1 and t.loc["t2r", "failed"] == 1
    assert t.loc["t2r", "best"] == 1.1 and t.loc["t2r", "best_trial"] == "t05"


def test_load_records_flattens_and_lists_running(reported):
    df = load_records(reported)
    assert len(df) == len(TRIALS) + 1
    status = dict(zip(df.trial_id, df.status, strict=True))
    assert status["t13"] == "running" and status["t09"] == "failed" and status["t11"] == "pruned"
    assert "mse_by_layer" not in df.columns
    assert {"config.attention.window", "config.finetune.lora.rank", "timing.total_s", "device", "error"} <= set(df.columns)
    row = df.set_index("trial_id").loc["t12"]
    assert math.isnan(row["ppl_ratio_ft"]) and row["top1_agree"] == 0.99
    assert df.set_index("trial_id").loc["t01", "config.finetune.lora.targets"] == "[q, v]"
    assert df.set_index("trial_id").loc["t13", "config.attention.window"] == 64  # running: config.yaml read


def test_not_a_sweep_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep folder"):
        load_records(tmp_path)


def test_bad_objective_mode_names_file_and_key(tmp_path):
    root = make_sweep(tmp_path / "s", [{"metric": "ppl", "mode": "lowest"}])
    with pytest.raises(ConfigError, match=r"space.yaml: objectives.0.mode: .*'min' or 'max'"):
        write_report(root)


def test_report_files_and_exact_front(reported):
    for name in ("report.md", "trials.csv", "pareto.csv", "report.tex"):
        assert (reported / name).stat().st_size > 0
    pareto = pd.read_csv(reported / "pareto.csv")
    assert set(pareto.trial_id) == FRONT_MIN_MIN
    trials = pd.read_csv(reported / "trials.csv")
    assert len(trials) == len(TRIALS) + 1 and set(trials.trial_id[trials.front == 1]) == FRONT_MIN_MIN


def test_report_markdown_content(reported):
    md = (reported / "report.md").read_text()
    for section in ("## Pareto front and ranking", "## Ablations", "## Paper-style tables", "## Parameter importance",
                    "## Plots", "## Trials that are not ok", "## Provenance"):
        assert section in md
    assert f"lolsearch run {reported}/trials/t01/config.yaml --out {reported}/reruns/t01" in md
    assert "RuntimeError: CUDA out of memory \\| tried 2 GiB" in md  # the pipe is escaped for markdown
    assert re.search(r"\| t13\s+\| running", md)
    n_gpu = sum(1 for s in TRIALS.values() if s[6] != "cpu")
    assert f"GPU-hours: {n_gpu * TOTAL_S * GPU_FRACTION / 3600:g} " in md
    assert f"CPU trial-hours: {2 * TOTAL_S / 2 / 3600:g} ({2 * TOTAL_S / 2:,.0f} s) over 2 trials" in md
    assert "study rebuilt from 8 ok records" in md
    assert "LoRA rank (cf. LoLCATs Table 11)" in md and "Window size (cf. LoLCATs Table 13)" in md
    assert "| hedgehog" in md and "hedgehog w64 r8" in md  # labels from the searched factors


def test_report_latex_escaped_booktabs(reported):
    tex = (reported / "report.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") > 3
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"ppl\_ratio\_ft" in tex
    body = re.sub(r"\\[a-z]+\{[^}]*\}", "", tex)  # drop \label{...}, \begin{...}
    assert "_" not in body.replace(r"\_", "")


def test_report_plots_exist_and_are_png(reported):
    names = {"pareto.png", "quality_cost.png", "mse_by_layer.png", "effects_ppl_ratio_ft.png",
             "effects_state_bytes_32k.png", "curves.png"}
    assert {p.name for p in (reported / "plots").glob("*.png")} == names
    for n in names:
        data = (reported / "plots" / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_max_objective_front(tmp_path):
    root = make_sweep(tmp_path / "s", [{"metric": "ppl_ratio_ft", "mode": "min"}, {"metric": "top1_agree", "mode": "max"}])
    write_report(root)
    assert set(pd.read_csv(root / "pareto.csv").trial_id) == FRONT_MIN_MAX


def test_report_zero_ok_trials(tmp_path):
    trials = {k: v for k, v in TRIALS.items() if v[3] != "ok"}
    root = make_sweep(tmp_path / "s", MIN_MIN, trials=trials)
    md = write_report(root).read_text()
    assert "No trial finished ok with every objective recorded: nothing to rank." in md
    assert len(pd.read_csv(root / "pareto.csv")) == 0
    assert "Parameter importance" not in md
    assert (root / "plots" / "curves.png").is_file() and not (root / "plots" / "pareto.png").exists()


def test_findings_file_is_included_under_its_own_heading(tmp_path):
    root = make_sweep(tmp_path / "s", MIN_MIN)
    md = write_report(root).read_text()
    assert "## Findings" not in md
    (root / "FINDINGS.md").write_text("## My reading\n\nAttention transfer helps.\n\n### Table 1\n\n| a |\n|---|\n")
    md = write_report(root).read_text()
    head, rest = md.split("## Findings\n", 1)
    assert "## Pareto front" not in head and "## Pareto front" in rest
    assert "Attention transfer helps." in rest and "#### Table 1" in rest and "My reading" not in md


def test_default_objectives_and_inferred_factors(tmp_path):
    root = make_sweep(tmp_path / "s", None, search=None)
    sweep = load_sweep(root)
    assert [(o.metric, o.mode) for o in sweep.objectives] == [("ppl_ratio_ft", "min"), ("state_bytes_32k", "min")]
    assert set(sweep.factors) >= {"attention.feature_map.kind", "attention.window", "finetune.lora.rank"}
    assert set(sweep.df.trial_id[sweep.df.front == 1]) == FRONT_MIN_MIN
    assert sweep.objectives_source == "default: space.yaml has no objectives"


def test_importance_from_optuna_journal(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    root = make_sweep(tmp_path / "s", MIN_MIN)
    storage = JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    study = optuna.create_study(study_name="synthetic", storage=storage, directions=["minimize", "minimize"])
    dist = {"attention.feature_map.kind": CategoricalDistribution(["hedgehog", "t2r"])}
    for _tid, (fm, _w, _r, status, ppl, _t, _d) in TRIALS.items():
        if status == "ok" and ppl is not None:
            study.add_trial(optuna.trial.create_trial(values=[ppl, 1.0], params={"attention.feature_map.kind": fm},
                                                      distributions=dist))
    table, note = importance(load_sweep(root))
    assert note == "" and "optuna.journal study 'synthetic', 8 complete trials" in table.caption
    assert list(table.frame.index) == ["attention.feature_map.kind"]
    assert list(table.frame.columns) == ["ppl_ratio_ft", "state_bytes_32k", "pareto"]


def test_compare_two_sweeps(tmp_path):
    a = make_sweep(tmp_path / "a", MIN_MIN)
    b_trials = {k: (v[0], v[1], v[2], v[3], None if v[4] is None else v[4] + 0.5, *v[5:]) for k, v in TRIALS.items()}
    b = make_sweep(tmp_path / "b", MIN_MIN, trials=b_trials)
    path = compare([a, b], tmp_path / "cmp")
    md = path.read_text()
    assert "# Sweep comparison" in md and "| a " in md and "| b " in md
    long = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(long) == 2 * 8 and set(long.sweep) == {"a", "b"}
    design = long[long.trial_id == "t03"].set_index("sweep")["ppl_ratio_ft"]
    assert design["a"] == pytest.approx(1.2) and design["b"] == pytest.approx(1.7)


def test_markdown_and_latex_rendering_escapes():
    frame = pd.DataFrame({"feature_map": ["a|b", "50% & $x_1$"], "ppl": [1.23456, np.nan]},
                         index=pd.Index([16, 64], name="attention.window"))
    md = markdown_table(frame)
    assert "a\\|b" in md and re.search(r"\|\s+1\.2346 \|", md) and re.search(r"\|\s+- \|", md)
    tex = latex_table(Table("t_x", "Title with_underscore & 50%", frame))
    assert r"50\% \& \$x\_1\$" in tex and "feature map" in tex and r"Title with\_underscore \& 50\%" in tex
    assert r"\label{tab:t-x}" in tex
    assert list(itertools.chain(re.findall(r"\\(begin|end)\{(\w+)\}", tex))).count(("begin", "tabular")) == 1
