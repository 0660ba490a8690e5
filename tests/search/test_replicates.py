"""``replicates: N``: each grid point becomes N trials with seeds seed, seed + 1, ... (ordered seed by seed); one
design_id per point."""

from __future__ import annotations

import pytest
import yaml

from lolsearch.config import design_id
from lolsearch.core.errors import ConfigError
from lolsearch.search.space import load_space

SPACE = {"name": "rep", "base": {"model": {"source": "toy-llama"}, "data": {"source": "shakespeare", "seq_len": 128},
                                  "seed": 5},
         "search": {"attention.layout": {"choice": ["linear", "terrace"]}},
         "objectives": [{"metric": "ppl_ratio_ft"}], "sampler": {"kind": "grid"}, "replicates": 3}


def test_grid_points_are_replicated_with_consecutive_seeds(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    points, info = load_space(path).grid()
    assert info.size == 6 and info.per_block == {"main": 6} and info.duplicates == 0
    assert [p.config.seed for p in points] == [5, 5, 6, 6, 7, 7]  # seed-major: a cut sweep keeps whole seed rounds
    assert [p.config.attention.layout for p in points] == ["linear", "terrace"] * 3
    assert len({p.config.trial_id for p in points}) == 6
    assert len({design_id(p.config) for p in points}) == 2
    assert {design_id(p.config) for p in points[::2]} == {design_id(points[0].config)}


def test_replicates_need_the_grid_sampler(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "sampler": {"kind": "random", "num_trials": 4}}))
    with pytest.raises(ConfigError, match="replicates: only the grid sampler repeats its points"):
        load_space(path)
