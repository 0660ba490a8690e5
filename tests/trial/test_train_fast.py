"""The fast training path (deferred loss read-back, compiled norms/MLPs/feature maps) computes what the
eager path computes: same losses per step, same progress points, same trial id."""

import copy
import math

import pytest
import torch
from trial_testlib import STAGE_SEQ, stage_batches, stage_student, stage_val

from lolsearch.config import (
    DistillConfig,
    FinetuneConfig,
    LoraOptions,
    parse_trial_config,
)
from lolsearch.trial.distill import run_distill
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.surgery import compile_targets
from lolsearch.trial.train import NonFiniteLossError, run_stage

SEQ = STAGE_SEQ


def _both_stages(model, tok, **speed) -> tuple[list[dict], list[dict], list[dict]]:
    """Distill then LoRA, 5 steps each; returns both curves and every progress point."""
    points: list[dict] = []
    torch.manual_seed(0)
    common = {"steps": 5, "batch_size": 2, "eval_every": 2, "eval_batches": 1, **speed}
    stage, _ = run_distill(model, DistillConfig(**common), stage_batches(tok, 1), stage_val(tok), SEQ, points.append)
    peft = add_lora(model, LoraOptions(rank=2), cotrain_attention=False)
    ft = run_finetune(peft, FinetuneConfig(**common), stage_batches(tok, 2), stage_val(tok), SEQ, points.append)
    return stage.curve, ft.curve, points


def test_deferred_read_back_gives_the_eager_losses_and_points_in_order():
    model, tok = stage_student()
    twin = copy.deepcopy(model)
    eager = _both_stages(model, tok, sync_every=1)
    deferred = _both_stages(twin, tok, sync_every=4)
    for a, b in zip(eager[:2], deferred[:2], strict=True):
        assert [p["loss"] for p in a] == [p["loss"] for p in b]  # on CPU the same arithmetic, bit for bit
        assert [p["step"] for p in b] == [1, 2, 3, 4, 5] and all(p["tok_s"] > 0 for p in b)
    # progress: every step once, in order, each evaluation right after its step, same keys as before
    kinds = [(p["stage"], p["step"], "eval_loss" in p) for p in deferred[2]]
    assert kinds == [(p["stage"], p["step"], "eval_loss" in p) for p in eager[2]]
    assert kinds[:4] == [("distill", 1, False), ("distill", 2, False), ("distill", 2, True), ("distill", 3, False)]
    assert set(deferred[2][0]) == {"stage", "step", "tokens", "loss", "lr", "tok_s"}


@pytest.mark.slow
def test_compiled_stage_reproduces_the_eager_losses():
    # torch.compile on CPU builds C++ kernels: tens of seconds, hence slow.
    model, tok = stage_student()
    twin = copy.deepcopy(model)
    eager = _both_stages(model, tok)
    fast = _both_stages(twin, tok, compile="default")
    for a, b in zip(eager[:2], fast[:2], strict=True):
        la, lb = [p["loss"] for p in a], [p["loss"] for p in b]
        assert all(math.isclose(x, y, rel_tol=2e-3, abs_tol=1e-4) for x, y in zip(la, lb, strict=True)), (la, lb)
    assert all(m._compiled_call_impl is None for m in compile_targets(twin))  # eager again after the stage


def test_a_nan_is_reported_at_its_step_after_the_finite_points_before_it():
    w = torch.nn.Parameter(torch.ones(()))
    calls = iter(range(100))

    def loss_fn(_batch: dict) -> torch.Tensor:
        i = next(calls)
        return w * (float("nan") if i == 2 else 1.0)

    points: list[dict] = []
    batches = iter(lambda: {"input_ids": torch.zeros(1, 4, dtype=torch.long)}, None)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        run_stage("s", [w], loss_fn, batches, DistillConfig(steps=6, sync_every=5), 4, report=points.append)
    assert [p["step"] for p in points] == [1, 2]


def test_speed_settings_are_not_part_of_the_trial_id():
    base = parse_trial_config({})
    fast = parse_trial_config({"distill": {"sync_every": 50, "compile": "default"}, "finetune": {"compile": "default"}})
    assert fast.trial_id == base.trial_id and fast.distill.compile == "default"
    assert parse_trial_config({"distill": {"lr": 0.5}}).trial_id != base.trial_id
