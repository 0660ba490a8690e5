"""Search spaces: grammar, validation errors, conditional sampling, exact grids, the expression language."""

import functools
import itertools
import json
import pickle
from pathlib import Path

import optuna
import pytest

from lolsearch.cli import main as cli_main
from lolsearch.config import parse_trial_config
from lolsearch.core.errors import ConfigError
from lolsearch.search.expr import ExprError, parse_expr
from lolsearch.search.schema import lookup_path
from lolsearch.search.space import define_by_run, load_space, make_sampler

SPACES = sorted((Path(__file__).resolve().parents[2] / "spaces").glob("*.yaml"))
HEAD = """
base:
  device: cpu
  model: {source: toy-llama}
  data: {seq_len: 256}  # windows up to 256 are searched: a window never exceeds the sequence
  distill: {steps: 2}
  finetune: {steps: 2}
objectives: [{metric: ppl_ratio_ft}]
"""


def write(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_space(path)
    return [str(p) for p in err.value.problems]


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_shipped_space_validates_200_samples(path):
    space = load_space(path)
    points = space.sample_points(200, seed=0)
    assert len(points) == 200 and space.objectives and space.num_trials() >= 1
    for pt in points:  # each sample is a valid config that carries exactly the values that were drawn
        full = pt.config.model_dump(mode="json")
        for key, value in pt.params.items():
            got = lookup_path(full, key)
            assert got == value or json.dumps(got, sort_keys=True) == value, (key, got, value)
        if pt.block == space.blocks[0].name:
            _check_conditions(space, pt.params, pt.config)
    if space.num_trials() > 1:  # the draws explore the space
        assert len({pt.config.trial_id for pt in points}) > 1


def test_shipped_space_names_and_sizes():
    names = {p.stem for p in SPACES}
    assert {"toy", "quickstart", "lolcats_ablation", "layer_weights", "llama3_8b"} <= names
    assert load_space(SPACES[0].parent / "toy.yaml").num_trials() >= 4
    assert load_space(SPACES[0].parent / "quickstart.yaml").num_trials() >= 4
    ablation = load_space(SPACES[0].parent / "lolcats_ablation.yaml")
    points, info = ablation.grid()
    assert info.size == len(points) >= 24
    assert info.per_block == {"main": 12, "window_series": 6, "lora_series": 6}
    assert all(p.config.finetune.lora.alpha == 2 * p.config.finetune.lora.rank for p in points)
    windows = {p.config.attention.window for p in points if p.config.attention.layout == "sliding"}
    assert windows == {4, 16, 64, 256}
    llama = load_space(SPACES[0].parent / "llama3_8b.yaml")
    base = llama.plan()[1]  # window 64: the paper's recipe
    assert (base.model.source, base.attention.feature_map.params["feature_dim"], base.attention.layout,
            base.attention.window) == ("meta-llama/Meta-Llama-3-8B", 64, "terrace", 64)
    assert (base.distill.tokens, base.finetune.tokens, base.finetune.lora.rank, base.finetune.lora.alpha) == (
        20_000_000, 20_000_000, 8, 16)


def test_grid_is_exact_product_without_duplicates(tmp_path):
    path = write(tmp_path, """
search:
  attention.feature_map.kind: {choice: [hedgehog, t2r, elu]}
  finetune.lora.rank: {int: [4, 16], step: 4}
  distill.lr: {float: [0.01, 0.03], step: 0.01}
sampler: {kind: grid}
""")
    space = load_space(path)
    points, info = space.grid()
    assert info.size == len(points) == 3 * 4 * 3 == space.num_trials()
    assert len({p.config.trial_id for p in points}) == len(points)
    assert {tuple(p.params.values()) for p in points} == set(itertools.product(
        ["hedgehog", "t2r", "elu"], [4, 8, 12, 16], [0.01, 0.02, 0.03]))


def _reference_tree_size(choices: dict, active) -> int:
    """Independent count: the full product, inactive keys dropped, distinct assignments counted."""
    seen = set()
    for combo in itertools.product(*choices.values()):
        point = dict(zip(choices, combo, strict=True))
        seen.add(tuple((k, v) for k, v in point.items() if active(k, point)))
    return len(seen)


def test_conditional_grid_counts_the_tree(tmp_path):
    path = write(tmp_path, """
search:
  attention.feature_map.kind: {choice: [hedgehog, t2r]}
  attention.layout: {choice: [linear, sliding, terrace]}
  attention.window: {choice: [4, 16], when: "attention.layout != 'linear'"}
  distill.layer_weights.kind: {choice: [uniform, power]}
  distill.layer_weights.params.p: {choice: [0.5, 2.0], when: "distill.layer_weights.kind == 'power'"}
sampler: {kind: grid}
""")
    points, info = load_space(path).grid()
    choices = {"fm": ["hedgehog", "t2r"], "layout": ["linear", "sliding", "terrace"], "window": [4, 16],
               "lw": ["uniform", "power"], "p": [0.5, 2.0]}
    rules = {"window": lambda pt: pt["layout"] != "linear", "p": lambda pt: pt["lw"] == "power"}
    expected = _reference_tree_size(choices, lambda k, pt: rules.get(k, lambda _: True)(pt))
    assert expected == 2 * (1 + 2 + 2) * (1 + 2) == 30
    assert info.tree_points == info.size == len(points) == expected
    assert len({p.config.trial_id for p in points}) == expected
    for p in points:
        assert ("attention.window" in p.params) == (p.params["attention.layout"] != "linear")
        assert ("distill.layer_weights.params.p" in p.params) == (p.params["distill.layer_weights.kind"] == "power")


def test_extra_grids_union_dedup_and_constraints(tmp_path):
    path = write(tmp_path, """
search:
  attention.layout: {choice: [sliding, terrace]}
extra_grids:
  - name: windows
    search:
      attention.layout: {choice: [sliding]}
      attention.window: {choice: [16, 64]}
  - search:
      finetune.lora.rank: {choice: [4, 8, 16]}
      finetune.lora.alpha: {choice: [8, 16, 32]}
constraints: ["finetune.lora.alpha == 2 * finetune.lora.rank"]
sampler: {kind: grid}
""")
    space = load_space(path)
    points, info = space.grid()
    # main 2; windows: window 64 = base -> duplicate of main 'sliding'; lora: 3 of 9 pass, rank 8 = base terrace
    assert info.tree_points == 2 + 2 + 9 and info.excluded == 6
    assert info.duplicates == 2 and info.size == len(points) == 5
    assert info.per_block == {"main": 2, "windows": 1, "grid2": 2}
    assert len({p.config.trial_id for p in points}) == 5
    assert space.searched_keys == ["attention.layout", "attention.window", "finetune.lora.rank", "finetune.lora.alpha"]
    dists = space.distributions()
    assert dists["attention.layout"].choices == ("sliding", "terrace")


CONDITIONAL = """
search:
  attention.layout: {choice: [linear, sliding, terrace]}
  attention.window: {int: [1, 256], log: true, when: "attention.layout != 'linear'"}
  attention.feature_map.kind: {choice: [hedgehog, t2r, elu]}
  attention.feature_map.params.feature_dim: {choice: [32, 64], when: "attention.feature_map.kind in ['hedgehog', 't2r']"}
  distill.layer_weights.kind: {choice: [uniform, linear, power]}
  distill.layer_weights.params.p: {float: [-2, 4], when: "distill.layer_weights.kind == 'power'"}
  distill.layer_weights.params.end: {loguniform: [0.25, 4], when: "distill.layer_weights.kind == 'linear'"}
  attention.softmax_layers: {choice: [[], [0], [0, 1]]}
  distill.lr: {loguniform: [1.0e-3, 1.0e-1]}
sampler: {kind: tpe, num_trials: 10, seed: 3}
"""


def _check_conditions(space, params: dict, cfg) -> None:
    full = cfg.model_dump(mode="json")
    for p in space.blocks[0].params:
        active = p.when is None or p.when.truth(lambda n: lookup_path(full, n))
        assert (p.key in params) == active, (p.key, params)


def test_conditional_samples_never_carry_inactive_keys(tmp_path):
    space = load_space(write(tmp_path, CONDITIONAL))
    points = space.sample_points(300, seed=1)
    for pt in points:
        _check_conditions(space, pt.params, pt.config)
    kinds = {pt.params["distill.layer_weights.kind"] for pt in points}
    assert kinds == {"uniform", "linear", "power"}  # every branch was reached
    for pt in points:
        assert 1 <= pt.config.attention.window <= 256 or pt.config.attention.layout == "linear"
        if "distill.layer_weights.params.p" in pt.params:
            assert pt.config.distill.layer_weights.params["p"] == pt.params["distill.layer_weights.params.p"]


def test_define_by_run_suggests_only_active_keys_and_pickles(tmp_path):
    space = load_space(write(tmp_path, CONDITIONAL))
    fn = pickle.loads(pickle.dumps(functools.partial(define_by_run, space=space)))
    study = optuna.create_study(sampler=make_sampler(space))
    for _ in range(40):
        trial = study.ask()
        point = fn(trial)["_point"]
        assert point["pruned"] is None
        assert set(trial.params) == set(point["params"])
        _check_conditions(space, point["params"], parse_trial_config(point["config"]))
        study.tell(trial, 1.0)
    json.dumps(point)  # only plain JSON travels through Ray


def test_plan_is_seeded_and_records_pruned_points(tmp_path):
    space = load_space(write(tmp_path, """
search:
  attention.window: {choice: [4, 8, 16, 32]}
  distill.lr: {choice: [0.01, 0.1]}
constraints: ["attention.window >= 16 or distill.lr < 0.05"]
sampler: {kind: random, num_trials: 24, seed: 5}
"""))
    first, second = space.plan_points(), space.plan_points()
    assert [p.params for p in first] == [p.params for p in second]
    pruned = [p for p in first if p.pruned]
    assert pruned and all(p.config is None for p in pruned)
    assert all(p.params["attention.window"] < 16 and p.params["distill.lr"] > 0.05 for p in pruned)
    assert "violates constraint 'attention.window >= 16 or distill.lr < 0.05'" in pruned[0].pruned
    assert len(space.plan()) == len(first) - len(pruned)
    for pt in space.sample_points(100, seed=0):  # validation samples skip violating points
        assert pt.params["attention.window"] >= 16 or pt.params["distill.lr"] < 0.05


def test_unknown_search_key_did_you_mean(tmp_path):
    path = write(tmp_path, "search:\n  attention.windw: {choice: [4]}\nsampler: {kind: grid}\n")
    assert problems(path)[0].startswith(f"{path}: search.attention.windw: unknown key 'windw'; did you mean 'window' or 'window_schedule'?")


@pytest.mark.parametrize("body, expected", [
    ("search: {}\nsampler: {kind: tpee, num_trials: 3}\n", "sampler.kind: unknown sampler 'tpee'; did you mean 'tpe'?"),
    ("search:\n  seed: {choise: [1]}\nsampler: {kind: grid}\n", "search.seed.choise: unknown key 'choise'; did you mean 'choice'?"),
    ("search:\n  seed: {choice: [1]}\nsampler: {kind: grid}\nsampel: 3\n", "sampel: unknown key 'sampel'; did you mean 'sampler'"),
    ("search:\n  attention.layout: {choice: [linear], when: \"attention.window >\"}\nsampler: {kind: grid}\n",
     "search.attention.layout.when: bad expression"),
    ("search:\n  seed: {choice: [1], when: \"__import__('os').system('true')\"}\nsampler: {kind: grid}\n",
     "search.seed.when: '__import__('os').system('true')' is not allowed"),
    ("search:\n  seed: {choice: [1], when: \"attention.layot == 'x'\"}\nsampler: {kind: grid}\n",
     "search.seed.when: unknown key 'layot' (in 'attention.layot'); did you mean 'layout'"),
    ("search:\n  attention.layout: {choice: [linear], when: \"attention.window > 4\"}\n  attention.window: {choice: [8]}\n"
     "sampler: {kind: grid}\n", "search.attention.layout.when: reads 'attention.window', which is searched later"),
    ("search:\n  distill.lr: {loguniform: [1.0e-3, 1.0e-1]}\nsampler: {kind: grid}\n",
     "search.distill.lr: the grid sampler needs finite values"),
    ("search:\n  distill.lr: {choice: [0.1], int: [1, 2]}\nsampler: {kind: grid}\n",
     "search.distill.lr: give exactly one of choice, int, float, loguniform"),
    ("search: {}\nsampler: {kind: random}\n", "sampler.num_trials: required for sampler 'random'"),
    ("search: {}\nsampler: {kind: grid}\nconstraints: ['seed = 1']\n", "constraints.0: bad expression"),
    ("search:\n  distill.layer_weights.params.pp: {choice: [1]}\nsampler: {kind: grid}\n",
     "search.distill.layer_weights.params.pp: unknown parameter 'pp'; did you mean 'p'?"),
    ("search:\n  distill.layer_weights: {choice: [uniform]}\n  distill.layer_weights.kind: {choice: [power]}\n"
     "sampler: {kind: grid}\n", "search.distill.layer_weights.kind: overlaps 'distill.layer_weights'"),
])
def test_bad_spaces_name_file_and_key(tmp_path, body, expected):
    path = write(tmp_path, body)
    assert any(line.startswith(f"{path}: {expected}") for line in problems(path)), problems(path)


def test_asha_refused_with_several_objectives(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(HEAD.replace("objectives: [{metric: ppl_ratio_ft}]",
                                 "objectives: [{metric: ppl_ratio_ft}, {metric: state_bytes_32k}]")
                    + "search: {}\nsampler: {kind: tpe, num_trials: 4}\nscheduler: {kind: asha}\n")
    assert any("scheduler: ASHA early-stops trials, which would corrupt the Pareto front" in line for line in problems(path))
    single = write(tmp_path, "search: {}\nsampler: {kind: tpe, num_trials: 4}\nscheduler: {kind: asha}\n", "one.yaml")
    assert load_space(single).scheduler.metric == "eval_loss"


def test_unknown_objective_metric(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(HEAD.replace("ppl_ratio_ft}", "ppl_ratoi_ft}") + "search: {}\nsampler: {kind: grid}\n")
    assert any("objectives.0.metric: unknown metric 'ppl_ratoi_ft'; did you mean 'ppl_ratio_ft'" in line
               for line in problems(path))


def test_sampled_value_errors_point_at_the_search_key(tmp_path):
    path = write(tmp_path, "search:\n  distill.lr: {choice: [0.01, -1.0]}\nsampler: {kind: grid}\n")
    with pytest.raises(ConfigError) as err:
        load_space(path).grid()
    line = str(err.value.problems[0])
    assert line.startswith(f"{path}: search.distill.lr: ") and "distill.lr=-1.0" in line
    path = write(tmp_path, "search:\n  attention.layout: {choice: [sliding]}\n  attention.window: {choice: [0]}\n"
                 "sampler: {kind: grid}\n", "w.yaml")
    with pytest.raises(ConfigError, match="search.attention.layout: layout 'sliding' needs window >= 1"):
        load_space(path).grid()


def test_yaml_tags_never_execute(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n" + HEAD + "sampler: {kind: grid}\n")
    assert problems(path)[0].startswith(f"{path}: invalid YAML")
    assert not marker.exists()


def test_cli_exit_2_with_one_line_per_problem(tmp_path, capsys):
    path = write(tmp_path, "search:\n  attention.windw: {choice: [4]}\nsampler: {kind: gird}\n")
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{path}: sampler.kind: unknown sampler 'gird'; did you mean 'grid'?") for line in err)
    good = write(tmp_path, "search:\n  attention.window: {choice: [4, 8]}\nsampler: {kind: grid}\n", "good.yaml")
    assert cli_main(["validate", str(good), "--samples", "5"]) == 0
    assert cli_main(["plan", str(good), "--no-calibrate"]) == 0
    assert "grid: 2 trials" in capsys.readouterr().out


@pytest.mark.parametrize("src, value", [
    ("attention.layout != 'linear'", True),
    ("attention.window * 2 + 1 > data.seq_len - 1", True),
    ("attention.window / 4 == 16", True),
    ("4 < attention.window <= 64", True),
    ("attention.layout in ['sliding', 'terrace'] and not distill.enabled == false", True),
    ("attention.softmax_layers == [] or null", True),
    ("distill.layer_weights.kind == 'uniform' and seed == 0", True),
    ("finetune.lora.rank not in [8, 16]", False),
    ("-attention.window < -63", True),
])
def test_expressions_evaluate_on_partial_config(src, value):
    raw = {"attention": {"layout": "sliding", "window": 64}, "data": {"seq_len": 128}}
    assert parse_expr(src).evaluate(lambda n: lookup_path(raw, n)) is value


@pytest.mark.parametrize("src", [
    "open('x')", "attention.window.__class__", "(1).real", "[x for x in []]", "lambda: 1", "a[0]",
    "a if b else c", "a ** 2", "a // 2", "x := 1", "f'{a}'", "{1: 2}",
])
def test_expressions_outside_the_whitelist_rejected(src):
    with pytest.raises(ExprError):
        parse_expr(src)


@pytest.mark.parametrize("src", ["'a' + 1", "attention.layout < 3", "1 / 0", "not 3", "3 in 4"])
def test_expression_evaluation_errors_are_clear(src):
    with pytest.raises(ExprError):
        parse_expr(src).evaluate(lambda n: lookup_path({}, n))


def test_lookup_uses_base_then_defaults():
    assert lookup_path({}, "attention.layout") == "terrace"
    assert lookup_path({}, "attention.softmax_layers") == []
    assert lookup_path({"distill": {"layer_weights": "power"}}, "distill.layer_weights.kind") == "power"
    assert lookup_path({"distill": {"layer_weights": {"kind": "power"}}}, "distill.layer_weights.params.p") == 1.0
    assert lookup_path({"attention": {"feature_map": {"kind": "performer"}}}, "attention.feature_map.params.seed") == 0


def test_cli_ls_prints_registry_docs_verbatim(capsys):
    """Docs with brackets (Hedgehog's [softmax(xW) ⊕ softmax(−xW)]) are text, not rich markup to swallow."""
    assert cli_main(["ls", "feature-maps"]) == 0
    out = capsys.readouterr().out
    assert "[softmax(xW)" in out and "hedgehog" in out and "t2r" in out
