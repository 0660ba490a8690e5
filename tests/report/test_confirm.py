"""lolsearch confirm: a sweep's best designs become a grid space with replicates and new base settings."""

from __future__ import annotations

import json

import pytest
import yaml
from test_ablations import make_sweep

from lolsearch.cli import main
from lolsearch.config import design_id, parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.report.confirm import best_designs, confirm_space, searched_keys
from lolsearch.report.records import load_sweep
from lolsearch.search.schema import lookup_path
from lolsearch.search.space import load_space


def test_best_designs_become_blocks_with_replicates_and_overrides(tmp_path):
    sweep_dir = make_sweep(tmp_path / "s", True, replicates=2)
    out = tmp_path / "confirm.yaml"
    assert main([ "confirm", str(sweep_dir), "--top", "3", "--replicates", "3", "--set", "distill.tokens=8192",
                  "--out", str(out)]) == 0
    space = load_space(out)
    points, info = space.grid()
    assert len(points) == 9  # 3 designs x 3 seeds
    chosen = best_designs(load_sweep(sweep_dir), 3)
    ranked = load_sweep(sweep_dir).df.sort_values("rank")
    assert chosen[0]["trial_id"] == ranked["trial_id"].iloc[0]
    assert len({c["config"]["seed"] for c in chosen}) <= 2 and len({c["trial_id"] for c in chosen}) == 3
    keys = searched_keys(load_sweep(sweep_dir).space)
    wanted = [{k: lookup_path(c["config"], k) for k in keys} for c in chosen]
    got = [{k: lookup_path(p.config.model_dump(mode="json"), k) for k in keys} for p in points]
    assert all(g in wanted for g in got) and all(w in got for w in wanted)
    assert {p.config.distill.tokens for p in points} == {8192} and {p.config.seed for p in points} == {0, 1, 2}


def test_a_searched_key_cannot_be_overridden(tmp_path):
    sweep_dir = make_sweep(tmp_path / "s", True)
    with pytest.raises(ConfigError, match="attention.window.*is searched"):
        confirm_space(sweep_dir, overrides={"attention.window": 32})
    assert main(["confirm", str(sweep_dir), "--set", "attention.window=32", "--out", str(tmp_path / "c.yaml")]) == 2
    assert not (tmp_path / "c.yaml").exists()


def test_conditional_keys_keep_their_condition(tmp_path):
    """A key searched only `when` another has some value stays conditional: designs without it do not get it."""
    root = tmp_path / "s"
    _grid_sweep(root, {"distill.layer_weights.kind": {"choice": ["uniform", "linear"]},
                       "distill.layer_weights.params.end": {"choice": [0.5, 2.0],
                                                            "when": "distill.layer_weights.kind == 'linear'"}})
    out = tmp_path / "c.yaml"
    assert main(["confirm", str(root), "--top", "3", "--replicates", "1", "--out", str(out)]) == 0
    configs = [p.config for p in load_space(out).grid()[0]]
    assert len(configs) == 3 and all(parse_trial_config(c.model_dump(mode="json")) for c in configs)
    kinds = sorted((c.distill.layer_weights.kind, c.distill.layer_weights.params.get("end")) for c in configs)
    assert kinds == [("linear", 0.5), ("linear", 2.0), ("uniform", None)]


def test_the_replicates_are_the_same_design_as_the_trials_they_confirm(tmp_path):
    """Sampled floats go into the confirmation space exactly, so each design's replicates share its design_id (and
    the report and `lolsearch compare` pool their seeds with the original trial)."""
    root = tmp_path / "s"
    originals = _grid_sweep(root, {"distill.lr": {"choice": [0.006130587292995497, 0.012345678901234567]},
                                   "distill.mse_factor": {"choice": [470.7022057918709]}})
    out = tmp_path / "c.yaml"
    assert main(["confirm", str(root), "--top", "2", "--replicates", "2", "--out", str(out)]) == 0
    points = load_space(out).grid()[0]
    assert len(points) == 4 and {design_id(p.config) for p in points} == originals


def _grid_sweep(root, search: dict) -> set[str]:
    """A finished toy grid sweep over ``search`` in ``root`` (one ok record per point, ppl_ratio_ft 1, 2, ...);
    returns the design_ids of its trials."""
    space = {"name": root.name, "base": {"model": {"source": "toy-llama"}, "data": {"source": "shakespeare"}},
             "search": search, "objectives": [{"metric": "ppl_ratio_ft", "mode": "min"}], "sampler": {"kind": "grid"}}
    (root / "trials").mkdir(parents=True)
    (root / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    ids = set()
    for i, pt in enumerate(load_space(root / "space.yaml").grid()[0]):
        cfg = pt.config
        ids.add(design_id(cfg))
        record = {"trial_id": cfg.trial_id, "config": cfg.model_dump(mode="json"), "status": "ok", "block": "main",
                  "design_id": design_id(cfg), "metrics": {"ppl_ratio_ft": 1.0 + i}, "curves": {}, "timing": {}}
        (root / "trials" / cfg.trial_id).mkdir()
        (root / "trials" / cfg.trial_id / "result.json").write_text(json.dumps(record))
    return ids
