"""The JSON Schema of space files: generated from the pydantic models with a description on every field, equal
to the committed spaces/schema.json, accepts every shipped space, rejects misspelled keys; spaces/README.md
carries the metric table of lolsearch/search/metrics.py; wrong shapes name the expected one."""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from lolsearch.cli import main
from lolsearch.search.jsonschema import schema_text, space_schema, trial_schema, undescribed
from lolsearch.search.metrics import markdown_table

SPACES = Path(__file__).resolve().parents[2] / "spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))


def test_every_field_has_a_description():
    assert undescribed(space_schema()) == []
    assert undescribed(trial_schema()) == []


def test_committed_schema_is_the_generated_one():
    assert (SPACES / "schema.json").read_text() == schema_text(), "run: lolsearch schema > spaces/schema.json"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_validate_and_point_at_the_schema(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=./schema.json\n")
    jsonschema.Draft202012Validator(space_schema()).validate(yaml.safe_load(text))


@pytest.mark.parametrize("bad,where", [
    ({"samplr": {"kind": "grid"}}, "samplr"),
    ({"base": {"attention": {"windw": 16}}}, "windw"),
    ({"base": {"distill": {"tokns": 5}}}, "tokns"),
    ({"search": {"attention.window": {"choise": [4]}}}, "choise"),
    ({"base": {"model": "toy-llama"}}, "toy-llama"),
])
def test_schema_rejects_misspelled_keys_and_wrong_shapes(bad, where):
    space = yaml.safe_load((SPACES / "toy.yaml").read_text())
    for key, value in bad.items():
        if key in space and isinstance(value, dict) and isinstance(space[key], dict):
            space[key] = {**space[key], **value}
        else:
            space[key] = value
    errors = list(jsonschema.Draft202012Validator(space_schema()).iter_errors(space))
    assert errors and any(where in e.message for e in errors), [e.message for e in errors]


def test_readme_metric_table_is_the_code_table():
    text = (SPACES / "README.md").read_text()
    table = re.search(r"<!-- metric-table:start -->\n(.*?)<!-- metric-table:end -->", text, re.S)
    assert table and table.group(1) == markdown_table(), "regenerate the table from lolsearch.search.metrics"


def test_schema_command_prints_it(capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_text()
    assert main(["schema", "--trial"]) == 0
    assert '"title": "lolsearch trial config"' in capsys.readouterr().out


def test_wrong_shapes_say_the_expected_one(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("objectives: {metric: ppl}\nsampler: grid\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: objectives: objectives is a list, e.g. [{{metric: ppl}}]" in err
    assert f"{path}: sampler: sampler is a mapping, e.g. {{kind: grid}}" in err
    path.write_text("base:\n  model: toy-llama\n  attention: {feature_map: t2r}\nobjectives: [{metric: ppl}]\n"
                    "sampler: {kind: grid}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: base.model: model is a mapping, e.g. {{source: toy-llama}}" in err
    assert f"{path}: base.attention.feature_map: feature_map is a mapping, e.g. {{kind: t2r}}" in err
