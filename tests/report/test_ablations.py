"""Block-aware ablations on synthetic records with known additive effects: a multi-block grid shaped like
spaces/lolcats_ablation.yaml (main grid, window series, LoRA-rank series with alpha tied to rank by a constraint),
blocks recorded or inferred from space.yaml, paired deltas, verdicts from intervals, replicates and per-sequence NLL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lolsearch.config import design_id
from lolsearch.report import compare, write_report
from lolsearch.report.ablations import ablation_frame, block_importance, design_frame, largest_effects
from lolsearch.report.analysis import Objective
from lolsearch.report.records import load_sweep
from lolsearch.search.space import load_space

SPACE = {
    "name": "synthetic_ablation",
    "base": {"model": {"source": "toy-llama"}, "data": {"source": "shakespeare", "seq_len": 512},
             "distill": {"tokens": 4096}, "finetune": {"tokens": 4096, "lora": {"rank": 8, "alpha": 16}},
             "attention": {"feature_map": {"kind": "hedgehog"}, "layout": "terrace", "window": 64}},
    "search": {"attention.feature_map.kind": {"choice": ["hedgehog", "t2r"]},
               "attention.layout": {"choice": ["linear", "sliding", "terrace"]},
               "distill.enabled": {"choice": [True, False]}},
    "extra_grids": [
        {"name": "window_series", "search": {"attention.feature_map.kind": {"choice": ["hedgehog", "t2r"]},
                                             "attention.layout": {"choice": ["sliding"]},
                                             "attention.window": {"choice": [4, 16, 64, 256]}}},
        {"name": "lora_series", "search": {"attention.feature_map.kind": {"choice": ["hedgehog", "t2r"]},
                                           "finetune.lora.rank": {"choice": [4, 8, 16, 64]},
                                           "finetune.lora.alpha": {"choice": [8, 16, 32, 128]}}},
    ],
    "constraints": ["finetune.lora.alpha == 2 * finetune.lora.rank"],
    "objectives": [{"metric": "ppl_ratio_ft", "mode": "min"}],
    "sampler": {"kind": "grid"},
}
# Known additive effects on ppl_ratio_ft (reference levels: hedgehog, terrace, AT on, window 64, rank 8).
NO_AT, T2R = 3.0, 0.5
LAYOUT = {"linear": 1.0, "sliding": 0.2, "terrace": 0.0}
WINDOW = {4: 0.3, 16: 0.1, 64: 0.0, 256: -0.1}
RANK = {4: 0.05, 8: 0.0, 16: -0.02, 64: -0.06}


def truth(cfg: dict) -> float:
    a = cfg["attention"]
    value = 2.0 + NO_AT * (not cfg["distill"]["enabled"]) + T2R * (a["feature_map"]["kind"] == "t2r")
    value += LAYOUT[a["layout"]] + RANK[cfg["finetune"]["lora"]["rank"]]
    return value + (WINDOW[a["window"]] if a["layout"] == "sliding" else 0.0)


def state_bytes(cfg: dict) -> int:
    """A computed cost: the window cache grows with the window, the linear state is fixed."""
    a = cfg["attention"]
    return 1_000_000 + (0 if a["layout"] == "linear" else 2048 * a["window"])


def make_sweep(root: Path, record_blocks: bool, replicates: int = 1, seq_nll: bool = False, noise: float = 0.0,
               shift: float = 0.0) -> Path:
    (root / "trials").mkdir(parents=True)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    points = load_space(root / "space.yaml").grid()[0]
    rng = np.random.default_rng(0)
    for pt in points:
        for seed in range(replicates):
            cfg = pt.config.model_copy(update={"seed": seed})
            conf = cfg.model_dump(mode="json")
            value = truth(conf) + shift + noise * rng.standard_normal()
            record = {"trial_id": cfg.trial_id, "space": SPACE["name"], "config": conf, "status": "ok",
                      "metrics": {"ppl_ratio_ft": value, "ppl": 40.0 * value, "state_bytes_32k": state_bytes(conf)},
                      "curves": {}, "timing": {}, "env": {}}
            if record_blocks:
                record.update(block=pt.block, design_id=design_id(cfg))
            d = root / "trials" / cfg.trial_id
            d.mkdir()
            (d / "result.json").write_text(json.dumps(record))
            if seq_nll:  # 64 test sequences whose token-weighted mean NLL is log(ppl)
                nll = np.log(40.0 * value) + 0.3 * rng.standard_normal(64)
                nll += np.log(40.0 * value) - nll.mean()
                (d / "seq_nll.json").write_text(json.dumps({"nll_sum": (nll * 100).tolist(), "tokens": [100] * 64}))
    return root


def _row(frame: pd.DataFrame, block: str, factor: str, level) -> pd.Series:
    sub = frame[(frame.block == block) & (frame.factor == factor)]
    return sub[[type(v) is type(level) and v == level for v in sub.level]].iloc[0]


@pytest.mark.parametrize("record_blocks", [True, False])
def test_blocks_recorded_or_inferred_and_known_effects(tmp_path, record_blocks):
    sweep = load_sweep(make_sweep(tmp_path / "s", record_blocks))
    assert sweep.df["block"].value_counts().to_dict() == {"main": 12, "window_series": 6, "lora_series": 6}
    frame = ablation_frame(sweep.df, sweep.space, sweep.objectives, sweep.seq_nll)
    at = _row(frame, "main", "distill.enabled", False)
    assert at.ref_level is True and at.delta_vs_ref == pytest.approx(NO_AT) and at.n == 6 and at.n_pairs == 6
    assert at.verdict == "worse"  # an exact effect: the paired interval has zero width
    assert np.isnan(at.ci_low) and np.isnan(at.ci_high)  # one seed, no per-sequence NLL: no noise estimate
    for window, effect in WINDOW.items():
        row = _row(frame, "window_series", "attention.window", window)
        assert row.delta_vs_ref == pytest.approx(effect) and row.ref_level == 64
        assert row.n == 2  # the w64 points live in the main block but belong to this design too
    for rank, effect in RANK.items():
        assert _row(frame, "lora_series", "finetune.lora.rank", rank).delta_vs_ref == pytest.approx(effect)
    # rank 8 in its own block: hedgehog and t2r at terrace with AT, not every no-AT trial of the main grid
    assert _row(frame, "lora_series", "finetune.lora.rank", 8)["mean"] == pytest.approx(2.0 + T2R / 2)
    assert "finetune.lora.alpha" not in set(frame.factor)
    tie = _row(frame, "lora_series", "finetune.lora.rank", 4).tied_with
    assert "finetune.lora.alpha" in tie and "finetune.lora.alpha == 2 * finetune.lora.rank" in tie
    assert "distill.enabled" not in set(frame[frame.block != "main"].factor)
    assert list(largest_effects(frame, "main", "ppl_ratio_ft").index)[0] == "distill.enabled"


def test_noise_makes_small_effects_not_distinguishable(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path / "s", True, noise=0.2))
    frame = ablation_frame(sweep.df, sweep.space, sweep.objectives)
    assert _row(frame, "main", "distill.enabled", False).verdict == "worse"  # 3.0 against noise 0.2, 6 pairs
    rank = _row(frame, "lora_series", "finetune.lora.rank", 16)  # -0.02 against noise 0.2, 2 pairs
    assert rank.verdict == "not distinguishable" and rank.ci_method == "t over 2 paired contexts"
    assert rank.delta_ci_low < 0 < rank.delta_ci_high


def test_replicates_and_sequence_bootstrap(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path / "s", True, replicates=3, seq_nll=True, noise=0.02))
    assert len(sweep.seq_nll) == 72
    designs = design_frame(sweep.df, sweep.objectives, sweep.seq_nll)
    assert len(designs) == 24 and (designs.seeds == 3).all()
    assert (designs["ppl_ratio_ft ci_low"] < designs["ppl_ratio_ft"]).all()
    frame = ablation_frame(sweep.df, sweep.space, sweep.objectives, sweep.seq_nll)
    at = _row(frame, "main", "distill.enabled", False)
    assert at.ci_method == "paired bootstrap over 64 test sequences and seeds" and at.verdict == "worse"
    assert at.delta_ci_low < NO_AT < at.delta_ci_high
    assert at.ci_low < at["mean"] < at.ci_high and at.ci_high - at.ci_low < 0.5  # noise only, not the 3.0 spread
    assert _row(frame, "main", "distill.enabled", False).n == 18


def test_a_computed_cost_gets_its_exact_difference_not_an_interval(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path / "s", True, replicates=2, noise=0.02))
    objectives = [Objective(metric="ppl_ratio_ft", mode="min"), Objective(metric="state_bytes_32k", mode="min")]
    frame = ablation_frame(sweep.df, sweep.space, objectives)
    cost = frame[(frame.block == "window_series") & (frame.metric == "state_bytes_32k")]
    small, large = (cost[cost.level == w].iloc[0] for w in (16, 256))
    assert small.delta_vs_ref == -2048 * 48 and small.delta_ci_low == small.delta_ci_high == small.delta_vs_ref
    assert small.verdict == "better" and large.verdict == "worse"
    assert small.ci_method == "exact: computed from the design"
    ppl = frame[(frame.block == "window_series") & (frame.metric == "ppl_ratio_ft") & (frame.level == 16)].iloc[0]
    assert ppl.ci_method != small.ci_method  # a measured metric keeps its noise model


def test_importance_only_in_blocks_that_support_it(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path / "s", True))
    table, notes = block_importance(sweep.df, sweep.space, [Objective(metric="ppl_ratio_ft", mode="min")], 12)
    assert set(table.block) == {"main"} and set(table.parameter) == {"attention.feature_map.kind", "attention.layout",
                                                                     "distill.enabled"}
    assert any("window_series" in n and "8 ok trials" in n for n in notes)


def test_report_writes_ablations_csv_and_dot_plot(tmp_path):
    root = make_sweep(tmp_path / "s", False)
    md = write_report(root).read_text()
    frame = pd.read_csv(root / "ablations.csv")
    assert list(frame.columns[:10]) == ["block", "factor", "level", "n", "metric", "mean", "ci_low", "ci_high",
                                        "ref_level", "delta_vs_ref"]
    assert "### Block main: effects on ppl_ratio_ft" in md and "reference (base value)" in md
    assert "Parameter importance skipped in every block" in md
    assert (root / "plots" / "effects_ppl_ratio_ft.png").read_bytes()[:4] == b"\x89PNG"
    trials = pd.read_csv(root / "trials.csv")
    assert {"block", "blocks", "design_id"} <= set(trials.columns)


def test_committed_smollm2_ablation_attention_transfer_is_the_largest_main_effect(tmp_path):
    """Acceptance (issue 14): on a copy of results/smollm2-ablation, whose records predate ``block``."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "results" / "smollm2-ablation"
    root = tmp_path / "copy"
    (root / "trials").mkdir(parents=True)
    shutil.copy(src / "space.yaml", root / "space.yaml")
    for d in (src / "trials").iterdir():
        shutil.copytree(d, root / "trials" / d.name)
    sweep = load_sweep(root)
    assert sweep.df["block"].value_counts().to_dict() == {"main": 12, "window_series": 6, "lora_series": 6}
    frame = ablation_frame(sweep.df, sweep.space, sweep.objectives[:1])
    effects = largest_effects(frame, "main", "ppl_ratio_ft")
    assert list(effects.index)[0] == "distill.enabled" and effects.iloc[0] > 4
    no_at = _row(frame, "main", "distill.enabled", False)
    assert no_at.verdict == "worse" and no_at.delta_ci_low > 0 and no_at.n_pairs == 6
    assert "finetune.lora.alpha" not in set(frame.factor)


def test_compare_gives_verdicts_from_paired_intervals(tmp_path):
    a = make_sweep(tmp_path / "a", True, seq_nll=True)
    b = make_sweep(tmp_path / "b", True, seq_nll=True, shift=0.5)
    md = compare([a, b], tmp_path / "cmp").read_text()
    assert "differences to `a`" in md and "paired bootstrap over 64 test sequences" in md
    table = md.split("differences to `a`")[1]
    assert table.count("| worse") == 24 and "better" not in table
    for root, flag in ((a, True), (b, False)):  # converged in one sweep, still improving in the other
        for path in (root / "trials").glob("*/result.json"):
            record = json.loads(path.read_text())
            record["metrics"]["converged_finetune"] = flag
            path.write_text(json.dumps(record))
    md = compare([a, b], tmp_path / "cmp2").read_text()
    assert md.split("differences to `a`")[1].count("| true") == 24  # mixed_convergence on every design


def test_compare_pools_each_designs_distinct_seeds_over_sweeps(tmp_path):
    """A confirmation sweep re-runs the designs: their seeds pool with the first sweep's into one t interval, and a
    seed run in both sweeps counts once (the first sweep's trial)."""
    a = make_sweep(tmp_path / "a", True)  # seed 0
    b = make_sweep(tmp_path / "b", True, replicates=2, noise=0.05, shift=0.01)  # seeds 0 (again) and 1
    md = compare([a, b], tmp_path / "cmp").read_text()
    assert "Designs over seeds, all sweeps pooled" in md
    long = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    pooled = pd.read_csv(tmp_path / "cmp" / "designs.csv")
    assert len(pooled) == long["design"].nunique() and set(pooled["seeds"]) == {"0, 1"}
    for _, row in pooled.iterrows():
        runs = long[long["design"] == row["design"]]
        first = runs[(runs["sweep"] == "a") & (runs["seed"] == 0)]["ppl_ratio_ft"].item()
        second = runs[(runs["sweep"] == "b") & (runs["seed"] == 1)]["ppl_ratio_ft"].item()
        assert row["ppl_ratio_ft"] == pytest.approx((first + second) / 2)
        assert row["ppl_ratio_ft ci_low"] < row["ppl_ratio_ft"] < row["ppl_ratio_ft ci_high"]


def test_report_plots_per_layer_window_share_when_recorded(tmp_path):
    root = make_sweep(tmp_path / "s", True)
    for i, path in enumerate(sorted((root / "trials").glob("*/result.json"))[:2]):
        record = json.loads(path.read_text())
        record["metrics"].update(gamma_by_layer=[0.1, 0.2 + i], window_share_init_by_layer=[1e-5, 1e-4],
                                 window_share_by_layer=[0.3, 0.5], window_share=0.4)
        path.write_text(json.dumps(record))
    md = write_report(root).read_text()
    assert "plots/window_share.png" in md and (root / "plots" / "window_share.png").read_bytes()[:4] == b"\x89PNG"


def test_records_without_searched_keys_use_the_varying_config_keys_as_one_block(tmp_path):
    root = make_sweep(tmp_path / "s", False)
    (root / "space.yaml").write_text(yaml.safe_dump({"objectives": SPACE["objectives"]}))
    write_report(root)
    frame = pd.read_csv(root / "ablations.csv")
    assert set(frame.block) == {"main"} and "distill.enabled" in set(frame.factor)
    assert "finetune.lora.alpha" not in set(frame.factor)  # tied to the rank in every trial


def test_report_ranks_designs_by_their_means_over_seeds(tmp_path):
    """The designs table is the frontier with intervals: front 1 holds the designs whose seed means no other
    design's means dominate, listed first, each with its interval."""
    from lolsearch.report.analysis import pareto_fronts
    from lolsearch.report.diagnostics import design_summary

    sweep = load_sweep(make_sweep(tmp_path / "s", True, replicates=3, seq_nll=True, noise=0.02))
    table, caption = design_summary(sweep)
    names = [o.metric for o in sweep.objectives]
    assert list(table["front"]) == sorted(table["front"]) and "Pareto front of designs" in caption
    means = design_frame(sweep.df[sweep.df["front"] > 0], sweep.objectives, sweep.seq_nll).set_index("design_id")
    want = pareto_fronts(means, names, [o.mode for o in sweep.objectives])
    assert dict(zip(means.index, want, strict=True)) == table["front"].to_dict()
    front = table[table["front"] == 1]
    assert len(front) >= 1 and (front[f"{names[0]} ci_low"] <= front[names[0]]).all()
    # every design of a later front is matched or beaten in every objective by a design of an earlier front
    for _, row in table[table["front"] > 1].iterrows():
        better = [all(f[m] <= row[m] if o.mode == "min" else f[m] >= row[m]
                      for m, o in zip(names, sweep.objectives, strict=True))
                  for _, f in table[table["front"] < row["front"]].iterrows()]
        assert any(better)
