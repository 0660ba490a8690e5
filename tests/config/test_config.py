"""Registry, validated configs, trial ids and the CLI's bad-input contract."""

import json
import subprocess
import sys
import typing

import pytest

from lolsearch.config import TrialConfig, design_hash, design_id, parse_trial_config
from lolsearch.config.trial import ADDED_FIELDS
from lolsearch.core.errors import ConfigError
from lolsearch.core.registry import Registry, UnknownNameError


def test_registry_did_you_mean_and_duplicates():
    reg = Registry("widget")

    @reg.register("hedgehog")
    class A:
        """A hedgehog."""

    with pytest.raises(UnknownNameError, match="did you mean 'hedgehog'"):
        reg.get("hedgehgo")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("hedgehog")(object)
    assert reg.describe() == {"hedgehog": "A hedgehog."}


def test_unknown_keys_rejected_with_dotted_path():
    with pytest.raises(ConfigError) as err:
        parse_trial_config({"attention": {"windw": 4}, "finetune": {"lora": {"rnak": 4}}}, "x.yaml")
    lines = str(err.value).splitlines()
    assert "x.yaml: attention.windw: unknown key 'windw'; did you mean 'window' or 'window_schedule'?" in lines[0]
    assert lines[1].startswith("x.yaml: finetune.lora.rnak: unknown key 'rnak'; did you mean 'rank'?")


def test_unknown_names_rejected():
    with pytest.raises(ConfigError, match="attention.feature_map: .*did you mean 'hedgehog'"):
        parse_trial_config({"attention": {"feature_map": {"kind": "hedgehgo"}}})
    with pytest.raises(ConfigError, match="model.source: unknown model 'smollm2-13m'; did you mean 'smollm2-135m'"):
        parse_trial_config({"model": {"source": "smollm2-13m"}})
    with pytest.raises(ConfigError, match="layout 'slidng'.*did you mean 'sliding'"):
        parse_trial_config({"attention": {"layout": "slidng"}})
    with pytest.raises(ConfigError, match="distill: .*exactly one of tokens or steps"):
        parse_trial_config({"distill": {"tokens": 100, "steps": 3}})


def test_defaults_are_the_lolcats_recipe():
    cfg = TrialConfig()
    assert cfg.attention.feature_map.kind == "hedgehog" and cfg.attention.feature_map.params["feature_dim"] == 64
    assert (cfg.attention.layout, cfg.attention.window, cfg.attention.gamma_init) == ("terrace", 64, 0.1)
    assert (cfg.distill.lr, cfg.distill.mse_factor, cfg.finetune.lr) == (1e-2, 1000.0, 1e-4)
    assert (cfg.finetune.lora.rank, cfg.finetune.lora.alpha, cfg.finetune.lora.targets) == (8, 16.0, ("q", "k", "v", "o"))


def test_trial_id_stable_across_processes_and_sensitive():
    a = TrialConfig()
    code = "from lolsearch.config import TrialConfig; print(TrialConfig().trial_id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == a.trial_id
    assert parse_trial_config({"attention": {"window": 16}}).trial_id != a.trial_id
    # equal designs hash equal: a linear layout carries no window
    assert (parse_trial_config({"attention": {"layout": "linear", "window": 16}}).trial_id
            == parse_trial_config({"attention": {"layout": "linear"}}).trial_id)
    # resolved defaults are part of the identity: spelling a default out changes nothing
    assert parse_trial_config({"attention": {"feature_map": {"kind": "hedgehog", "params": {"feature_dim": 64}}}}).trial_id == a.trial_id


def test_trial_ids_recorded_before_a_field_was_added_stay():
    """A sweep resumes by trial id: a field added to the config must not change the ids already recorded."""
    # the default trial's id at d59cd1c (2026-12-04). A new field that moves it goes into ADDED_FIELDS; a changed
    # default moves it on purpose (the default trial computes something else): then record the new id here
    assert TrialConfig().trial_id == "36cf4539f1"
    for path, earlier in ADDED_FIELDS.items():
        annotation = _field(path).annotation
        values = (False, True) if annotation is bool else typing.get_args(annotation)
        assert earlier in values, f"{'.'.join(path)}: {earlier!r} is not one of its values {values}"
        configs = {value: parse_trial_config(_nested(path, value)) for value in values}
        assert len({c.trial_id for c in configs.values()}) == len(values), f"{'.'.join(path)}: one id per value"
        section = json.loads(configs[earlier].canonical_json())
        for key in path[:-1]:
            section = section[key]
        assert path[-1] not in section


def test_a_records_full_config_hashes_as_its_trial_does():
    """The report falls back to hashing a record's stored config (full, speed-only settings included) where the
    record has no design_id: that hash must be the trial's own, also for a record written before a field existed."""
    cfg = parse_trial_config({"distill": {"compile": "default", "cuda_graph": "on"}, "seed": 3})
    record_config = cfg.model_dump(mode="json")
    assert design_hash(record_config) == design_id(cfg) == design_id(TrialConfig())
    before_field = json.loads(json.dumps(record_config))
    del before_field["finetune"]["lora"]["compute_dtype"]
    assert design_hash(before_field) == design_id(cfg)
    other = parse_trial_config({"finetune": {"lora": {"compute_dtype": "model"}}})
    assert design_hash(other.model_dump(mode="json")) == design_id(other) != design_id(cfg)
    assert record_config["distill"]["compile"] == "default"  # the record's own dict is left as it was


def _field(path: tuple[str, ...]):
    model = TrialConfig
    for key in path[:-1]:
        model = model.model_fields[key].annotation
    return model.model_fields[path[-1]]


def _nested(path: tuple[str, ...], value) -> dict:
    data: dict = {path[-1]: value}
    for key in reversed(path[:-1]):
        data = {key: data}
    return data


def test_cli_bad_input_exits_2_with_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("attention:\n  windw: 4\nseed: x\n")
    proc = subprocess.run([sys.executable, "-m", "lolsearch", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"{bad}: attention.windw: unknown key 'windw'; did you mean 'window' or 'window_schedule'? (allowed: backend, chunk_size, feature_map, gamma_init, layers, layout, softmax_layers, softmax_rule, train_gamma, window, window_schedule)",
        f"{bad}: seed: Input should be a valid integer, unable to parse string as an integer",
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    proc = subprocess.run([sys.executable, "-m", "lolsearch", "validate", str(broken)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"{broken}: invalid YAML")
