"""--resume accepts a space file that changed only in how trials run (resources, budget, a stage's speed-only
settings in base, eval.cuda_graph), and nothing else."""

from pathlib import Path

import pytest

from lolsearch.core.errors import ConfigError
from lolsearch.search.space import load_space
from lolsearch.sweep.driver import _check_folder

TOY = Path(__file__).resolve().parents[2] / "spaces" / "toy.yaml"


def _resume_with(tmp_path: Path, edit) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "space.yaml").write_text(TOY.read_text())
    changed = tmp_path / "toy.yaml"
    changed.write_text(edit(TOY.read_text()))
    _check_folder(load_space(changed), out, resume=True)


@pytest.mark.parametrize("extra", [
    "\n# a comment only\n",
    "\nresources: {cpu: 1, gpu: 0}\n",
    "\nbudget: {max_concurrent: 1, retries: 0}\n",
])
def test_run_keys_may_change_on_resume(tmp_path, extra):
    key = extra.strip().split(":")[0]

    def edit(text: str) -> str:  # the key's old line out, the new one in
        return "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key}:")) + extra
    _resume_with(tmp_path, edit)  # raises on a refusal


def test_a_changed_search_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="differs from .*in more than resources and budget"):
        _resume_with(tmp_path, lambda text: text.replace("name: toy", "name: toy2", 1))


@pytest.mark.parametrize("stage, setting", [("finetune", "loss_chunk_tokens: 2048"), ("distill", "recompute_features: true"),
                                            ("finetune", "recompute_features: true"), ("distill", "cuda_graph: off")])
def test_speed_only_settings_may_change_on_resume(tmp_path, stage, setting):
    _resume_with(tmp_path, lambda text: text.replace(f"{stage}: {{tokens: null,", f"{stage}: {{{setting}, tokens: null,", 1))


def test_a_changed_stage_setting_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="differs from"):
        _resume_with(tmp_path, lambda text: text.replace("distill: {tokens: null, steps: 4,", "distill: {tokens: null, steps: 5,", 1))


def test_eval_cuda_graph_may_change_on_resume_and_other_eval_settings_may_not(tmp_path):
    _resume_with(tmp_path, lambda text: text.replace("eval: {tokens: 512,", "eval: {cuda_graph: false, tokens: 512,", 1))
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match="differs from"):
        _resume_with(tmp_path / "b", lambda text: text.replace("eval: {tokens: 512,", "eval: {tokens: 1024,", 1))
